"""DeltaDiff: residual-guided, noise-free diffusion for image super-resolution, as a diffusers integration.

The classes below are imported on first use (as diffusers does), so that `deltadiff upscale` with ONNX Runtime never
imports diffusers: importing diffusers costs about 3 s on a CPU, the same order as upscaling an image.
"""

import importlib
import importlib.util


__version__ = "0.2.0"

# name -> the module defining it
_LAZY = {
    "DeltaDiffPipeline": "pipeline_deltadiff",
    "DeltaDiffPipelineOutput": "pipeline_deltadiff",
    "DeltaShiftScheduler": "scheduling_delta_shift",
    "DeltaShiftSchedulerOutput": "scheduling_delta_shift",
    "LocalUNet2DModel": "unet_local_norm",
    "SpaceToDepthAutoencoder": "autoencoder_space_to_depth",
    "custom_pipeline_path": "pretrained",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # once
        return value
    # a submodule, as when importing the package imported them (`diffusers_deltadiff.pretrained.from_pretrained`)
    if name.isidentifier() and not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
