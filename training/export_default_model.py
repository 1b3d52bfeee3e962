#!/usr/bin/env python
"""Export a trained `DeltaDiffPipeline` as the package's shipped default model (float16 safetensors).

    python benchmarks/quality.py --benchmarks ... --model "DeltaDiff (new default)=..." --output outputs/quality
    python training/export_default_model.py --pipeline outputs/deltadiff-best --results outputs/quality
    python training/export_default_model.py --card_only --results outputs/quality   # after editing the card

Writes `src/diffusers_deltadiff/pretrained/deltadiff-x<factor>/` (the pipeline's factor): weights stored in float16
and loaded as float32, configs and the card. No code: the package is the one source of it, and `save_pretrained`
writes it into any folder made from the shipped model, which then loads with diffusers alone. It checks that float16
storage holds quality: the float32 and the float16-stored pipeline upscale the same images, and the PSNR between their
outputs is printed (and must exceed `--min_psnr`). The model card (`README.md`, with `comparison.png`) is `--card`
(default `training/cards/deltadiff-x<factor>.md`) with its metadata (metrics from `--results`), usage and figure
filled in.
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from diffusers_deltadiff.data import list_images, open_image
from diffusers_deltadiff.model_card import write_model_card
from diffusers_deltadiff.pretrained import DEFAULT_SCALE, default_model_dir, from_pretrained


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", help="trained pipeline folder (train_deltadiff.py output)")
    parser.add_argument(
        "--card",
        default=None,
        help="the hand-written card text, with <!-- usage --> and <!-- comparison --> markers "
        "(default: training/cards/deltadiff-x<factor>.md)",
    )
    parser.add_argument("--results", help="output folder of benchmarks/quality.py: <benchmark>/per_image.csv")
    parser.add_argument("--method", default="DeltaDiff (new default)", help="this model's label in --results")
    parser.add_argument(
        "--repo_id", default=None, help="the Hub id (or folder) the card's usage loads (default: deltadiff-x<factor>)"
    )
    parser.add_argument("--datasets", default="sun_hays80", help="training datasets, comma-separated")
    parser.add_argument("--card_only", action="store_true", help="only rewrite the shipped folder's card")
    parser.add_argument("--check_images", default="../shared/data/benchmarks/Set5", help="images for the fp16 check")
    parser.add_argument("--min_psnr", type=float, default=45.0, help="fp16 vs fp32 output PSNR needed (dB)")
    parser.add_argument("--scale", type=int, default=None, help="with --card_only: which shipped model (default 4)")
    parser.add_argument("--output_dir", default=None, help="default: the package's deltadiff-x<factor> folder")
    parser.add_argument(
        "--tile_context",
        type=int,
        default=None,
        help="the context (latent pixels) each tile sees, as measured for this model (default: keep the pipeline's)",
    )
    parser.add_argument(
        "--border_padding",
        type=int,
        default=None,
        help="LR pixels reflected around inputs before the chain, as measured for this model (default: keep)",
    )
    parser.add_argument(
        "--default_inference_steps",
        type=int,
        default=None,
        help="the reverse steps the model runs by default: the step count that wins, as measured (default: keep the "
        "scheduler's)",
    )
    args = parser.parse_args(input_args)
    if not args.results:
        parser.error("--results is required: the card's metrics come from a quality benchmark run")
    if not (args.card_only or args.pipeline):
        parser.error("--pipeline is required (or --card_only)")
    if args.scale is not None and not args.card_only:
        parser.error("--scale picks the shipped model for --card_only; an export takes its factor from --pipeline")
    return args


def card_template(args, scale: int) -> Path:
    """The card text for a model of this factor (`--card`, or `training/cards/deltadiff-x<factor>.md`); must exist."""
    path = Path(args.card or Path(__file__).parent / "cards" / f"deltadiff-x{scale}.md")
    if not path.is_file():
        sys.exit(f"error: {path}: no card text for a x{scale} model (write it, or pass --card)")
    return path


def write_card(args, folder: Path):
    pipe = from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    datasets = [name for name in args.datasets.split(",") if name]
    name = f"deltadiff-x{pipe.upscale_factor}"
    template = card_template(args, pipe.upscale_factor).read_text()
    repo_id = args.repo_id or name
    write_model_card(pipe, folder, template, args.results, method=args.method, repo_id=repo_id, datasets=datasets)
    print(f"wrote {folder / 'README.md'} and {folder / 'comparison.png'}")


def configured(pipe, args):
    """The pipeline with the measured `--tile_context`, `--border_padding` and `--default_inference_steps`, if given."""
    for key in ("tile_context", "border_padding"):
        if getattr(args, key) is not None:
            pipe.register_to_config(**{key: getattr(args, key)})
    if args.default_inference_steps is not None:
        pipe.scheduler = type(pipe.scheduler).from_config(
            pipe.scheduler.config, default_inference_steps=args.default_inference_steps
        )  # checked against the schedule's length
    return pipe


def main(args):
    if args.card_only:
        folder = Path(args.output_dir or default_model_dir(args.scale or DEFAULT_SCALE))
        if not (folder / "model_index.json").is_file():
            sys.exit(f"error: {folder}: no exported model there to write the card of")
        write_card(args, folder)
        return
    reference = configured(from_pretrained(args.pipeline), args)
    scale = reference.upscale_factor
    card_template(args, scale)  # before anything is replaced
    with tempfile.TemporaryDirectory() as tmp:
        reference.to(torch.float16).save_pretrained(tmp)
        half = from_pretrained(tmp)  # float16 on disk, float32 in memory
        reference = configured(from_pretrained(args.pipeline), args)
        for pipe in (reference, half):
            pipe.set_progress_bar_config(disable=True)
        psnrs = []
        for path in list_images(args.check_images)[:5]:
            image = open_image(path)[0].convert("RGB")
            image = image.resize((image.width // scale, image.height // scale))
            a = reference(image, output_type="np").images
            b = half(image, output_type="np").images
            psnrs.append(10 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12)))
        print(f"float16 storage vs float32: output PSNR min {min(psnrs):.2f} dB over {len(psnrs)} images")
        if min(psnrs) < args.min_psnr:
            sys.exit(f"error: float16 storage changes outputs too much ({min(psnrs):.2f} dB < {args.min_psnr} dB)")

        out = Path(args.output_dir or default_model_dir(scale))
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(tmp, out, ignore=shutil.ignore_patterns("*.bin", "*.py"))  # the package is the code
    write_card(args, out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"exported to {out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main(parse_args())
