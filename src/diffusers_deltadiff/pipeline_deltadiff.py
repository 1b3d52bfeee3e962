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

import math
import os
import shutil
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.models import UNet2DModel, VQModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils import BaseOutput, replace_example_docstring

from .autoencoder_space_to_depth import SpaceToDepthAutoencoder
from .image_utils import bicubic_upsample, pad_to_multiple, resize_to, split_images, to_unit_tensor
from .scheduling_delta_shift import DeltaShiftScheduler
from .tiling import TileBlender, tile_starts, tile_weights


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


def autoencoder_downsampling_factor(autoencoder: VQModel | SpaceToDepthAutoencoder) -> int:
    """How many image pixels one latent pixel spans: `downsampling_factor`, or `2^(blocks - 1)` for a `VQModel`."""
    factor = getattr(autoencoder.config, "downsampling_factor", None)
    return int(factor) if factor else 2 ** (len(autoencoder.config.block_out_channels) - 1)


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
    the models accept and the result is cropped, never resized.

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
    """

    model_cpu_offload_seq = "vqvae->unet"
    default_tile_size = 128
    auto_tile_threshold = 256
    _callback_tensor_inputs = ["latents", "lr_latents", "lr_condition"]

    def __init__(
        self,
        vqvae: VQModel | SpaceToDepthAutoencoder,
        unet: UNet2DModel,
        scheduler: DeltaShiftScheduler,
        upscale_factor: int | None = None,
    ):
        super().__init__()
        self.register_modules(vqvae=vqvae, unet=unet, scheduler=scheduler)
        # inference modules: in eval mode, as `from_pretrained` leaves them, however the pipeline was built
        vqvae.eval()
        unet.eval()
        self.vae_scale_factor = autoencoder_downsampling_factor(vqvae)
        upscale_factor = int(upscale_factor or self.vae_scale_factor)
        self.register_to_config(upscale_factor=upscale_factor)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor, do_resize=False)

        latent_channels = vqvae.config.latent_channels
        if unet.config.in_channels != latent_channels + 3 or unet.config.out_channels != latent_channels:
            raise ValueError(
                f"The UNet must take the latent ({latent_channels} channels) concatenated with the RGB LR image "
                f"({latent_channels + 3} input channels) and predict the latent ({latent_channels} output channels); "
                f"got in_channels={unet.config.in_channels}, out_channels={unet.config.out_channels}."
            )

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True, **kwargs):
        """
        Save the pipeline like [`DiffusionPipeline.save_pretrained`], weights as safetensors only, and write the
        `pipeline.py` entry point next to `model_index.json` so that
        `DiffusionPipeline.from_pretrained(save_directory, custom_pipeline=save_directory, trust_remote_code=True)`
        works too.
        """
        if not safe_serialization:
            raise ValueError("DeltaDiff pipelines are saved as safetensors only: drop `safe_serialization=False`.")
        super().save_pretrained(save_directory, safe_serialization=True, **kwargs)

        from . import custom_pipeline_path

        shutil.copyfile(custom_pipeline_path(), os.path.join(save_directory, "pipeline.py"))

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
    def num_timesteps(self):
        return self._num_timesteps

    @property
    def interrupt(self):
        return self._interrupt

    def encode_lr(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        The two views of LR images `(B, 3, h, w)` in `[-1, 1]` that the chain needs: the latent `y` of their bicubic
        upsampling, and the LR images resized to the latent size (the UNet's extra input channels).
        """
        upsampled = bicubic_upsample(lr, self.upscale_factor)
        lr_latents = self.vqvae.encode(upsampled.to(self.vqvae.dtype)).latents
        lr_condition = resize_to(lr, tuple(lr_latents.shape[-2:]))
        return lr_latents, lr_condition

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode (and quantize) latents to images in `[-1, 1]`."""
        return self.vqvae.decode(latents.to(self.vqvae.dtype)).sample.clamp(-1.0, 1.0)

    def _denoise(
        self,
        lr: torch.Tensor,
        generator,
        return_intermediates: bool,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs: list[str],
        progress_bar,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the reverse chain for LR images of one size; returns the final latents and the decoded steps."""
        lr_latents, lr_condition = self.encode_lr(lr)
        lr_condition = lr_condition.to(self.unet.dtype)
        lr_latents = lr_latents.to(self.unet.dtype)
        latents = self.scheduler.init_latents(lr_latents, generator=generator)

        intermediates = []
        for i, t in enumerate(self.scheduler.timesteps):
            if self.interrupt:
                continue
            model_input = torch.cat([self.scheduler.scale_model_input(latents, t), lr_condition], dim=1)
            timestep = t.expand(latents.shape[0]).to(latents.device)
            model_output = self.unet(model_input, timestep).sample
            latents = self.scheduler.step(
                model_output, t, latents, generator=generator, lr_sample=lr_latents
            ).prev_sample

            if callback_on_step_end is not None:
                tensors = {"latents": latents, "lr_latents": lr_latents, "lr_condition": lr_condition}
                callback_kwargs = {k: tensors[k] for k in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                latents = callback_outputs.pop("latents", latents)
            if return_intermediates:
                intermediates.append(self.decode_latents(latents))
            progress_bar.update()
        return latents, intermediates

    def _postprocess(self, images: list[torch.Tensor], output_type: str):
        """Images `(3, H, W)` in `[-1, 1]` to `output_type`; stacked when they share one size, else a list."""
        if output_type == "latent":
            same_size = len({tuple(im.shape) for im in images}) == 1
            return torch.stack(images) if same_size else images
        if len({tuple(im.shape) for im in images}) == 1:
            return self.image_processor.postprocess(torch.stack(images), output_type=output_type)
        processed = [self.image_processor.postprocess(im[None], output_type=output_type) for im in images]
        return [p[0] for p in processed]

    def _tile_size_for(self, size: tuple[int, int], tile_size: int | None) -> int:
        """The tile size (in latent pixels) to use for an LR image of `size`, 0 when it is processed whole."""
        latent_size = [math.ceil(n * self.upscale_factor / self.vae_scale_factor) for n in size]
        if tile_size is None:
            return self.default_tile_size if max(latent_size) > self.auto_tile_threshold else 0
        if tile_size < 0:
            raise ValueError(f"`tile_size` must be positive, 0 (never tile) or None (automatic), got {tile_size}.")
        return tile_size if tile_size and max(latent_size) > tile_size else 0

    def _tile_plan(self, size: tuple[int, int], tile_size: int | None, overlap: int) -> list[tuple]:
        """LR-pixel boxes `(top, left, height, width, top_edge, bottom_edge, left_edge, right_edge)` of the tiles."""
        # latent pixels to LR pixels; tile starts stay on the latent grid
        lr_per_latent = self.vae_scale_factor / self.upscale_factor
        align = max(int(round(lr_per_latent)), 1)
        tile = max(int(self._tile_size_for(size, tile_size) * lr_per_latent), align)
        lr_overlap = int(overlap * lr_per_latent)
        if lr_overlap >= tile:
            raise ValueError(f"`tile_overlap` ({overlap}) must be smaller than the tile size.")
        rows = tile_starts(size[0], tile, lr_overlap, align)
        cols = tile_starts(size[1], tile, lr_overlap, align)
        height, width = min(tile, size[0]), min(tile, size[1])
        return [
            (top, left, height, width, r > 0, r < len(rows) - 1, c > 0, c < len(cols) - 1)
            for r, top in enumerate(rows)
            for c, left in enumerate(cols)
        ]

    def _upscale_batch(self, lr: torch.Tensor, generator, output_type: str, **chain_kwargs):
        """
        LR images `(B, 3, h, w)` in `[-1, 1]` of one size through pad, chain, decode and crop. Returns the outputs
        (decoded images in `[-1, 1]`, or latents for `output_type="latent"`) and the decoded image of every step.
        """
        height, width = lr.shape[-2:]
        scale = self.upscale_factor
        latents, intermediates = self._denoise(pad_to_multiple(lr, self.lr_size_multiple), generator, **chain_kwargs)
        if output_type == "latent":
            outputs = latents[
                ...,
                : math.ceil(height * scale / self.vae_scale_factor),
                : math.ceil(width * scale / self.vae_scale_factor),
            ]
        else:
            outputs = self.decode_latents(latents)[..., : height * scale, : width * scale]
        steps = [step[..., : height * scale, : width * scale].float().cpu() for step in intermediates]
        return outputs.float().cpu(), steps

    def _upscale_tiled(self, lr, plan, overlap, tile_batch_size, generator, output_type: str, **chain_kwargs):
        """One large LR image `(1, 3, h, w)` upscaled tile by tile; returns the blended output and steps."""
        height, width = lr.shape[-2:]
        scale = self.upscale_factor
        # outputs are images (scale) or latents (scale / vae factor); intermediates are always images
        out_scale = scale / self.vae_scale_factor if output_type == "latent" else scale
        out_channels = self.vqvae.config.latent_channels if output_type == "latent" else 3
        out_overlap = overlap if output_type == "latent" else overlap * self.vae_scale_factor
        output = TileBlender(out_channels, math.ceil(height * out_scale), math.ceil(width * out_scale))
        steps = [TileBlender(3, height * scale, width * scale) for _ in range(self._num_timesteps)]
        used_steps = 0
        for start in range(0, len(plan), tile_batch_size):
            boxes = plan[start : start + tile_batch_size]
            crops = torch.cat([lr[..., t : t + h, l : l + w] for t, l, h, w, *_ in boxes])
            outputs, intermediates = self._upscale_batch(crops, generator, output_type=output_type, **chain_kwargs)
            used_steps = len(intermediates)
            for k, (top, left, h, w, *edges) in enumerate(boxes):
                tile_out = outputs[k]
                weights = tile_weights(*tile_out.shape[-2:], out_overlap, *edges)
                output.add(tile_out, round(top * out_scale), round(left * out_scale), weights)
                step_weights = tile_weights(h * scale, w * scale, overlap * self.vae_scale_factor, *edges)
                for s, step_images in enumerate(intermediates):
                    steps[s].add(step_images[k], top * scale, left * scale, step_weights)
        return output.result(), [blender.result() for blender in steps[:used_steps]]

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
        tile_overlap: int = 16,
        tile_batch_size: int = 4,
    ) -> DeltaDiffPipelineOutput | tuple:
        r"""
        The call function to the pipeline for super-resolution.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The low-resolution image(s). NumPy arrays are `HxWxC` (or a `BxHxWxC` batch) as uint8, uint16 or
                float in `[0, 1]`; tensors are `CxHxW` (or `BxCxHxW`) floats in `[0, 1]`. Grayscale images are
                replicated to RGB and alpha channels are dropped, so outputs are always RGB. Images of different sizes
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
                Upscale in overlapping tiles of `tile_size` x `tile_size` latent pixels (LR pixels for x4 with an f4
                autoencoder), so that memory stays bounded whatever the image size. Each tile is encoded, run
                through the chain and decoded on its own; decoded tiles are blended with linear-ramp weights over
                their overlap. `None` (default) tiles automatically, with tiles of `default_tile_size` (128), images
                larger than `auto_tile_threshold` (256) on a side; `0` never tiles.
            tile_overlap (`int`, *optional*, defaults to 16):
                Overlap between neighbouring tiles, in latent pixels.
            tile_batch_size (`int`, *optional*, defaults to 4):
                Tiles run through the UNet together.

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
        images = [to_unit_tensor(im) for im in split_images(image)]
        if not images:
            raise ValueError("`image` is empty: pass at least one image.")
        if isinstance(generator, list) and len(generator) != len(images):
            raise ValueError(f"Got {len(generator)} generators for {len(images)} images: pass one per image.")
        self._interrupt = False

        # 2. Set timesteps
        device = self._execution_device
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        self._num_timesteps = len(self.scheduler.timesteps)

        # 3. Plan the work: small images batched by size, large ones (or all, with `tile_size`) cut into tiles
        groups: dict[tuple[int, int], list[int]] = {}
        tiled: list[int] = []
        for index, im in enumerate(images):
            if self._tile_size_for(im.shape[-2:], tile_size):
                tiled.append(index)
            else:
                groups.setdefault(tuple(im.shape[-2:]), []).append(index)
        tile_plans = {i: self._tile_plan(images[i].shape[-2:], tile_size, tile_overlap) for i in tiled}
        num_batches = len(groups) + sum(math.ceil(len(plan) / tile_batch_size) for plan in tile_plans.values())

        results: list[torch.Tensor | None] = [None] * len(images)
        steps: list[list[torch.Tensor | None]] = [[None] * len(images) for _ in range(self._num_timesteps)]
        chain_kwargs = {
            "return_intermediates": return_intermediates,
            "output_type": output_type,
            "callback_on_step_end": callback_on_step_end,
            "callback_on_step_end_tensor_inputs": callback_on_step_end_tensor_inputs,
        }
        with self.progress_bar(total=num_batches * self._num_timesteps) as progress_bar:
            chain_kwargs["progress_bar"] = progress_bar
            # 4. Whole images, one batch per size
            for indices in groups.values():
                lr = torch.stack([images[i] for i in indices]).to(device=device, dtype=self.vqvae.dtype) * 2 - 1
                group_generator = [generator[i] for i in indices] if isinstance(generator, list) else generator
                outputs, intermediates = self._upscale_batch(lr, group_generator, **chain_kwargs)
                for k, i in enumerate(indices):
                    results[i] = outputs[k]
                    for s, step_images in enumerate(intermediates):
                        steps[s][i] = step_images[k]

            # 5. Large images: tiles in batches, blended with linear ramps over the overlaps
            for i in tiled:
                lr = images[i][None].to(device=device, dtype=self.vqvae.dtype) * 2 - 1
                image_generator = generator[i] if isinstance(generator, list) else generator
                results[i], image_steps = self._upscale_tiled(
                    lr, tile_plans[i], tile_overlap, tile_batch_size, image_generator, **chain_kwargs
                )
                for s, step_image in enumerate(image_steps):
                    steps[s][i] = step_image

        # 7. Post-process
        output = self._postprocess(results, output_type)
        intermediate_images = None
        if return_intermediates:
            step_type = "pt" if output_type == "latent" else output_type
            completed = [step for step in steps if all(im is not None for im in step)]
            intermediate_images = [self._postprocess(step, step_type) for step in completed]

        self.maybe_free_model_hooks()

        if not return_dict:
            return (output, intermediate_images)
        return DeltaDiffPipelineOutput(images=output, intermediate_images=intermediate_images)
