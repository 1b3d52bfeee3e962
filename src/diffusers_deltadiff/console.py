"""What the command line and the demo say and load: one-line errors and warnings, atomic stdout lines, progress bars
that only a terminal sees, the device, and the pipeline with its `--steps` checked.
"""

import contextlib
import logging
import os
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .pretrained import (
    DEFAULT_SCALE,
    DENOISE_MODELS,
    DENOISE_SCALE,
    SHIPPED_MODELS,
    default_model_path,
    from_pretrained,
    model_path,
    shipped_models,
    shipped_scales,
)


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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


class DropErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextlib.contextmanager
def diffusers_errors_unlogged():
    """diffusers' own error log lines left out (a missing weights file is logged, then raised): warnings stay."""
    logger, drop = logging.getLogger("diffusers"), DropErrors()
    for handler in logger.handlers:
        handler.addFilter(drop)
    try:
        yield
    finally:
        for handler in logger.handlers:
            handler.removeFilter(drop)


def quiet_diffusers():
    """diffusers' own progress bars (loading, downloading) off: the command line shows its own."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()


def resolve_model(model: str | None, scale: int | None = None) -> str:
    """
    What `--model` names, as a pipeline folder or a Hub id: a shipped model's short name (`x4`, `x2`, `x4-real`; a
    folder of that name in the working directory wins), a folder (checked: a pipeline folder), a Hub id, or, for
    `None`, the shipped model of factor `scale` (x4 unless given). One-line errors ([`CLIError`]).
    """
    if model in SHIPPED_MODELS and not Path(model).exists():
        name, model = model, model_path(model)
        if model is None:
            raise CLIError(
                f"no {name} model is shipped with this installation (shipped: {', '.join(shipped_models())})"
            )
    if model is None:
        model = default_model_path(scale or DEFAULT_SCALE)
        if model is None:
            shipped = ", ".join(f"x{s}" for s in shipped_scales()) or "none"
            raise CLIError(
                f"no x{scale or DEFAULT_SCALE} model is shipped with this installation (shipped: {shipped}): "
                "pass --model DIR"
            )
    path = Path(model)
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        if not path.exists():
            raise CLIError(f"{model}: model folder not found")
        if not path.is_dir():
            raise CLIError(f"{model}: not a folder (pass a pipeline folder written by save_pretrained)")
        if not (path / "model_index.json").is_file():
            raise CLIError(f"{model}: not a pipeline folder (no model_index.json)")
    return model


def load_pipeline(
    model: str | None, device: str = "cpu", dtype: str = "fp32", scale: int | None = None, denoise: float | None = None
):
    """
    Load a `DeltaDiffPipeline` from a folder, Hub id or shipped model's short name ([`resolve_model`]), with
    one-line errors; with `scale`, a model of another factor is an error naming both. `denoise` blends the
    clean and the real-world x4 models ([`~blending.blend_pipelines`]).
    """
    if denoise is not None:
        return load_blend(model, device, dtype, scale, denoise)
    model = resolve_model(model, scale)
    quiet_diffusers()
    try:
        with diffusers_errors_unlogged():  # a failure is said once, in the error line below
            pipe = from_pretrained(model, dtype=DTYPES[dtype])
    except Exception as err:  # noqa: BLE001 - any loading failure becomes one line
        raise CLIError(f"{model}: cannot load the model ({one_line(err)})") from err
    check_factor(model, pipe.upscale_factor, scale)
    pipe.to(device, silence_dtype_warnings=True)  # `warn_dtype` says it once
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_blend(model: str | None, device: str, dtype: str, scale: int | None, denoise: float):
    """The `--denoise` pipeline: x4 (0) blended into x4-real (1), with the one-line errors of [`load_pipeline`]."""
    from .blending import blend_pipelines

    if model is not None and model not in DENOISE_MODELS:
        raise CLIError(f"--denoise blends the shipped {' and '.join(DENOISE_MODELS)} models: leave --model out")
    if scale not in (None, DENOISE_SCALE):
        raise CLIError(f"--denoise blends the shipped x{DENOISE_SCALE} models: --scale {scale} has none")
    paths = [model_path(name) for name in DENOISE_MODELS]  # the shipped ones: never a folder of that name here
    for name, path in zip(DENOISE_MODELS, paths):
        if path is None:
            shipped = ", ".join(shipped_models()) or "none"
            raise CLIError(
                f"--denoise needs the {name} model, not shipped with this installation (shipped: {shipped})"
            )
    clean, real = (load_pipeline(path, device, dtype, scale) for path in paths)
    try:
        return blend_pipelines(clean, real, denoise)
    except ValueError as err:
        raise CLIError(f"--denoise: {err}") from err


def check_factor(model: str, factor: int, scale: int | None):
    """`--scale` against the factor of `model`, a one-line error where they differ."""
    if scale is not None and factor != scale:
        raise CLIError(f"{model}: the model upscales x{factor}, not x{scale} (--scale {scale})")


def check_steps(pipe, steps: list[int | None], model: str):
    """`--steps` against the model's chain, once, before any image is processed."""
    check_step_counts(pipe.scheduler.config.num_train_timesteps, steps, model)


def check_step_counts(most: int, steps: list[int | None], model: str):
    """`--steps` values against a chain of `most` steps (`num_train_timesteps`)."""
    for value in steps:
        if value is not None and value > most:
            raise CLIError(f"--steps {value}: {model} runs at most {most} steps (pass 1 to {most})")
