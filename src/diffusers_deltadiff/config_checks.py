"""
Checks of the config values this package owns, run when a pipeline folder is loaded and before anything is built: a
mistyped or absurd value (`num_train_timesteps: 4.5`, `kappa: NaN`, `upscale_factor: 1e6`, `layers_per_block: 1e6`)
is a one-line `ValueError` naming the file and the key, not a traceback, a black image or gigabytes allocated.
"""

import json
import math
from pathlib import Path


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
