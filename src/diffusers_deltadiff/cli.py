"""`deltadiff`: upscale images, and evaluate models with the paper's protocol.

    deltadiff upscale photo.jpg holiday/ 'scans/**/*.png' -o upscaled/
    deltadiff evaluate --hr Set14/ --model path/to/model --scale 4
    deltadiff ablate --hr Set14/ --model path/to/model --eta-start 0.01,0.04 --eta-end 0.9,0.99 --steps 1,2,4

Errors are one line each, naming the file and the problem; other files are still processed and the exit code is
non-zero at the end (1: some files failed, 2: nothing could be done, e.g. the model or output cannot be used).
"""

import argparse
import glob
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from .data import IMAGE_EXTENSIONS, list_images
from .image_utils import to_unit_tensor
from .pretrained import default_model_path, from_pretrained


FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class CLIError(Exception):
    """A one-line error for the user; `code` is the exit status."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def error(message: str):
    tqdm.write(f"error: {message}", file=sys.stderr)


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def resolve_device(name: str) -> str:
    if name != "auto":
        if name == "cuda" and not torch.cuda.is_available():
            raise CLIError("--device cuda: no CUDA device is available")
        if name == "mps" and not torch.backends.mps.is_available():
            raise CLIError("--device mps: MPS is not available")
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_pipeline(model: str | None, device: str = "cpu", dtype: str = "fp32"):
    """Load a `DeltaDiffPipeline` from a folder or Hub id (default: the shipped model), with one-line errors."""
    model = model or default_model_path()
    if model is None:
        raise CLIError("no default model is shipped with this installation: pass --model DIR")
    path = Path(model)
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        if not path.exists():
            raise CLIError(f"{model}: model folder not found")
        if not path.is_dir():
            raise CLIError(f"{model}: not a folder (pass a pipeline folder written by save_pretrained)")
        if not (path / "model_index.json").is_file():
            raise CLIError(f"{model}: not a pipeline folder (no model_index.json)")
    try:
        pipe = from_pretrained(model, dtype=DTYPES[dtype])
    except Exception as err:  # noqa: BLE001 - any loading failure becomes one line
        raise CLIError(f"{model}: cannot load the model ({one_line(err)})") from err
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def collect_inputs(inputs: list[str]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """`(file, path relative to the output folder)` for files, folders (recursive) and globs; and errors."""
    found, errors = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = list_images(item)
            if not files:
                errors.append(f"{item}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            found += [(Path(f), Path(f).relative_to(path)) for f in files]
        elif path.is_file():
            found.append((path, Path(path.name)))
        elif any(ch in item for ch in "*?["):
            matches = sorted(m for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                errors.append(f"{item}: no file matches this pattern")
            found += [(Path(m), Path(Path(m).name)) for m in matches]
        else:
            errors.append(f"{item}: no such file or folder")
    unique = list(dict.fromkeys(found))
    return unique, errors


def output_path(output: Path, relative: Path, fmt: str | None, single: bool) -> Path:
    if single and output.suffix.lower().lstrip(".") in FORMATS and not output.is_dir():
        return output
    extension = fmt or relative.suffix.lower().lstrip(".")
    return output / relative.with_suffix("." + (extension if extension in FORMATS else "png"))


def open_input(path: Path) -> PIL.Image.Image:
    if path.stat().st_size == 0:
        raise ValueError("empty file")
    try:
        image = PIL.Image.open(path)
        image.load()
    except PIL.UnidentifiedImageError as err:
        raise ValueError("not an image") from err
    except OSError as err:
        raise ValueError(f"unreadable image ({str(err).splitlines()[0]})") from err
    return image


def to_output_image(sr: torch.Tensor, source: PIL.Image.Image, fmt: str) -> PIL.Image.Image:
    """The SR result `(3, H, W)` in `[0, 1]` in the input's kind: RGB, grayscale (8/16-bit) or with its alpha."""
    array = sr.clamp(0, 1).permute(1, 2, 0).float().numpy()
    mode = source.mode
    if mode in ("I;16", "I;16B", "I;16L", "I") and fmt == "PNG":
        return PIL.Image.fromarray((array.mean(axis=-1) * 65535).round().astype(np.uint16))
    rgb = PIL.Image.fromarray((array * 255).round().astype(np.uint8))
    if mode in ("L", "I;16", "I;16B", "I;16L", "I", "1"):
        return rgb.convert("L")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in source.info):
        if fmt == "JPEG":
            return rgb
        alpha = source.convert("RGBA").getchannel("A").resize(rgb.size, PIL.Image.BICUBIC)
        out = rgb.convert("RGBA") if mode != "LA" else rgb.convert("L").convert("LA")
        out.putalpha(alpha)
        return out
    return rgb


def save_atomic(image: PIL.Image.Image, dest: Path, fmt: str, quality: int, source: PIL.Image.Image):
    """Write to a temporary file next to `dest`, then rename: a failed write never leaves a broken file."""
    kwargs = {}
    if source.info.get("icc_profile"):
        kwargs["icc_profile"] = source.info["icc_profile"]
    if source.info.get("exif"):
        kwargs["exif"] = source.info["exif"]
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(handle)
    try:
        image.save(tmp, format=fmt, **kwargs)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def steps_strip(source: torch.Tensor, steps: list[torch.Tensor]) -> PIL.Image.Image:
    """The paper's Fig. 4: the bicubic-upsampled input, then the decoded image after every reverse step."""
    from .evaluation import bicubic_resize, to_pil

    height, width = steps[-1].shape[-2:]
    start = bicubic_resize(source, (height, width))
    return to_pil(torch.cat([start, *[s.clamp(0, 1) for s in steps]], dim=-1))


def cmd_upscale(args) -> int:
    fmt = FORMATS[args.format] if args.format else None
    output = Path(args.output)
    files, errors = collect_inputs(args.inputs)
    for message in errors:
        error(message)
    if not files:
        raise CLIError("nothing to upscale", code=2 if not errors else 1)
    single = len(files) == 1 and len(args.inputs) == 1 and not Path(args.inputs[0]).is_dir()
    target_dir = output.parent if single and output.suffix.lower().lstrip(".") in FORMATS else output
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CLIError(f"{target_dir}: cannot create the output folder ({err.strerror})") from err
    if not os.access(target_dir, os.W_OK):
        raise CLIError(f"{target_dir}: output folder is not writable")

    pipe = load_pipeline(args.model, resolve_device(args.device), args.dtype)
    failures = len(errors)
    done = 0
    for source_path, relative in tqdm(files, desc="upscale", unit="image"):
        dest = output_path(output, relative, args.format, single)
        dest_fmt = fmt or FORMATS.get(dest.suffix.lower().lstrip("."), "PNG")
        if dest.exists() and not args.overwrite:
            error(f"{dest}: already exists (pass --overwrite to replace it)")
            failures += 1
            continue
        try:
            if source_path.resolve() == dest.resolve():
                raise ValueError("the output would replace the input")
            image = open_input(source_path)
            out = pipe(
                image,
                num_inference_steps=args.steps,
                output_type="pt",
                return_intermediates=args.save_steps,
                tile_size=args.tile_size,
                tile_overlap=args.tile_overlap,
                tile_batch_size=args.batch_size,
                generator=torch.Generator().manual_seed(args.seed),
            )
            sr = out.images[0].float().cpu()
            save_atomic(to_output_image(sr, image, dest_fmt), dest, dest_fmt, args.quality, image)
            if args.save_steps:
                strip = steps_strip(to_unit_tensor(image), [s[0].float().cpu() for s in out.intermediate_images])
                strip_dest = dest.with_name(dest.stem + "_steps" + dest.suffix)
                save_atomic(strip.convert("RGB"), strip_dest, dest_fmt, args.quality, PIL.Image.new("RGB", (1, 1)))
            done += 1
        except (OSError, ValueError) as err:
            error(f"{source_path}: {str(err).splitlines()[0] if isinstance(err, ValueError) else one_line(err)}")
            failures += 1
    print(f"{done} image(s) upscaled to {output}" + (f", {failures} error(s)" if failures else ""))
    return 1 if failures else 0


def parse_models(specs: list[str] | None) -> list[tuple[str, str | None]]:
    """`--model label=path` or `--model path` (label: the folder name); none = the shipped default model."""
    if not specs:
        return [("DeltaDiff (default)", None)]
    models = []
    for spec in specs:
        label, _, path = spec.partition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
        models.append((label or Path(path).name or path, path))
    return models


def float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def int_list(text: str) -> list[int]:
    return [int(v) for v in float_list(text)]


def load_eval_pairs(args):
    from .evaluation import load_pairs

    if not Path(args.hr).is_dir():
        raise CLIError(f"{args.hr}: HR folder not found")
    if args.lr and not Path(args.lr).is_dir():
        raise CLIError(f"{args.lr}: LR folder not found")
    pairs, errors = load_pairs(args.hr, args.scale, args.crop, args.lr, args.degradation, args.seed)
    for message in errors:
        error(message)
    if not pairs:
        raise CLIError(f"{args.hr}: no usable HR images")
    return pairs, errors


def check_scale(pipe, scale: int, model: str):
    if pipe.upscale_factor != scale:
        raise CLIError(f"{model}: the model upscales x{pipe.upscale_factor}, not x{scale} (--scale)")


def cmd_evaluate(args) -> int:
    from .evaluation import LPIPSMetric, evaluate

    pairs, errors = load_eval_pairs(args)
    device = resolve_device(args.device)
    pipelines = {}
    for label, path in parse_models(args.model):
        pipelines[label] = load_pipeline(path, device, args.dtype)
        check_scale(pipelines[label], args.scale, path or "default model")
    lpips_metric = LPIPSMetric() if args.lpips else None
    result = evaluate(
        pairs,
        pipelines,
        scale=args.scale,
        baseline=args.baseline == "bicubic",
        seeds=tuple(args.seeds),
        lpips_metric=lpips_metric,
        grid_images=args.grid_images,
        pipeline_kwargs={"num_inference_steps": args.steps, "tile_size": args.tile_size},
    )
    title = f"{Path(args.hr).name}, x{args.scale}, {args.degradation} LR, Y channel, crop border {args.scale}"
    if lpips_metric is None:
        result.lpips_reason = "disabled (--no-lpips)"
    try:
        result.write(args.output, title)
    except OSError as err:
        raise CLIError(f"{args.output}: cannot write the results ({err.strerror})") from err
    print(result.markdown(title))
    print(f"per-image CSV, summary and grid in {args.output}")
    return 1 if errors else 0


def cmd_ablate(args) -> int:
    from .evaluation import ablate

    pairs, errors = load_eval_pairs(args)
    pipe = load_pipeline(args.model, resolve_device(args.device), args.dtype)
    check_scale(pipe, args.scale, args.model or "default model")
    table = ablate(pairs, pipe, args.eta_start, args.eta_end, args.steps, args.scale, {"tile_size": args.tile_size})
    header = f"Schedule ablation on {Path(args.hr).name} (x{args.scale}, sampling only, model not retrained)\n\n"
    if args.output:
        try:
            Path(args.output).write_text(header + table)
        except OSError as err:
            raise CLIError(f"{args.output}: cannot write the table ({err.strerror})") from err
    print(header + table)
    return 1 if errors else 0


def add_model_options(parser):
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--tile-size", type=int, default=None, help="latent pixels; 0 never tiles (default: auto)")


def add_eval_data_options(parser):
    parser.add_argument("--hr", required=True, help="folder of HR images")
    parser.add_argument("--lr", default=None, help="folder of LR images paired by name (default: made from HR)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--crop", type=int, default=None, help="centre-crop HR to this size first")
    parser.add_argument("--degradation", default="bicubic", choices=["bicubic", "realesrgan"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the realesrgan degradation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deltadiff", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("upscale", help="upscale images")
    up.add_argument("inputs", nargs="+", help="image files, folders (recursive) or globs")
    up.add_argument("-o", "--output", required=True, help="output folder (or file, for one input)")
    up.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the shipped model)")
    up.add_argument("--steps", type=int, default=None, help="reverse steps (default: the model's)")
    up.add_argument("--tile-overlap", type=int, default=16)
    up.add_argument("--batch-size", type=int, default=4, help="tiles per UNet batch")
    up.add_argument("--format", choices=list(FORMATS), default=None, help="output format (default: the input's)")
    up.add_argument("--quality", type=int, default=95, help="JPEG / WebP quality")
    up.add_argument("--save-steps", action="store_true", help="also write the strip of every reverse step")
    up.add_argument("--seed", type=int, default=0, help="only used by stochastic (ResShift) models")
    up.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_model_options(up)
    up.set_defaults(func=cmd_upscale)

    ev = sub.add_parser("evaluate", help="PSNR / SSIM / LPIPS with the paper's protocol")
    add_eval_data_options(ev)
    ev.add_argument("--model", action="append", help="pipeline folder, or label=folder; repeat to compare")
    ev.add_argument("--baseline", default="bicubic", choices=["bicubic", "none"])
    ev.add_argument("--seeds", type=int_list, default=[0], help="inference seeds for stochastic models, e.g. 0,1,2")
    ev.add_argument("--steps", type=int, default=None)
    ev.add_argument("--no-lpips", dest="lpips", action="store_false", help="skip LPIPS")
    ev.add_argument("--grid-images", type=int, default=4)
    ev.add_argument("--output", default="deltadiff-eval", help="folder for per_image.csv, summary.md, grid.png")
    add_model_options(ev)
    ev.set_defaults(func=cmd_evaluate)

    ab = sub.add_parser("ablate", help="sweep the sampling schedule (Table II)")
    add_eval_data_options(ab)
    ab.add_argument("--model", default=None)
    ab.add_argument("--eta-start", type=float_list, default=[0.01])
    ab.add_argument("--eta-end", type=float_list, default=[0.99])
    ab.add_argument("--steps", type=int_list, default=[4])
    ab.add_argument("--output", default=None, help="markdown file for the table")
    add_model_options(ab)
    ab.set_defaults(func=cmd_ablate)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    try:
        return args.func(args)
    except CLIError as err:
        error(str(err))
        return err.code
    except KeyboardInterrupt:
        error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
