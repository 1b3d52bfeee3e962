"""
Loading: the small pretrained pipelines shipped inside the package (they work offline), by short name, and the
custom-pipeline entry point that saved pipelines carry.

| name | folder | what |
|---|---|---|
| `x4` | `pretrained/deltadiff-x4` | x4, clean inputs (bicubic downscales, camera-sharp photos) |
| `x2` | `pretrained/deltadiff-x2` | x2, clean inputs |
| `x4-real` | `pretrained/deltadiff-x4-real` | x4, real inputs: blur, noise, JPEG, aliased thumbnails (`realworld` mixes) |

`DEFAULT_MODELS` says which one a factor picks by default; `denoise` blends `x4` (0) into `x4-real` (1).
"""

from pathlib import Path


PRETRAINED_DIR = Path(__file__).parent / "pretrained"
SHIPPED_MODELS = {"x4": "deltadiff-x4", "x2": "deltadiff-x2", "x4-real": "deltadiff-x4-real"}
DEFAULT_SCALE = 4
# the model each factor runs by default: x4-real's worst gain over bicubic, across the clean benchmarks and the
# real-world sets, is the larger (the table in docs/performance.md, "Which model by default")
DEFAULT_MODELS = {4: "x4-real", 2: "x2"}
DENOISE_MODELS = ("x4", "x4-real")  # denoise 0 and 1
DENOISE_SCALE = 4


def model_dir(name: str) -> Path:
    """Where the shipped model `name` (a key of `SHIPPED_MODELS`) lives, shipped or not."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"unknown shipped model {name!r}: choose one of {', '.join(SHIPPED_MODELS)}")
    return PRETRAINED_DIR / SHIPPED_MODELS[name]


def model_path(name: str) -> str | None:
    """Folder of the shipped model `name`, or `None` when this installation does not carry it."""
    folder = model_dir(name)
    return str(folder) if (folder / "model_index.json").is_file() else None


def shipped_models() -> list[str]:
    """The short names of the models this installation carries, the default x4 model first."""
    names = [name for name in SHIPPED_MODELS if model_path(name)]
    default = default_model_name(DEFAULT_SCALE)
    return sorted(names, key=lambda name: name != default)  # the rest in table order


def default_model_name(scale: int = DEFAULT_SCALE) -> str | None:
    """
    The short name of the model factor `scale` runs by default: `DEFAULT_MODELS[scale]` where this installation
    carries it, else another shipped model of that factor (`x4` where only it is shipped), else `None`.
    """
    preferred = DEFAULT_MODELS.get(scale)
    if preferred and model_path(preferred):
        return preferred
    same_factor = [name for name in SHIPPED_MODELS if name.split("-")[0] == f"x{scale}" and model_path(name)]
    return same_factor[0] if same_factor else None


def default_model_dir(scale: int = DEFAULT_SCALE) -> Path:
    """Where the default model of factor `scale` lives (or would: `DEFAULT_MODELS`, else `deltadiff-x<scale>`)."""
    name = default_model_name(scale) or DEFAULT_MODELS.get(scale)
    return model_dir(name) if name else PRETRAINED_DIR / f"deltadiff-x{scale}"


def shipped_scales() -> list[int]:
    """The factors this installation ships a default model for."""
    return sorted(scale for scale in DEFAULT_MODELS if default_model_name(scale))


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
    name = default_model_name(scale)
    return model_path(name) if name else None


def from_pretrained(path: str, dtype=None, **kwargs):
    """
    `DeltaDiffPipeline.from_pretrained(path)` with its weights cast to `dtype` (default float32: the shipped model
    is stored in float16 to keep the package small), under whichever name this diffusers takes the dtype; safetensors
    weights only.
    """
    import torch
    from diffusers.pipelines import pipeline_utils

    from .pipeline_deltadiff import DeltaDiffPipeline

    dtype = dtype or torch.float32
    kwargs.setdefault("use_safetensors", True)  # never a pickled `.bin` (nor diffusers' fallback to one)
    key = "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"
    return DeltaDiffPipeline.from_pretrained(path, **{key: dtype}, **kwargs)


def shipped_model_path(name: str) -> str:
    """[`model_path`], or a `FileNotFoundError` naming what is shipped."""
    path = model_path(name)
    if path is None:
        raise FileNotFoundError(
            f"{model_dir(name)}: the {name} model is not shipped in this installation (shipped: "
            f"{', '.join(shipped_models()) or 'none'}); pass a model folder"
        )
    return path


def load_default_pipeline(dtype=None, scale: int | None = None, model: str | None = None, denoise=None, **kwargs):
    """
    A shipped pipeline, float32 by default: `model` by its short name (`"x4"`, `"x2"`, `"x4-real"`), else the
    default of factor `scale` (x4 unless asked); `scale` with `model` checks the model's factor. `denoise` in
    `[0, 1]` blends the clean x4 model (0) into the real-world one (1), weight by weight
    ([`~blending.blend_pipelines`]); 0 and 1 are exactly the two models.
    """
    if scale is not None:
        import numpy as np

        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)):
            raise TypeError(f"`scale` must be an integer (the upscaling factor: 2 or 4) or None, got {scale!r}")
        scale = int(scale)
    if denoise is not None:
        from .blending import blend_pipelines, check_strength

        check_strength(denoise)  # before two models load
        if model is not None and model not in DENOISE_MODELS or scale not in (None, DENOISE_SCALE):
            raise ValueError(f"denoise blends the {' and '.join(DENOISE_MODELS)} models: x4 only, no other model")
        clean, real = (from_pretrained(shipped_model_path(name), dtype=dtype, **kwargs) for name in DENOISE_MODELS)
        return blend_pipelines(clean, real, denoise)
    if model is None:
        scale = DEFAULT_SCALE if scale is None else scale
        path = default_model_path(scale)
        if path is None:
            shipped = ", ".join(f"x{s}" for s in shipped_scales()) or "none"
            raise FileNotFoundError(
                f"{default_model_dir(scale)}: no shipped x{scale} model in this installation (shipped: {shipped}); "
                "pass a model folder"
            )
        return from_pretrained(path, dtype=dtype, **kwargs)
    pipe = from_pretrained(shipped_model_path(model), dtype=dtype, **kwargs)
    if scale is not None and pipe.upscale_factor != scale:
        raise ValueError(f"the {model} model upscales x{pipe.upscale_factor}, not x{scale} (scale={scale})")
    return pipe
