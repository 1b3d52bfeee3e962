"""DeltaDiff: residual-guided, noise-free diffusion for image super-resolution, as a diffusers integration."""

from .autoencoder_space_to_depth import SpaceToDepthAutoencoder
from .pipeline_deltadiff import DeltaDiffPipeline, DeltaDiffPipelineOutput
from .scheduling_delta_shift import DeltaShiftScheduler, DeltaShiftSchedulerOutput
from .unet_local_norm import LocalUNet2DModel


__version__ = "0.1.0"

__all__ = [
    "DeltaDiffPipeline",
    "DeltaDiffPipelineOutput",
    "DeltaShiftScheduler",
    "DeltaShiftSchedulerOutput",
    "LocalUNet2DModel",
    "SpaceToDepthAutoencoder",
    "custom_pipeline_path",
]


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
    from pathlib import Path

    return str(Path(__file__).parent / "custom_pipeline" / "pipeline.py")
