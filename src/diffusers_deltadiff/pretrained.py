"""Loading: the small pretrained x4 pipeline shipped inside the package (works offline), and the custom-pipeline
entry point that saved pipelines carry."""

from pathlib import Path


PRETRAINED_DIR = Path(__file__).parent / "pretrained"
DEFAULT_MODEL_DIR = PRETRAINED_DIR / "deltadiff-x4"
DEFAULT_SCALE = 4


def default_model_dir(scale: int = DEFAULT_SCALE) -> Path:
    """Where the shipped model of factor `scale` lives (`pretrained/deltadiff-x<scale>`), shipped or not."""
    return PRETRAINED_DIR / f"deltadiff-x{scale}"


def shipped_scales() -> list[int]:
    """The factors this installation ships a default model for."""
    found = [int(p.name.removeprefix("deltadiff-x")) for p in PRETRAINED_DIR.glob("deltadiff-x*")]
    return sorted(scale for scale in found if default_model_path(scale))


def custom_pipeline_path() -> str:
    """
    Path of the file to pass as `custom_pipeline` to `diffusers.DiffusionPipeline.from_pretrained`:

    ```py
    >>> from diffusers import DiffusionPipeline
    >>> import diffusers_deltadiff

    >>> pipe = DiffusionPipeline.from_pretrained(
    ...     "path/to/deltadiff-x4", custom_pipeline=diffusers_deltadiff.custom_pipeline_path(), trust_remote_code=True
    ... )
    ```
    """
    return str(Path(__file__).parent / "custom_pipeline" / "pipeline.py")


def default_model_path(scale: int = DEFAULT_SCALE) -> str | None:
    """Folder of the shipped default pipeline of factor `scale`, or `None` when this installation carries none."""
    folder = default_model_dir(scale)
    return str(folder) if (folder / "model_index.json").is_file() else None


def from_pretrained(path: str, dtype=None, **kwargs):
    """
    `DeltaDiffPipeline.from_pretrained(path)` with its weights cast to `dtype` (default float32: the shipped model
    is stored in float16 to keep the package small), under whichever name this diffusers takes the dtype.
    """
    import torch
    from diffusers.pipelines import pipeline_utils

    from .pipeline_deltadiff import DeltaDiffPipeline

    dtype = dtype or torch.float32
    key = "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"
    return DeltaDiffPipeline.from_pretrained(path, **{key: dtype}, **kwargs)


def load_default_pipeline(dtype=None, scale: int = DEFAULT_SCALE, **kwargs):
    """
    The shipped default pipeline of factor `scale` (x4 unless asked): `DeltaDiffPipeline.from_pretrained(<its
    folder>)`, float32 by default.
    """
    path = default_model_path(scale)
    if path is None:
        shipped = ", ".join(f"x{s}" for s in shipped_scales()) or "none"
        raise FileNotFoundError(
            f"{default_model_dir(scale)}: no shipped x{scale} model in this installation (shipped: {shipped}); "
            "pass a model folder"
        )
    return from_pretrained(path, dtype=dtype, **kwargs)
