"""`deltadiff upscale`: images, folders and globs to 4x, in one process or split over a torchrun / accelerate group."""

import PIL.Image

from ..arguments import float_at_least, int_at_least, unit_interval
from ..console import resolve_device
from ..image_io import FORMATS, PNG_COMPRESSION
from .backend import add_backend_option
from .distributed import MAX_PROCESS_TIMEOUT, cmd_upscale_distributed
from .options import add_deprecated_flag, add_model_options, path_text
from .outscale import add_outscale_options
from .paths import remove_empty
from .upscaling import UpscaleReport, launched_processes, plan_upscale, upscale_jobs, upscale_summary


def add_parser(sub):
    up = sub.add_parser("upscale", help="upscale images")
    up.add_argument("inputs", nargs="+", help="image files, folders (recursive) or globs")
    up.add_argument(
        "-o", "--output", required=True, type=path_text, help="output folder (or file .png/.jpg/.webp, for one input)"
    )
    up.add_argument(
        "--scale",
        type=int_at_least(2),
        default=None,
        help="the factor: picks the shipped model for it (default: x4), or checks --model's",
    )
    up.add_argument(
        "--model",
        default=None,
        help="shipped model (x4, x2, x4-real), pipeline folder or Hub id (default: the shipped model of --scale)",
    )
    up.add_argument(
        "--denoise",
        type=unit_interval,
        default=None,
        help="0 to 1: blend the clean x4 model (0: clean inputs) into the real-world one (1: noisy, blurred, JPEG "
        "inputs), weight by weight",
    )
    up.add_argument("--steps", type=int_at_least(1), default=None, help="reverse steps (default: the model's)")
    up.add_argument(
        "--tile-context",
        type=int_at_least(0),
        default=None,
        help="context each tile sees around itself, latent pixels (default: the model's tile_context)",
    )
    up.add_argument(
        "--tile-batch-size",
        type=int_at_least(1),
        default=None,
        help="tiles per UNet batch, all images of a size together (default: 1 on CPU, 4 on GPU)",
    )
    add_deprecated_flag(up, "--tile-overlap", "--tile-context", type=int_at_least(0))
    add_deprecated_flag(up, "--batch-size", "--tile-batch-size", type=int_at_least(1))
    up.add_argument("--format", choices=list(FORMATS), default=None, help="output format (default: the input's)")
    up.add_argument("--quality", type=int_at_least(0, 100), default=95, help="JPEG / WebP quality, 0 to 100")
    up.add_argument(
        "--png-compression",
        type=int_at_least(0, 9),
        default=PNG_COMPRESSION,
        help=f"PNG zlib level, 0 (none) to 9 (smallest, slowest); default {PNG_COMPRESSION}, the fastest that compresses",
    )
    up.add_argument("--save-steps", action="store_true", help="also write the strip of every reverse step")
    up.add_argument("--seed", type=int, default=0, help="only used by stochastic (ResShift) models")
    existing = up.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing output files (never an input)")
    existing.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave existing output files as they are, without an error (resume a run; the default on several "
        "processes)",
    )
    up.add_argument("-v", "--verbose", action="store_true", help="print every file written")
    up.add_argument(
        "--process-timeout",
        type=float_at_least(0.1, MAX_PROCESS_TIMEOUT),
        default=24 * 60,
        help="minutes a process of a torchrun / accelerate group waits for the others (default: one day; NCCL's own "
        "10 minutes would stop a process that finishes early; at most 1e6, about two years)",
    )
    up.add_argument(
        "--max-pixels",
        type=int_at_least(0),
        default=PIL.Image.MAX_IMAGE_PIXELS,
        help="refuse inputs with more pixels, against decompression bombs (default: Pillow's %(default)s; 0: no limit)",
    )
    add_model_options(up)
    add_backend_option(up)
    add_outscale_options(up)
    up.set_defaults(func=cmd_upscale)


def cmd_upscale(args) -> int:
    if launched_processes() > 1:
        return cmd_upscale_distributed(args)
    plan = plan_upscale(args)
    report = UpscaleReport(skipped=plan.skipped, failed=plan.failures)
    if plan.jobs:
        try:
            upscale_jobs(args, plan, plan.jobs, resolve_device(args.device), report)
        finally:
            remove_empty(report.created)  # folders this run made and left empty
    print(upscale_summary(plan.output, report.written, report.skipped, report.failed))
    return 1 if report.failed else 0
