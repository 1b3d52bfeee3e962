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

import copy
import math
import os
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
from .call_state import PerCallState
from .canvas import CANVASES, assemble, crop_border
from .config_checks import PIPELINE, check_pipeline_folder, check_values
from .image_utils import bicubic_upsample, pad_border, pad_to_multiple, resize_to, split_images, to_unit_tensor
from .pipeline_code import CarriesCode
from .tiled_execution import TiledExecution, _Batch
from .tiling import Box, RowWindow, Wavefront


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


def autoencoder_downsampling_factor(autoencoder: ModelMixin) -> int:
    """How many image pixels one latent pixel spans: `downsampling_factor`, or `2^(blocks - 1)` for a `VQModel`."""
    factor = getattr(autoencoder.config, "downsampling_factor", None)
    return int(factor) if factor else 2 ** (len(autoencoder.config.block_out_channels) - 1)


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


class DeltaDiffPipeline(PerCallState, TiledExecution, CarriesCode, DiffusionPipeline):
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

    Large images are processed in tiles ([`~tiled_execution.TiledExecution`]): at every reverse step the UNet runs
    tile by tile, each tile seen with `tile_context` latent pixels of its neighbours, and only the tile's own pixels
    are kept and stepped; encoding and decoding are tiled the same way, into the output. The deterministic chain runs
    as a wavefront down the tile rows, in column strips ([`~tiling.Wavefront`]), so that only a few tile rows of latents
    are held; callbacks, intermediates, `output_type="latent"` and noisy chains keep whole latent canvases. With the
    shipped model (a lossless [`SpaceToDepthAutoencoder`] and a [`LocalUNet2DModel`]: no image-wide statistics) this
    is the whole-image computation itself: `tile_size` and `tile_batch_size` set memory and speed, not the output.
    Models with image-wide statistics (`GroupNorm`, attention, a learned `VQModel`) come out close to, not equal to,
    their whole-image output when tiled; use `tile_size=0` for them when memory allows.

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
        default_tile_size (`int`, *optional*, defaults to 128), auto_tile_threshold (`int`, *optional*, defaults to 256):
            With `tile_size=None`, images larger than `auto_tile_threshold` latent pixels on a side are tiled in tiles
            of about `default_tile_size`.
        stream_tiles (`bool`, *optional*, defaults to `True`), stream_width (`int`, *optional*, defaults to 1024):
            Tiled deterministic chains run as a wavefront down the image, in column strips of at most `stream_width`
            latent pixels, unless the caller needs every step's latents (callbacks, intermediates, latent output);
            `stream_tiles=False` keeps whole latent canvases (the same output, for comparison).
    """

    model_cpu_offload_seq = "vqvae->unet"
    _callback_tensor_inputs = ["latents", "lr_latents", "lr_condition"]

    def __init__(
        self,
        vqvae: ModelMixin,
        unet: UNet2DModel,
        scheduler: SchedulerMixin,
        upscale_factor: int | None = None,
        tile_context: int = 16,
        border_padding: int = 0,
        *,
        default_tile_size: int = 128,
        auto_tile_threshold: int = 256,
        stream_tiles: bool = True,
        stream_width: int = 1024,
    ):
        super().__init__()
        self.register_modules(vqvae=vqvae, unet=unet, scheduler=scheduler)
        # inference modules: in eval mode, as `from_pretrained` leaves them, however the pipeline was built
        vqvae.eval()
        unet.eval()
        self.vae_scale_factor = autoencoder_downsampling_factor(vqvae)
        knobs = {
            "tile_context": tile_context,
            "border_padding": border_padding,
            "default_tile_size": default_tile_size,
            "auto_tile_threshold": auto_tile_threshold,
            "stream_tiles": stream_tiles,
            "stream_width": stream_width,
        }
        check_values({"upscale_factor": upscale_factor, **knobs}, PIPELINE, type(self).__name__)
        self.register_to_config(upscale_factor=int(upscale_factor or self.vae_scale_factor), **knobs)
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

    @property
    def upscale_factor(self) -> int:
        return self.config.upscale_factor

    @property
    def lr_size_multiple(self) -> int:
        """LR sizes are padded to a multiple of this so that the latent fits the UNet's downsampling."""
        unet_factor = 2 ** (len(self.unet.config.block_out_channels) - 1)
        hr_multiple = self.vae_scale_factor * unet_factor
        return hr_multiple // math.gcd(self.upscale_factor, hr_multiple)

    def encode_lr(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[`encode_lr`] with this pipeline's autoencoder and factor."""
        return encode_lr(self.vqvae, lr, self.upscale_factor)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode (and quantize) latents to images in `[-1, 1]`."""
        return self.vqvae.decode(latents.to(self.vqvae.dtype)).sample.clamp(-1.0, 1.0)

    def _upscale_batch(self, lr: torch.Tensor, batch: _Batch):
        """
        LR images `(B, 3, h, w)` in `[-1, 1]` of one size: pad, encode, reverse chain, decode, on the latent canvas
        cut into `batch.tiles`, as a [`~tiling.Wavefront`] down column strips or step by step on whole canvases.
        Returns the output of `batch.output_type` (a canvas' `result()`, or latents) and one for every step.
        """
        height, width = lr.shape[-2:]
        scale, f = self.upscale_factor, self.vae_scale_factor
        lr = pad_to_multiple(lr, self.lr_size_multiple)
        gray = (lr[:, 0] == lr[:, 1]).flatten(1).all(1) & (lr[:, 1] == lr[:, 2]).flatten(1).all(1)
        batch.gray = gray.cpu()
        output_size = (height * scale, width * scale)
        latent = batch.output_type == "latent"
        canvas = None if latent else CANVASES[batch.output_type](lr.shape[0], output_size)
        whole = Box(0, lr.shape[-2] * scale // f, 0, lr.shape[-1] * scale // f)
        strips = self._strips(batch.tiles) if batch.streamed else [(None, whole, batch.tiles)]
        scheduler, steps = self._scheduler, []
        timesteps = scheduler.timesteps.tolist()  # Python ints: one device sync per call, not one per tile
        for own, region, tiles in strips:
            start_is_y = scheduler.config.kappa == 0  # x_T = y: no copy
            wave = Wavefront(tiles, region, len(timesteps), not batch.streamed, start_is_y)
            for j in wave.output_rows():
                # 1. The LR's latent y (x_T = y, plus noise for ResShift) and the UNet's LR condition
                for k in wave.advance(0, j):
                    y, condition = self._encode_band(lr, wave.rows[k], wave.bands[k], batch)
                    wave.y.append(y)
                    wave.condition.append(condition)
                    if not start_is_y:
                        wave.x[0].append(scheduler.init_latents(y, generator=batch.generator))
                # 2. The reverse chain (eq. 5/6): each step computes the tile rows the next one needs
                for i, t in enumerate(timesteps):
                    if self.interrupt:
                        continue
                    for k in wave.advance(i + 1, j):
                        wave.x[i + 1].append(self._denoise_band(wave, i + 1, t, k, batch))
                    if not batch.streamed:
                        steps += self._step_end(wave, i, batch, output_size)
                # 3. Decode the output rows the chain has finished
                if latent:
                    latent_size = (math.ceil(height * scale / f), math.ceil(width * scale / f))
                    result = wave.latest().crop(whole)[..., : latent_size[0], : latent_size[1]].float().cpu()
                else:
                    self._decode_band(canvas, wave.latest(), wave.rows[j], batch, own and (own.left, own.right))
                wave.decoded_row()
        return (result if latent else canvas.result()), steps

    def _step_end(self, wave: Wavefront, i: int, batch: _Batch, output_size: tuple[int, int]) -> list:
        """After step `i` on a whole canvas: `callback_on_step_end` (which may replace the latents), the decoded
        step for `return_intermediates`."""
        region = wave.bands[0]
        if batch.callback is not None:
            tensors = {"latents": wave.x[i + 1].crop(region), "lr_latents": wave.y.crop(region)}
            tensors["lr_condition"] = wave.condition.crop(region)
            timestep = self._scheduler.timesteps[i]
            outputs = batch.callback(self, i, timestep, {k: tensors[k] for k in batch.callback_inputs})
            if "latents" in outputs:
                wave.x[i + 1] = RowWindow(outputs.pop("latents"), region.top, region.left)
        if not batch.return_intermediates:
            return []
        step_type = "pt" if batch.output_type == "latent" else batch.output_type
        canvas = CANVASES[step_type](wave.x[i + 1].crop(region).shape[0], output_size)
        return [self._decode_band(canvas, wave.x[i + 1], wave.rows[0], batch).result()]

    def check_inputs(self, output_type, callback_inputs, tile_size, tile_overlap, tile_batch_size, steps):
        """The call's arguments, each checked before any work: a `ValueError` naming the argument."""
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"`output_type` must be one of 'pil', 'np', 'pt', 'latent', got {output_type!r}.")
        unknown = [k for k in callback_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` must be in {self._callback_tensor_inputs}, got {unknown}."
            )
        checks = {
            "tile_size": (tile_size, 0, "positive, 0 (never tile) or None (automatic)"),
            "tile_overlap": (tile_overlap, 0, "0 or more latent pixels, or None"),
            "tile_batch_size": (tile_batch_size, 1, "a positive integer"),
            "num_inference_steps": (steps, 1, "a positive integer or None"),
        }
        for name, (value, low, expected) in checks.items():
            integral = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            if value is not None and not (integral and value >= low):
                raise ValueError(f"`{name}` must be {expected}, got {value!r}.")

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        image: PIL.Image.Image | np.ndarray | torch.Tensor | list,
        num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        *,
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
                Number of reverse steps; defaults to the chain length the model was trained through (the scheduler's
                `default_inference_steps`, else its `num_train_timesteps`). Fewer steps respace the chain.
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
        device = self._execution_device
        tile_batch_size = (1 if device.type == "cpu" else 4) if tile_batch_size is None else tile_batch_size
        callback_inputs = callback_on_step_end_tensor_inputs
        self.check_inputs(output_type, callback_inputs, tile_size, tile_overlap, tile_batch_size, num_inference_steps)
        images = [pad_border(to_unit_tensor(im), self.config.border_padding) for im in split_images(image)]
        if not images:
            raise ValueError("`image` is empty: pass at least one image.")
        if isinstance(generator, list) and len(generator) != len(images):
            raise ValueError(f"Got {len(generator)} generators for {len(images)} images: pass one per image.")

        # 2. Set timesteps, on this call's own copy of the scheduler: calls from several threads never share a schedule
        scheduler = copy.deepcopy(self.scheduler)
        with self._call_state(scheduler):
            scheduler.set_timesteps(None if num_inference_steps is None else int(num_inference_steps), device=device)
            self._num_timesteps = len(scheduler.timesteps)

            # 3. Batch images by size, at most `tile_batch_size` images a batch, each UNet call `tile_batch_size //
            # images` of its tiles: the UNet batch (images x tiles) never exceeds `tile_batch_size`
            by_size: dict[tuple[int, int], list[int]] = {}
            for index, im in enumerate(images):
                by_size.setdefault(tuple(im.shape[-2:]), []).append(index)
            groups = [
                (size, indices[start : start + tile_batch_size])
                for size, indices in by_size.items()
                for start in range(0, len(indices), tile_batch_size)
            ]
            context = self.config.tile_context if tile_overlap is None else tile_overlap
            plans = {size: self._plan(self._latent_canvas_size(size), tile_size, context) for size in by_size}
            needs_steps = return_intermediates or callback_on_step_end is not None
            batches = []
            for size, indices in groups:
                streamed = self._streams(plans[size], output_type, needs_steps)
                batch = _Batch(plans[size], streamed, max(1, tile_batch_size // len(indices)), output_type)
                batch.generator = [generator[i] for i in indices] if isinstance(generator, list) else generator
                batch.return_intermediates = return_intermediates
                batch.callback, batch.callback_inputs = callback_on_step_end, tuple(callback_inputs)
                batches.append(batch)
            num_unet_calls = sum(self._unet_calls(b.tiles, b.streamed, b.tiles_per_call) for b in batches)

            # 4. Upscale each batch: encode, reverse chain, decode ([`_upscale_batch`])
            outputs, steps = [], []
            with self.progress_bar(total=num_unet_calls * self._num_timesteps) as progress_bar:
                for (_, indices), batch in zip(groups, batches):
                    lr = torch.stack([images[i] for i in indices]).to(device=device, dtype=self.vqvae.dtype) * 2 - 1
                    batch.progress_bar = progress_bar
                    output, batch_steps = self._upscale_batch(lr, batch)
                    outputs.append(output)
                    steps.append(batch_steps)

            # 5. Post-process: back to input order, the border padding cropped
            order = [i for _, indices in groups for i in indices]
            pad = self.config.border_padding * self.upscale_factor
            pad = pad // self.vae_scale_factor if output_type == "latent" else pad
            one_size = len(by_size) == 1
            output = crop_border(assemble(outputs, output_type, order, one_size), pad, output_type)
            intermediate_images = None
            if return_intermediates:
                step_type = "pt" if output_type == "latent" else output_type
                pad = self.config.border_padding * self.upscale_factor
                intermediate_images = [
                    crop_border(assemble([s[i] for s in steps], step_type, order, one_size), pad, step_type)
                    for i in range(min(map(len, steps)))
                ]

            self.maybe_free_model_hooks()

            if not return_dict:
                return (output, intermediate_images)
            return DeltaDiffPipelineOutput(images=output, intermediate_images=intermediate_images)
