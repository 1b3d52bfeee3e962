"""Helpers shared by the training scripts in `training/` (checkpoint rotation and resume, validation images)."""

import logging
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from .data import list_images, open_image
from .evaluation import load_lpips
from .image_utils import center_crop, to_unit_tensor


logger = logging.getLogger(__name__)


def add_data_arguments(parser):
    """The data flags both training scripts take: a Hub dataset or a local folder of HR images."""
    parser.add_argument("--dataset_name", type=str, default=None, help="Hub dataset id (e.g. a DIV2K dataset).")
    parser.add_argument("--dataset_config_name", type=str, default=None)
    parser.add_argument("--image_column", type=str, default="image")
    parser.add_argument("--train_data_dir", type=str, default=None, help="Local folder of HR images (recursive).")
    parser.add_argument("--cache_dir", type=str, default=None)


def lpips_loss_model(weight: float, net: str = "vgg"):
    """
    The frozen LPIPS network for a `--lpips_weight` loss term, `None` when the weight is 0. Asking for the loss when
    LPIPS cannot load (package or backbone weights missing) stops the run with the reason: no silent fallback.
    """
    if weight <= 0:
        return None
    model, reason = load_lpips(net)
    if model is None:
        raise SystemExit(f"error: --lpips_weight {weight}: {reason}")
    return model.requires_grad_(False)


def report_skipped(batch: dict, seen: set[str], log):
    """Warn once for every unreadable training file named in a batch; `seen` accumulates them."""
    for name in batch["skipped"]:
        if name not in seen:
            seen.add(name)
            log.warning(f"skipped unreadable training image {name} ({len(seen)} so far)")


def checkpoint_dirs(output_dir: str) -> list[Path]:
    """The `checkpoint-<step>` folders of a run, oldest first."""
    return sorted(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def rotate_checkpoints(output_dir: str, total_limit: int | None):
    """Before saving a new checkpoint, delete the oldest so that at most `total_limit` remain afterwards."""
    if total_limit is None:
        return
    checkpoints = checkpoint_dirs(output_dir)
    for old in checkpoints[: max(len(checkpoints) - total_limit + 1, 0)]:
        logger.info(f"removing checkpoint {old}")
        shutil.rmtree(old)


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: str) -> tuple[str | None, int]:
    """The checkpoint folder to resume from (`latest` = the newest in `output_dir`) and its global step."""
    if not resume_from_checkpoint:
        return None, 0
    path = resume_from_checkpoint
    if path == "latest":
        checkpoints = checkpoint_dirs(output_dir)
        path = str(checkpoints[-1]) if checkpoints else None
    if path is None or not Path(path).is_dir():
        logger.warning(f"Checkpoint '{resume_from_checkpoint}' does not exist: starting a new run.")
        return None, 0
    return path, int(Path(path).name.split("-")[1])


def resume(accelerator, resume_from_checkpoint: str | None, output_dir: str, steps_per_epoch: int, accumulation: int):
    """
    Restore the state of `--resume_from_checkpoint` (if any) into `accelerator`. Returns the global step, the epoch
    to start in and how many batches of that epoch were already seen.
    """
    path, global_step = resolve_checkpoint(resume_from_checkpoint, output_dir)
    if path is not None:
        accelerator.print(f"Resuming from checkpoint {path}")
        accelerator.load_state(path)
    return global_step, global_step // steps_per_epoch, (global_step % steps_per_epoch) * accumulation


def epoch_loader(accelerator, dataset, dataloader, epoch: int, skip_batches: int = 0):
    """The loader of one epoch: crops and shuffling seeded by `epoch`, the first `skip_batches` skipped (resume)."""
    dataset.set_epoch(epoch)
    dataloader.set_epoch(epoch)
    return accelerator.skip_first_batches(dataloader, skip_batches) if skip_batches else dataloader


def step_generator(seed: int, global_step: int, accelerator) -> torch.Generator:
    """
    A generator for one optimisation step on one process: draws do not depend on RNG state, so a resumed run
    replays exactly what a straight run would draw.
    """
    return torch.Generator().manual_seed(
        seed * 1_000_003 + global_step * accelerator.num_processes + accelerator.process_index
    )


def save_checkpoint(accelerator, output_dir: str, total_limit: int | None, global_step: int) -> str:
    """`accelerator.save_state` to `output_dir/checkpoint-<step>`, oldest checkpoints rotated out first."""
    if accelerator.is_main_process:
        rotate_checkpoints(output_dir, total_limit)
    path = str(Path(output_dir) / f"checkpoint-{global_step}")
    accelerator.save_state(path)
    logger.info(f"Saved state to {path}")
    return path


def load_center_crops(folder: str, count: int, size: int, multiple: int = 1) -> list[torch.Tensor]:
    """Centre crops (at most `size`, a multiple of `multiple`) of the first `count` readable images in `folder`."""
    images = []
    for path in list_images(folder):
        if len(images) == count:
            break
        try:
            image = to_unit_tensor(open_image(path)[0])
        except (OSError, ValueError) as err:
            logger.warning(f"skipped unreadable validation image {path}: {err}")
            continue
        side = min(size, *image.shape[1:]) // multiple * multiple
        images.append(center_crop(image, side, side))
    return images


def log_image(accelerator, tag: str, image: PIL.Image.Image, step: int):
    """Send an image to the tensorboard / wandb trackers of `accelerator`."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image(tag, np.asarray(image), step, dataformats="HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({tag: wandb.Image(image)}, step=step)
