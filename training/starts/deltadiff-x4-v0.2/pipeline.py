"""Entry point for `DiffusionPipeline.from_pretrained(..., custom_pipeline=<this file or its folder>)`.

diffusers imports this file as a dynamic module and takes the one `DiffusionPipeline` subclass it finds. The class
lives in the installed `diffusers_deltadiff` package (`pip install diffusers-deltadiff`), which also provides the
scheduler named in `model_index.json`; this file only points at it, so both ways of loading give the same class.
A copy of this file is written next to `model_index.json` by `DeltaDiffPipeline.save_pretrained`, so
`custom_pipeline=<saved folder>` works as well.
"""

from diffusers_deltadiff.pipeline_deltadiff import DeltaDiffPipeline


__all__ = ["DeltaDiffPipeline"]
