"""ONNX export: a deterministic `DeltaDiffPipeline` as one graph from the LR image to the upscaled image.

    >>> from diffusers_deltadiff.onnx_export import export_onnx
    >>> export_onnx("x4", "deltadiff-x4.onnx")  # a shipped model's short name, a pipeline folder or a pipeline

The graph is [`UpscalerGraph`]: the pipeline's own whole-image computation (border padding by reflection, padding
to the size the UNet needs, the bicubic start `y` ([`~encoding.bicubic_space_to_depth`] for a space-to-depth
latent), every reverse step unrolled, decoding, the gray-in-gray-out rule, the crop), traced once with dynamic batch,
height and width. Its input `image` is `float32 (N, 3, H, W)` RGB in `[0, 1]` of any size; its output `upscaled`
is `(N, 3, s H, s W)` in `[0, 1]`. The file's metadata says the factor, the steps, the model's name and licence, the
padding the graph applies and the context a tile needs ([`graph_metadata`]). A stochastic (ResShift) chain draws
noise at every step and is refused.

Needs the `onnx` extra (`pip install diffusers-deltadiff[onnx]`) for the metadata; the export itself is torch's.
"""

import copy
import importlib.metadata
import inspect
import io
import math
import os
import warnings
from pathlib import Path

import torch

from .atomic_files import write_file_atomic
from .autoencoder_space_to_depth import SpaceToDepthAutoencoder
from .encoding import bicubic_space_to_depth, encode_lr
from .image_utils import to_gray
from .pipeline_deltadiff import DeltaDiffPipeline


INPUT_NAME, OUTPUT_NAME = "image", "upscaled"
OPSET = 17  # Resize (cubic), LayerNormalization: ONNX Runtime 1.14+, OpenVINO, TensorRT 8.6+


def _reflect_or_clamp(size, before: int, after, reflect: torch.Tensor) -> torch.Tensor:
    """
    Source indices of a dimension of `size` grown by `before` and `after`: reflected (`F.pad`'s "reflect") where
    `reflect` holds, replicated ("replicate") otherwise. Sizes are traced, so one graph pads every input size.
    """
    index = torch.arange(-before, size + after)
    reflected = (size - 1) - ((size - 1) - index.abs()).abs()
    clamped = index.clamp(min=0).clamp(max=size - 1)
    return torch.where(reflect, reflected, clamped)


def _last_index(images: torch.Tensor, dim: int) -> torch.Tensor:
    """`size - 1` of dimension `dim` as a traced tensor (for comparisons the graph must keep)."""
    return torch.arange(images.shape[dim]).max()


def pad_border_graph(images: torch.Tensor, pad: int) -> torch.Tensor:
    """[`~image_utils.pad_border`] on `(B, C, H, W)`, traceable: reflection when `min(H, W) > pad`, else edge
    replication."""
    if pad <= 0:
        return images
    reflect = (_last_index(images, -2) >= pad) & (_last_index(images, -1) >= pad)
    rows = _reflect_or_clamp(images.shape[-2], pad, pad, reflect)
    columns = _reflect_or_clamp(images.shape[-1], pad, pad, reflect)
    return images.index_select(-2, rows).index_select(-1, columns)


def pad_to_multiple_graph(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """[`~image_utils.pad_to_multiple`], traceable: bottom and right, by reflection when both pads are smaller than
    the image, by replication otherwise."""
    if multiple <= 1:
        return images
    height, width = images.shape[-2:]
    pad_h, pad_w = (multiple - height % multiple) % multiple, (multiple - width % multiple) % multiple
    last_row, last_column = _last_index(images, -2), _last_index(images, -1)
    reflect = (last_row >= (multiple - (last_row + 1) % multiple) % multiple) & (
        last_column >= (multiple - (last_column + 1) % multiple) % multiple
    )
    rows = _reflect_or_clamp(height, 0, pad_h, reflect)
    columns = _reflect_or_clamp(width, 0, pad_w, reflect)
    return images.index_select(-2, rows).index_select(-1, columns)


class UpscalerGraph(torch.nn.Module):
    """
    What [`DeltaDiffPipeline`] computes for a batch of same-size images with `tile_size=0`, as one module that
    traces into one graph: `forward(image)` maps `(B, 3, H, W)` in `[0, 1]` to `(B, 3, s H, s W)` in `[0, 1]` with
    the chain of `num_inference_steps` (default: the model's) unrolled. The pipeline's own pieces do the work
    ([`encode_lr`], `scheduler.step`, `decode_latents`); only the padding is rewritten, so that it follows the
    input's size inside the graph.
    """

    def __init__(self, pipe: DeltaDiffPipeline, num_inference_steps: int | None = None):
        super().__init__()
        check_exportable(pipe)
        self.vqvae, self.unet = pipe.vqvae, pipe.unet
        self.scheduler = copy.deepcopy(pipe.scheduler)
        self.scheduler.set_timesteps(num_inference_steps)
        self.timesteps = self.scheduler.timesteps.tolist()
        self.decode_latents = pipe.decode_latents
        self.scale, self.border = pipe.upscale_factor, pipe.config.border_padding
        self.multiple = pipe.lr_size_multiple

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        lr = pad_to_multiple_graph(pad_border_graph(image, self.border), self.multiple) * 2 - 1
        gray = ((lr[:, 0] == lr[:, 1]) & (lr[:, 1] == lr[:, 2])).flatten(1).all(1)
        if isinstance(self.vqvae, SpaceToDepthAutoencoder):  # y at LR size: no bicubic resize in the graph
            lr_latents, lr_condition = bicubic_space_to_depth(lr, self.scale), lr  # factor = block size (checked)
        else:
            lr_latents, lr_condition = encode_lr(self.vqvae, lr, self.scale)
        latents = lr_latents  # x_T = y: the chain is deterministic
        for t in self.timesteps:
            model_input = torch.cat([self.scheduler.scale_model_input(latents, t), lr_condition], dim=1)
            model_output = self.unet(model_input, t).sample
            latents = self.scheduler.step(model_output, t, latents, lr_sample=lr_latents).prev_sample
        upscaled = (self.decode_latents(latents).float() * 0.5 + 0.5).clamp(0, 1)  # `VaeImageProcessor.denormalize`
        upscaled = torch.where(gray[:, None, None, None], to_gray(upscaled), upscaled)
        top = self.border * self.scale
        return upscaled[..., top : top + height * self.scale, top : top + width * self.scale]


def check_exportable(pipe: DeltaDiffPipeline):
    """A `ValueError` saying why `pipe` has no exact single-graph export, if it has none."""
    if not pipe.scheduler.is_deterministic:
        raise ValueError(
            f"the model is stochastic (ResShift, kappa={pipe.scheduler.config.kappa:g}): it draws noise at every "
            "step, so it has no single deterministic graph; ONNX export covers DeltaDiff (kappa = 0) models"
        )
    if pipe.upscale_factor != pipe.vae_scale_factor:
        raise ValueError(
            f"the model upscales x{pipe.upscale_factor} through an f{pipe.vae_scale_factor} autoencoder: its UNet "
            "condition needs an antialiased resize, which this export does not cover (only factor = latent factor)"
        )


def model_license(folder: str | os.PathLike | None) -> str:
    """The `license` of the model card (`README.md`) in a pipeline folder, or `"unknown"`."""
    card = Path(folder) / "README.md" if folder else None
    if card is None or not card.is_file():
        return "unknown"
    from huggingface_hub import ModelCard

    return str(ModelCard.load(card).data.get("license") or "unknown")


def graph_metadata(pipe: DeltaDiffPipeline, steps: int, name: str, license: str) -> dict[str, str]:
    """The metadata an exported file carries (ONNX `metadata_props`, all strings)."""
    scale = pipe.upscale_factor
    context = math.ceil(pipe.config.tile_context * pipe.vae_scale_factor / scale)
    return {
        "model_name": name,
        "license": license,
        "upscale_factor": str(scale),
        "num_inference_steps": str(steps),
        "input": f"{INPUT_NAME}: float32 (N, 3, H, W), RGB in [0, 1], any H and W",
        "output": f"{OUTPUT_NAME}: float32 (N, 3, {scale}H, {scale}W), RGB in [0, 1]",
        # the graph pads by itself: callers pass any size and need no padding of their own
        "border_padding": str(pipe.config.border_padding),
        "lr_size_multiple": str(pipe.lr_size_multiple),
        "input_size_multiple": "1",
        # LR pixels of context a tile needs (overlap) for a tiled run to equal the whole image
        "tile_context_lr_pixels": str(context),
        "producer": f"diffusers-deltadiff {importlib.metadata.version('diffusers-deltadiff')}",
    }


def model_name(path: str | os.PathLike) -> str:
    """The last part of a model's path or Hub id: the folder's own name for a folder given as `.` or `..`."""
    return (Path(path).resolve() if os.path.isdir(path) else Path(path)).name


def _load(model) -> tuple[DeltaDiffPipeline, str, str | None]:
    """`(pipeline, name, folder)` for a pipeline, a shipped model's short name or a pipeline folder / Hub id."""
    if isinstance(model, DeltaDiffPipeline):
        folder = model.name_or_path if os.path.isdir(str(model.name_or_path or "")) else None
        return model, model_name(model.name_or_path or "deltadiff"), folder
    from .pretrained import SHIPPED_MODELS, from_pretrained, model_path

    path = model_path(model) if model in SHIPPED_MODELS and not Path(model).exists() else str(model)
    if path is None:
        raise FileNotFoundError(f"{model}: no such model is shipped with this installation")
    name = SHIPPED_MODELS.get(model) or model_name(path)
    return from_pretrained(path), name, path if os.path.isdir(path) else None


def trace_to_onnx(module: torch.nn.Module, example: tuple, path, axes: dict[str, dict[int, str]]):
    """
    `torch.onnx.export` of `module` by tracing (the TorchScript exporter: seconds, and no `onnxscript` needed) to
    `path` (a file name or a binary file object). `axes` names the inputs, then the outputs, with their dynamic axes.
    """
    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    names = list(axes)
    with warnings.catch_warnings():
        # sizes are traced; the Python-level checks the tracer warns about are constant for every input size
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            path if hasattr(path, "write") else str(path),
            input_names=names[: len(example)],
            output_names=names[len(example) :],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            **kwargs,
        )


def export_onnx(
    model, output: str | os.PathLike, num_inference_steps: int | None = None, *, overwrite: bool = True
) -> Path:
    """
    Write `model` (a [`DeltaDiffPipeline`], a shipped model's short name such as `"x4"`, or a pipeline folder) as one
    ONNX graph to `output` ([`UpscalerGraph`], with [`graph_metadata`]). The graph is built in memory, then written
    whole or not at all ([`~atomic_files.write_file_atomic`]: a temporary file of this call's own next to `output`,
    with the umask's mode, removed on any error or interrupt), so exports to one path at once never share a file.
    With `overwrite=False`, an `output` that exists (another export made it meanwhile) is an
    [`~atomic_files.AlreadyExists`] error and is kept.

    Raises `ValueError` for a model with no exact graph (stochastic, or a factor other than its latent's).
    """
    import onnx

    pipe, name, folder = _load(model)
    if pipe.device.type != "cpu" or pipe.unet.dtype != torch.float32:  # traced on a copy: the caller's stays put
        pipe = copy.deepcopy(pipe).to(device="cpu", dtype=torch.float32, silence_dtype_warnings=True)
    graph = UpscalerGraph(pipe, num_inference_steps).eval()
    output = Path(output)
    traced = io.BytesIO()
    with torch.no_grad():
        axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
        axes[OUTPUT_NAME] = {0: "batch", 2: "out_height", 3: "out_width"}
        trace_to_onnx(graph, (torch.rand(1, 3, 24, 20),), traced, axes)
    proto = onnx.load_from_string(traced.getvalue())
    metadata = graph_metadata(pipe, len(graph.timesteps), name, model_license(folder))
    onnx.helper.set_model_props(proto, metadata)
    proto.producer_name, proto.doc_string = "diffusers-deltadiff", f"{name}: x{pipe.upscale_factor} upscaling"
    write_file_atomic(output, proto.SerializeToString(), replace=overwrite)
    return output
