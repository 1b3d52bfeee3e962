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
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.models import UNet2DModel
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import replace_example_docstring

# relative imports only of modules that go with saved pipelines (see `pipeline_code`), each imported here: diffusers
# copies only the modules `pipeline.py` imports itself; the component classes travel in their own folders instead
from .canvas import assemble, crop_border
from .config_checks import (
    PIPELINE,
    check_call,
    check_pipeline_folder,
    check_scheduler,
    check_step_end,
    check_values,
    step_end_latents,
    unet_pixels_size,
)
from .encoding import autoencoder_downsampling_factor, encode_lr
from .image_utils import pad_border, pad_to_multiple, split_images, to_unit_tensor
from .pipeline_code import CarriesCode
from .pipeline_output import DeltaDiffPipelineOutput
from .tiled_execution import ChainStrip, TiledBatch, TiledExecutor, deprecated_tile_overlap
from .tiling import Tile  # noqa: F401 - imported by `tiled_execution`


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


class DeltaDiffPipeline(CarriesCode, DiffusionPipeline):
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

    Large images are processed in tiles by a [`~tiled_execution.TiledExecutor`] built for every call: at every stage
    each tile is seen with `tile_context` latent pixels of its neighbours and only its own pixels are kept. With the
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
            field needs (see the pipeline's model card for the measured choice). A call's `tile_context` overrides it.
        border_padding (`int`, *optional*, defaults to 0):
            LR pixels added by reflection around every input before the chain, and cropped from the output after it,
            so that the UNet never sees its zero padding where the image ends (which leaves a band along the borders).
            Part of the model: saved with it (the shipped model's value is measured, see its card).
        default_tile_size (`int`, *optional*, defaults to 128), auto_tile_threshold (`int`, *optional*, defaults to 512):
            With `tile_size=None`, images larger than `auto_tile_threshold` latent pixels on a side are tiled in tiles
            of about `default_tile_size`. Whole images are the fastest (no context computed twice), tiles bound the
            memory: 512 keeps a x4 output of 2048² whole, at 1.5 to 1.9 GiB on the CPU (docs/performance.md).
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
        auto_tile_threshold: int = 512,
        stream_tiles: bool = True,
        stream_width: int = 1024,
    ):
        super().__init__()
        check_scheduler(scheduler)
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
        self._interrupt, self._num_timesteps = False, None

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

    @property
    def latent_tile_multiple(self) -> int:
        """Tile edges (latent pixels) fall on multiples of this: the UNet's downsampling grid, and whole LR pixels."""
        unet_factor = 2 ** (len(self.unet.config.block_out_channels) - 1)
        latents_per_lr_step = self.upscale_factor // math.gcd(self.upscale_factor, self.vae_scale_factor)
        return math.lcm(unet_factor, latents_per_lr_step)

    @property
    def interrupt(self) -> bool:
        """diffusers' interrupt flag: a callback's `pipeline._interrupt = True` stops the call it was passed by."""
        return self._interrupt

    @property
    def num_timesteps(self) -> int | None:
        """The steps of the running call (for the pipeline a callback is passed), else of the last call."""
        return self._num_timesteps

    def encode_lr(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[`encode_lr`] with this pipeline's autoencoder and factor."""
        return encode_lr(self.vqvae, lr, self.upscale_factor)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode (and quantize) latents to images in `[-1, 1]`."""
        return self.vqvae.decode(latents.to(self.vqvae.dtype)).sample.clamp(-1.0, 1.0)

    def tiled_executor(self, tile_size: int | None = None, tile_context: int | None = None, **call) -> TiledExecutor:
        """
        The [`~tiled_execution.TiledExecutor`] of a call with these tiling arguments: this pipeline's geometry and
        tiling config, and what the call needs (`call`: `tile_batch_size`, `num_steps`, `output_type`, ...).
        """
        config = ("border_padding", "default_tile_size", "auto_tile_threshold", "stream_tiles", "stream_width")
        return TiledExecutor(
            upscale_factor=self.upscale_factor,
            vae_scale_factor=self.vae_scale_factor,
            lr_size_multiple=self.lr_size_multiple,
            latent_tile_multiple=self.latent_tile_multiple,
            tile_size=tile_size,
            tile_context=self.config.tile_context if tile_context is None else tile_context,
            latent_dtype=self.unet.dtype,
            **{key: self.config[key] for key in config},
            **call,
        )

    def unet_pixels(
        self, size: tuple[int, int], tile_size: int | None = None, tile_context: int | None = None, **kwargs
    ):
        """
        The latent pixels one reverse step feeds the UNet for an LR image of `size` `(height, width)`: the canvas
        after border and size padding, every tile with its context. The cost of an image in work, not in its own
        pixels: a 1 x 30000 strip costs far more than its 30000 pixels (services bound requests by this).
        """
        tile_context = deprecated_tile_overlap(tile_context, kwargs, "DeltaDiffPipeline.unet_pixels")
        size = unet_pixels_size(size, tile_size, tile_context)
        return self.tiled_executor(tile_size, tile_context).unet_pixels(size)

    def _for_one_call(self) -> "DeltaDiffPipeline":
        """This pipeline as one call sees it: the same models and config, its own scheduler, step count and interrupt
        flag. Threads share no schedule; a callback's `pipeline._interrupt = True` stops its own call only."""
        call = copy.copy(self)
        # not `setattr`: `DiffusionPipeline` would register the copy's scheduler in its config again
        call.__dict__.update(scheduler=copy.deepcopy(self.scheduler), _interrupt=False)
        return call

    def _upscale_batch(self, lr: torch.Tensor, batch: TiledBatch, generator, progress_bar, **step_end) -> tuple:
        """
        The reverse chain (eq. 5/6) for LR images `(B, 3, h, w)` in `[-1, 1]` of one size: encode `y`, then for each
        timestep the UNet's prediction and the scheduler's step, then decode. `batch`
        ([`~tiled_execution.TiledBatch`]) hands out the work tile by tile, on whole latent canvases or as a wavefront
        down column strips, and keeps what is computed. `step_end`: [`_step_end`]'s arguments. Returns the output of
        the call's `output_type` and, on whole canvases, one for every step.
        """
        batch.start(pad_to_multiple(lr, self.lr_size_multiple))
        timesteps = self.scheduler.timesteps.tolist()  # Python ints: one device sync per call, not one per tile
        deterministic, steps = self.scheduler.is_deterministic, []
        for strip in batch.strips():
            for row in strip.output_rows():
                # 1. Encode, tile by tile: y = E(bicubic(LR)) and the UNet's LR condition; x_T = y (ResShift: + noise)
                for band in strip.to_encode(row):
                    for tile in band.tiles:
                        band.put(tile, *self.encode_lr(band.lr(tile)))
                    band.x_T = band.y if deterministic else self.scheduler.init_latents(band.y, generator=generator)
                # 2. Denoise (eq. 5/6): x_{t-1} = step(UNet(x_t, LR, t), x_t, y), on the rows the next step needs
                for i, t in enumerate(timesteps):
                    if self.interrupt:
                        continue
                    for band in strip.to_denoise(i, row):
                        for tiles in band.unet_batches():
                            latents, lr_condition = band.model_input(tiles)  # each tile with its context
                            latents = self.scheduler.scale_model_input(latents, t)
                            model_input = torch.cat([latents, lr_condition], dim=1)
                            timestep = torch.full((len(model_input),), t, device=latents.device, dtype=torch.long)
                            model_output = self.unet(model_input, timestep).sample
                            progress_bar.update()
                            for x_t, y, prediction, x_prev in band.to_step(tiles, model_output):
                                step = self.scheduler.step(prediction, t, x_t, generator=generator, lr_sample=y)
                                x_prev.copy_(step.prev_sample)
                    if not batch.streamed:
                        steps += self._step_end(strip, i, **step_end)
                # 3. Decode the output row the chain has finished, tile by tile, into the output
                for band in strip.to_decode(row):
                    for tile in band.tiles:
                        band.put(tile, self.decode_latents(band.latents(tile)))
        return batch.result(), steps

    def _step_end(self, strip: ChainStrip, i: int, callback, callback_inputs, return_intermediates) -> list:
        """After step `i` on a whole canvas: the callback (which may replace the latents), the decoded intermediate."""
        if callback is not None:
            tensors = strip.step_tensors(i)
            outputs = callback(self, i, self.scheduler.timesteps[i], {k: tensors[k] for k in callback_inputs})
            latents = step_end_latents(outputs, tensors["latents"])
            if latents is not None:
                strip.replace_latents(i, latents)
        if not return_intermediates:
            return []
        band = strip.to_decode_step(i)
        for tile in band.tiles:
            band.put(tile, self.decode_latents(band.latents(tile)))
        return [band.output.result()]

    def check_inputs(self, output_type, callback_inputs, tile_size, tile_context, tile_batch_size, steps):
        """The call's arguments, each checked before any work: a `ValueError` naming the argument."""
        counts = (tile_size, tile_context, tile_batch_size, steps)
        check_call(self.scheduler, output_type, callback_inputs, self._callback_tensor_inputs, counts)

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
        tile_context: int | None = None,
        tile_batch_size: int | None = None,
        **kwargs,
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
                A function called at the end of each reverse step as `callback_on_step_end(pipeline, step, timestep,
                callback_kwargs)`, `callback_kwargs` holding the tensors named in
                `callback_on_step_end_tensor_inputs`. It returns a dict; a `"latents"` entry (a tensor of the latents'
                shape) replaces the latents.
                `pipeline` is this pipeline as the call sees it (its own scheduler, `num_timesteps` and `_interrupt`).
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*):
                Tensor inputs for `callback_on_step_end`, among `latents`, `lr_latents` and `lr_condition`.
            tile_size (`int`, *optional*):
                Process the image in tiles of `tile_size` x `tile_size` latent pixels (LR pixels for x4 with an f4
                autoencoder) so that memory stays bounded whatever the image size. `None` (default) tiles images
                larger than `auto_tile_threshold` (512) on a side, with tiles of `default_tile_size` (128); `0` never
                tiles. With a local model (the default one) the output does not depend on it; see the class
                documentation for what it does to other models.
            tile_context (`int`, *optional*):
                The context each tile sees around itself, in latent pixels. Defaults to the pipeline's `tile_context`,
                which is wide enough for its model; smaller values are faster and less exact. `tile_overlap` is its
                deprecated spelling.
            tile_batch_size (`int`, *optional*):
                The UNet's batch: how many tiles (of all the images of one size in the call together) run through
                it at once; a call with more images runs them in several batches, so memory is bounded by this
                however many images are passed. Defaults to 1 on the CPU (measured fastest there, with the least
                memory, see `docs/performance.md`) and 4 on accelerators.

        Examples:

        Returns:
            [`DeltaDiffPipelineOutput`] or `tuple`:
                If `return_dict` is `True`, [`DeltaDiffPipelineOutput`] is returned, otherwise a tuple
                `(images, intermediate_images)`.
        """
        # 1. Check inputs
        device = self._execution_device
        tile_context = deprecated_tile_overlap(tile_context, kwargs, "DeltaDiffPipeline.__call__", stacklevel=5)
        tile_batch_size = (1 if device.type == "cpu" else 4) if tile_batch_size is None else tile_batch_size
        callback_inputs = callback_on_step_end_tensor_inputs
        self.check_inputs(output_type, callback_inputs, tile_size, tile_context, tile_batch_size, num_inference_steps)
        check_step_end(callback_on_step_end, generator)
        images = [pad_border(to_unit_tensor(im), self.config.border_padding) for im in split_images(image)]
        if not images:
            raise ValueError("`image` is empty: pass at least one image.")
        if isinstance(generator, list) and len(generator) != len(images):
            raise ValueError(f"Got {len(generator)} generators for {len(images)} images: pass one per image.")

        # 2. Set timesteps, on this call's own view of the pipeline (its scheduler copy, step count, interrupt flag)
        call = self._for_one_call()
        call.scheduler.set_timesteps(None if num_inference_steps is None else int(num_inference_steps), device=device)
        self._num_timesteps = call._num_timesteps = len(call.scheduler.timesteps)

        # 3. The call's tiles: images batched by size (`tile_batch_size` at most), cut into tiles of `tile_size`
        executor = self.tiled_executor(
            tile_size,
            tile_context,
            tile_batch_size=tile_batch_size,
            deterministic=call.scheduler.is_deterministic,
            num_steps=call.num_timesteps,
            output_type=output_type,
            keeps_steps=return_intermediates or callback_on_step_end is not None,
        )
        batches = executor.batches([tuple(im.shape[-2:]) for im in images])

        # 4. Upscale each batch: encode, reverse chain, decode ([`_upscale_batch`])
        outputs, steps = [], []
        step_end = {
            "callback": callback_on_step_end,
            "callback_inputs": tuple(callback_inputs),
            "return_intermediates": return_intermediates,
        }
        with self.progress_bar(total=sum(b.unet_calls() for b in batches) * call.num_timesteps) as progress_bar:
            for batch in batches:
                lr = torch.stack([images[i] for i in batch.indices]).to(device=device, dtype=self.vqvae.dtype) * 2 - 1
                batch_generator = [generator[i] for i in batch.indices] if isinstance(generator, list) else generator
                output, batch_steps = call._upscale_batch(lr, batch, batch_generator, progress_bar, **step_end)
                outputs.append(output)
                steps.append(batch_steps)

        # 5. Post-process: back to input order, the border padding cropped
        order = [i for batch in batches for i in batch.indices]
        pad = self.config.border_padding * self.upscale_factor
        pad = pad // self.vae_scale_factor if output_type == "latent" else pad
        one_size = len({batch.size for batch in batches}) == 1
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
