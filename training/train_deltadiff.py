#!/usr/bin/env python
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
"""Train a DeltaDiff (kappa = 0) or ResShift (kappa > 0) UNet in the latent space of a frozen VQ autoencoder.

    accelerate launch training/train_deltadiff.py \
        --vqvae_model_name_or_path path/to/vqvae --train_data_dir path/to/DIV2K_train_HR \
        --resolution 256 --train_batch_size 64 --learning_rate 5e-5 --output_dir deltadiff-x4

The final artifact is a `DeltaDiffPipeline` saved in `--output_dir` (with a model card).
"""

import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, gather_object, set_seed
from diffusers import UNet2DModel, VQModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from diffusers_deltadiff import DeltaDiffPipeline, DeltaShiftScheduler, LocalUNet2DModel, SpaceToDepthAutoencoder
from diffusers_deltadiff.arguments import (
    RecipeArgumentParser,
    float_at_least,
    int_at_least,
    int_list,
    sha256_hex,
    unit_interval,
)
from diffusers_deltadiff.data import (
    IMAGE_EXTENSIONS,
    SRTrainDataset,
    index_lr_folder,
    list_images,
    load_hr_dataset,
    make_dataloader,
)
from diffusers_deltadiff.degradations import DEGRADATIONS, Degradation
from diffusers_deltadiff.image_io import missing_folders
from diffusers_deltadiff.image_utils import image_grid
from diffusers_deltadiff.pipeline_deltadiff import autoencoder_downsampling_factor, encode_lr
from diffusers_deltadiff.training_utils import (
    add_data_arguments,
    check_method,
    epoch_loader,
    install_folder,
    load_center_crops,
    log_image,
    lpips_loss_model,
    report_skipped,
    resolve_checkpoint,
    resume,
    save_checkpoint,
    step_generator,
)


logger = get_logger(__name__, log_level="INFO")
LOG_FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"


def parse_args(input_args=None):
    parser = RecipeArgumentParser(
        description="Train a DeltaDiff super-resolution UNet. `@file` reads arguments from a recipe file "
        "(training/recipes/*.args)."
    )
    # models
    latent = parser.add_mutually_exclusive_group(required=True)
    latent.add_argument("--vqvae_model_name_or_path", type=str, help="Frozen VQModel (dir or Hub id).")
    latent.add_argument(
        "--lossless_latent",
        action="store_true",
        help="Work in the lossless, parameter-free space-to-depth latent (SpaceToDepthAutoencoder, block = --scale).",
    )
    parser.add_argument("--vqvae_subfolder", type=str, default=None, help="e.g. `vqvae` inside a saved pipeline.")
    parser.add_argument(
        "--pretrained_model_name_or_path",
        type=str,
        default=None,
        help="Start from a saved DeltaDiffPipeline (its `unet`) instead of a UNet built from the size flags.",
    )
    parser.add_argument(
        "--unet_init_from",
        type=str,
        default=None,
        help="Start from another saved DeltaDiffPipeline's UNet (its shape and weights) where the latent differs, e.g. "
        "a x4 model for a x2 one: every weight whose shape matches is copied; the input and output convolutions, "
        "which depend on the latent's channels, start new (the output at zero with --zero_init_output). The UNet's shape "
        "and class come from that model: the --unet_* size flags are not used.",
    )
    parser.add_argument(
        "--start_sha256",
        type=sha256_hex,
        default=None,
        help="The SHA-256 of the start's UNet weights (`unet/diffusion_pytorch_model.safetensors` of "
        "--pretrained_model_name_or_path or --unet_init_from): a recipe names its start immutably, and a start that has "
        "changed since is refused.",
    )
    parser.add_argument("--unet_block_out_channels", type=int_list, default=[64, 128, 256])
    parser.add_argument("--unet_layers_per_block", type=int, default=2)
    parser.add_argument(
        "--unet_attention_levels",
        type=lambda text: int_list(text, minimum=0, allow_empty=True),
        default=[2],
        help="Comma-separated block indices with self-attention ('' for none).",
    )
    parser.add_argument("--unet_norm_num_groups", type=int, default=32)
    parser.add_argument(
        "--unet_norm",
        type=str,
        default="group",
        choices=["group", "pixel"],
        help="`group`: UNet2DModel's GroupNorm (image-wide statistics); `pixel`: LocalUNet2DModel (per-pixel norms, "
        "no attention, so crops, tiles and whole images see the same model).",
    )
    parser.add_argument(
        "--zero_init_output",
        action="store_true",
        help="Zero the UNet's output convolution: with --prediction_type residual the untrained model returns bicubic.",
    )
    # scheduler
    parser.add_argument("--num_train_timesteps", type=int, default=4)
    parser.add_argument("--eta_start", type=float, default=0.01)
    parser.add_argument("--eta_end", type=float, default=0.99)
    parser.add_argument("--power", type=float, default=0.3)
    parser.add_argument("--kappa", type=float, default=0.0, help="0 trains DeltaDiff, 2 the ResShift baseline.")
    parser.add_argument(
        "--prediction_type",
        type=str,
        default="sample",
        choices=["sample", "residual"],
        help="The UNet predicts x_0 (`sample`, the paper's) or the residual y - x_0 (`residual`, ResShift's option).",
    )
    # data
    add_data_arguments(parser)
    parser.add_argument("--train_lr_dir", type=str, default=None, help="Optional LR folder paired by file name.")
    parser.add_argument("--resolution", type=int_at_least(1), default=256, help="HR crop size.")
    parser.add_argument("--hr_downscale", type=float, default=1.0, help="Shrink HR photos first (hides JPEG blocks).")
    parser.add_argument(
        "--scale", "--upscale_factor", dest="scale", type=int_at_least(1), default=4, help="Super-resolution factor."
    )
    parser.add_argument(
        "--degradation", type=str, default="bicubic", choices=list(DEGRADATIONS), help="How LR is made from HR."
    )
    parser.add_argument(
        "--validation_degradation",
        type=str,
        default="bicubic",
        choices=list(DEGRADATIONS),
        help="How the validation LR is made from the held-out HR (seeded by the image's index: the same every time).",
    )
    parser.add_argument("--no_random_flip", action="store_true", help="Disable random flips and rotations.")
    parser.add_argument("--dataloader_num_workers", type=int_at_least(0), default=2)
    # optimisation
    parser.add_argument("--train_batch_size", type=int_at_least(1), default=64, help="Per device.")
    parser.add_argument("--gradient_accumulation_steps", type=int_at_least(1), default=1)
    parser.add_argument("--num_train_epochs", type=int_at_least(1), default=100)
    parser.add_argument("--max_train_steps", type=int_at_least(1), default=None, help="Overrides --num_train_epochs.")
    parser.add_argument("--learning_rate", type=float_at_least(0), default=5e-5)
    parser.add_argument("--scale_lr", action="store_true", help="Multiply the LR by processes x batch x accumulation.")
    parser.add_argument("--lr_scheduler", type=str, default="constant")
    parser.add_argument("--lr_warmup_steps", type=int_at_least(0), default=0)
    parser.add_argument("--adam_beta1", type=float, default=0.9)
    parser.add_argument("--adam_beta2", type=float, default=0.999)
    parser.add_argument("--adam_weight_decay", type=float, default=0.0)
    parser.add_argument("--adam_epsilon", type=float, default=1e-8)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--loss", type=str, default="mse", choices=["mse", "l1"], help="Loss on the latent.")
    parser.add_argument(
        "--train_through_chain",
        action="store_true",
        help="Train what inference runs: the whole deterministic reverse chain from x_T = y, backpropagated through "
        "its --chain_steps UNet passes, with the loss on the final latent x_0 (instead of one random timestep of x_t "
        "built from the true x_0).",
    )
    parser.add_argument(
        "--chain_steps",
        type=int_list,
        default=None,
        help="Chain lengths drawn per batch with --train_through_chain (comma-separated; default: the full chain).",
    )
    parser.add_argument(
        "--chain_intermediate_weight",
        type=float,
        default=0.0,
        help="With --train_through_chain: weight of the mean loss of every step's predicted x_0 (0: final only).",
    )
    parser.add_argument("--lpips_weight", type=float, default=0.0, help="LPIPS on decoded images (needs `lpips`).")
    parser.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"])
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--use_ema", action="store_true", help="EMA weights for validation and the saved pipeline.")
    parser.add_argument("--ema_decay", type=unit_interval, default=0.999)
    # checkpoints, validation, logging
    parser.add_argument("--output_dir", type=str, default="deltadiff-model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="torch's deterministic algorithms (slower on CUDA): what a resumed CUDA run needs to end with the same "
        "weights as a straight one. CPU runs are bit-identical without it.",
    )
    parser.add_argument("--checkpointing_steps", type=int_at_least(1), default=500)
    parser.add_argument("--checkpoints_total_limit", type=int_at_least(1), default=None)
    parser.add_argument("--resume_from_checkpoint", type=str, default=None, help="A checkpoint dir or `latest`.")
    parser.add_argument("--validation_data_dir", type=str, default=None, help="HR images for validation.")
    parser.add_argument("--validation_steps", type=int_at_least(1), default=500)
    parser.add_argument("--num_validation_images", type=int_at_least(1), default=4)
    parser.add_argument(
        "--save_best",
        action="store_true",
        help="Save the pipeline with the best validation Y-PSNR so far to `<output_dir>/best` (checkpoint selection "
        "on held-out photos).",
    )
    parser.add_argument(
        "--validation_resolution", type=int_at_least(1), default=256, help="Centre crop of validation HR."
    )
    parser.add_argument("--report_to", type=str, default="tensorboard", help="tensorboard, wandb, all or none.")
    parser.add_argument("--logging_dir", type=str, default="logs")
    parser.add_argument(
        "--log_file",
        type=str,
        default=None,
        help="Where the run's log lines also go, appended across resumes (default: `<output_dir>/train.log`); the "
        "console shows them too, with the progress bar.",
    )
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", type=str, default=None)
    parser.add_argument("--hub_token", type=str, default=None)

    args = parser.parse_args(input_args)
    if args.dataset_name is None and args.train_data_dir is None:
        parser.error("Pass --dataset_name or --train_data_dir.")
    if args.resolution % args.scale:
        parser.error(f"--resolution ({args.resolution}) must be a multiple of --scale ({args.scale}).")
    if args.unet_norm == "pixel" and args.unet_attention_levels:
        parser.error("--unet_norm pixel has no attention (it sees the whole image): pass --unet_attention_levels ''.")
    if not args.hr_downscale >= 1:  # NaN too
        parser.error(f"--hr_downscale must be at least 1, got {args.hr_downscale}.")
    if args.train_through_chain and args.kappa != 0:
        parser.error("--train_through_chain unrolls the deterministic chain: it needs --kappa 0.")
    if args.unet_init_from and args.pretrained_model_name_or_path:
        parser.error("--unet_init_from and --pretrained_model_name_or_path are two ways to start the UNet: give one.")
    if args.start_sha256 and not (args.pretrained_model_name_or_path or args.unet_init_from):
        parser.error("--start_sha256 pins a start: pass --pretrained_model_name_or_path or --unet_init_from too.")
    if args.chain_steps and not all(1 <= n <= args.num_train_timesteps for n in args.chain_steps):
        parser.error(f"--chain_steps must lie in 1..{args.num_train_timesteps}, got {args.chain_steps}.")
    problem = unet_size_problem(args) or start_problem(args)
    if problem:
        parser.error(problem)
    return args


def unet_size_problem(args) -> str | None:
    """The UNet size flags (used when no start is given), checked: every channel count splits into the norm groups."""
    if args.pretrained_model_name_or_path or args.unet_init_from:
        return None
    groups, channels = args.unet_norm_num_groups, args.unet_block_out_channels
    if groups < 1:
        return f"--unet_norm_num_groups must be at least 1, got {groups}."
    uneven = [c for c in channels if c % groups]
    if uneven:
        return (
            f"--unet_block_out_channels {','.join(map(str, channels))}: every count must be a multiple of "
            f"--unet_norm_num_groups {groups} (the norm layers split the channels into that many groups); "
            f"{','.join(map(str, uneven))} is not."
        )
    return None


def start_problem(args) -> str | None:
    """A local start (`--pretrained_model_name_or_path`, `--unet_init_from`) must be a pipeline folder."""
    for flag in ("pretrained_model_name_or_path", "unet_init_from"):
        start = getattr(args, flag)
        if start is None:
            continue
        path = Path(start)
        local = path.exists() or start.startswith((".", "/", "~")) or start.count("/") != 1  # else a Hub id
        if local and not (path / "model_index.json").is_file():
            return (
                f"--{flag} {start}: not a DeltaDiffPipeline folder (no model_index.json; a training run saves its "
                "pipeline there at the end, its checkpoint-N folders hold none)."
            )
    return None


def folder_problem(args) -> str | None:
    """
    The local folders a run reads, and the one it writes, checked before anything is written: a typo'd data folder is
    an error, not a traceback after the models are loaded or (`--validation_data_dir`) a run that validates nothing.
    """
    image_folders = ["validation_data_dir"] if args.dataset_name else ["train_data_dir", "validation_data_dir"]
    for flag in [*image_folders, "train_lr_dir"]:
        folder = getattr(args, flag)
        if folder is None:
            continue
        if not os.path.isdir(folder):
            return f"--{flag} {folder}: {'not a folder' if os.path.exists(folder) else 'no such folder'}"
        images = list_images(folder) if flag in image_folders else None
        if images is not None and not images:
            return f"--{flag} {folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in it"
        if flag == "train_data_dir" and len(images) < args.train_batch_size:
            return (
                f"--train_batch_size {args.train_batch_size}: more than the {len(images)} images of --{flag} {folder}"
            )
        if flag == "train_lr_dir":
            try:
                index_lr_folder(folder)
            except ValueError as err:  # two LR images for one HR name: which one is meant is not guessed
                return f"--{flag} {err}"
    existing, _ = missing_folders(Path(args.output_dir))  # the nearest that exists: the folder, or above it
    if not existing.is_dir():
        return f"--output_dir {args.output_dir}: {existing} is not a folder"
    return None


def load_start(start: str, flag: str) -> DeltaDiffPipeline:
    """The pipeline a run starts from, with a one-line error when it cannot be loaded."""
    try:
        return DeltaDiffPipeline.from_pretrained(start)
    except Exception as err:  # noqa: BLE001 - any loading failure becomes one line
        first = str(err).strip().splitlines()
        raise SystemExit(
            f"error: --{flag} {start}: cannot load the pipeline ({type(err).__name__}: {first[0] if first else ''})"
        ) from None


def method_record(args) -> dict:
    """
    What a checkpoint records of the method (flag name -> value): a resume that changes any of it is refused
    ([`training_utils.check_method`]), as a change of the model's shape already is.
    """
    keys = ("prediction_type", "kappa", "eta_start", "eta_end", "power", "num_train_timesteps", "scale")
    return {**{key: getattr(args, key) for key in keys}, "lossless_latent": bool(args.lossless_latent)}


def use_deterministic_algorithms():
    """
    Deterministic kernels where torch has them (cuBLAS needs its workspace setting before the first CUDA call), a
    warning where it has none; cuDNN autotuning off, as it picks kernels by timing.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def unet_class(args) -> type[UNet2DModel]:
    return LocalUNet2DModel if args.unet_norm == "pixel" else UNet2DModel


def check_start(args):
    """Refuse a start whose UNet weights are not the ones `--start_sha256` names (see its help)."""
    start = args.pretrained_model_name_or_path or args.unet_init_from
    if not args.start_sha256 or not start:
        return
    weights = Path(start) / "unet" / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise SystemExit(
            f"error: {weights}: no such file; --start_sha256 needs a local start with safetensors weights"
        )
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != args.start_sha256:
        raise SystemExit(
            f"error: {weights}: SHA-256 {digest}, --start_sha256 names {args.start_sha256}: the start has "
            "changed since the recipe was written (check out the commit the recipe names, or update the recipe)"
        )


def build_unet(args, latent_channels: int) -> UNet2DModel:
    if args.pretrained_model_name_or_path:
        return load_start(args.pretrained_model_name_or_path, "pretrained_model_name_or_path").unet
    if args.unet_init_from:
        return unet_transplanted(args, load_start(args.unet_init_from, "unet_init_from").unet, latent_channels)
    channels = args.unet_block_out_channels
    attention = set(args.unet_attention_levels)
    down = tuple("AttnDownBlock2D" if i in attention else "DownBlock2D" for i in range(len(channels)))
    up = tuple("AttnUpBlock2D" if i in attention else "UpBlock2D" for i in reversed(range(len(channels))))
    unet = unet_class(args)(
        sample_size=args.resolution // args.scale,
        in_channels=latent_channels + 3,
        out_channels=latent_channels,
        layers_per_block=args.unet_layers_per_block,
        block_out_channels=tuple(channels),
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=args.unet_norm_num_groups,
        add_attention=bool(attention),
    )
    if args.zero_init_output:
        torch.nn.init.zeros_(unet.conv_out.weight)
        torch.nn.init.zeros_(unet.conv_out.bias)
    return unet


def unet_transplanted(args, source: UNet2DModel, latent_channels: int) -> UNet2DModel:
    """
    A UNet of `source`'s class and shape for a latent of `latent_channels` (plus the 3 LR channels): every weight
    whose shape matches is `source`'s, the rest (the input and output convolutions) fresh; `--zero_init_output` zeroes
    the output convolution.
    """
    config = {k: v for k, v in source.config.items() if not k.startswith("_")}
    config.update(
        in_channels=latent_channels + 3, out_channels=latent_channels, sample_size=args.resolution // args.scale
    )
    unet = type(source)(**config)
    own = unet.state_dict()
    kept = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    unet.load_state_dict(kept, strict=False)
    logger.info(f"UNet from {args.unet_init_from}: {len(kept)} of {len(own)} tensors copied, the rest new")
    if args.zero_init_output:
        torch.nn.init.zeros_(unet.conv_out.weight)
        torch.nn.init.zeros_(unet.conv_out.bias)
    return unet


def latent_loss(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(pred, target) if kind == "l1" else F.mse_loss(pred, target)


def unet_input(unet, x_t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """
    The UNet's input `[x_t, LR condition]` in the dtype of the UNet's weights: float32 under accelerate's autocast,
    bf16/fp16 where the whole model is cast (DeepSpeed), which takes no float32 input.
    """
    unwrapped = unet.module if hasattr(unet, "module") else unet
    dtype = next(unwrapped.parameters()).dtype
    return torch.cat([x_t, condition], dim=1).to(dtype)


def unrolled_chain(unet, scheduler, y, condition, num_steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """
    The deterministic reverse chain of inference (eq. 5/6 from `x_T = y`), kept differentiable: returns the final
    latent and every step's predicted `x_0`. `scheduler` is a private copy (its timesteps are set here).
    """
    scheduler.set_timesteps(num_steps)
    sample = scheduler.init_latents(y)
    predictions = []
    for t in scheduler.timesteps.tolist():
        timestep = torch.full((y.shape[0],), t, device=y.device, dtype=torch.long)
        model_output = unet(unet_input(unet, sample, condition), timestep).sample.float()
        sample, pred_x0 = scheduler.step(model_output, t, sample, lr_sample=y, return_dict=False)
        predictions.append(pred_x0)
    return sample, predictions


def validation_steps(args) -> int | None:
    """
    The chain length validation runs: the longest one trained with `--train_through_chain --chain_steps` (a one-pass
    model is selected on its one pass), else the scheduler's own (`None`).
    """
    return max(args.chain_steps) if args.train_through_chain and args.chain_steps else None


def log_validation(pipeline, images, args, accelerator, global_step) -> dict:
    """Y-PSNR / SSIM of the pipeline on the validation images (sharded over processes) and an LR|SR|HR grid."""
    from diffusers_deltadiff.metrics import psnr_y, ssim_y

    pipeline.set_progress_bar_config(disable=True)
    indices = list(range(len(images)))
    scores, grid_rows = [], []
    with accelerator.split_between_processes(indices) as shard:
        for i in shard:
            hr, lr = images[i]
            sr = pipeline(lr, output_type="pt", num_inference_steps=validation_steps(args)).images[0]
            scores.append((psnr_y(sr, hr, args.scale).item(), ssim_y(sr, hr, args.scale).item()))
            grid_rows.append((i, lr, sr, hr))
    scores = gather_object(scores)
    grid_rows = gather_object(grid_rows)
    metrics = {
        "val/psnr_y": float(np.mean([s[0] for s in scores])),
        "val/ssim_y": float(np.mean([s[1] for s in scores])),
    }
    if accelerator.is_main_process:
        grid_rows.sort(key=lambda r: r[0])
        grid = image_grid([[lr, sr, hr] for _, lr, sr, hr in grid_rows])
        out_dir = Path(args.output_dir) / "validation"
        out_dir.mkdir(parents=True, exist_ok=True)
        grid.save(out_dir / f"step-{global_step:07d}.png")
        log_image(accelerator, "val/lr_sr_hr", grid, global_step)
        logger.info(f"step {global_step}: Y-PSNR {metrics['val/psnr_y']:.2f} dB, SSIM {metrics['val/ssim_y']:.4f}")
        with open(out_dir / "metrics.jsonl", "a") as history:  # the held-out curve over training steps
            history.write(json.dumps({"step": global_step, **metrics}) + "\n")
    accelerator.log(metrics, step=global_step)
    return metrics


def write_model_card(args, output_dir: str, metrics: dict, num_steps: int, wall_time_s: float, unet):
    from huggingface_hub import EvalResult

    from diffusers_deltadiff.model_card import card_data, render_card, usage_section

    method = "DeltaDiff (kappa = 0, no noise)" if args.kappa == 0 else f"ResShift (kappa = {args.kappa})"
    data = args.dataset_name or f"local folder `{Path(args.train_data_dir).name}`"
    autoencoder = (
        f"lossless space-to-depth f{args.scale}"
        if args.lossless_latent
        else f"`{args.vqvae_model_name_or_path}` (frozen)"
    )
    metric_lines = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items()) or "| (no validation run) | |"
    # the UNet as built (from the size flags, --pretrained_model_name_or_path or --unet_init_from)
    norm = "pixel" if isinstance(unet, LocalUNet2DModel) else "group"
    unet_line = (
        f"{'/'.join(map(str, unet.config.block_out_channels))}, {unet.config.layers_per_block} layer(s) per block, "
        f"{norm} norm, predicts {args.prediction_type}"
    )
    results = [
        EvalResult(
            task_type="image-to-image",
            task_name=f"Image super-resolution x{args.scale} ({args.degradation} degradation)",
            dataset_type="validation",
            dataset_name="validation images of this run",
            metric_type=key.removeprefix("val/").removesuffix("_y"),
            metric_name=f"{key.removeprefix('val/')} (Y channel)",
            metric_value=round(float(value), 4),
        )
        for key, value in metrics.items()
        if key in ("val/psnr_y", "val/ssim_y")
    ]
    data = card_data(Path(output_dir).name, results, [args.dataset_name] if args.dataset_name else None)
    body = f"""# {Path(output_dir).name}

A x{args.scale} super-resolution `DeltaDiffPipeline` trained with `diffusers-deltadiff`: {method}.

{usage_section(args.hub_model_id or output_dir, args.scale)}

## Training

| | |
|---|---|
| data | {data}, random {args.resolution}x{args.resolution} crops, flips/rotations: {not args.no_random_flip} |
| degradation | {args.degradation} x{args.scale} |
| schedule | T = {args.num_train_timesteps}, eta {args.eta_start} .. {args.eta_end}, p = {args.power}, kappa = {args.kappa} |
| autoencoder | {autoencoder} |
| UNet | {unet_line} |
| optimisation | AdamW lr {args.learning_rate}, batch {args.train_batch_size} x {args.gradient_accumulation_steps} accumulation, {num_steps} steps, EMA: {args.use_ema} |
| wall time | {wall_time_s / 60:.1f} min |

## Validation (Y channel, crop border {args.scale})

| metric | value |
|---|---|
{metric_lines}

## Licence

Code and weights: Apache-2.0. The training images keep their own licences (DIV2K: research use only).
"""
    render_card(data, body).save(os.path.join(output_dir, "README.md"))


def log_to_file(path: Path, accelerator) -> logging.Handler | None:
    """Send the log lines to `path` too (appended; the main process only), as the console shows them."""
    if not accelerator.is_main_process:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    return handler


def main(args):
    check_start(args)
    problem = folder_problem(args)
    if problem:
        raise SystemExit(f"error: {problem}")
    logging_dir = Path(args.output_dir, args.logging_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(logging_dir)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
    log_file = log_to_file(Path(args.log_file or Path(args.output_dir, "train.log")), accelerator)
    logger.info(accelerator.state, main_process_only=False)
    set_seed(args.seed)
    if args.deterministic:
        use_deterministic_algorithms()
    # a wrong path, or a resume with another method than the run's, fails before anything is written
    checkpoint, _ = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
    check_method(checkpoint, method_record(args))
    if checkpoint is None and (Path(args.output_dir) / "model_index.json").is_file():
        raise SystemExit(
            f"error: {args.output_dir} already holds a trained pipeline (model_index.json) and no checkpoint to "
            "resume: choose another --output_dir"
        )

    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)

    # 1. Models: frozen autoencoder, trainable UNet, scheduler (DeltaDiff or ResShift)
    if args.lossless_latent:
        vqvae = SpaceToDepthAutoencoder(downsampling_factor=args.scale)
    else:
        vqvae = VQModel.from_pretrained(args.vqvae_model_name_or_path, subfolder=args.vqvae_subfolder)
    vqvae.requires_grad_(False).eval()
    unet = build_unet(args, vqvae.config.latent_channels)
    scheduler = DeltaShiftScheduler(
        num_train_timesteps=args.num_train_timesteps,
        eta_start=args.eta_start,
        eta_end=args.eta_end,
        power=args.power,
        kappa=args.kappa,
        prediction_type=args.prediction_type,
        default_inference_steps=validation_steps(args),  # the saved pipeline runs the chain it was trained through
    )
    chain_scheduler = DeltaShiftScheduler.from_config(scheduler.config)  # --train_through_chain sets its timesteps
    vae_scale = autoencoder_downsampling_factor(vqvae)
    if (args.resolution // vae_scale) % 2 ** (len(unet.config.block_out_channels) - 1):
        raise SystemExit(f"--resolution {args.resolution} gives latents the UNet cannot downsample evenly.")
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    ema_unet = None
    if args.use_ema:
        ema_unet = EMAModel(unet.parameters(), decay=args.ema_decay, model_cls=type(unet), model_config=unet.config)
    lpips_model = lpips_loss_model(args.lpips_weight)

    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    # the lossless latent is a reshape: kept in float32, the 8-bit targets stay exact (bf16 would round them by up to
    # a quarter of a level); a learned autoencoder runs in the mixed-precision dtype
    vqvae_dtype = torch.float32 if args.lossless_latent else weight_dtype
    vqvae.to(accelerator.device, dtype=vqvae_dtype)
    if lpips_model is not None:
        lpips_model.to(accelerator.device)

    # 2. Optimiser
    if args.scale_lr:
        args.learning_rate *= args.gradient_accumulation_steps * args.train_batch_size * accelerator.num_processes
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )

    # 3. Data
    with accelerator.main_process_first():
        hr_images = load_hr_dataset(
            args.dataset_name,
            args.dataset_config_name,
            args.train_data_dir,
            args.image_column,
            cache_dir=args.cache_dir,
        )
    dataset = SRTrainDataset(
        hr_images,
        resolution=args.resolution,
        scale=args.scale,
        degradation=args.degradation,
        seed=args.seed,
        random_flip=not args.no_random_flip,
        lr_dir=args.train_lr_dir,
        hr_downscale=args.hr_downscale,
    )
    if len(dataset) < args.train_batch_size * accelerator.num_processes:
        raise SystemExit(
            f"error: {len(dataset)} training images are fewer than one batch per process "
            f"({args.train_batch_size} x {accelerator.num_processes})."
        )
    train_dataloader = make_dataloader(dataset, args.train_batch_size, args.dataloader_num_workers, seed=args.seed)

    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / accelerator.num_processes)
    num_update_steps_per_epoch = math.ceil(num_update_steps_per_epoch / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * num_update_steps_per_epoch
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        unet, optimizer, train_dataloader, lr_scheduler
    )
    if ema_unet is not None:
        ema_unet.to(accelerator.device)
        accelerator.register_for_checkpointing(ema_unet)

    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    args.num_train_epochs = math.ceil(args.max_train_steps / num_update_steps_per_epoch)

    if accelerator.is_main_process and args.report_to != "none":
        tracker_config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("deltadiff", config=tracker_config)

    validation_images = []
    if args.validation_data_dir:
        crops = load_center_crops(
            args.validation_data_dir, args.num_validation_images, args.validation_resolution, multiple=args.scale
        )
        degrade = Degradation(args.validation_degradation, args.scale)
        validation_images = [(hr, degrade(hr, seed=index)) for index, hr in enumerate(crops)]  # fixed seeds

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info(f"  Num examples = {len(dataset)}, num epochs = {args.num_train_epochs}")
    logger.info(f"  Batch size per device = {args.train_batch_size}, total = {total_batch_size}")
    logger.info(
        f"  Optimization steps = {args.max_train_steps}, UNet parameters = {sum(p.numel() for p in unet.parameters()):,}"
    )

    # 4. Resume
    global_step, first_epoch, resume_batches = resume(
        accelerator,
        args.resume_from_checkpoint,
        args.output_dir,
        num_update_steps_per_epoch,
        args.gradient_accumulation_steps,
        ema=ema_unet,
    )

    # 5. Train
    progress_bar = tqdm(
        range(args.max_train_steps), initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    skipped_files: set[str] = set()
    metrics: dict = {}
    best_psnr = best_validation_psnr(args.output_dir) if accelerator.is_main_process else float("-inf")
    start_time, timed_samples, timed_since = time.perf_counter(), 0, None
    for epoch in range(first_epoch, args.num_train_epochs):
        if global_step >= args.max_train_steps:  # a finished run resumed from its last checkpoint trains no more
            break
        unet.train()
        loader = epoch_loader(
            accelerator, dataset, train_dataloader, epoch, resume_batches if epoch == first_epoch else 0
        )
        for batch in loader:
            report_skipped(batch, skipped_files, logger)
            with accelerator.accumulate(unet):
                hr = batch["hr"].to(vqvae_dtype)
                lr = batch["lr"].to(vqvae_dtype)
                with torch.no_grad():
                    x0 = vqvae.encode(hr).latents.float()
                    y, condition = encode_lr(vqvae, lr, args.scale)
                    y, condition = y.float(), condition.float()
                generator = step_generator(args.seed, global_step, accelerator)
                if args.train_through_chain:
                    # what inference runs: the whole chain from x_T = y, the loss on its final latent
                    lengths = args.chain_steps or [args.num_train_timesteps]
                    num_steps = lengths[int(torch.randint(0, len(lengths), (1,), generator=generator))]
                    pred_x0, step_predictions = unrolled_chain(unet, chain_scheduler, y, condition, num_steps)
                    loss = latent_loss(args.loss, pred_x0, x0)
                    if args.chain_intermediate_weight > 0:
                        step_losses = [latent_loss(args.loss, p, x0) for p in step_predictions]
                        loss = loss + args.chain_intermediate_weight * torch.stack(step_losses).mean()
                else:
                    timesteps = torch.randint(0, args.num_train_timesteps, (x0.shape[0],), generator=generator)
                    timesteps = timesteps.to(x0.device)
                    noise = None
                    # drawn where the batch is (on the CPU: the step's own generator, as before)
                    if not scheduler.is_deterministic:
                        noise_generator = (
                            generator
                            if x0.device.type == "cpu"
                            else step_generator(args.seed, global_step, accelerator, device=x0.device)
                        )
                        noise = randn_tensor(x0.shape, generator=noise_generator, device=x0.device)
                    x_t = scheduler.shift(x0, y, timesteps, noise=noise)
                    model_input = unet_input(unet, scheduler.scale_model_input(x_t, timesteps), condition)

                    pred = unet(model_input, timesteps).sample
                    # the model predicts x_0, or the residual e_0 = y - x_0
                    target = x0 if args.prediction_type == "sample" else y - x0
                    loss = latent_loss(args.loss, pred.float(), target)
                    pred_x0 = pred.float() if args.prediction_type == "sample" else y - pred.float()
                if lpips_model is not None:
                    decoded = vqvae.decode(pred_x0.to(vqvae_dtype), force_not_quantize=True).sample.float()
                    loss = loss + args.lpips_weight * lpips_model(decoded.clamp(-1, 1), hr.float()).mean()

                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)

            avg_loss = accelerator.gather(loss.detach().repeat(hr.shape[0])).mean().item()
            timed_samples += hr.shape[0] * accelerator.num_processes
            if accelerator.sync_gradients:
                if ema_unet is not None:
                    ema_unet.step(unet.parameters())
                progress_bar.update(1)
                global_step += 1
                if timed_since is None:  # the first step (warm-up, data workers starting) is not timed
                    timed_since, timed_samples = time.perf_counter(), 0
                timed_until = time.perf_counter()
                elapsed = timed_until - timed_since
                samples_per_s = timed_samples / elapsed if elapsed > 0 and timed_samples else float("nan")
                logs = {"loss": avg_loss, "lr": lr_scheduler.get_last_lr()[0], "samples_per_s": samples_per_s}
                progress_bar.set_postfix(loss=f"{avg_loss:.4f}", lr=f"{logs['lr']:.2e}", sps=f"{samples_per_s:.2f}")
                accelerator.log({"train/" + k: v for k, v in logs.items()}, step=global_step)

                if global_step % args.checkpointing_steps == 0:
                    save_checkpoint(
                        accelerator, args.output_dir, args.checkpoints_total_limit, global_step, method_record(args)
                    )
                if validation_images and global_step % args.validation_steps == 0:
                    metrics = run_validation(
                        accelerator, args, unet, ema_unet, vqvae, scheduler, validation_images, global_step
                    )
                    if args.save_best and accelerator.is_main_process and metrics["val/psnr_y"] > best_psnr:
                        best_psnr = metrics["val/psnr_y"]
                        save_best(accelerator, args, unet, ema_unet, vqvae, scheduler, global_step, metrics)
            if global_step >= args.max_train_steps:
                break

    # 6. Save the pipeline (EMA weights when enabled)
    accelerator.wait_for_everyone()
    wall_time = time.perf_counter() - start_time
    if validation_images and global_step % args.validation_steps != 0:
        metrics = run_validation(accelerator, args, unet, ema_unet, vqvae, scheduler, validation_images, global_step)
    if accelerator.is_main_process:
        final_unet = accelerator.unwrap_model(unet)
        if ema_unet is not None:
            ema_unet.copy_to(final_unet.parameters())
        pipeline = DeltaDiffPipeline(
            vqvae=vqvae.to(torch.float32),
            unet=final_unet.to(torch.float32),
            scheduler=scheduler,
            upscale_factor=args.scale,
        )
        pipeline.save_pretrained(args.output_dir)
        write_model_card(args, args.output_dir, metrics, global_step, wall_time, final_unet)
        if skipped_files:
            logger.warning(f"{len(skipped_files)} unreadable training image(s) were skipped: {sorted(skipped_files)}")
        logger.info(f"Saved the pipeline to {args.output_dir} after {global_step} steps ({wall_time / 60:.1f} min)")
        if timed_since is not None and timed_samples:
            throughput = timed_samples / (timed_until - timed_since)
            logger.info(f"training throughput: {throughput:.3f} samples/s (all processes, after the first step)")
        if args.push_to_hub:
            from huggingface_hub import create_repo, upload_folder

            repo_id = create_repo(
                args.hub_model_id or Path(args.output_dir).name, exist_ok=True, token=args.hub_token
            ).repo_id
            upload_folder(
                repo_id=repo_id,
                folder_path=args.output_dir,
                commit_message="DeltaDiff training run",
                ignore_patterns=["checkpoint-*", "logs/*", "validation/*"],
                token=args.hub_token,
            )
    accelerator.end_training()
    if log_file is not None:
        logging.getLogger().removeHandler(log_file)
        log_file.close()


def best_validation_psnr(output_dir: str) -> float:
    """
    The Y-PSNR of the pipeline in `<output_dir>/best` (from its `best.json`), -inf when there is none. A replacement
    interrupted between its two renames is finished first: the complete new best (`.best.partial` with its
    `best.json`) or else the previous one (`.best.old`) becomes `best` again.
    """
    folder = Path(output_dir)
    final, partial, old = folder / "best", folder / ".best.partial", folder / ".best.old"
    if not final.exists():
        for candidate in (partial, old):
            if (candidate / "best.json").is_file():
                logger.warning(f"restoring {candidate} (left by an interrupted save) as {final}")
                candidate.rename(final)
                break
    for leftover in (partial, old):
        shutil.rmtree(leftover, ignore_errors=True)
    record = final / "best.json"
    return json.loads(record.read_text())["val/psnr_y"] if record.is_file() else float("-inf")


def save_best(accelerator, args, unet, ema_unet, vqvae, scheduler, global_step: int, metrics: dict):
    """Save the current (EMA) weights as a pipeline in `<output_dir>/best`, replacing the previous best whole."""
    model = accelerator.unwrap_model(unet)
    if ema_unet is not None:
        ema_unet.store(model.parameters())
        ema_unet.copy_to(model.parameters())
    final, partial = Path(args.output_dir) / "best", Path(args.output_dir) / ".best.partial"
    shutil.rmtree(partial, ignore_errors=True)
    pipeline = DeltaDiffPipeline(vqvae=vqvae, unet=model, scheduler=scheduler, upscale_factor=args.scale)
    pipeline.save_pretrained(partial)
    (partial / "best.json").write_text(json.dumps({"step": global_step, **metrics}))
    if ema_unet is not None:
        ema_unet.restore(model.parameters())
    install_folder(partial, final, Path(args.output_dir) / ".best.old")
    logger.info(f"step {global_step}: best held-out Y-PSNR so far, saved to {final}")


def run_validation(accelerator, args, unet, ema_unet, vqvae, scheduler, images, global_step) -> dict:
    model = accelerator.unwrap_model(unet)
    if ema_unet is not None:
        ema_unet.store(model.parameters())
        ema_unet.copy_to(model.parameters())
    model.eval()
    pipeline = DeltaDiffPipeline(vqvae=vqvae, unet=model, scheduler=scheduler, upscale_factor=args.scale)
    metrics = log_validation(pipeline, images, args, accelerator, global_step)
    if ema_unet is not None:
        ema_unet.restore(model.parameters())
    model.train()
    return metrics


if __name__ == "__main__":
    main(parse_args())
