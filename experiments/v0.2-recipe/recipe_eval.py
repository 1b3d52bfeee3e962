"""Score trained pipelines on whole images and in tiles: the measurements behind the default model's recipe.

    python experiments/v0.2-recipe/recipe_eval.py --hr outputs/data/val8_half ../shared/data/benchmarks/Set14 \
        --model gn=outputs/ablate/gn --model pixel=outputs/ablate/pixel --tiles 0,32 --output outputs/recipe.md

For every HR folder and model: mean Y-PSNR / SSIM under the benchmark protocol (x4, PIL bicubic LR, Y channel, crop
border 4) with the whole image at once (`tile 0`) and with each tile size (latent pixels), next to bicubic. Select
recipes and checkpoints on held-out training photos; report benchmarks only for information.
"""

import argparse
from pathlib import Path

from diffusers_deltadiff.evaluation import evaluate, load_pairs
from diffusers_deltadiff.pretrained import from_pretrained


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hr", nargs="+", required=True, help="HR folders")
    parser.add_argument("--model", action="append", required=True, help="label=pipeline folder, repeatable")
    parser.add_argument("--tiles", default="0", help="comma-separated tile sizes in latent pixels; 0 = whole image")
    parser.add_argument("--tile_overlap", type=int, default=8)
    parser.add_argument("--output", default=None, help="markdown file for the table")
    args = parser.parse_args()

    tiles = [int(t) for t in args.tiles.split(",")]
    models = dict(spec.split("=", 1) for spec in args.model)
    lines = [
        "| model | tile | " + " | ".join(Path(f).name for f in args.hr) + " |",
        "|---|---|" + "---|" * len(args.hr),
    ]
    data = {folder: load_pairs(folder, 4, None, None, "bicubic", 0)[0] for folder in args.hr}

    def row(label, tile, pipelines: dict, pipeline_kwargs=None):
        cells = []
        for pairs in data.values():
            result = evaluate(pairs, pipelines, baseline=not pipelines, grid_images=0, pipeline_kwargs=pipeline_kwargs)
            summary = result.summary()[0]
            cells.append(f"{summary['psnr']:.2f} / {summary['ssim']:.4f}")
        line = f"| {label} | {tile} | " + " | ".join(cells) + " |"
        print(line, flush=True)
        lines.append(line)

    row("bicubic", "-", {})
    for label, path in models.items():
        pipe = from_pretrained(path)
        pipe.set_progress_bar_config(disable=True)
        for tile in tiles:
            row(
                label,
                tile or "whole",
                {label: pipe},
                {"tile_size": tile, "tile_overlap": args.tile_overlap if tile else 0},
            )
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
