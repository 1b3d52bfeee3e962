# Copyright 2026 The diffusers-deltadiff authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""The DeltaDiff super-resolution pipeline."""

import contextlib
import copy
import math
import os
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.models import UNet2DModel
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput, replace_example_docstring

# relative imports only of modules that go with saved pipelines (see `pipeline_code`); the component classes
# (`DeltaShiftScheduler`, `LocalUNet2DModel`, `SpaceToDepthAutoencoder`) travel in their own folders instead
from .config_checks import PIPELINE, check_pipeline_folder, check_values
from .image_utils import bicubic_upsample, pad_border, pad_to_multiple, resize_to, split_images, to_unit_tensor
from .pipeline_code import with_package_modules, write_pipeline_code
from .tiling import Box, RowWindow, Tile, column_strips, plan_tiles, tile_rows


EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import PIL.Image
        >>> from diffusers_deltadiff import DeltaDiffPipeline

        >>> pipe = DeltaDiffPipeline.from_pretrained("path/to/deltadiff-x4")
        >>> low_res = PIL.Image.open("low_res.png")
        >>> upscaled = pipe(low_res).images[0]  # 4x the input size, 4 deterministic steps
        >>> upscaled.save("upscaled.png")

        >>> # the decoded image after every reverse step (the paper's Fig. 4)
        >>> out = pipe(low_res, return_intermediates=True)
        >>> strip = out.intermediate_images  # one list of images per step
        ```
"""


@dataclass
class _CallState:
    """What one pipeline call owns: its copy of the scheduler (timesteps, coefficients) and its interrupt flag."""

    scheduler: SchedulerMixin
    interrupt: bool = False


# per thread: the state of the pipeline call running in that thread (by pipeline id)
_CALLS = threading.local()


def autoencoder_downsampling_factor(autoencoder: ModelMixin) -> int:
    """How many image pixels one latent pixel spans: `downsampling_factor`, or `2^(blocks - 1)` for a `VQModel`."""
    factor = getattr(autoencoder.config, "downsampling_factor", None)
    return int(factor) if factor else 2 ** (len(autoencoder.config.block_out_channels) - 1)


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """RGB images `(B, 3, H, W)` made gray with their BT.601 luma (the Y the benchmarks score), in every channel."""
    luma = 0.299 * images[:, 0:1] + 0.587 * images[:, 1:2] + 0.114 * images[:, 2:3]
    return luma.expand(-1, 3, -1, -1)


def encode_lr(autoencoder, lr: torch.Tensor, upscale_factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The two views of LR images `(B, 3, h, w)` in `[-1, 1]` that the chain needs: the latent `y` of their bicubic
    upsampling, and the LR images resized to the latent size (the UNet's extra input channels). The pipeline and the
    trainer both call this, so the `y` a model is trained on is the `y` it is run on.
    """
    upsampled = bicubic_upsample(lr, upscale_factor)
    lr_latents = autoencoder.encode(upsampled.to(autoencoder.dtype)).latents
    lr_condition = resize_to(lr, tuple(lr_latents.shape[-2:]))
    return lr_latents, lr_condition


@dataclass
class DeltaDiffPipelineOutput(BaseOutput):
    """
    Output class for the DeltaDiff pipeline.

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            The upscaled images, `upscale_factor` times the size of each input. A NumPy array `(B, H, W, 3)` or a
            tensor `(B, 3, H, W)` when all inputs have one size, otherwise a list with one entry per input.
        intermediate_images (`list`, *optional*):
            With `return_intermediates=True`: for every reverse step, the decoded `x_{t-1}` of every input, in the
            same format as `images`. The last entry equals `images`.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | list
    intermediate_images: list | None = None


class DeltaDiffPipeline(DiffusionPipeline):
    r"""
    Pipeline for image super-resolution with DeltaDiff (a residual-guided, noise-free diffusion in the latent space of
    an autoencoder), or ResShift when the scheduler has `kappa > 0`.

    The low-resolution (LR) image is upsampled with bicubic interpolation to the output size and encoded by `vqvae`
    into `y`; the reverse chain starts at `x_T = y` and runs the scheduler's steps, the UNet seeing the current latent
    concatenated with the LR image resized to the latent size; the result is decoded by `vqvae`.

    The super-resolution factor is the pipeline config's `upscale_factor`. It defaults to the downsampling factor of
    `vqvae` (4 for an f4 autoencoder, where the LR image has exactly the latent size, as in ResShift and DeltaDiff).
    Output images are always exactly `upscale_factor` times the input size: inputs are padded by reflection to a size
    the models accept and the result is cropped, never resized. A gray input (all three channels equal) comes out
    gray: the model sees no colour in it, so any colour in its output would be invented.

    Large images are processed in tiles. At every reverse step the UNet runs tile by tile, each tile seen with a
    margin of context (`tile_context` latent pixels of its neighbours, on the UNet's downsampling grid), and only the
    tile's own pixels are kept and stepped. Encoding and decoding are tiled the same way, and decoded tiles go
    straight into the output (PIL images painted tile by tile), so model activations are bounded by the tile. The
    deterministic chain (kappa = 0) also keeps the latents bounded: it runs as a wavefront down the tile rows, step
    `s` of a row as soon as step `s - 1` holds the rows it sees, in column strips of at most `stream_width` latent
    pixels (with a halo of `(T + 2) * tile_context`), so only a few tile rows of one strip are held at a time.
    Callbacks, intermediates, `output_type="latent"` and noisy chains (kappa > 0: the noise is drawn per canvas) keep
    whole latent canvases. Of the known ways to tile a diffusion upscaler, this one was chosen because, with a model
    whose layers only see local context, it is the whole-image computation itself:

    - With the shipped default model (a lossless [`SpaceToDepthAutoencoder`] and a [`LocalUNet2DModel`]: per-pixel
      normalisation, no attention) every output pixel depends only on a neighbourhood of the input. Tiles whose
      context covers the UNet's receptive field give the whole-image output up to float error, whatever the tile
      size: `tile_size` and `tile_batch_size` only set memory and speed. Running every tile through the whole chain
      on its own (and blending at the end) would need the context of all steps together, four times more.
    - Models with image-wide statistics (`GroupNorm`, attention; a learned `VQModel`) see per-tile statistics in
      tiles, so their tiled output is close to the whole-image output, not equal to it: tone may change from tile to
      tile. Sharing the statistics of all tiles (as tiled VAEs do) is not implemented; use `tile_size=0` for them
      when memory allows.

    This model inherits from [`DiffusionPipeline`]. Check the superclass documentation for the generic methods
    implemented for all pipelines (downloading, saving, running on a particular device, etc.).

    Parameters:
        vqvae ([`VQModel`] or [`SpaceToDepthAutoencoder`]):
            The frozen autoencoder. A `VQModel` (as in the paper: LDM's VQ-f4) is used unquantized and quantizes on
            decoding; a [`SpaceToDepthAutoencoder`] is lossless and parameter-free (the shipped default model).
        unet ([`UNet2DModel`]):
            A `UNet2DModel` (or [`LocalUNet2DModel`]) predicting the clean latent `x_0` or the residual `y - x_0` (the
            scheduler's `prediction_type`), with `in_channels = latent_channels + 3`.
        scheduler ([`DeltaShiftScheduler`]):
            The residual-shifting scheduler.
        upscale_factor (`int`, *optional*):
            The super-resolution factor. Defaults to the downsampling factor of `vqvae`.
        tile_context (`int`, *optional*, defaults to 16):
            The margin (latent pixels) each tile sees around itself: part of the model, as wide as its receptive
            field needs (see the pipeline's model card for the measured choice).
        border_padding (`int`, *optional*, defaults to 0):
            LR pixels added by reflection around every input before the chain, and cropped from the output after it,
            so that the UNet never sees its zero padding where the image ends (which leaves a band along the borders).
            Part of the model: saved with it (the shipped model's value is measured, see its card).
    """

    model_cpu_offload_seq = "vqvae->unet"
    default_tile_size = 128
    # tiled deterministic chains run as a wavefront down the image ([`_stream_group`]) unless the caller needs every
    # step's latents (callbacks, intermediates, latent output); `False` forces the whole-canvas path (for comparison)
    stream_tiles = True
    stream_width = 1024  # latent pixels: wider canvases stream in column strips (4096 output pixels for x4 f4)
    auto_tile_threshold = 256
    _callback_tensor_inputs = ["latents", "lr_latents", "lr_condition"]

    def __init__(
        self,
        vqvae: ModelMixin,
        unet: UNet2DModel,
        scheduler: SchedulerMixin,
        upscale_factor: int | None = None,
        tile_context: int = 16,
        border_padding: int = 0,
    ):
        super().__init__()
        self.register_modules(vqvae=vqvae, unet=unet, scheduler=scheduler)
        # inference modules: in eval mode, as `from_pretrained` leaves them, however the pipeline was built
        vqvae.eval()
        unet.eval()
        self.vae_scale_factor = autoencoder_downsampling_factor(vqvae)
        check_values(
            {"upscale_factor": upscale_factor, "tile_context": tile_context, "border_padding": border_padding},
            PIPELINE,
            type(self).__name__,
        )
        upscale_factor = int(upscale_factor or self.vae_scale_factor)
        self.register_to_config(
            upscale_factor=upscale_factor, tile_context=tile_context, border_padding=border_padding
        )
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor, do_resize=False)

        latent_channels = vqvae.config.latent_channels
        if unet.config.in_channels != latent_channels + 3 or unet.config.out_channels != latent_channels:
            raise ValueError(
                f"The UNet must take the latent ({latent_channels} channels) concatenated with the RGB LR image "
                f"({latent_channels + 3} input channels) and predict the latent ({latent_channels} output channels); "
                f"got in_channels={unet.config.in_channels}, out_channels={unet.config.out_channels}."
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """
        [`DiffusionPipeline.from_pretrained`], after checking the config values this package owns in a local folder
        (types, finiteness, ranges) before any weight is read: a bad value is one `ValueError` naming the file and
        the key.
        """
        if os.path.isdir(pretrained_model_name_or_path):
            check_pipeline_folder(pretrained_model_name_or_path)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def load_config(cls, *args, **kwargs):
        """
        Read `model_index.json` like [`ConfigMixin.load_config`], with the components this package defines (the
        scheduler, a [`LocalUNet2DModel`], a [`SpaceToDepthAutoencoder`]) named by the installed package's modules.
        So `DeltaDiffPipeline.from_pretrained(folder)` builds them from the package's classes, not from the copies a
        saved folder carries: no code from the folder runs and `trust_remote_code` is not needed. Folders saved by
        older versions, which name the package modules already, load the same way. With diffusers alone
        (`DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder, trust_remote_code=True)`), the folder's
        copies are used.
        """
        loaded = super().load_config(*args, **kwargs)
        if isinstance(loaded, tuple):
            return (with_package_modules(loaded[0]), *loaded[1:])
        return with_package_modules(loaded)

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True, **kwargs):
        """
        Save the pipeline like [`DiffusionPipeline.save_pretrained`], weights as safetensors only, with the code that
        makes the folder load with diffusers alone (see `save_config`):
        `DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder, trust_remote_code=True)`, from a local
        path or the Hub.
        """
        if not safe_serialization:
            raise ValueError("DeltaDiff pipelines are saved as safetensors only: drop `safe_serialization=False`.")
        super().save_pretrained(save_directory, safe_serialization=True, **kwargs)

    def save_config(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        """
        Write `model_index.json` and, with it, the pipeline's code: `pipeline.py` and the modules it imports next to
        it, each component class of this package in its component folder. `save_pretrained` writes the config last,
        before any upload to the Hub, so the code goes wherever the weights go.
        """
        if push_to_hub:
            raise ValueError("Upload a DeltaDiff pipeline with `save_pretrained(..., push_to_hub=True)`.")
        super().save_config(save_directory, **kwargs)
        write_pipeline_code(self, str(save_directory))

    @property
    def upscale_factor(self) -> int:
        return self.config.upscale_factor

    @property
    def lr_size_multiple(self) -> int:
        """LR sizes are padded to a multiple of this so that the latent fits the UNet's downsampling."""
        unet_factor = 2 ** (len(self.unet.config.block_out_channels) - 1)
        hr_multiple = self.vae_scale_factor * unet_factor
        return hr_multiple // math.gcd(self.upscale_factor, hr_multiple)

    def _running_call(self) -> "_CallState | None":
        """The state of this pipeline's call running in this thread, `None` outside a call."""
        return getattr(_CALLS, "by_pipeline", {}).get(id(self))

    @property
    def _scheduler(self) -> SchedulerMixin:
        """The scheduler of the call running in this thread (its own copy), or `self.scheduler` outside a call."""
        call = self._running_call()
        return call.scheduler if call is not None else self.scheduler

    @property
    def _interrupt(self) -> bool:
        """diffusers' interrupt flag, per call: a callback setting `pipe._interrupt = True` stops its own call only."""
        call = self._running_call()
        return call.interrupt if call is not None else self.__dict__.get("_interrupt_outside_calls", False)

    @_interrupt.setter
    def _interrupt(self, value: bool):
        call = self._running_call()
        if call is not None:
            call.interrupt = bool(value)
        else:
            self.__dict__["_interrupt_outside_calls"] = bool(value)

    @contextlib.contextmanager
    def _call_state(self, scheduler: SchedulerMixin):
        """This thread's state of one call of this pipeline (its scheduler copy, its interrupt flag); re-entrant."""
        by_pipeline = _CALLS.__dict__.setdefault("by_pipeline", {})
        previous = by_pipeline.get(id(self))
        by_pipeline[id(self)] = _CallState(scheduler)
        try:
            yield
        finally:
            if previous is None:
                by_pipeline.pop(id(self), None)
            else:
                by_pipeline[id(self)] = previous

    @property
    def num_timesteps(self):
        """The steps of the call running in this thread (callbacks read it), else of the last call."""
        call = self._running_call()
        if call is not None and call.scheduler.timesteps is not None:
            return len(call.scheduler.timesteps)
        return self._num_timesteps

    @property
    def interrupt(self):
        return self._interrupt

    def encode_lr(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[`encode_lr`] with this pipeline's autoencoder and factor."""
        return encode_lr(self.vqvae, lr, self.upscale_factor)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode (and quantize) latents to images in `[-1, 1]`."""
        return self.vqvae.decode(latents.to(self.vqvae.dtype)).sample.clamp(-1.0, 1.0)

    @property
    def latent_tile_multiple(self) -> int:
        """Tile edges (latent pixels) fall on multiples of this: the UNet's downsampling grid, and whole LR pixels."""
        unet_factor = 2 ** (len(self.unet.config.block_out_channels) - 1)
        latents_per_lr_step = self.upscale_factor // math.gcd(self.upscale_factor, self.vae_scale_factor)
        return math.lcm(unet_factor, latents_per_lr_step)

    def _latent_canvas_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The latent canvas of LR images of `size`: padded to `lr_size_multiple` (as `pad_to_multiple` does), scaled."""
        multiple, scale, f = self.lr_size_multiple, self.upscale_factor, self.vae_scale_factor
        return tuple(-(-n // multiple) * multiple * scale // f for n in size)

    def unet_pixels(self, size: tuple[int, int], tile_size: int | None = None, tile_overlap: int | None = None) -> int:
        """
        The latent pixels one reverse step feeds the UNet for an LR image of `size` `(height, width)`: the canvas
        after border and size padding, every tile with its context. The cost of an image in work, not in its own
        pixels: a 1 x 30000 strip costs far more than its 30000 pixels (services bound requests by this).
        """
        pad = self.config.border_padding
        latent_size = self._latent_canvas_size((size[0] + 2 * pad, size[1] + 2 * pad))
        context = self.config.tile_context if tile_overlap is None else tile_overlap
        tiles = self._plan(latent_size, tile_size, context)
        return sum(tile.outer.shape[0] * tile.outer.shape[1] for tile in tiles)

    def _plan(self, latent_size: tuple[int, int], tile_size: int | None, context: int) -> list[Tile]:
        """The tiles of a latent canvas: one (the whole canvas) unless the image is tiled."""
        height, width = latent_size
        if tile_size is None:
            # decided on the image's own size: the border padding alone never adds a tile (or switches tiling on)
            border = self.config.border_padding * self.upscale_factor // self.vae_scale_factor
            own_size = max(latent_size) - 2 * border
            tile_size = 0
            if own_size > self.auto_tile_threshold:
                tile_size, count = self.default_tile_size, math.ceil(own_size / self.default_tile_size)
                if count * tile_size < max(latent_size):  # the padding would add a sliver of tiles: widen them
                    multiple = self.latent_tile_multiple
                    tile_size = math.ceil(max(latent_size) / count / multiple) * multiple
        if not tile_size or tile_size >= max(latent_size):
            return plan_tiles(height, width, max(height, width), 0)
        return plan_tiles(height, width, tile_size, context, self.latent_tile_multiple)

    def _map_tiles(self, tiles: list[Tile], batch_size: int, function, write, progress_bar=None):
        """
        Call `function(outer_box)` on batches of at most `batch_size` tiles of one shape (their outer boxes
        concatenated along the batch), then `write(tile, result)` with each tile's share of the result.
        """
        by_shape: dict[tuple[int, int], list[Tile]] = {}
        for tile in tiles:
            by_shape.setdefault(tile.outer.shape, []).append(tile)
        for group in by_shape.values():
            for start in range(0, len(group), batch_size):
                batch = group[start : start + batch_size]
                results = function([tile.outer for tile in batch]).chunk(len(batch))
                for tile, result in zip(batch, results):
                    write(tile, result)
                if progress_bar is not None:
                    progress_bar.update()

    def _encode_tiles(self, lr: torch.Tensor, tiles: list[Tile], batch_size: int, region: Box):
        """
        `(y, condition)` of [`encode_lr`] for padded LR images on the `region` of the latent canvas that `tiles`
        cover, computed tile by tile.
        """
        f, s = self.vae_scale_factor, self.upscale_factor
        height, width = region.shape
        lr_latents = lr_condition = None

        def encode(boxes):
            return torch.cat([torch.cat(self.encode_lr(box.scaled(f, s).crop(lr)), dim=1) for box in boxes])

        def write(tile, result):
            nonlocal lr_latents, lr_condition
            if lr_latents is None:
                channels = result.shape[1] - 3
                lr_latents = lr.new_empty(lr.shape[0], channels, height, width, dtype=self.unet.dtype)
                lr_condition = lr.new_empty(lr.shape[0], 3, height, width, dtype=self.unet.dtype)
            inner = tile.inner.within(tile.outer).crop(result)
            tile.inner.shifted(region.top, region.left).crop(lr_latents).copy_(inner[:, :-3])
            tile.inner.shifted(region.top, region.left).crop(lr_condition).copy_(inner[:, -3:])

        self._map_tiles(tiles, batch_size, encode, write)
        return lr_latents, lr_condition

    def _denoise_tiles(self, latents, lr_latents, lr_condition, t, tiles, batch_size, progress_bar, region, step):
        """
        The UNet's prediction at timestep `t` for the `region` of the canvas that `tiles` cover, tile by tile,
        each tile seen with its context; with `step`, each tile's pixels go through the reverse step (eq. 5/6) as
        soon as they are predicted (the step is elementwise), so that no full-size model output is kept. The inputs
        are [`RowWindow`]s holding the rows the tiles see.
        """
        target = None

        def predict(boxes):
            sample = torch.cat([latents.crop(box) for box in boxes])
            condition = torch.cat([lr_condition.crop(box) for box in boxes])
            model_input = torch.cat([self._scheduler.scale_model_input(sample, t), condition], dim=1)
            timestep = torch.full((model_input.shape[0],), t, device=sample.device, dtype=torch.long)
            return self.unet(model_input, timestep).sample

        def write(tile, result):
            nonlocal target
            output = tile.inner.within(tile.outer).crop(result)
            if step:
                sample, lr_sample = latents.crop(tile.inner), lr_latents.crop(tile.inner)
                output = self._scheduler.step(output, t, sample, lr_sample=lr_sample).prev_sample
            if target is None:
                target = output.new_empty(*output.shape[:2], *region.shape)
            tile.inner.shifted(region.top, region.left).crop(target).copy_(output)

        self._map_tiles(tiles, batch_size, predict, write, progress_bar)
        return target

    def _denoise_step(self, latents, lr_latents, lr_condition, t, tiles, batch_size, generator, progress_bar):
        """
        One reverse step (eq. 5/6) of the whole canvas; the UNet runs tile by tile, each tile with its context. A
        deterministic chain (kappa = 0) steps each tile's pixels as soon as they are predicted, into a new canvas.
        With noise (kappa > 0) the whole canvas steps at once, so that the noise does not depend on the tiling.
        """
        per_tile = len(tiles) > 1 and self._scheduler.config.kappa == 0
        windows = (RowWindow(latents), RowWindow(lr_latents), RowWindow(lr_condition))
        region = Box(0, latents.shape[-2], 0, latents.shape[-1])
        target = self._denoise_tiles(*windows, t, tiles, batch_size, progress_bar, region, step=per_tile)
        if per_tile:
            return target
        return self._scheduler.step(target, t, latents, generator=generator, lr_sample=lr_latents).prev_sample

    def _new_canvas(self, batch: int, output_type: str, size: tuple[int, int]):
        """The output of `output_type` for `batch` images of `size`: RGB PIL images for `"pil"` (filled tile by tile:
        no other copy of the image), a float32 `(B, H, W, 3)` array for `"np"`, a float `(B, 3, H, W)` tensor in
        `[0, 1]` for `"pt"`."""
        if output_type == "pt":
            return torch.empty(batch, 3, *size, dtype=torch.float32)
        if output_type == "pil":
            return [PIL.Image.new("RGB", size[::-1]) for _ in range(batch)]
        return np.empty((batch, *size, 3), dtype=np.float32)

    def _decode_into(self, canvas, latents: RowWindow, tiles, batch_size, output_type: str, gray=None, columns=None):
        """
        Decode the latents `tiles` cover (held by `latents`) tile by tile into `canvas` ([`_new_canvas`]), cropped
        to its size and to the latent `columns` (a `(left, right)` span; all by default). No float copy of the whole
        image is made for `"pil"`. Images flagged in `gray` (a `(B,)` bool tensor) come out gray.
        """
        f = self.vae_scale_factor
        if output_type == "pil":
            width, height = canvas[0].size
        else:
            height, width = canvas.shape[-2:] if output_type == "pt" else canvas.shape[1:3]
        left, right = (columns[0] * f, columns[1] * f) if columns else (0, width)
        owned = Box(0, height, left, min(right, width))

        def decode(boxes):
            return torch.cat([self.decode_latents(latents.crop(box)) for box in boxes])

        def write(tile, result):
            inner = tile.inner.scaled(f)
            box = inner.clipped(owned)
            if box.bottom <= box.top or box.right <= box.left:
                return
            image = box.within(tile.outer.scaled(f)).crop(result)
            image = self.image_processor.denormalize(image.float().cpu())
            if gray is not None and gray.any():
                image[gray] = to_gray(image[gray])
            if output_type == "pt":
                box.crop(canvas)[...] = image
                return
            image = image.permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                for target, tile_image in zip(canvas, (image * 255).round().astype(np.uint8)):
                    target.paste(PIL.Image.fromarray(tile_image), (box.left, box.top))
                return
            canvas[:, box.top : box.bottom, box.left : box.right] = image

        self._map_tiles(tiles, batch_size, decode, write)
        return canvas

    def _decode_tiles(self, latents, tiles, batch_size, output_type: str, size: tuple[int, int], gray=None):
        """Decode the latent canvas tile by tile into a new output of `output_type` ([`_new_canvas`])."""
        canvas = self._new_canvas(latents.shape[0], output_type, size)
        return self._decode_into(canvas, RowWindow(latents), tiles, batch_size, output_type, gray)

    def _streams(self, tiles: list[Tile], output_type: str, needs_steps: bool) -> bool:
        """Whether a canvas cut into `tiles` runs streamed ([`_stream_group`]): a deterministic chain in several tile
        rows, when no caller needs every step's latents (callbacks, intermediates, latent output)."""
        deterministic = self._scheduler.config.kappa == 0
        wanted = self.stream_tiles and not needs_steps and output_type != "latent"
        return deterministic and wanted and len(tile_rows(tiles)) > 1

    def _strips(self, tiles: list[Tile]):
        """The column strips a streamed canvas runs in ([`column_strips`]), with the halo the chain needs."""
        context = max(max(t.inner.left - t.outer.left, t.outer.right - t.inner.right) for t in tiles)
        halo = (len(self._scheduler.timesteps) + 2) * context
        return column_strips(tiles, self.stream_width, halo)

    def _unet_calls(self, tiles: list[Tile], streamed: bool, batch_size: int) -> int:
        """UNet calls per reverse step ([`_map_tiles`] batches tiles of one shape; streamed, within a tile row of a
        strip, halo tiles included)."""

        def calls(group):
            return sum(math.ceil(n / batch_size) for n in Counter(t.outer.shape for t in group).values())

        if not streamed:
            return calls(tiles)
        return sum(calls(row) for _, _, strip in self._strips(tiles) for row in tile_rows(strip))

    def _stream_group(self, lr, tiles, batch_size, output_type, size, gray, progress_bar):
        """
        The deterministic chain (kappa = 0) of [`_upscale_group`] with latents held only where they are still
        needed, so that memory does not grow with the image: in column strips (at most `stream_width` latent pixels
        wide) and, within a strip, as a wavefront down its tile rows ([`_stream_strip`]). A strip is run with a halo
        of neighbouring tile columns as wide as the error at a cut edge spreads over the chain (the tile context at
        every step, encoding and decoding), and writes only its own columns of the output. Every output pixel sees
        what it sees on the whole canvas, so the output is the same.
        """
        canvas = self._new_canvas(lr.shape[0], output_type, size)
        for own, region, strip_tiles in self._strips(tiles):
            self._stream_strip(lr, strip_tiles, region, batch_size, canvas, output_type, gray, progress_bar, own)
        return canvas

    def _stream_strip(self, lr, tiles, region, batch_size, canvas, output_type, gray, progress_bar, own):
        """
        Run the deterministic chain on the `region` of the latent canvas that `tiles` cover, as a wavefront down its
        tile rows, and decode the `own` columns into `canvas`. Tile row `j` of step `s` is computed as soon as step
        `s - 1` holds the rows its tiles see; tile row `j` of the output is decoded as soon as the last step holds
        the rows it sees; rows no later tile row needs are dropped.
        """
        rows = tile_rows(tiles)
        bands = [Box(row[0].inner.top, row[0].inner.bottom, region.left, region.right) for row in rows]
        seen = [(row[0].outer.top, row[0].outer.bottom) for row in rows]
        timesteps = self._scheduler.timesteps.tolist()  # Python ints: no device sync per tile
        # windows[0] holds x_T = y (kappa = 0), which every step also reads; windows[s], x after s steps
        windows = [RowWindow(left=region.left) for _ in range(len(timesteps) + 1)]
        condition = RowWindow(left=region.left)
        done = [0] * len(windows)  # tile rows computed at each level
        decoded = 0

        def last_row(bottom: int) -> int:
            """The tile row holding canvas row `bottom - 1`."""
            return next(j for j, band in enumerate(bands) if band.top < bottom <= band.bottom)

        def release():
            """Drop the rows that the next tile row of each reader does not see."""
            for level in range(1, len(windows)):
                reader = done[level + 1] if level + 1 < len(windows) else decoded
                if reader < len(rows):
                    windows[level].drop_before(seen[reader][0])
            if done[-1] < len(rows):
                first_step = seen[done[1]][0] if done[1] < len(rows) else bands[done[-1]].top
                windows[0].drop_before(min(first_step, bands[done[-1]].top))
                condition.drop_before(seen[done[-1]][0])

        def compute(level: int, j: int):
            while done[level] <= j:
                k = done[level]
                if level == 0:
                    y, lr_condition = self._encode_tiles(lr, rows[k], batch_size, bands[k])
                    windows[0].append(y)
                    condition.append(lr_condition)
                else:
                    compute(level - 1, last_row(seen[k][1]))
                    band = self._denoise_tiles(
                        windows[level - 1],
                        windows[0],
                        condition,
                        timesteps[level - 1],
                        rows[k],
                        batch_size,
                        progress_bar,
                        bands[k],
                        step=True,
                    )
                    windows[level].append(band)
                done[level] += 1
                release()

        columns = (own.left, own.right)
        for j in range(len(rows)):
            compute(len(windows) - 1, last_row(seen[j][1]))
            self._decode_into(canvas, windows[-1], rows[j], batch_size, output_type, gray, columns)
            decoded += 1
            release()

    def _upscale_group(
        self,
        lr: torch.Tensor,
        generator,
        output_type: str,
        tiles: list[Tile],
        streamed: bool,
        batch_size: int,
        return_intermediates: bool,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs: list[str],
        progress_bar,
    ):
        """
        LR images `(B, 3, h, w)` in `[-1, 1]` of one size: pad, encode, reverse chain, decode, crop, on the latent
        canvas cut into `tiles` ([`_plan`]), `streamed` ([`_streams`]) or on whole canvases. Returns the outputs in the internal format of `output_type` (see
        [`_decode_tiles`]) and the same for every step.
        """
        height, width = lr.shape[-2:]
        scale, f = self.upscale_factor, self.vae_scale_factor
        lr = pad_to_multiple(lr, self.lr_size_multiple)
        gray = (lr[:, 0] == lr[:, 1]).flatten(1).all(1) & (lr[:, 1] == lr[:, 2]).flatten(1).all(1)
        output_size = (height * scale, width * scale)
        if streamed:
            canvas = self._stream_group(lr, tiles, batch_size, output_type, output_size, gray.cpu(), progress_bar)
            return canvas, []
        canvas_region = Box(0, lr.shape[-2] * scale // f, 0, lr.shape[-1] * scale // f)
        lr_latents, lr_condition = self._encode_tiles(lr, tiles, batch_size, canvas_region)
        latents = self._scheduler.init_latents(lr_latents, generator=generator)

        intermediates = []
        # the timesteps as Python ints (one device sync per call, not one per tile and step)
        for i, t in enumerate(self._scheduler.timesteps.tolist()):
            if self.interrupt:
                continue
            latents = self._denoise_step(
                latents, lr_latents, lr_condition, t, tiles, batch_size, generator, progress_bar
            )
            if callback_on_step_end is not None:
                tensors = {"latents": latents, "lr_latents": lr_latents, "lr_condition": lr_condition}
                callback_kwargs = {k: tensors[k] for k in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, i, self._scheduler.timesteps[i], callback_kwargs)
                latents = callback_outputs.pop("latents", latents)
            if return_intermediates:
                step_type = "pt" if output_type == "latent" else output_type
                intermediates.append(
                    self._decode_tiles(latents, tiles, batch_size, step_type, output_size, gray.cpu())
                )
        if output_type == "latent":
            latent_size = (math.ceil(height * scale / f), math.ceil(width * scale / f))
            return latents[..., : latent_size[0], : latent_size[1]].float().cpu(), intermediates
        return self._decode_tiles(latents, tiles, batch_size, output_type, output_size, gray.cpu()), intermediates

    def _crop_border(self, images, output_type: str):
        """Crop `border_padding` (in output pixels, or latent pixels for `latent`) from every output image."""
        pad = self.config.border_padding * self.upscale_factor
        if output_type == "latent":
            pad //= self.vae_scale_factor
        if not pad:
            return images

        def crop(image):
            if isinstance(image, PIL.Image.Image):
                return image.crop((pad, pad, image.width - pad, image.height - pad))
            if output_type == "np":  # (..., H, W, C)
                return image[..., pad:-pad, pad:-pad, :]
            return image[..., pad:-pad, pad:-pad]  # (..., C, H, W)

        return [crop(im) for im in images] if isinstance(images, list) else crop(images)

    def _to_output(self, canvases: list, output_type: str, order: list[int], one_size: bool):
        """
        Per-group canvases to the pipeline's output format, in input order (`order`: the input index of each image,
        group after group). Images of `one_size` stay one array / tensor / list of PIL images (their groups hold the
        inputs in order); several sizes give a list of images.
        """
        if len(canvases) == 1 or (one_size and output_type == "pil"):
            images = [image for canvas in canvases for image in canvas] if len(canvases) > 1 else canvases[0]
        elif one_size:
            images = np.concatenate(canvases) if output_type == "np" else torch.cat(canvases)
        else:
            flat = [image for canvas in canvases for image in canvas]
            images = [flat[k] for k in sorted(range(len(order)), key=order.__getitem__)]
        return list(images) if output_type == "pil" else images

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        image: PIL.Image.Image | np.ndarray | torch.Tensor | list,
        num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        return_intermediates: bool = False,
        callback_on_step_end: Callable[[Any, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        tile_batch_size: int | None = None,
    ) -> DeltaDiffPipelineOutput | tuple:
        r"""
        The call function to the pipeline for super-resolution.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The low-resolution image(s). NumPy arrays are `HxWxC` (or a `BxHxWxC` batch) as uint8, uint16 or
                float in `[0, 1]`; tensors are `CxHxW` (or `BxCxHxW`) floats in `[0, 1]` or uint8. Float data outside
                `[0, 1]`, NaN and inf are refused with a `ValueError`. Grayscale images are replicated to RGB (and
                come out gray) and alpha channels are dropped, so outputs are always RGB. Images of different sizes
                may be mixed in one call; each is upscaled at its own size.
            num_inference_steps (`int`, *optional*):
                Number of reverse steps; defaults to the scheduler's `num_train_timesteps` (4 for DeltaDiff). Fewer
                steps respace the chain.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Generator(s) for the noise of ResShift (`kappa > 0`); DeltaDiff (`kappa = 0`) is deterministic and
                ignores it. A list must have one generator per image.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"`, `"pt"` or `"latent"` (the final latents, before decoding, padded sizes).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`DeltaDiffPipelineOutput`] instead of a plain tuple.
            return_intermediates (`bool`, *optional*, defaults to `False`):
                Also decode the latent after every reverse step (the strip of the paper's Fig. 4).
            callback_on_step_end (`Callable`, *optional*):
                A function called at the end of each reverse step as `callback_on_step_end(self, step, timestep,
                callback_kwargs)`, `callback_kwargs` holding the tensors named in
                `callback_on_step_end_tensor_inputs`. It returns a dict; a `"latents"` entry replaces the latents.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*):
                Tensor inputs for `callback_on_step_end`, among `latents`, `lr_latents` and `lr_condition`.
            tile_size (`int`, *optional*):
                Process the image in tiles of `tile_size` x `tile_size` latent pixels (LR pixels for x4 with an f4
                autoencoder) so that memory stays bounded whatever the image size. `None` (default) tiles images
                larger than `auto_tile_threshold` (256) on a side, with tiles of `default_tile_size` (128); `0` never
                tiles. With a local model (the default one) the output does not depend on it; see the class
                documentation for what it does to other models.
            tile_overlap (`int`, *optional*):
                The context each tile sees around itself, in latent pixels. Defaults to the pipeline's
                `tile_context`, which is wide enough for its model; smaller values are faster and less exact.
            tile_batch_size (`int`, *optional*):
                The UNet's batch: how many tiles (of all the images of one size in the call together) run through
                it at once; a call with more images runs them in several batches, so memory is bounded by this
                however many images are passed. Defaults to 1 on the CPU (measured fastest there, with the least
                memory: LR 1024² in 51 s and 1.36 GiB against 61 s and 1.72 GiB with 4) and 4 on accelerators.

        Examples:

        Returns:
            [`DeltaDiffPipelineOutput`] or `tuple`:
                If `return_dict` is `True`, [`DeltaDiffPipelineOutput`] is returned, otherwise a tuple
                `(images, intermediate_images)`.
        """
        # 1. Check inputs
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"`output_type` must be one of 'pil', 'np', 'pt', 'latent', got {output_type!r}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` must be in {self._callback_tensor_inputs}, got {unknown}."
            )
        if tile_size is not None and (isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 0):
            raise ValueError(f"`tile_size` must be positive, 0 (never tile) or None (automatic), got {tile_size!r}.")
        if tile_overlap is not None and (
            isinstance(tile_overlap, bool) or not isinstance(tile_overlap, int) or tile_overlap < 0
        ):
            raise ValueError(f"`tile_overlap` must be 0 or more latent pixels, or None, got {tile_overlap!r}.")
        if tile_batch_size is None:
            tile_batch_size = 1 if self._execution_device.type == "cpu" else 4
        if isinstance(tile_batch_size, bool) or not isinstance(tile_batch_size, int) or tile_batch_size < 1:
            raise ValueError(f"`tile_batch_size` must be a positive integer, got {tile_batch_size!r}.")
        if num_inference_steps is not None:
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
                raise ValueError(
                    f"`num_inference_steps` must be a positive integer or None, got {num_inference_steps!r}."
                )
            num_inference_steps = int(num_inference_steps)
        images = [pad_border(to_unit_tensor(im), self.config.border_padding) for im in split_images(image)]
        if not images:
            raise ValueError("`image` is empty: pass at least one image.")
        if isinstance(generator, list) and len(generator) != len(images):
            raise ValueError(f"Got {len(generator)} generators for {len(images)} images: pass one per image.")

        # 2. Set timesteps, on this call's own copy of the scheduler: calls from several threads never share a schedule
        device = self._execution_device
        scheduler = copy.deepcopy(self.scheduler)
        with self._call_state(scheduler):
            scheduler.set_timesteps(num_inference_steps, device=device)
            self._num_timesteps = len(scheduler.timesteps)

            # 3. Batch images by size; each batch is one canvas, upscaled whole or (large ones) in tiles. A batch holds
            # at most `tile_batch_size` images and each UNet call `tile_batch_size // images` of its tiles, so that the
            # UNet batch (images x tiles) never exceeds `tile_batch_size`, however many images come in one call.
            by_size: dict[tuple[int, int], list[int]] = {}
            for index, im in enumerate(images):
                by_size.setdefault(tuple(im.shape[-2:]), []).append(index)
            groups = [
                (size, indices[start : start + tile_batch_size])
                for size, indices in by_size.items()
                for start in range(0, len(indices), tile_batch_size)
            ]
            tiles_per_call = [max(1, tile_batch_size // len(indices)) for _, indices in groups]
            context = self.config.tile_context if tile_overlap is None else tile_overlap
            plan_of_size = {size: self._plan(self._latent_canvas_size(size), tile_size, context) for size in by_size}
            plans = [plan_of_size[size] for size, _ in groups]
            needs_steps = return_intermediates or callback_on_step_end is not None
            streamed = [self._streams(tiles, output_type, needs_steps) for tiles in plans]
            num_unet_calls = sum(map(self._unet_calls, plans, streamed, tiles_per_call))

            outputs, steps = [None] * len(groups), [None] * len(groups)
            order = [i for _, indices in groups for i in indices]
            with self.progress_bar(total=num_unet_calls * self._num_timesteps) as progress_bar:
                for g, (_, indices) in enumerate(groups):
                    lr = torch.stack([images[i] for i in indices]).to(device=device, dtype=self.vqvae.dtype) * 2 - 1
                    group_generator = [generator[i] for i in indices] if isinstance(generator, list) else generator
                    outputs[g], steps[g] = self._upscale_group(
                        lr,
                        group_generator,
                        output_type,
                        plans[g],
                        streamed[g],
                        tiles_per_call[g],
                        return_intermediates,
                        callback_on_step_end,
                        callback_on_step_end_tensor_inputs,
                        progress_bar,
                    )

            # 4. Post-process: back to input order
            one_size = len(by_size) == 1
            output = self._crop_border(self._to_output(outputs, output_type, order, one_size), output_type)
            intermediate_images = None
            if return_intermediates:
                step_type = "pt" if output_type == "latent" else output_type
                completed = min(len(group_steps) for group_steps in steps)
                intermediate_images = [
                    self._crop_border(
                        self._to_output([group_steps[s] for group_steps in steps], step_type, order, one_size),
                        step_type,
                    )
                    for s in range(completed)
                ]

            self.maybe_free_model_hooks()

            if not return_dict:
                return (output, intermediate_images)
            return DeltaDiffPipelineOutput(images=output, intermediate_images=intermediate_images)
