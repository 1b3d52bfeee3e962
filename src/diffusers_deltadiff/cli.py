"""`deltadiff`: upscale images, and evaluate models with the paper's protocol.

    deltadiff upscale photo.jpg holiday/ 'scans/**/*.png' -o upscaled/
    deltadiff evaluate --hr Set14/ --model path/to/model --scale 4
    deltadiff ablate --hr Set14/ --model path/to/model --eta-start 0.01,0.04 --eta-end 0.9,0.99 --steps 1,2,4
    accelerate launch --num_processes 8 -m diffusers_deltadiff.cli upscale frames/ -o out/

Errors are one line each, naming the file and the problem; other files are still processed and the exit code is
non-zero at the end (1: some files failed, 2: nothing could be done, e.g. a bad flag, or the model or output cannot
be used). Flags are checked before the model loads. Existing files are never replaced without `--overwrite`, and an
input is never replaced at all; `--skip-existing` skips them instead of reporting them.

`upscale` started by `accelerate launch` or `torchrun` on several processes splits the inputs between them, one
device each; there, existing outputs are skipped by default, so that relaunching an interrupted run resumes it.
"""

import argparse
import contextlib
import datetime
import glob
import io
import os
import re
import secrets
import signal
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from .arguments import float_at_least, float_list, int_at_least, int_list
from .data import IMAGE_EXTENSIONS, list_images
from .image_utils import has_transparency, to_unit_tensor
from .pretrained import default_model_path, from_pretrained


FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
GRAY_MODES = ("L", "1", "I;16", "I;16B", "I;16L", "I", "F")
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


class CLIError(Exception):
    """A one-line error for the user; `code` is the exit status."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def printable(text: str) -> str:
    """
    `text` safe to print on one line: control characters (a newline in a file name could forge an `error:` line,
    an escape sequence could rewrite the terminal) and bytes that are not UTF-8 are shown escaped.
    """
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


def error(message: str):
    tqdm.write(f"error: {printable(message)}", file=sys.stderr)


def warning(message: str):
    tqdm.write(f"warning: {printable(message)}", file=sys.stderr)


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def progress(iterable=None, show: bool = True, **kwargs):
    """A progress bar on a terminal only: piped or redirected, stderr holds nothing but the error lines."""
    return tqdm(iterable, disable=None if show else True, **kwargs)


def note(message: str):
    """
    One line on stdout in a single write: lines of several processes sharing a pipe, terminal or log do not mix
    (one write of less than `PIPE_BUF` bytes is atomic). Progress bars are cleared around it.
    """
    with tqdm.external_write_mode(file=sys.stdout):
        sys.stdout.flush()
        try:
            os.write(
                sys.stdout.fileno(), (printable(message) + "\n").encode(sys.stdout.encoding or "utf-8", "replace")
            )
        except (AttributeError, OSError, ValueError):  # a stdout with no file behind it (captured, replaced)
            print(printable(message), flush=True)


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


def warn_dtype(device: str, dtype: str):
    """One warning for half precision on the CPU (diffusers would repeat its own for every model component)."""
    if device == "cpu" and dtype == "fp16":
        warning("--dtype fp16 on the CPU is slow and some layers may not support it; fp32 is the CPU's choice")


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
    pipe.to(device, silence_dtype_warnings=True)  # `warn_dtype` says it once
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_steps(pipe, steps: list[int | None], model: str):
    """`--steps` against the model's chain, once, before any image is processed."""
    most = pipe.scheduler.config.num_train_timesteps
    for value in steps:
        if value is not None and value > most:
            raise CLIError(f"--steps {value}: {model} runs at most {most} steps (pass 1 to {most})")


def glob_root(pattern: str) -> tuple[Path, str]:
    """`(folder, rest)`: the literal folder a glob starts from and the pattern below it."""
    parts = Path(pattern).parts
    literal = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return Path(*parts[:literal]) if literal else Path("."), str(Path(*parts[literal:]))


def glob_files(pattern: str) -> tuple[Path, list[Path]]:
    """
    The files matching a glob, and its literal folder. `**` is walked like a folder argument: symbolic links to
    folders are not followed, so a link back up the tree cannot make it loop.
    """
    root, rest = glob_root(pattern)
    if not rest or rest == ".":
        return root, [root] if root.is_file() else []
    return root, sorted(p for p in root.glob(rest) if p.is_file())


def is_inside(path: Path, folder: Path) -> bool:
    """Whether `path` lies in `folder` or below it (both resolved)."""
    return path == folder or folder in path.parents


def collect_inputs(inputs: list[str], output: Path | None = None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """
    `(file, path relative to the output folder)` for files, folders (recursive) and globs; and errors.

    Files already in `output` are not taken from a folder or glob that contains it, so that a rerun does not upscale
    the previous run's results.
    """
    found, errors, skipped = [], [], 0
    named, output = output, output.resolve() if output is not None else None

    def keep(files: list[Path], root: Path) -> list[Path]:
        nonlocal skipped
        if output is None or output == root.resolve() or not is_inside(output, root.resolve()):
            return files
        kept = [f for f in files if not is_inside(f.resolve(), output)]
        skipped += len(files) - len(kept)
        return kept

    for item in inputs:
        path = Path(item)
        if not item:
            errors.append("'': empty path")
        elif path.is_dir():
            files = keep([Path(f) for f in list_images(item)], path)
            if not files:
                errors.append(f"{item}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            found += [(f, f.relative_to(path)) for f in files]
        elif path.is_file():
            found.append((path, Path(path.name)))
        elif path.exists():
            errors.append(f"{item}: not a regular file (a device, pipe or socket)")
        elif glob.has_magic(item):
            root, matches = glob_files(item)
            matches = keep(matches, root)
            if not matches:
                errors.append(f"{item}: no file matches this pattern")
            found += [(m, Path(m.name)) for m in matches]
        else:
            errors.append(f"{item}: no such file or folder")
    if skipped:
        warning(f"{named}: {skipped} file(s) in the output folder are not taken as inputs")
    unique, seen = [], set()
    for source, relative in found:  # one file named twice (`a.png ./a.png`, a folder and a file in it) runs once
        if (source.resolve(), relative) not in seen:
            seen.add((source.resolve(), relative))
            unique.append((source, relative))
    return unique, errors


def image_extension(path: Path) -> str | None:
    """The lower-case extension of `path` when it names an image file Pillow knows, else `None`."""
    suffix = path.suffix.lower()
    return suffix.lstrip(".") if suffix in PIL.Image.registered_extensions() else None


def output_file(output: Path) -> bool:
    """Whether `-o` names one image file rather than a folder."""
    return image_extension(output) is not None and not output.is_dir()


def output_path(output: Path, relative: Path, fmt: str | None, single: bool) -> Path:
    if single and output_file(output):
        return output
    extension = fmt or relative.suffix.lower().lstrip(".")
    return output / relative.with_suffix("." + (extension if extension in FORMATS else "png"))


def steps_path(dest: Path) -> Path:
    return dest.with_name(dest.stem + "_steps" + dest.suffix)


def check_output_flags(args, single: bool, count: int):
    """`-o` and `--format` together, before the model loads: a file name must fit the run and the format."""
    output = Path(args.output)
    if not output_file(output):
        return
    extension = image_extension(output)
    if not single:
        raise CLIError(f"-o {output}: a file name, but there are {count} inputs: pass a folder")
    if extension not in FORMATS:
        raise CLIError(f"-o {output}: cannot write .{extension} files (use .png, .jpg, .jpeg or .webp, or a folder)")
    if args.format and FORMATS[args.format] != FORMATS[extension]:
        raise CLIError(
            f"-o {output}: the name says {FORMATS[extension]} but --format {args.format} asks for "
            f"{FORMATS[args.format]} (drop --format, or name the file {output.with_suffix('.' + args.format)})"
        )


def missing_folders(folder: Path) -> tuple[Path, list[Path]]:
    """The nearest existing folder at or above `folder`, and the folders below it that do not exist yet (deepest first)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return folder, missing


def name_max(folder: Path) -> int:
    """The longest file name the file system of `folder` (or of its nearest existing parent) accepts."""
    try:
        return os.pathconf(missing_folders(folder)[0], "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def plan_outputs(files, output: Path, args, single: bool) -> tuple[list[tuple[Path, Path, list[Path]]], list[str]]:
    """
    `(source, dest, outputs)` for every input that can be written, and an error for every one that cannot, decided
    before anything is written: an output that would replace an input of the run (even with `--overwrite`), two
    inputs with one output, an existing output without `--overwrite` or `--skip-existing`, a name too long.

    With `--skip-existing`, `outputs` lists only the files still missing, and an input whose files all exist is in
    neither list (skipped).
    """
    inputs = {source.resolve(): source for source, _ in files}
    claimed: dict[Path, Path] = {}
    jobs, errors = [], []
    for source, relative in files:
        dest = output_path(output, relative, args.format, single)
        outputs = [dest, steps_path(dest)] if args.save_steps else [dest]
        problem = None
        for out in outputs:
            resolved = out.resolve()
            if resolved in inputs:
                problem = f"{source}: the output {out} would replace the input {inputs[resolved]}"
            elif resolved in claimed:
                problem = (
                    f"{source}: its output {out} is also the output of {claimed[resolved]} "
                    "(same name: upscale them into separate folders)"
                )
            elif out.is_symlink() or out.exists():
                if not (args.overwrite or args.skip_existing):
                    problem = f"{out}: already exists (pass --overwrite to replace it)"
                elif not out.is_file():
                    problem = f"{out}: exists and is not a file"
            elif len(os.fsencode(out.name)) > name_max(out.parent):
                problem = f"{source}: the output name {out.name} is too long for this file system"
            if problem:
                break
        if problem:
            errors.append(problem)
            continue
        claimed.update({out.resolve(): source for out in outputs})
        missing = missing_outputs(outputs, args)
        if missing:
            jobs.append((source, dest, missing))
    return jobs, errors


def missing_outputs(outputs: list[Path], args) -> list[Path]:
    """The outputs to write: all of them, or with `--skip-existing` those that do not exist."""
    if not args.skip_existing:
        return outputs
    return [out for out in outputs if not (out.is_symlink() or out.exists())]


def check_output_folder(folder: Path):
    """That `folder` exists or can be made, without making it (nothing is left behind if the run stops early)."""
    existing = missing_folders(folder)[0]
    if not existing.is_dir():
        raise CLIError(f"{folder}: cannot create the output folder ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CLIError(f"{folder}: output folder is not writable")


def make_folders(folder: Path, created: list[Path]):
    """`mkdir -p`, remembering the folders it made in `created` (to remove them again if they stay empty)."""
    for path in reversed(missing_folders(folder)[1]):
        path.mkdir(exist_ok=True)
        created.append(path)


def remove_empty(created: list[Path]):
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:
            pass


def open_input(path: Path, max_pixels: int | None = None) -> PIL.Image.Image:
    """Open and decode an image, every problem as a `ValueError` with a one-line message."""
    if path.stat().st_size == 0:
        raise ValueError("empty file")
    limit = PIL.Image.MAX_IMAGE_PIXELS
    PIL.Image.MAX_IMAGE_PIXELS = max_pixels or None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(path)
            tiles = list(getattr(image, "tile", None) or [])
            image.load()
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as err:
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{pixels.group(1)} pixels" if pixels else "too many pixels"
        raise ValueError(
            f"image too large ({size}, more than --max-pixels {max_pixels}): pass a larger --max-pixels (0: no "
            "limit) to upscale it on purpose"
        ) from err
    except PIL.UnidentifiedImageError as err:
        raise ValueError("not an image") from err
    except OSError as err:
        raise ValueError(f"unreadable image ({str(err).splitlines()[0]})") from err
    finally:
        PIL.Image.MAX_IMAGE_PIXELS = limit
    if image.mode in ("RGB", "RGBA") and any(";16" in str(getattr(tile, "args", "")) for tile in tiles):
        warning(f"{path}: 16 bits per colour channel, read as 8 bits (Pillow holds 16-bit colour only as gray)")
    if image.mode == "CMYK":
        image = cmyk_to_rgb(image, path)
    return image


def icc_profile(icc: bytes):
    """An ICC profile's `ImageCms.ImageCmsProfile`; `None` when it cannot be parsed."""
    try:
        from PIL import ImageCms

        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except Exception:  # noqa: BLE001 - an unreadable profile is reported by the caller
        return None


def icc_colour_space(icc: bytes) -> str | None:
    """`RGB`, `GRAY`, `CMYK`, ... of an ICC profile; `None` when it cannot be parsed."""
    profile = icc_profile(icc)
    return profile.profile.xcolor_space.strip() if profile is not None else None


def cmyk_to_rgb(image: PIL.Image.Image, path: Path) -> PIL.Image.Image:
    """A CMYK image as sRGB through its own ICC profile when it has a CMYK one (the profile is then used up)."""
    icc = image.info.get("icc_profile")
    info = {k: v for k, v in image.info.items() if k != "icc_profile"}
    source = icc_profile(icc) if icc else None
    if source is not None and source.profile.xcolor_space.strip() == "CMYK":
        try:
            from PIL import ImageCms

            rgb = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            rgb.info = info
            return rgb
        except Exception as err:  # noqa: BLE001 - fall back to Pillow's plain conversion, said once
            warning(f"{path}: its CMYK profile could not be applied ({one_line(err)}): plain CMYK to RGB")
    rgb = image.convert("RGB")
    rgb.info = info
    return rgb


def needs_float_output(source: PIL.Image.Image, fmt: str) -> bool:
    """16-bit PNG outputs need more than the pipeline's 8-bit PIL output."""
    return source.mode in HIGH_DEPTH_MODES and fmt == "PNG"


def to_output_image(sr: torch.Tensor | PIL.Image.Image, source: PIL.Image.Image, fmt: str) -> PIL.Image.Image:
    """
    The SR result (an RGB PIL image, or `(3, H, W)` in `[0, 1]`, needed for 16-bit outputs) in the input's kind: RGB,
    grayscale (8-bit, or 16-bit PNG for 16-bit and float inputs) or with its alpha.
    """
    mode = source.mode
    if needs_float_output(source, fmt):
        array = sr.clamp(0, 1).permute(1, 2, 0).float().numpy()
        return PIL.Image.fromarray((array.mean(axis=-1) * 65535).round().astype(np.uint16))
    if isinstance(sr, PIL.Image.Image):
        rgb = sr
    else:
        rgb = PIL.Image.fromarray((sr.clamp(0, 1).permute(1, 2, 0).float().numpy() * 255).round().astype(np.uint8))
    if has_transparency(source) and fmt != "JPEG":
        alpha = source.convert("RGBA").getchannel("A").resize(rgb.size, PIL.Image.BICUBIC)
        out = rgb.convert("L").convert("LA") if mode in ("LA", "L", "1") else rgb.convert("RGBA")
        out.putalpha(alpha)
        return out
    if mode in GRAY_MODES:
        return rgb.convert("L")
    return rgb


def save_atomic(image: PIL.Image.Image, dest: Path, fmt: str, quality: int, source: PIL.Image.Image, created=None):
    """
    Write to a temporary file next to `dest`, then rename: a failed write never leaves a broken file. The temporary
    name is short (any legal `dest` name works) and the file is made with the umask's permissions, like any other.
    """
    metadata = output_metadata(image, source, dest)
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    make_folders(dest.parent, created if created is not None else [])
    tmp = dest.parent / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}{TMP_SUFFIX}"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        if not (metadata and saves_readably(image, tmp, fmt, {**options, **metadata})):
            if metadata:
                warning(f"{dest}: the input's metadata ({', '.join(metadata)}) made an unreadable file: dropped")
            image.save(tmp, format=fmt, **options)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


TMP_PREFIX, TMP_SUFFIX = ".deltadiff-", ".tmp"  # `.deltadiff-<pid>-<random>.tmp`, next to the output it becomes


def remove_stale_temporaries(folders):
    """
    Remove the temporary files of writes that were killed (SIGKILL, a crash, a power cut) in `folders`: this naming
    pattern only, and only when the process named in it is gone (older names, without a process id, are stale).
    """
    for folder in folders:
        try:
            candidates = [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX) and p.name.endswith(TMP_SUFFIX)]
        except OSError:
            continue
        for path in candidates:
            owner = path.name[len(TMP_PREFIX) : -len(TMP_SUFFIX)].split("-")[0]
            if owner.isdigit() and int(owner) != os.getpid() and process_alive(int(owner)):
                continue
            with contextlib.suppress(OSError):
                path.unlink()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def output_metadata(image: PIL.Image.Image, source: PIL.Image.Image, dest: Path) -> dict:
    """
    The input's metadata that the output can carry: EXIF as it is (the pixels keep their stored orientation, so its
    orientation tag still holds), and the ICC profile only when it describes the output's colour space (a CMYK or
    unreadable profile on an RGB output would change its colours, so it is dropped with a warning).
    """
    metadata = {}
    if source.info.get("exif"):
        metadata["exif"] = source.info["exif"]
    icc = source.info.get("icc_profile")
    if icc:
        space = icc_colour_space(icc)
        wanted = "GRAY" if image.mode in ("L", "LA", "I;16", "I") else "RGB"
        if space == wanted:
            metadata["icc_profile"] = icc
        else:
            warning(
                f"{dest}: the input's ICC profile ({space or 'unreadable'}) does not fit a {wanted} output: dropped"
            )
    return metadata


def saves_readably(image: PIL.Image.Image, path: Path, fmt: str, kwargs: dict) -> bool:
    """Save, then read the file back with Pillow's defaults; `False` (nothing raised) when either fails."""
    try:
        image.save(path, format=fmt, **kwargs)
        with PIL.Image.open(path) as check:
            check.load()
        return True
    except (OSError, ValueError, SyntaxError):
        return False


def steps_strip(source: torch.Tensor, steps: list[torch.Tensor]) -> PIL.Image.Image:
    """The paper's Fig. 4: the bicubic-upsampled input, then the decoded image after every reverse step."""
    from .image_utils import bicubic_resize, to_pil

    height, width = steps[-1].shape[-2:]
    start = bicubic_resize(source, (height, width))
    return to_pil(torch.cat([start, *[s.clamp(0, 1) for s in steps]], dim=-1))


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
    single = len(files) == 1 and len(args.inputs) == 1 and not Path(args.inputs[0]).is_dir()
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
    """The pipeline for `upscale`, its `--steps` checked."""
    if warn:
        warn_dtype(device, args.dtype)
    pipe = load_pipeline(args.model, device, args.dtype)
    check_steps(pipe, [args.steps], args.model or "the default model")
    return pipe


def upscale_one(pipe, args, source_path: Path, dest: Path, outputs: list[Path], created: list[Path]) -> list[Path]:
    """Upscale one input and write those of `dest` and its steps strip that are in `outputs`; the files written."""
    if args.skip_existing:
        outputs = missing_outputs(outputs, args)  # another run may have made some since the plan
        if not outputs:
            return []
    elif not args.overwrite and any(out.exists() for out in outputs):  # made since the plan
        raise FileExistsError(f"{dest}: already exists (pass --overwrite to replace it)")
    fmt = FORMATS[args.format] if args.format else FORMATS.get(dest.suffix.lower().lstrip("."), "PNG")
    image = open_input(source_path, args.max_pixels)
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        warning(f"{source_path}: {frames} frames, only the first one is upscaled")
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
        tile_overlap=args.tile_overlap,
        tile_batch_size=args.batch_size,
        generator=torch.Generator().manual_seed(args.seed),
    )
    if dest in outputs:
        sr = out.images[0].float().cpu() if as_tensor else out.images[0]
        save_atomic(to_output_image(sr, image, fmt), dest, fmt, args.quality, image, created)
    if strip_path in outputs:
        strip = steps_strip(to_unit_tensor(image), [s[0].float().cpu() for s in out.intermediate_images])
        save_atomic(strip.convert("RGB"), strip_path, fmt, args.quality, PIL.Image.new("RGB", (1, 1)), created)
    return outputs


def upscale_jobs(args, plan: UpscalePlan, jobs, device: str, report: UpscaleReport, main: bool = True, tag: str = ""):
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


def process_state(args):
    """
    Accelerate's `PartialState` of this process. Where accelerate finds no accelerator backend (a CPU-only machine,
    or `--device cpu`), the processes form a gloo group on the CPU.
    """
    try:
        from accelerate import PartialState
    except ImportError as err:
        raise CLIError("upscaling on several processes needs accelerate: pip install accelerate") from err
    # the group's collectives (the plan's broadcast, the reports' gather) wait for the slowest process: NCCL's
    # default of 10 minutes would abort a process with no work, or one done early, during a long run
    timeout = datetime.timedelta(minutes=args.process_timeout)
    state = PartialState(cpu=args.device == "cpu", timeout=timeout)
    if state.num_processes == 1:  # `torchrun` on a machine without GPU: accelerate wants `cpu=True` for gloo
        PartialState._reset_state()
        state = PartialState(cpu=True, timeout=timeout)
    if state.num_processes != launched_processes():
        raise CLIError(f"WORLD_SIZE is {launched_processes()} but accelerate set up {state.num_processes} process(es)")
    return state


def process_device(args, state) -> str:
    """
    This process's device: accelerate's (`cuda:LOCAL_RANK` on GPUs) unless `--device` names another kind. Where the
    group runs on the CPU (gloo) but the machine has an accelerator accelerate cannot group (Apple's MPS), `auto`
    still upscales on it: the group only carries the plan and the reports.
    """
    if args.device == "auto" and state.device.type == "cpu":
        return resolve_device("auto")
    if args.device in ("auto", state.device.type):
        return str(state.device)
    return resolve_device(args.device)


def share_of_jobs(state, jobs: list) -> list:
    """This process's part of `jobs`: consecutive runs of nearly equal length, in process order; every job once."""
    with state.split_between_processes(jobs) as share:
        return list(share)


def cmd_upscale_distributed(args) -> int:
    """
    `upscale` on every process of an `accelerate launch` / `torchrun` group. The main process plans (errors about
    inputs are printed once) and sends the plan to all; each upscales its share on its own device, printing its
    errors; the main process prints one summary. The exit code, the same on every process, is non-zero if any
    process had an error. Existing outputs are skipped unless `--overwrite`, so a relaunch resumes.
    """
    from accelerate.utils import broadcast_object_list, gather_object

    args.skip_existing = not args.overwrite
    state = process_state(args)
    main = state.is_main_process
    plan = None
    if main:
        try:
            plan = plan_upscale(args)
        except CLIError as err:
            error(str(err))
            plan = (str(err), err.code)
    plan = broadcast_object_list([plan])[0]
    if not isinstance(plan, UpscalePlan):
        return plan[1]
    report = UpscaleReport(skipped=plan.skipped, failed=plan.failures) if main else UpscaleReport()
    jobs = share_of_jobs(state, plan.jobs)
    if jobs:
        try:
            device = process_device(args, state)
            upscale_jobs(args, plan, jobs, device, report, main, tag=f"[process {state.process_index}] ")
        except CLIError as err:
            report.fatal = (str(err), err.code)
    reports = gather_object([report])
    if main:
        finish_distributed(plan, reports)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return max(r.code() for r in reports)


def finish_distributed(plan: UpscalePlan, reports: list[UpscaleReport]):
    """On the main process, once all are done: the errors that stopped a process, empty folders removed, summary."""
    for message in dict.fromkeys(r.fatal[0] for r in reports if r.fatal):
        error(message)
    created = {path for r in reports for path in r.created}
    remove_empty(sorted(created, key=lambda path: len(path.parts)))
    written, skipped, failed = (sum(getattr(r, key) for r in reports) for key in ("written", "skipped", "failed"))
    print(upscale_summary(plan.output, written, skipped, failed, [r.written for r in reports]), flush=True)


def parse_models(specs: list[str] | None) -> list[tuple[str, str | None]]:
    """`--model label=path` or `--model path` (label: the folder name); none = the shipped default model."""
    if not specs:
        return [("DeltaDiff (default)", None)]
    models = []
    for spec in specs:
        label, _, path = spec.partition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
        models.append((label or Path(path).name or path, path))
    return models


def eta_list(text: str) -> list[float]:
    values = float_list(text)
    for value in values:
        if not 0 < value <= 1:  # also NaN
            raise argparse.ArgumentTypeError(f"every eta must be in (0, 1], got {value:g}")
    return values


def seed_list(text: str) -> list[int]:
    return int_list(text, minimum=0)


def path_text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty (pass a path; '.' for the current folder)")
    return text


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
    warn_dtype(device, args.dtype)
    pipelines = {}
    for label, path in parse_models(args.model):
        pipelines[label] = load_pipeline(path, device, args.dtype)
        check_scale(pipelines[label], args.scale, path or "default model")
        check_steps(pipelines[label], [args.steps], path or "the default model")
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
    device = resolve_device(args.device)
    warn_dtype(device, args.dtype)
    pipe = load_pipeline(args.model, device, args.dtype)
    check_scale(pipe, args.scale, args.model or "default model")
    check_steps(pipe, args.steps, args.model or "the default model")
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
    parser.add_argument(
        "--tile-size", type=int_at_least(0), default=None, help="latent pixels; 0 never tiles (default: auto)"
    )


def add_eval_data_options(parser):
    parser.add_argument("--hr", required=True, type=path_text, help="folder of HR images")
    parser.add_argument(
        "--lr", default=None, type=path_text, help="folder of LR images paired by name (default: made from HR)"
    )
    parser.add_argument("--scale", type=int_at_least(1), default=4)
    parser.add_argument("--crop", type=int_at_least(1), default=None, help="centre-crop HR to this size first")
    parser.add_argument("--degradation", default="bicubic", choices=["bicubic", "realesrgan"])
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the realesrgan degradation")


class ArgumentParser(argparse.ArgumentParser):
    """Flag errors as one line like every other error (exit status 2), naming the flag."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def flag_problem(args) -> str | None:
    """Checks that involve several flags, before anything is read, made or loaded; the problem, if any."""
    if args.command == "ablate":
        for eta_start in args.eta_start:
            for eta_end in args.eta_end:
                if eta_start > eta_end:
                    return (
                        f"--eta-start {eta_start:g} is larger than --eta-end {eta_end:g} (every combination is run, "
                        "and each needs eta_1 <= eta_T)"
                    )
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="deltadiff", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    # listed for --help; `main` hands `deltadiff demo ...` to the demo's own parser (see `deltadiff demo --help`)
    sub.add_parser("demo", help="open the Gradio demo in a browser (pip install 'diffusers-deltadiff[demo]')")

    up = sub.add_parser("upscale", help="upscale images")
    up.add_argument("inputs", nargs="+", help="image files, folders (recursive) or globs")
    up.add_argument(
        "-o", "--output", required=True, type=path_text, help="output folder (or file .png/.jpg/.webp, for one input)"
    )
    up.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the shipped model)")
    up.add_argument("--steps", type=int_at_least(1), default=None, help="reverse steps (default: the model's)")
    up.add_argument(
        "--tile-overlap",
        type=int_at_least(0),
        default=None,
        help="context each tile sees around itself, latent pixels (default: the model's tile_context)",
    )
    up.add_argument(
        "--batch-size", type=int_at_least(1), default=None, help="tiles per UNet batch (default: 1 on CPU, 4 on GPU)"
    )
    up.add_argument("--format", choices=list(FORMATS), default=None, help="output format (default: the input's)")
    up.add_argument("--quality", type=int_at_least(0, 100), default=95, help="JPEG / WebP quality, 0 to 100")
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
        type=float_at_least(0.1),
        default=24 * 60,
        help="minutes a process of a torchrun / accelerate group waits for the others (default: one day; NCCL's own "
        "10 minutes would stop a process that finishes early)",
    )
    up.add_argument(
        "--max-pixels",
        type=int_at_least(0),
        default=PIL.Image.MAX_IMAGE_PIXELS,
        help="refuse inputs with more pixels, against decompression bombs (default: Pillow's %(default)s; 0: no limit)",
    )
    add_model_options(up)
    up.set_defaults(func=cmd_upscale)

    ev = sub.add_parser("evaluate", help="PSNR / SSIM / LPIPS with the paper's protocol")
    add_eval_data_options(ev)
    ev.add_argument("--model", action="append", help="pipeline folder, or label=folder; repeat to compare")
    ev.add_argument("--baseline", default="bicubic", choices=["bicubic", "none"])
    ev.add_argument("--seeds", type=seed_list, default=[0], help="inference seeds for stochastic models, e.g. 0,1,2")
    ev.add_argument("--steps", type=int_at_least(1), default=None)
    ev.add_argument("--no-lpips", dest="lpips", action="store_false", help="skip LPIPS")
    ev.add_argument("--grid-images", type=int_at_least(0), default=4)
    ev.add_argument(
        "--output", default="deltadiff-eval", type=path_text, help="folder for per_image.csv, summary.md, grid.png"
    )
    add_model_options(ev)
    ev.set_defaults(func=cmd_evaluate)

    ab = sub.add_parser("ablate", help="sweep the sampling schedule (Table II)")
    add_eval_data_options(ab)
    ab.add_argument("--model", default=None)
    ab.add_argument("--eta-start", type=eta_list, default=[0.01], help="eta_1 values in (0, 1], comma-separated")
    ab.add_argument("--eta-end", type=eta_list, default=[0.99], help="eta_T values in (0, 1], comma-separated")
    ab.add_argument("--steps", type=int_list, default=[4], help="step counts, comma-separated")
    ab.add_argument("--output", default=None, type=path_text, help="markdown file for the table")
    add_model_options(ab)
    ab.set_defaults(func=cmd_ablate)
    return parser


def run_demo(argv: list[str]) -> int:
    """`deltadiff demo [...]`: the Gradio demo (`diffusers_deltadiff.demo`), which parses its own flags."""
    try:
        from . import demo
    except ImportError as err:
        error(f"the demo needs Gradio ({one_line(err)}): pip install 'diffusers-deltadiff[demo]'")
        return 2
    try:
        return demo.main(argv)
    except SystemExit as exit:  # a flag error (2) or --help (0)
        return exit.code


def terminate_like_interrupt():
    """SIGTERM (a batch system's stop, `kill`) unwinds like Ctrl-C: temporary files are removed, the exit is 143."""

    def handler(signum, frame):
        raise Terminated()

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, handler)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process was, so that every `finally` runs."""


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:
        return run_demo(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # a flag error (2) or --help (0)
        return exit.code
    problem = flag_problem(args)
    if problem:
        error(f"{problem} (see `deltadiff {args.command} --help`)")
        return 2
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    terminate_like_interrupt()
    try:
        return args.func(args)
    except CLIError as err:
        error(str(err))
        return err.code
    except Terminated:
        error("terminated")
        return 143
    except KeyboardInterrupt:
        error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
