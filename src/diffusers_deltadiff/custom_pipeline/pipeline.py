"""Entry point for `DiffusionPipeline.from_pretrained(..., custom_pipeline=<this file or its folder>)`.

diffusers imports this file as a dynamic module and takes the one `DiffusionPipeline` subclass it finds. The class
lives in the installed `diffusers_deltadiff` package (`pip install diffusers-deltadiff`); this file only points at
it, so both ways of loading give the same class. Folders saved by versions before 0.2 carry a copy of this file as
their `pipeline.py`. Folders saved now carry the pipeline's own code instead and load without the package
(`custom_pipeline=<saved folder>`, see `diffusers_deltadiff.pipeline_code`).
"""

from diffusers_deltadiff.pipeline_deltadiff import DeltaDiffPipeline


__all__ = ["DeltaDiffPipeline"]
