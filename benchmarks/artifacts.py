"""
Artifacts on smooth synthetic content, against bicubic, in 8-bit levels:

    python benchmarks/artifacts.py --model src/diffusers_deltadiff/pretrained/deltadiff-x4 [--model other] \
        [--output outputs/artifacts.md] [--figure outputs/artifacts.png]

- `border`: the largest |SR - bicubic| in the outer 8-pixel ring of the output;
- `grid`: the dot-grid amplitude, the RMS over the factor x factor output phases of the per-phase mean of SR - bicubic (interior);
- `interior RMS`: the RMS of SR - bicubic away from the border (16 pixels in);
  grid and interior RMS are given on the 8-bit outputs and unrounded (see `measure`);
- `overshoot`: on a bar chart, how far the output goes beyond the original's range, next to bicubic's;
- `interior error`: the RMS of SR - original away from the border, next to bicubic's: where the model departs from
  bicubic, does it go towards the original or away from it.

`--model DIR@STEPS` runs that model at a fixed step count (`--steps` sets it for every model without one).

The inputs are LR images made by PIL's bicubic downscale of a colour ramp, a soft grey disc and a bar chart (drawn
here, no files needed); the bicubic reference is PIL's bicubic upscale of the same LR.
"""

import argparse
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from diffusers_deltadiff.pretrained import from_pretrained


def ramp(size: int = 256) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    return np.stack([x, y, 1 - 0.5 * (x + y)], axis=-1)


def disc(size: int = 256) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2
    r = np.hypot(x, y) / (size * 0.35)
    grey = 0.25 + 0.5 / (1 + np.exp((r - 1) * 12))
    return np.repeat(grey[..., None], 3, axis=-1)


def bars(size: int = 256, period: int = 32) -> np.ndarray:
    x = np.arange(size)
    row = np.where((x // (period // 2)) % 2 == 0, 0.2, 0.8)
    return np.repeat(np.tile(row, (size, 1))[..., None], 3, axis=-1)


def to_pil(array: np.ndarray) -> PIL.Image.Image:
    return PIL.Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8))


def bicubic_float(lr: PIL.Image.Image, size: tuple[int, int]) -> np.ndarray:
    """PIL's bicubic upscale of an 8-bit image, unrounded (each channel resized as a float image)."""
    channels = np.asarray(lr, dtype=np.float32)
    return np.stack(
        [np.asarray(PIL.Image.fromarray(channels[..., c], "F").resize(size, PIL.Image.BICUBIC)) for c in range(3)],
        axis=-1,
    ).astype(np.float64)


def deviations(sr: np.ndarray, bicubic: np.ndarray, scale: int) -> dict:
    """Border max, dot-grid amplitude and interior RMS of `sr - bicubic` (levels)."""
    diff = sr - bicubic
    ring = np.ones(diff.shape[:2], bool)
    ring[8:-8, 8:-8] = False
    inner = diff[16:-16, 16:-16]
    phases = np.array([[inner[p::scale, q::scale].mean() for q in range(scale)] for p in range(scale)])
    return {
        "border": float(np.abs(diff[ring]).max()),
        "grid": float(np.sqrt(((phases - phases.mean()) ** 2).mean())),
        "interior_rms": float(np.sqrt((inner**2).mean())),
    }


def measure(pipe, hr: np.ndarray, scale: int = 4, steps: int | None = None) -> dict:
    """
    The artifacts of `pipe` on `hr` against bicubic, twice: on the 8-bit PNG a user gets (both images rounded), and
    unrounded (the pipeline's float output against PIL's bicubic in float, from the same 8-bit LR). Rounding both
    images to 8 bits alone adds an RMS difference and, on a ramp, a phase pattern that depends on the ramp's slope
    (their size is in docs/performance.md); the unrounded figures are the model's own.
    """
    hr_image = to_pil(hr)
    lr = hr_image.resize((hr_image.width // scale, hr_image.height // scale), PIL.Image.BICUBIC)
    bicubic = np.asarray(lr.resize(hr_image.size, PIL.Image.BICUBIC), dtype=np.float64)
    unrounded = pipe(lr, num_inference_steps=steps, output_type="np").images[0].astype(np.float64) * 255
    sr = np.asarray(pipe(lr, num_inference_steps=steps, output_type="pil").images[0], dtype=np.float64)  # the PNG
    original = np.asarray(hr_image, dtype=np.float64)
    low, high = original.min(), original.max()

    def interior_error(image):
        return float(np.sqrt(((image - original)[16:-16, 16:-16] ** 2).mean()))

    def overshoot(image):
        return float(max(image.max() - high, low - image.min(), 0.0))

    return {
        **deviations(sr, bicubic, scale),
        "float": deviations(unrounded, bicubic_float(lr, hr_image.size), scale),
        "overshoot": overshoot(sr),
        "overshoot_bicubic": overshoot(bicubic),
        "error": interior_error(sr),
        "error_bicubic": interior_error(bicubic),
        "sr": sr,
        "bicubic": bicubic,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--border-padding", type=int, default=None, help="override the models' border_padding")
    parser.add_argument("--output", default=None, help="markdown table")
    parser.add_argument("--figure", default=None, help="PNG: SR - bicubic (x8, grey = 0) per model and content")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    contents = {"ramp": ramp(), "disc": disc(), "bars": bars()}
    lines = [
        "| model | content | border max | grid: 8-bit / unrounded | interior RMS: 8-bit / unrounded | "
        "overshoot (bicubic) | interior error (bicubic) |",
        "|---|---|---|---|---|---|---|",
    ]
    tiles = []
    for spec in args.model:
        model, at, steps = spec.rpartition("@")
        model, steps = (model, int(steps)) if at else (spec, args.steps)
        pipe = from_pretrained(model)
        pipe.set_progress_bar_config(disable=True)
        if args.border_padding is not None:
            pipe.register_to_config(border_padding=args.border_padding)
        row = []
        for name, hr in contents.items():
            m = measure(pipe, hr, scale=pipe.upscale_factor, steps=steps)
            lines.append(
                f"| {spec} (pad {pipe.config.border_padding}) | {name} | {m['border']:.1f} | "
                f"{m['grid']:.3f} / {m['float']['grid']:.3f} | {m['interior_rms']:.2f} / {m['float']['interior_rms']:.2f} | "
                f"{m['overshoot']:.0f} ({m['overshoot_bicubic']:.0f}) | "
                f"{m['error']:.2f} ({m['error_bicubic']:.2f}) |"
            )
            row.append(np.clip(128 + 8 * (m["sr"] - m["bicubic"]), 0, 255).astype(np.uint8))
        tiles.append(np.concatenate(row, axis=1))
    table = "\n".join(lines)
    print(table)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(table + "\n")
    if args.figure:
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(np.concatenate(tiles, axis=0)).save(args.figure)


if __name__ == "__main__":
    main()
