"""Loading: the small pretrained x4 pipeline shipped inside the package (works offline), and the custom-pipeline
entry point that saved pipelines carry."""

from pathlib import Path


DEFAULT_MODEL_DIR = Path(__file__).parent / "pretrained" / "deltadiff-x4"


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


def default_model_path() -> str | None:
    """Folder of the shipped default pipeline, or `None` when this build of the package carries none."""
    return str(DEFAULT_MODEL_DIR) if (DEFAULT_MODEL_DIR / "model_index.json").is_file() else None


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


def load_default_pipeline(dtype=None, **kwargs):
    """The shipped default x4 pipeline: `DeltaDiffPipeline.from_pretrained(<its folder>)`, float32 by default."""
    path = default_model_path()
    if path is None:
        raise FileNotFoundError(f"{DEFAULT_MODEL_DIR}: no default model in this installation; pass a model folder")
    return from_pretrained(path, dtype=dtype, **kwargs)
