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

Everything is checked before anything is built (the pipeline, the card text, `--method`'s rows in every
`--results/<benchmark>/per_image.csv`, the check images, that the target is an exported model folder); the new folder,
card included, is built next to the target and swapped in only when complete: a failure leaves the shipped model as
it was.
"""

import argparse
import csv
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from diffusers_deltadiff.arguments import int_at_least
from diffusers_deltadiff.console import one_line
from diffusers_deltadiff.data import list_images, open_image
from diffusers_deltadiff.model_card import card_body, eval_results, write_model_card
from diffusers_deltadiff.pretrained import DEFAULT_SCALE, default_model_dir, from_pretrained
from diffusers_deltadiff.training_utils import install_folder


EXPORT_ONLY = ("pipeline", "tile_context", "border_padding", "default_inference_steps")  # not with --card_only


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
    parser.add_argument(
        "--scale", type=int_at_least(1), default=None, help="with --card_only: which shipped model (default 4)"
    )
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
    ignored = [f"--{key}" for key in EXPORT_ONLY if getattr(args, key) is not None]
    if args.card_only and ignored:
        verb = "is" if len(ignored) == 1 else "are"
        parser.error(
            f"--card_only rewrites the card only: {', '.join(ignored)} {verb} for an export (without --card_only)"
        )
    if args.scale is not None and not args.card_only:
        parser.error("--scale picks the shipped model for --card_only; an export takes its factor from --pipeline")
    return args


def card_template(args, scale: int) -> Path:
    """The card text for a model of this factor (`--card`, or `training/cards/deltadiff-x<factor>.md`); must exist."""
    path = Path(args.card or Path(__file__).parent / "cards" / f"deltadiff-x{scale}.md")
    if not path.is_file():
        sys.exit(f"error: {path}: no card text for a x{scale} model (write it, or pass --card)")
    return path


def checked_card(args, scale: int) -> str:
    """
    Everything the card needs, checked before anything is built or replaced: its text (with both markers) and the
    metrics of `--method` in every `--results/<benchmark>/per_image.csv`. The card text; a one-line error otherwise.
    """
    path = card_template(args, scale)
    try:
        template = path.read_text(encoding="utf-8")
        card_body(template, "", "")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        sys.exit(f"error: {path}: {one_line(err)}")
    if not Path(args.results).is_dir():
        sys.exit(f"error: --results {args.results}: no such folder (the output folder of benchmarks/quality.py)")
    try:
        eval_results(args.results, args.method, scale)
    except (OSError, ValueError, KeyError, csv.Error) as err:
        reason = f"no column {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
        sys.exit(f"error: --results {args.results}: {reason} (--method names this model's label there)")
    return template


def load(path: str, flag: str):
    """A pipeline folder, or a one-line error naming the flag."""
    if not (Path(path) / "model_index.json").is_file():
        sys.exit(f"error: {flag} {path}: not a pipeline folder (no model_index.json)")
    try:
        pipe = from_pretrained(path)
    except Exception as err:  # noqa: BLE001 - any loading failure becomes one line
        sys.exit(f"error: {flag} {path}: cannot load the pipeline ({one_line(err)})")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_card(args, pipe, folder: Path, template: str):
    """`README.md` and `comparison.png` of `pipe` into `folder` (whose name is the model's)."""
    datasets = [name for name in args.datasets.split(",") if name]
    repo_id = args.repo_id or f"deltadiff-x{pipe.upscale_factor}"
    write_model_card(pipe, folder, template, args.results, method=args.method, repo_id=repo_id, datasets=datasets)


def configured(pipe, args):
    """The pipeline with the measured `--tile_context`, `--border_padding` and `--default_inference_steps`, if given."""
    for key in ("tile_context", "border_padding"):
        if getattr(args, key) is not None:
            pipe.register_to_config(**{key: getattr(args, key)})
    if args.default_inference_steps is not None:
        try:  # checked against the schedule's length
            pipe.scheduler = type(pipe.scheduler).from_config(
                pipe.scheduler.config, default_inference_steps=args.default_inference_steps
            )
        except ValueError as err:
            sys.exit(f"error: --default_inference_steps {args.default_inference_steps}: {str(err).splitlines()[0]}")
    return pipe


def check_images(folder: str) -> list[str]:
    images = list_images(folder)[:5] if Path(folder).is_dir() else []
    if not images:
        sys.exit(f"error: --check_images {folder}: no images there for the float16 check")
    return images


def check_target(out: Path):
    """The folder an export replaces must be an exported model (or not exist): never another folder."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        sys.exit(f"error: {out}: exists and is not a model folder: refusing to replace it")
    if out.is_dir() and any(out.iterdir()) and not (out / "model_index.json").is_file():
        sys.exit(f"error: {out}: a folder that holds no exported model (no model_index.json): refusing to replace it")


def staging_folder(out: Path) -> Path:
    """A new private folder next to `out`, for building its replacement (renamed into place, same file system)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))


def honour_umask(folder: Path):
    """Give every folder and file under `folder` the umask's mode (weights saved through temporary files are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def float16_psnr(reference, half, images: list[str], scale: int) -> float:
    """The smallest PSNR between the float32 and the float16-stored pipeline's outputs on `images`."""
    psnrs = []
    for path in images:
        image = open_image(path)[0].convert("RGB")
        image = image.resize((max(image.width // scale, 1), max(image.height // scale, 1)))
        a = reference(image, output_type="np").images
        b = half(image, output_type="np").images
        psnrs.append(10 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12)))
    print(f"float16 storage vs float32: output PSNR min {min(psnrs):.2f} dB over {len(psnrs)} images")
    return min(psnrs)


def card_only(args):
    """Rewrite the card of an exported model: both files made aside, then each renamed into place."""
    folder = Path(args.output_dir or default_model_dir(args.scale or DEFAULT_SCALE))
    if not (folder / "model_index.json").is_file():
        sys.exit(f"error: {folder}: no exported model there to write the card of")
    pipe = load(str(folder), "--output_dir")
    template = checked_card(args, pipe.upscale_factor)
    staging = staging_folder(folder)
    try:
        (staging / folder.name).mkdir()
        write_card(args, pipe, staging / folder.name, template)
        for name in ("comparison.png", "README.md"):
            os.replace(staging / folder.name / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {folder / 'README.md'} and {folder / 'comparison.png'}")


def main(args):
    """
    Check everything first (pipeline, card text, results, check images, target folder); build the whole model
    folder, card included, next to the target; swap it in only when it is complete and holds quality.
    """
    if args.card_only:
        return card_only(args)
    reference = configured(load(args.pipeline, "--pipeline"), args)
    scale = reference.upscale_factor
    out = Path(args.output_dir or default_model_dir(scale))
    template = checked_card(args, scale)
    images = check_images(args.check_images)
    check_target(out)
    staging = staging_folder(out)
    try:
        partial = staging / out.name  # the card names the model after its folder
        reference.to(torch.float16).save_pretrained(partial)
        for path in list(partial.rglob("*")):
            if path.suffix in (".bin", ".py"):  # the package is the code
                path.unlink()
        half = load(str(partial), "the float16 copy")  # float16 on disk, float32 in memory
        reference = configured(load(args.pipeline, "--pipeline"), args)
        psnr = float16_psnr(reference, half, images, scale)
        if psnr < args.min_psnr:
            sys.exit(f"error: float16 storage changes outputs too much ({psnr:.2f} dB < {args.min_psnr} dB)")
        write_card(args, half, partial, template)
        honour_umask(partial)
        install_folder(partial, out, out.parent / f".{out.name}.old")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"exported to {out} (card {out / 'README.md'}): {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main(parse_args())
