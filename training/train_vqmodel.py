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
"""Train the f4 `VQModel` that DeltaDiff works in, on the same data loader as `train_deltadiff.py`.

    accelerate launch training/train_vqmodel.py --train_data_dir path/to/images --output_dir vqvae-f4

Loss: L1 reconstruction + the VQ codebook / commitment loss (+ LPIPS with `--lpips_weight`, which needs `lpips`).
VQ training from scratch collapses easily (few codes used, blurry output), so by default:

1. the first `--warmup_steps` train a plain autoencoder (no quantisation),
2. the codebook is then initialised from encoder outputs (random latent vectors of a few batches),
3. codes unused for `--dead_code_steps` steps are re-initialised from current encoder outputs.

The result is saved with `VQModel.save_pretrained(output_dir)`; point `train_deltadiff.py
--vqvae_model_name_or_path` at it.
"""

import argparse
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedDataParallelKwargs,
    ProjectConfiguration,
    gather_object,
    set_seed,
)
from diffusers import VQModel
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from diffusers_deltadiff.data import SRTrainDataset, load_hr_dataset, make_dataloader
from diffusers_deltadiff.image_utils import image_grid
from diffusers_deltadiff.metrics import psnr_y
from diffusers_deltadiff.training_utils import (
    add_data_arguments,
    epoch_loader,
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


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description="Train a VQModel autoencoder for DeltaDiff.")
    parser.add_argument("--pretrained_model_name_or_path", type=str, default=None, help="Fine-tune this VQModel.")
    parser.add_argument("--block_out_channels", type=str, default="64,128,128", help="3 blocks = f4.")
    parser.add_argument("--layers_per_block", type=int, default=1)
    parser.add_argument("--latent_channels", type=int, default=3)
    parser.add_argument("--num_vq_embeddings", type=int, default=1024)
    parser.add_argument("--norm_num_groups", type=int, default=32)
    add_data_arguments(parser)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--dataloader_num_workers", type=int, default=2)
    parser.add_argument("--train_batch_size", type=int, default=8)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--max_train_steps", type=int, default=2000)
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--lr_scheduler", type=str, default="cosine")
    parser.add_argument("--lr_warmup_steps", type=int, default=50)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--warmup_steps", type=int, default=200, help="Steps without quantisation first.")
    parser.add_argument("--commitment_weight", type=float, default=1.0)
    parser.add_argument("--dead_code_steps", type=int, default=200, help="0 disables dead-code restarts.")
    parser.add_argument("--lpips_weight", type=float, default=0.0, help="LPIPS on reconstructions (needs `lpips`).")
    parser.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"])
    parser.add_argument("--output_dir", type=str, default="vqvae-f4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpointing_steps", type=int, default=500)
    parser.add_argument("--checkpoints_total_limit", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", type=str, default=None)
    parser.add_argument("--validation_data_dir", type=str, default=None)
    parser.add_argument("--validation_steps", type=int, default=250)
    parser.add_argument("--num_validation_images", type=int, default=8)
    parser.add_argument("--validation_resolution", type=int, default=256)
    parser.add_argument("--report_to", type=str, default="tensorboard")
    parser.add_argument("--logging_dir", type=str, default="logs")
    args = parser.parse_args(input_args)
    if args.dataset_name is None and args.train_data_dir is None:
        parser.error("Pass --dataset_name or --train_data_dir.")
    return args


def build_vqmodel(args) -> VQModel:
    if args.pretrained_model_name_or_path:
        return VQModel.from_pretrained(args.pretrained_model_name_or_path)
    channels = tuple(int(c) for c in args.block_out_channels.split(","))
    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        layers_per_block=args.layers_per_block,
        latent_channels=args.latent_channels,
        num_vq_embeddings=args.num_vq_embeddings,
        vq_embed_dim=args.latent_channels,
        norm_num_groups=args.norm_num_groups,
        sample_size=args.resolution,
    )


class VQRoundTrip(torch.nn.Module):
    """Encode, optionally quantise, decode: one module, so that DDP sees (and syncs) the whole computation."""

    def __init__(self, vqvae: VQModel):
        super().__init__()
        self.vqvae = vqvae

    def forward(self, images: torch.Tensor, quantize: bool = True):
        """Returns the reconstruction, the codebook + commitment loss, the code indices and the latents."""
        latents = self.vqvae.encode(images).latents
        if not quantize:
            return self.vqvae.decode(latents, force_not_quantize=True).sample, latents.new_zeros(()), None, latents
        quantized, vq_loss, (_, _, indices) = self.vqvae.quantize(latents)
        return self.vqvae.decode(quantized, force_not_quantize=True).sample, vq_loss, indices, latents


def random_latent_vectors(latents: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` latent vectors `(count, C)` drawn at random positions of `(B, C, H, W)` latents."""
    vectors = latents.detach().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    index = torch.randint(0, vectors.shape[0], (count,), generator=generator)
    return vectors[index.to(vectors.device)].float()


def main(args):
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=str(Path(args.output_dir, args.logging_dir))
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # the codebook is unused during the warm-up without quantisation
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    set_seed(args.seed)
    resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)  # a wrong path fails before anything is written
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)

    vqvae = build_vqmodel(args)
    scale = 2 ** (len(vqvae.config.block_out_channels) - 1)
    lpips_model = lpips_loss_model(args.lpips_weight)
    if lpips_model is not None:
        lpips_model.to(accelerator.device)
    optimizer = torch.optim.AdamW(vqvae.parameters(), lr=args.learning_rate, betas=(0.9, 0.99), weight_decay=0.0)

    with accelerator.main_process_first():
        hr_images = load_hr_dataset(
            args.dataset_name,
            args.dataset_config_name,
            args.train_data_dir,
            args.image_column,
            cache_dir=args.cache_dir,
        )
    dataset = SRTrainDataset(hr_images, resolution=args.resolution, scale=scale, seed=args.seed)
    train_dataloader = make_dataloader(dataset, args.train_batch_size, args.dataloader_num_workers, seed=args.seed)
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    round_trip, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        VQRoundTrip(vqvae), optimizer, train_dataloader, lr_scheduler
    )
    model = accelerator.unwrap_model(round_trip).vqvae
    num_codes = model.config.num_vq_embeddings
    # steps since each code was last used (a buffer so that checkpoints carry it)
    code_age = torch.zeros(num_codes, dtype=torch.long, device=accelerator.device)
    accelerator.register_for_checkpointing(CodeAge(code_age))

    steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    num_epochs = math.ceil(args.max_train_steps / steps_per_epoch)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers(
            "vqmodel", config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        )
    validation_images = []
    if args.validation_data_dir:
        validation_images = load_center_crops(
            args.validation_data_dir, args.num_validation_images, args.validation_resolution, multiple=scale * 4
        )
    logger.info(f"VQModel parameters: {sum(p.numel() for p in model.parameters()):,}; {len(dataset)} images")

    global_step, first_epoch, resume_batches = resume(
        accelerator, args.resume_from_checkpoint, args.output_dir, steps_per_epoch, args.gradient_accumulation_steps
    )

    progress_bar = tqdm(
        range(args.max_train_steps), initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    skipped_files: set[str] = set()
    metrics: dict = {}
    start_time = time.perf_counter()
    for epoch in range(first_epoch, num_epochs):
        round_trip.train()
        loader = epoch_loader(
            accelerator, dataset, train_dataloader, epoch, resume_batches if epoch == first_epoch else 0
        )
        for batch in loader:
            report_skipped(batch, skipped_files, logger)
            quantize = global_step >= args.warmup_steps
            generator = step_generator(args.seed, global_step, accelerator)
            with accelerator.accumulate(round_trip):
                hr = batch["hr"]
                if quantize and global_step == args.warmup_steps:
                    # 2. codebook initialised from encoder outputs, identical on every process
                    with torch.no_grad():
                        latents = model.encode(hr).latents
                        vectors = accelerator.gather(random_latent_vectors(latents, num_codes, generator).contiguous())
                        model.quantize.embedding.weight.data.copy_(vectors[:num_codes])
                    logger.info(f"step {global_step}: codebook initialised from encoder outputs")
                recon, vq_loss, indices, latents = round_trip(hr, quantize)
                l1 = F.l1_loss(recon.float(), hr.float())
                loss = l1 + args.commitment_weight * vq_loss
                if lpips_model is not None:
                    loss = loss + args.lpips_weight * lpips_model(recon.float().clamp(-1, 1), hr.float()).mean()
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(round_trip.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)

            if indices is not None:
                used = accelerator.gather(indices.reshape(-1).contiguous())
                code_age += 1
                code_age[used.unique()] = 0
            if accelerator.sync_gradients:
                global_step += 1
                progress_bar.update(1)
                # 3. dead-code restarts from current encoder outputs (same vectors on every process)
                if quantize and args.dead_code_steps and global_step % args.dead_code_steps == 0:
                    dead = (code_age >= args.dead_code_steps).nonzero().flatten()
                    if len(dead):
                        vectors = accelerator.gather(random_latent_vectors(latents, len(dead), generator).contiguous())
                        with torch.no_grad():
                            model.quantize.embedding.weight.data[dead] = vectors[: len(dead)]
                        code_age[dead] = 0
                    logger.info(f"step {global_step}: restarted {len(dead)} unused codes of {num_codes}")
                logs = {
                    "l1": accelerator.gather(l1.detach()[None]).mean().item(),
                    "vq": float(vq_loss),
                    "lr": lr_scheduler.get_last_lr()[0],
                }
                progress_bar.set_postfix(l1=f"{logs['l1']:.4f}", vq=f"{logs['vq']:.4f}", quant=quantize)
                accelerator.log({"train/" + k: v for k, v in logs.items()}, step=global_step)
                if global_step % args.checkpointing_steps == 0:
                    save_checkpoint(accelerator, args.output_dir, args.checkpoints_total_limit, global_step)
                if validation_images and global_step % args.validation_steps == 0:
                    metrics = validate(accelerator, model, validation_images, args, global_step, quantize)
            if global_step >= args.max_train_steps:
                break

    accelerator.wait_for_everyone()
    if validation_images and global_step % args.validation_steps != 0:
        metrics = validate(accelerator, model, validation_images, args, global_step, global_step >= args.warmup_steps)
    if accelerator.is_main_process:
        model.to(torch.float32).save_pretrained(args.output_dir, safe_serialization=True)
        minutes = (time.perf_counter() - start_time) / 60
        logger.info(f"Saved the VQModel to {args.output_dir} after {global_step} steps ({minutes:.1f} min); {metrics}")
        if skipped_files:
            logger.warning(f"{len(skipped_files)} unreadable training image(s) were skipped: {sorted(skipped_files)}")
    accelerator.end_training()


class CodeAge:
    """Checkpointable wrapper of the code-usage counter (Accelerate saves objects with `state_dict`)."""

    def __init__(self, ages: torch.Tensor):
        self.ages = ages

    def state_dict(self):
        return {"ages": self.ages}

    def load_state_dict(self, state):
        self.ages.copy_(state["ages"])


@torch.no_grad()
def validate(accelerator, model, images, args, global_step, quantize) -> dict:
    """Y-PSNR of the VQ round trip (encode, quantise, decode) on the validation crops, sharded over processes."""
    model.eval()
    scores, rows = [], []
    with accelerator.split_between_processes(list(range(len(images)))) as shard:
        for i in shard:
            hr = images[i].to(accelerator.device)
            recon = VQRoundTrip(model)(hr[None] * 2 - 1, quantize)[0]
            recon = ((recon[0].float() + 1) / 2).clamp(0, 1).cpu()
            scores.append(psnr_y(recon, images[i], crop_border=4).item())
            rows.append((i, [images[i], recon]))
    scores = gather_object(scores)
    rows = sorted(gather_object(rows), key=lambda r: r[0])
    metrics = {"val/recon_psnr_y": float(np.mean(scores))}
    if accelerator.is_main_process:
        grid = image_grid([r[1] for r in rows])
        out_dir = Path(args.output_dir) / "validation"
        out_dir.mkdir(parents=True, exist_ok=True)
        grid.save(out_dir / f"step-{global_step:07d}.png")
        log_image(accelerator, "val/hr_recon", grid, global_step)
        logger.info(
            f"step {global_step}: VQ round-trip Y-PSNR {metrics['val/recon_psnr_y']:.2f} dB (quantised: {quantize})"
        )
    accelerator.log(metrics, step=global_step)
    model.train()
    return metrics


if __name__ == "__main__":
    main(parse_args())
