"""
The real-world table: bicubic, the clean x4 model, the real-world x4 model and their blends (the denoise knob) on
real camera pairs and on degraded inputs, Y-PSNR / SSIM against the ground truth, each result cached so a rerun
resumes.

    python benchmarks/realworld.py --data ../shared/data --output outputs/realworld            # the main table
    python benchmarks/realworld.py --data ../shared/data --output outputs/realworld --curve    # + the blend curve

Sets (x4):
- `RealSR`: the 100 RealSR (Cai et al.) Canon / Nikon pairs, 128 -> 512, Y channel, no border crop (as the
  real-world SR papers score them);
- `Set14-jpegQ`, `BSD68-jpegQ`: the protocol's bicubic LR saved as JPEG at quality Q (30, 40, 50, 70), crop 4;
- `SunHays80-2nd`: the 80 `sun_hays80` photos (never trained on), centre 512 crop shrunk to 256 (which hides their
  own JPEG blocks), LR by Real-ESRGAN's second-order degradation at fixed seeds (the image's index), crop 4;
- `Set14-noise15`, `BSD68-noise15`: bicubic LR with Gaussian noise of 15 levels; `Set14-blur`, `BSD68-blur`: a
  Gaussian blur of 1.6 HR pixels before the bicubic downscale; `Set5-cv2-cubic`, `Set14-cv2-cubic`: the LR made by
  `cv2.resize(INTER_CUBIC)`, without antialiasing (crop 4);
- `Set5`, `Set14`, `BSD68`: clean bicubic LR, crop 4.

Methods: `bicubic` (PIL), `x4`, `x4-real`, `denoise-0.5` (and 0.25 / 0.75 with `--curve`), or any `label=folder`.
On the JPEG-40 sets, the block-edge energy of the output too ([`~metrics.block_edge_energy`]: the mean level step
across the upscaled 8x8 JPEG block edges minus the mean step elsewhere; the HR original's for reference).
"""

import argparse
import json
import statistics
from pathlib import Path

import torch
from tqdm.auto import tqdm

from diffusers_deltadiff.blending import blend_pipelines
from diffusers_deltadiff.data import list_images, open_image
from diffusers_deltadiff.degradations import Degradation
from diffusers_deltadiff.evaluation import load_pairs
from diffusers_deltadiff.image_utils import bicubic_resize, center_crop, to_unit_tensor
from diffusers_deltadiff.metrics import block_edge_energy, psnr_y, ssim_y
from diffusers_deltadiff.pretrained import from_pretrained, shipped_model_path


SCALE = 4
JPEG_SETS = [f"{name}-jpeg{q}" for name in ("Set14", "BSD68") for q in (30, 40, 50, 70)]
# real-world sets the bar does not name; cv2-cubic: thumbnails made by OpenCV's resize, without antialiasing
OTHER_SETS = ["Set14-noise15", "BSD68-noise15", "Set14-blur", "BSD68-blur", "Set5-cv2-cubic", "Set14-cv2-cubic"]
MAIN_SETS = ["RealSR", *JPEG_SETS, "SunHays80-2nd", *OTHER_SETS, "Set5", "Set14", "BSD68"]
CURVE_SETS = ["RealSR", "Set14-jpeg40", "SunHays80-2nd", "Set14", "BSD68"]
PUBLISHED = {"RealSR": {"OSEDiff (published, one-step diffusion, GAN-like detail)": (25.15, 0.7341)}}


def realsr_pairs(data: Path):
    folder = data / "benchmarks" / "RealSR"
    pairs = []
    for path in list_images(str(folder / "test_HR")):
        hr = to_unit_tensor(open_image(path)[0])
        lr = to_unit_tensor(open_image(str(folder / "test_LR" / Path(path).name))[0])
        pairs.append((Path(path).name, hr, lr))
    return pairs


def sun_hays_pairs(data: Path):
    degrade = Degradation("realesrgan", SCALE)
    pairs = []
    for index, path in enumerate(list_images(str(data / "train" / "sun_hays80"))):
        image = to_unit_tensor(open_image(path)[0])
        side = min(512, *image.shape[-2:]) // 8 * 8
        hr = bicubic_resize(center_crop(image, side, side), (side // 2, side // 2))
        pairs.append((Path(path).name, hr, degrade(hr, seed=index)))
    return pairs


def load_set(name: str, data: Path):
    """`(pairs, crop_border)` of the set `name`."""
    if name == "RealSR":
        return realsr_pairs(data), 0
    if name == "SunHays80-2nd":
        return sun_hays_pairs(data), SCALE
    benchmark, _, degradation = name.partition("-")
    pairs, errors = load_pairs(str(data / "benchmarks" / benchmark), SCALE, None, None, degradation or "bicubic", 0)
    if errors:
        raise SystemExit(f"error: {errors[0]}")
    return pairs, SCALE


class Methods:
    """The upscalers by label, loaded on first use."""

    def __init__(self, extra: dict[str, str]):
        self.extra, self.loaded = extra, {}

    def pipeline(self, name: str):
        if name not in self.loaded:
            self.loaded[name] = self._load(name)
        return self.loaded[name]

    def _load(self, name: str):
        if name in self.extra:
            pipe = from_pretrained(self.extra[name])
        elif name.startswith("denoise-"):
            # blend_pipelines leaves both inputs as they are: the x4 and x4-real rows stay those models
            pipe = blend_pipelines(self.pipeline("x4"), self.pipeline("x4-real"), float(name.removeprefix("denoise-")))
        else:
            pipe = from_pretrained(shipped_model_path(name))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def upscale(self, name: str, lr: torch.Tensor, size) -> torch.Tensor:
        if name == "bicubic":
            return bicubic_resize(lr, size)
        sr = self.pipeline(name)(lr, output_type="pt").images[0]
        return (sr.clamp(0, 1) * 255).round() / 255  # what a saved 8-bit file holds


def score_set(methods: Methods, method: str, pairs, crop: int, blocks: bool) -> dict:
    psnrs, ssims, energies = [], [], []
    for _, hr, lr in tqdm(pairs, desc=method, unit="image", leave=False):
        sr = methods.upscale(method, lr, tuple(hr.shape[-2:]))
        psnrs.append(psnr_y(sr[None], hr[None], crop).item())
        ssims.append(ssim_y(sr[None], hr[None], crop).item())
        if blocks:
            energies.append(block_edge_energy(sr, 8 * SCALE))
    result = {"psnr": statistics.fmean(psnrs), "ssim": statistics.fmean(ssims), "images": len(pairs)}
    if blocks:
        result["block_energy"] = statistics.fmean(energies)
    return result


def markdown(results: dict, sets: list[str], methods: list[str]) -> str:
    lines = ["| set | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for name in sets:
        row = results.get(name, {})
        base = row.get("bicubic", {}).get("psnr")
        cells = []
        for method in methods:
            value = row.get(method)
            if value is None:
                cells.append("-")
                continue
            gain = f" ({value['psnr'] - base:+.2f})" if base is not None and method != "bicubic" else ""
            blocks = f", blocks {value['block_energy']:.2f}" if "block_energy" in value else ""
            cells.append(f"{value['psnr']:.2f} / {value['ssim']:.4f}{gain}{blocks}")
        label = f"{name} ({row.get('bicubic', {}).get('images', '?')})"
        if "HR" in row:
            label += f"; HR blocks {row['HR']['block_energy']:.2f}"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for name, rows in PUBLISHED.items():
        for label, (psnr, ssim) in rows.items():
            lines.append(f"| {name}: {label} | {psnr:.2f} / {ssim:.4f} |" + " |" * (len(methods) - 1))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="../shared/data (benchmarks/ and train/sun_hays80)")
    parser.add_argument("--output", default="outputs/realworld")
    parser.add_argument("--sets", default=",".join(MAIN_SETS), help="comma-separated")
    parser.add_argument("--methods", default="bicubic,x4,x4-real,denoise-0.5", help="comma-separated")
    parser.add_argument("--model", action="append", default=[], help="label=pipeline folder, also a method")
    parser.add_argument("--curve", action="store_true", help="the blend curve (denoise 0.25, 0.5, 0.75) too")
    args = parser.parse_args()

    extra = dict(spec.split("=", 1) for spec in args.model)
    methods = Methods(extra)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "results.json"
    results = json.loads(cache.read_text()) if cache.exists() else {}
    method_names = [m for m in args.methods.split(",") if m] + [m for m in extra if m not in args.methods]
    jobs = [(name, method) for name in args.sets.split(",") for method in method_names]
    if args.curve:
        jobs += [(name, f"denoise-{d}") for name in CURVE_SETS for d in (0.25, 0.5, 0.75)]
    loaded = {}
    for name, method in jobs:
        if method in results.get(name, {}):
            continue
        if name not in loaded:
            loaded = {name: load_set(name, Path(args.data))}  # one set in memory at a time
        pairs, crop = loaded[name]
        blocks = name.endswith("-jpeg40")
        results.setdefault(name, {})[method] = score_set(methods, method, pairs, crop, blocks)
        if blocks and "HR" not in results[name]:
            energy = statistics.fmean(block_edge_energy(hr, 8 * SCALE) for _, hr, _ in pairs)
            results[name]["HR"] = {"psnr": float("inf"), "ssim": 1.0, "block_energy": energy, "images": len(pairs)}
        print(f"{name} {method}: {results[name][method]}", flush=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(cache)
    sets = list(dict.fromkeys(name for name, _ in jobs))
    shown = list(dict.fromkeys(method for _, method in jobs))
    text = markdown(results, sets, shown)
    (out / "realworld.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
