"""Tiled against whole-image inference: does the tile size a user picks change the output?

    python benchmarks/tiling_consistency.py --hr ../shared/data/benchmarks/Set14 ../shared/data/benchmarks/BSD68 \
        [--model DIR] [--tiles 48,64,96,128] [--overlaps 8,16,32] [--output outputs/tiling.md]

For every HR image (PIL bicubic LR at the model's factor, the benchmark protocol): the default path (`tile_size=None`), the whole image
(`tile_size=0`) and every tile size x overlap. Prints per image the Y-PSNR against HR of the default path and of
the whole image, and the PSNR (RGB, [0, 1]) of each tiling against the default path; then the worst case.
"""

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from diffusers_deltadiff.evaluation import load_pairs
from diffusers_deltadiff.metrics import psnr_y
from diffusers_deltadiff.pretrained import default_model_path, from_pretrained


def rgb_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-20))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hr", nargs="+", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--tiles", default="48,64,96,128")
    parser.add_argument("--overlaps", default="8,16,32")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    pipe = from_pretrained(args.model or default_model_path())
    pipe.set_progress_bar_config(disable=True)
    scale = pipe.upscale_factor
    tilings = [(t, o) for t in map(int, args.tiles.split(",")) for o in map(int, args.overlaps.split(","))]
    header = "| image | default vs HR | whole vs HR | " + " | ".join(f"{t}/{o}" for t, o in tilings) + " |"
    lines = [
        f"Y-PSNR against HR (dB); tile size / overlap columns: RGB PSNR against the default path (dB). "
        f"Model: {args.model or 'shipped default'} (tile_context {pipe.config.tile_context}).",
        "",
        header,
        "|---|---|---|" + "---|" * len(tilings),
    ]
    print("\n".join(lines), flush=True)
    worst, gaps = {}, []
    for folder in args.hr:
        pairs, _ = load_pairs(folder, scale, None, None, "bicubic", 0)
        for name, hr, lr in pairs:
            with torch.no_grad():
                default = pipe(lr, output_type="np").images[0]
                whole = pipe(lr, output_type="np", tile_size=0).images[0]
                tiled = {(t, o): pipe(lr, output_type="np", tile_size=t, tile_overlap=o).images[0] for t, o in tilings}
            to_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1)  # noqa: E731
            default_psnr = psnr_y(to_tensor(default), hr, scale).item()
            whole_psnr = psnr_y(to_tensor(whole), hr, scale).item()
            best_tiled = max(psnr_y(to_tensor(image), hr, scale).item() for image in tiled.values())
            gaps.append(max(whole_psnr, best_tiled) - default_psnr)
            cells = []
            for key, image in tiled.items():
                value = rgb_psnr(image, default)
                worst[key] = min(worst.get(key, float("inf")), value)
                cells.append("identical" if value >= 200 else f"{value:.1f}")
            line = (
                f"| {Path(folder).name}/{name} | {default_psnr:.2f} | {whole_psnr:.2f} | " + " | ".join(cells) + " |"
            )
            lines.append(line)
            print(line, flush=True)
    summary = [
        "",
        "Worst case over all images, per tiling (dB against the default path): "
        + ", ".join(f"{t}/{o}: {'identical' if v >= 200 else f'{v:.1f}'}" for (t, o), v in worst.items()),
        f"Best of whole and any tiling minus the default path, Y-PSNR vs HR: max {max(gaps):.4f} dB, "
        f"mean {statistics.fmean(gaps):.4f} dB",
    ]
    lines += summary
    print("\n".join(summary))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
