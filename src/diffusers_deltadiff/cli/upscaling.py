"""The `upscale` machinery of one process: the plan (made before the model loads), the jobs, the report, the summary."""

import os
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image
import torch

from ..atomic_files import AlreadyExists, remove_stale_temporaries
from ..console import (
    CLIError,
    check_steps,
    error,
    load_pipeline,
    note,
    one_line,
    progress,
    resolve_model,
    warn_dtype,
    warning,
)
from ..image_io import (
    FORMATS,
    flattened_for,
    make_folders,
    needs_float_output,
    open_input,
    save_atomic,
    steps_strip,
    to_output_image,
)
from ..image_utils import to_unit_tensor
from .backend import apply_backend, check_backend, graph_upscaler
from .outscale import outscale_model_factor, requested_size, resize_to_target
from .paths import (
    check_output_flags,
    check_output_folder,
    collect_inputs,
    missing_outputs,
    output_file,
    plan_outputs,
    steps_path,
)


@dataclass
class UpscalePlan:
    """What an `upscale` run does, decided before the model loads: `jobs` as `plan_outputs` makes them."""

    output: Path
    target_dir: Path
    jobs: list[tuple[Path, Path, list[Path]]]
    skipped: int = 0
    failures: int = 0


@dataclass
class UpscaleReport:
    """What one process did: counts, the folders it made, and the error that stopped it, if any."""

    written: int = 0
    skipped: int = 0
    failed: int = 0
    created: list[Path] = field(default_factory=list)
    fatal: tuple[str, int] | None = None

    def code(self) -> int:
        return self.fatal[1] if self.fatal else 1 if self.failed else 0


def plan_upscale(args) -> UpscalePlan:
    """Inputs, flags and outputs checked, with one error line per problem; a `CLIError` when nothing can be done."""
    output = Path(args.output)
    files, errors = collect_inputs(args.inputs, output)
    for message in errors:
        error(message)
    if not files:
        raise CLIError("nothing to upscale", code=2 if not errors else 1)
    single = len(files) == 1 and len(args.inputs) == 1 and not os.path.isdir(args.inputs[0])
    check_output_flags(args, single, len(files))
    target_dir = output.parent if single and output_file(output) else output
    check_output_folder(target_dir)
    jobs, plan_errors = plan_outputs(files, output, args, single)
    for message in plan_errors:
        error(message)
    remove_stale_temporaries({dest.parent for _, dest, _ in jobs})
    skipped = len(files) - len(jobs) - len(plan_errors)
    return UpscalePlan(output, target_dir, jobs, skipped, len(errors) + len(plan_errors))


def upscale_summary(output: Path, written: int, skipped: int, failed: int, per_process: list[int] | None = None):
    """The run's last line: `N image(s) upscaled to OUT`, then what was skipped and failed, when anything was."""
    text = f"{written} image(s) upscaled to {output}"
    if per_process is not None:
        text += f" by {len(per_process)} processes ({' + '.join(map(str, per_process))})"
    if skipped or per_process is not None:
        text += f", {skipped} skipped (already there)"
    if failed or per_process is not None:
        text += f", {failed} error(s)"
    return text


def load_upscaler(args, device: str, warn: bool = True):
    """
    What upscales for `upscale`: the pipeline on `--backend`, its `--steps` checked; on ONNX Runtime, the model's
    exported graph in front of it ([`~cli.backend.graph_upscaler`]: diffusers is imported only if a call needs the
    pipeline itself).
    """
    if warn:
        warn_dtype(device, args.dtype)
    backend = check_backend(args, device)
    scale = args.scale or outscale_model_factor(args)
    denoise = getattr(args, "denoise", None)

    def pipeline():
        pipe = load_pipeline(args.model, device, args.dtype, scale=scale, denoise=denoise)
        check_steps(pipe, [args.steps], args.model or f"the default x{pipe.upscale_factor} model")
        return pipe

    if backend == "onnxruntime" and denoise is None:
        return graph_upscaler(args, resolve_model(args.model, scale), scale, pipeline)
    return apply_backend(pipeline(), backend, getattr(args, "backend", "auto"))


def upscale_one(pipe, args, source_path: Path, dest: Path, outputs: list[Path], created: list[Path]) -> list[Path]:
    """Upscale one input and write those of `dest` and its steps strip that are in `outputs`; the files written."""
    if args.skip_existing:
        outputs = missing_outputs(outputs, args)  # another run may have made some since the plan
        if not outputs:
            return []
    elif not args.overwrite and any(os.path.exists(out) for out in outputs):  # made since the plan
        raise FileExistsError(f"{dest}: already exists (pass --overwrite to replace it)")
    fmt = FORMATS[args.format] if args.format else FORMATS.get(dest.suffix.lower().lstrip("."), "PNG")
    image = open_input(source_path, args.max_pixels)
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        warning(f"{source_path}: {frames} frames, only the first one is upscaled")
    image = flattened_for(image, fmt, source_path)
    size = requested_size(image, args)  # before the model runs: a size no image can have fails at once
    strip_path = steps_path(dest)
    # 8-bit outputs come from the pipeline's uint8 canvas, with no float copy of the whole image; 16-bit outputs and
    # the steps strip (every step is kept for it anyway) from float tensors
    as_tensor = needs_float_output(image, fmt) or strip_path in outputs
    out = pipe(
        image,
        num_inference_steps=args.steps,
        output_type="pt" if as_tensor else "pil",
        return_intermediates=strip_path in outputs,
        tile_size=args.tile_size,
        tile_context=args.tile_context,
        tile_batch_size=args.tile_batch_size,
        generator=torch.Generator().manual_seed(args.seed),
    )
    written = []
    if dest in outputs:
        sr = resize_to_target(out.images[0].float().cpu() if as_tensor else out.images[0], size)
        written += save_output(args, to_output_image(sr, image, fmt), dest, image, created)
    if strip_path in outputs:
        strip = steps_strip(to_unit_tensor(image), [s[0].float().cpu() for s in out.intermediate_images])
        written += save_output(args, strip.convert("RGB"), strip_path, PIL.Image.new("RGB", (1, 1)), created)
    return written


def save_output(args, image: PIL.Image.Image, dest: Path, source: PIL.Image.Image, created: list[Path]) -> list[Path]:
    """
    Write one output file whole (`[dest]`), never replacing a file this run did not claim: one that another run made
    since the plan is an error (`AlreadyExists`), or with `--skip-existing` left alone (`[]`); `--overwrite` replaces.
    """
    fmt = FORMATS[args.format] if args.format else FORMATS.get(dest.suffix.lower().lstrip("."), "PNG")
    try:
        save_atomic(
            image,
            dest,
            fmt,
            args.quality,
            source,
            created=created,
            replace=args.overwrite,
            png_compression=args.png_compression,
        )
    except AlreadyExists:
        if args.skip_existing:
            return []
        raise
    return [dest]


def upscale_jobs(
    args, plan: UpscalePlan, jobs, device: str, report: UpscaleReport, *, main: bool = True, tag: str = ""
):
    """
    Load the model and run `jobs` into `report`: one error line per failed input, and with `--verbose` one line per
    file written (after `tag`). Folders made are added to `report.created`, to be removed again if left empty.
    """
    pipe = load_upscaler(args, device, warn=main)
    try:
        make_folders(plan.target_dir, report.created)
    except OSError as err:
        raise CLIError(f"{plan.target_dir}: cannot create the output folder ({err.strerror})") from err
    for source_path, dest, outputs in progress(jobs, show=main, desc="upscale", unit="image"):
        try:
            written = upscale_one(pipe, args, source_path, dest, outputs, report.created)
        except FileExistsError as err:
            error(str(err))
            report.failed += 1
        except (OSError, ValueError, RuntimeError) as err:
            message = str(err).splitlines()[0] if isinstance(err, ValueError) else one_line(err)
            error(f"{source_path}: {message}")
            report.failed += 1
        except MemoryError:  # Pillow's, for a result larger than memory (`--width 2147483647`); torch's: RuntimeError
            error(f"{source_path}: out of memory (MemoryError): ask for a smaller output, or a smaller --tile-size")
            report.failed += 1
        else:
            report.written += bool(written)
            report.skipped += not written
            if args.verbose:
                for out in written:
                    note(f"{tag}wrote {out}")


def launched_processes() -> int:
    """How many processes `accelerate launch` or `torchrun` started (`WORLD_SIZE`); 1 when not launched."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1
