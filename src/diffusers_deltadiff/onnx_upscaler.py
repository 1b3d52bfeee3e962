"""The CLI's fastest path on the CPU: a pipeline folder's exported graph run by ONNX Runtime, diffusers never imported.

`deltadiff upscale` spends about 3 s importing diffusers before its first image (more than a 512x512 photo takes to
upscale). Where ONNX Runtime runs the model, it runs instead the model's whole graph ([`~onnx_export.UpscalerGraph`]:
the pipeline's own whole-image computation, exported once and kept in the cache folder under a hash of the model's
files and of this package's code, [`graph_cache_path`]), and loads the pipeline only for what the graph does not do
(tiles and streaming for large images, the steps strip), on first need. The outputs are the pipeline's within float
error (the export's tests hold the graph to it).

    >>> upscaler = GraphUpscaler(cpu_session(path), config, load_pipeline)
    >>> upscaler(image).images[0]  # as `pipe(image).images[0]`
"""

import hashlib
import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import PIL.Image
import torch

from .canvas import to_levels
from .image_utils import to_unit_tensor
from .onnx_backend import cache_dir, run_session


PACKAGE = Path(__file__).parent
# the libraries whose code becomes the graph: another version exports another file
EXPORTERS = ("diffusers-deltadiff", "torch", "diffusers", "onnx")


def model_files(folder: Path) -> list[Path]:
    """The files a pipeline folder's model is made of: the JSON and Python files at its top (`model_index.json`
    first among them) and every file of the component folders that `model_index.json` names."""
    index = json.loads((folder / "model_index.json").read_text())
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".py"))
    for name, value in sorted(index.items()):
        if isinstance(value, list) and (folder / name).is_dir():
            files += sorted(p for p in (folder / name).iterdir() if p.is_file())
    return files


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def graph_cache_path(folder: str | Path, steps: int | None, cache_folder: Path | None = None) -> Path:
    """
    The cache file of the graph of the pipeline folder `folder` with `steps` reverse steps (`None`: the model's):
    named by a hash of the model's files ([`model_files`]), the step count, this package's source files and the
    versions of the libraries that export it, so that a changed model, code or exporter never reuses an old graph;
    the same model in another folder uses the same file. Old graphs leave the cache with its bound
    ([`~onnx_backend.prune_cache`]).
    """
    folder = Path(folder)
    digest = hashlib.sha256(f"deltadiff graph, steps {steps}".encode())
    for name in EXPORTERS:
        digest.update(f"{name} {_version(name)}".encode())
    for path in sorted(PACKAGE.glob("*.py")):  # the graph is traced from this package's code
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    for path in model_files(folder):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return (cache_folder or cache_dir()) / f"graph-{digest.hexdigest()[:32]}.onnx"


@dataclass
class GraphOutput:
    """What [`GraphUpscaler`] returns: the fields of [`~pipeline_deltadiff.DeltaDiffPipelineOutput`] it fills."""

    images: Any
    intermediate_images: list | None = None


@dataclass
class GraphConfig:
    """What [`GraphUpscaler`] needs to know of its model: factor, the graph's step count, and the pipeline's
    whole-image bound (`auto_tile_threshold`, latent pixels on a side: larger images are tiled by the pipeline)."""

    upscale_factor: int
    num_inference_steps: int
    auto_tile_threshold: int


class GraphUpscaler:
    """
    A pipeline's stand-in in `deltadiff upscale`: `__call__` takes the pipeline's arguments and returns its
    `images` for one image. It runs the exported graph (an ONNX Runtime `session`) where the pipeline would compute
    the whole image at once in the graph's step count, with `output_type` `"pil"` or `"pt"`; any other call (an
    image the pipeline tiles, another step count, the steps strip) goes to the pipeline, which `load_pipeline()`
    loads on first need.
    """

    def __init__(self, session, config: GraphConfig, load_pipeline: Callable[[], Any]):
        self.session, self.config, self._load_pipeline, self._pipeline = session, config, load_pipeline, None
        self.upscale_factor = config.upscale_factor  # as the pipeline's
        self.input_name = session.get_inputs()[0].name

    def pipeline(self):
        """The pipeline itself, loaded the first time a call needs it."""
        if self._pipeline is None:
            self._pipeline = self._load_pipeline()
        return self._pipeline

    def serves(self, image, steps: int | None, output_type: str, intermediates: bool, tile_size: int | None) -> bool:
        """Whether the graph computes this call: the pipeline's whole-image computation of one PIL image."""
        if not isinstance(image, PIL.Image.Image) or intermediates or output_type not in ("pil", "pt"):
            return False
        if steps is not None and steps != self.config.num_inference_steps:
            return False
        latent_side = max(image.size)  # the graph's models have the factor of their latent: LR pixels = latent ones
        return tile_size == 0 or (tile_size is None and latent_side <= self.config.auto_tile_threshold)

    def __call__(
        self,
        image,
        num_inference_steps: int | None = None,
        generator=None,
        *,
        output_type: str = "pil",
        return_intermediates: bool = False,
        tile_size: int | None = None,
        **tiling,
    ) -> GraphOutput:
        if not self.serves(image, num_inference_steps, output_type, return_intermediates, tile_size):
            return self.pipeline()(
                image,
                num_inference_steps,
                generator,
                output_type=output_type,
                return_intermediates=return_intermediates,
                tile_size=tile_size,
                **tiling,
            )
        lr = to_unit_tensor(image)[None].numpy()  # as the pipeline reads it: RGB in [0, 1]
        upscaled = torch.from_numpy(run_session(self.session, {self.input_name: lr}))  # clamped to [0, 1]
        if output_type == "pt":
            return GraphOutput(images=upscaled)
        return GraphOutput(images=[PIL.Image.fromarray(to_levels(upscaled)[0])])  # the pipeline's 8-bit canvas
