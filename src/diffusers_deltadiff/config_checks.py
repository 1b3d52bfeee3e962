"""
Checks of the config values this package owns, run when a pipeline folder is loaded and before anything is built: a
mistyped or absurd value (`num_train_timesteps: 4.5`, `kappa: NaN`, `upscale_factor: 1e6`, `layers_per_block: 1e6`)
is a one-line `ValueError` naming the file and the key, not a traceback, a black image or gigabytes allocated. And
the same for a pipeline call's arguments (the end of this module): one error naming the argument, before any work.
"""

import json
import math
from pathlib import Path

import numpy as np
import torch


def integer(value, low: int, high: int) -> str | None:
    """Why `value` is not an integer in `[low, high]` (`None` when it is)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer from {low} to {high}"
    return None if low <= value <= high else f"must be from {low} to {high}"


def real(value, low: float, high: float, low_open: bool = False) -> str | None:
    """Why `value` is not a finite number in `[low, high]` (`(low, high]` with `low_open`); `None` when it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "must be a finite number"
    inside = (low < value if low_open else low <= value) and value <= high
    return None if inside else f"must be in {'(' if low_open else '['}{low}, {high}]"


def integer_list(value, low: int, high: int, max_length: int) -> str | None:
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= max_length:
        return f"must be a list of 1 to {max_length} integers"
    problems = [integer(v, low, high) for v in value]
    return next((f"entries {p}" for p in problems if p), None)


def optional(rule):
    """`rule`, with `None` (null in JSON) also allowed."""
    return lambda value: None if value is None else rule(value)


def size(value) -> str | None:
    """A `sample_size`: one integer, or a list of two."""
    return integer_list(value, 1, 1 << 16, 2) if isinstance(value, (list, tuple)) else integer(value, 1, 1 << 16)


def one_of(value, choices) -> str | None:
    return None if value in choices else f"must be one of {', '.join(map(repr, choices))}"


SCHEDULER = {
    "num_train_timesteps": lambda v: integer(v, 1, 1000),
    "eta_start": lambda v: real(v, 0.0, 1.0, low_open=True),
    "eta_end": lambda v: real(v, 0.0, 1.0, low_open=True),
    "power": lambda v: real(v, 0.0, 100.0, low_open=True),
    "kappa": lambda v: real(v, 0.0, 100.0),
    "prediction_type": lambda v: one_of(v, ("sample", "residual")),
    "default_inference_steps": optional(lambda v: integer(v, 1, 1000)),
}
PIPELINE = {
    "upscale_factor": optional(lambda v: integer(v, 1, 16)),
    "tile_context": lambda v: integer(v, 0, 4096),
    "border_padding": lambda v: integer(v, 0, 256),
    "default_tile_size": lambda v: integer(v, 1, 1 << 16),
    "auto_tile_threshold": lambda v: integer(v, 1, 1 << 16),
    "stream_tiles": lambda v: None if isinstance(v, bool) else "must be true or false",
    "stream_width": lambda v: integer(v, 1, 1 << 20),
}
UNET = {
    "norm_eps": lambda v: real(v, 0.0, 1.0),
    "dropout": lambda v: real(v, 0.0, 1.0),
    "mid_block_scale_factor": lambda v: real(v, -1e6, 1e6),
    "downsample_padding": lambda v: integer(v, 0, 8),
    "freq_shift": lambda v: real(v, -1e6, 1e6),
    "class_embed_type": lambda v: None if v is None else "must be null (the pipeline passes no class labels)",
    "num_class_embeds": lambda v: None if v is None else "must be null (the pipeline passes no class labels)",
    "time_embedding_dim": optional(lambda v: integer(v, 1, 16384)),
    "attention_head_dim": optional(
        lambda v: integer_list(v, 1, 4096, 8) if isinstance(v, list) else integer(v, 1, 4096)
    ),
    "in_channels": lambda v: integer(v, 1, 4096),
    "out_channels": lambda v: integer(v, 1, 4096),
    "layers_per_block": lambda v: integer(v, 1, 16),
    "block_out_channels": lambda v: integer_list(v, 1, 4096, 8),
    "norm_num_groups": optional(lambda v: integer(v, 1, 4096)),
    "sample_size": optional(size),
}
AUTOENCODER = {
    "norm_type": lambda v: one_of(v, ("group", "spatial")),
    "num_vq_embeddings": lambda v: integer(v, 1, 1 << 20),
    "vq_embed_dim": optional(lambda v: integer(v, 1, 4096)),
    "norm_num_groups": lambda v: integer(v, 1, 4096),
    "scaling_factor": lambda v: real(v, -1e6, 1e6),
    "downsampling_factor": lambda v: integer(v, 1, 16),
    "in_channels": lambda v: integer(v, 1, 64),
    "out_channels": lambda v: integer(v, 1, 64),
    "latent_channels": optional(lambda v: integer(v, 1, 4096)),
    "layers_per_block": lambda v: integer(v, 1, 16),
    "block_out_channels": lambda v: integer_list(v, 1, 4096, 8),
}
COMPONENTS = {"scheduler": SCHEDULER, "unet": UNET, "vqvae": AUTOENCODER}
# the classes the pipeline runs, per component: it calls what only these have (another class named in
# `model_index.json` loads with warnings and random weights, then fails on every image)
CLASSES = {
    "scheduler": ("DeltaShiftScheduler",),
    "unet": ("UNet2DModel", "LocalUNet2DModel"),
    "vqvae": ("VQModel", "SpaceToDepthAutoencoder"),
}
CONFIG_NAMES = {"scheduler": "scheduler_config.json", "unet": "config.json", "vqvae": "config.json"}


def check_values(config: dict, rules: dict, where: str):
    """Raise `ValueError("<where>: `key` must be ..., got value")` for the first value that breaks its rule."""
    for key, rule in rules.items():
        if key in config:
            problem = rule(config[key])
            if problem:
                raise ValueError(f"{where}: `{key}` {problem}, got {config[key]!r}")


def read_json(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON config ({type(err).__name__}: {err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a config must be a JSON object, got {type(config).__name__}")
    return config


def check_class(index: dict, component: str, config: dict, index_path: Path, path: Path):
    """
    The class `model_index.json` names for `component` (`[library, class]`) must be one the pipeline runs, and the one
    the component's own config (`path`) was saved from.
    """
    entry = index[component]
    if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], str)):
        return  # not a component entry: left to the loader
    named, saved, where = entry[1], config.get("_class_name"), f"{index_path}: `{component}`"
    if named not in CLASSES[component]:
        raise ValueError(f"{where} names {named}, a DeltaDiff pipeline takes {' or '.join(CLASSES[component])}")
    if isinstance(saved, str) and saved != named:
        raise ValueError(f"{where} names {named}, but {path} was saved from {saved}")


def check_pipeline_folder(folder: str | Path):
    """
    Check `model_index.json` and the configs of the components it names in a local pipeline folder, before any
    weight is read. Files that are absent are left to the loader, which names them.
    """
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        return
    index = read_json(index_path)
    check_values(index, PIPELINE, str(index_path))
    for component, rules in COMPONENTS.items():
        path = folder / component / CONFIG_NAMES[component]
        if component in index and path.is_file():
            config = read_json(path)
            check_class(index, component, config, index_path, path)
            check_values(config, rules, str(path))
            if component == "scheduler":
                check_scheduler_relations(config, path)


def check_scheduler_relations(config: dict, path: Path):
    """The scheduler values that bound each other (each one already checked alone), with the defaults' values."""
    if config.get("eta_start", 0.01) > config.get("eta_end", 0.99):
        raise ValueError(f"{path}: need `eta_start` <= `eta_end`, got {config['eta_start']} > {config['eta_end']}")
    steps, length = config.get("default_inference_steps"), config.get("num_train_timesteps", 4)
    if steps is not None and steps > length:
        raise ValueError(
            f"{path}: `default_inference_steps` must be at most `num_train_timesteps` ({length}), got {steps}"
        )


# --- a pipeline call's arguments ------------------------------------------------------------------------------------


def is_count(value, low: int) -> bool:
    """An integer (Python or NumPy, not a bool) of at least `low`."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low


def tile_checks(tile_size, tile_context) -> dict:
    """[`check_counts`]' rules for the tiling arguments of a call and of `unet_pixels`."""
    return {
        "tile_size": (tile_size, 0, "positive, 0 (never tile) or None (automatic)"),
        "tile_context` (formerly `tile_overlap": (tile_context, 0, "0 or more latent pixels, or None"),
    }


def check_counts(checks: dict):
    """`{name: (value, lowest, what is expected)}`: a `ValueError` naming the first value that is neither `None` nor
    an integer of at least its lowest."""
    for name, (value, low, expected) in checks.items():
        if value is not None and not is_count(value, low):
            raise ValueError(f"`{name}` must be {expected}, got {value!r}.")


def check_scheduler(scheduler):
    """The pipeline runs the residual-shifting chain: a [`DeltaShiftScheduler`] (or a subclass, or a saved folder's copy
    of the class), else a `ValueError`."""
    if not any(cls.__name__ == "DeltaShiftScheduler" for cls in type(scheduler).__mro__):
        raise ValueError(
            f"`scheduler` must be a DeltaShiftScheduler, got {type(scheduler).__name__}: the pipeline runs the "
            "residual-shifting chain (eq. 5/6), which other schedulers do not implement."
        )


def check_call(scheduler, output_type, callback_inputs, allowed_inputs, counts: tuple):
    """
    A pipeline call's arguments, before any work: its `scheduler` ([`check_scheduler`]), `output_type`, the tensor
    names `callback_on_step_end` asks for (among `allowed_inputs`) and `counts`, its `(tile_size, tile_context,
    tile_batch_size, num_inference_steps)`: a `ValueError` naming the argument.
    """
    check_scheduler(scheduler)
    if output_type not in ("pil", "np", "pt", "latent"):
        raise ValueError(f"`output_type` must be one of 'pil', 'np', 'pt', 'latent', got {output_type!r}.")
    if not isinstance(callback_inputs, (list, tuple)):
        raise ValueError(
            f"`callback_on_step_end_tensor_inputs` must be a list of names among {allowed_inputs}, "
            f"got {callback_inputs!r}."
        )
    unknown = [k for k in callback_inputs if k not in allowed_inputs]
    if unknown:
        raise ValueError(f"`callback_on_step_end_tensor_inputs` must be in {allowed_inputs}, got {unknown}.")
    tile_size, tile_context, tile_batch_size, steps = counts
    check_counts(
        {
            **tile_checks(tile_size, tile_context),
            "tile_batch_size": (tile_batch_size, 1, "a positive integer"),
            "num_inference_steps": (steps, 1, "a positive integer or None"),
        }
    )


def check_step_end(callback, generator):
    """A call's `callback_on_step_end` (callable or None) and `generator` (a `torch.Generator`, a list of them or
    None), before any work: a `ValueError`, and a `TypeError` for a generator that is not one."""
    if callback is not None and not callable(callback):
        raise ValueError(f"`callback_on_step_end` must be callable or None, got {callback!r}.")
    generators = generator if isinstance(generator, list) else [generator]
    if generator is not None and not all(isinstance(g, torch.Generator) for g in generators):
        raise TypeError(f"`generator` must be a `torch.Generator`, a list of them or None, got {generator!r}.")


def unet_pixels_size(size, tile_size, tile_context) -> tuple[int, int]:
    """`DeltaDiffPipeline.unet_pixels`' arguments checked as a call's are: `size` as `(height, width)` integers."""
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(is_count(n, 1) for n in size)):
        raise ValueError(f"`size` must be (height, width), two positive integers, got {size!r}.")
    check_counts(tile_checks(tile_size, tile_context))
    return int(size[0]), int(size[1])


def step_end_latents(outputs, current: torch.Tensor) -> torch.Tensor | None:
    """
    The `latents` entry `callback_on_step_end` returned in `outputs` (popped), on the chain's device and dtype, or
    `None` without one; a `ValueError` when `outputs` is not a dict or the latents are not a tensor of `current`'s
    shape.
    """
    if not isinstance(outputs, dict):
        raise ValueError(
            f"`callback_on_step_end` must return a dict (of the tensors it replaces, or empty), got {outputs!r}."
        )
    if "latents" not in outputs:
        return None
    latents = outputs.pop("latents")
    if not isinstance(latents, torch.Tensor) or latents.shape != current.shape:
        shape = tuple(latents.shape) if hasattr(latents, "shape") else type(latents).__name__
        raise ValueError(
            f"`callback_on_step_end` must return `latents` as a tensor of shape {tuple(current.shape)} (the "
            f"latents it was passed), got {shape}."
        )
    return latents.to(device=current.device, dtype=current.dtype)
