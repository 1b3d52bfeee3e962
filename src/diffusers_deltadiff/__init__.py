"""DeltaDiff: residual-guided, noise-free diffusion for image super-resolution, as a diffusers integration."""

from .autoencoder_space_to_depth import SpaceToDepthAutoencoder
from .pipeline_deltadiff import DeltaDiffPipeline, DeltaDiffPipelineOutput
from .pretrained import custom_pipeline_path
from .scheduling_delta_shift import DeltaShiftScheduler, DeltaShiftSchedulerOutput
from .unet_local_norm import LocalUNet2DModel


__version__ = "0.2.0"

__all__ = [
    "DeltaDiffPipeline",
    "DeltaDiffPipelineOutput",
    "DeltaShiftScheduler",
    "DeltaShiftSchedulerOutput",
    "LocalUNet2DModel",
    "SpaceToDepthAutoencoder",
    "custom_pipeline_path",
]
