"""Helpers shared by the training scripts in `training/` (checkpoint rotation and resume, validation images)."""

import json
import logging
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from safetensors import SafetensorError

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


CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
CHECKPOINT_MARKER = "deltadiff_checkpoint.json"  # written last: a folder with it is a complete checkpoint
PARTIAL_GLOB, REPLACED_GLOB = ".checkpoint-*.partial", ".checkpoint-*.replaced"
LEFTOVER_NAME = re.compile(r"\.checkpoint-(\d+)\.(partial|replaced)")


def checkpoint_step(path: Path) -> int | None:
    """The step of a checkpoint folder: from its marker, else from a strict `checkpoint-<step>` name, else `None`."""
    marker = path / CHECKPOINT_MARKER
    if marker.is_file():
        try:
            return int(json.loads(marker.read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    match = CHECKPOINT_NAME.fullmatch(path.name)
    return int(match.group(1)) if match else None


def is_complete_checkpoint(path: Path) -> bool:
    """
    A checkpoint that can be resumed: it holds the marker written after everything else, or (a folder saved before
    markers existed) the optimizer state and the random states that `accelerator.save_state` writes near its end.
    """
    if (path / CHECKPOINT_MARKER).is_file():
        return True
    return (path / "optimizer.bin").is_file() and any(path.glob("random_states_*.pkl"))


def checkpoint_dirs(output_dir: str) -> list[Path]:
    """
    The complete `checkpoint-<step>` folders of a run, oldest first. Other entries (`checkpoint-2.tar`,
    `checkpoint-best`, half-written folders) are neither listed nor touched.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [
        path
        for path in folder.iterdir()
        if CHECKPOINT_NAME.fullmatch(path.name) and path.is_dir() and is_complete_checkpoint(path)
    ]
    return sorted(found, key=lambda p: int(CHECKPOINT_NAME.fullmatch(p.name).group(1)))


def prune_checkpoints(output_dir: str, total_limit: int | None, keep: Path):
    """After a checkpoint is complete: delete the oldest complete ones so that at most `total_limit` remain."""
    if total_limit is None:
        return
    checkpoints = [path for path in checkpoint_dirs(output_dir) if path != keep]
    for old in checkpoints[: max(len(checkpoints) - max(total_limit, 1) + 1, 0)]:
        logger.info(f"removing checkpoint {old}")
        remove_folder(old)


def remove_folder(path: Path):
    """Delete a folder of this run; a symbolic link put there is unlinked (what it points to is not this run's)."""
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path)


def remove_partial_checkpoints(output_dir: str):
    """
    Tidy what an interrupted save left (`.checkpoint-<step>.partial`, `.checkpoint-<step>.replaced`): a complete
    one (it has the marker) whose `checkpoint-<step>` is missing becomes that checkpoint again; the rest is deleted.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return
    leftovers = sorted(folder.glob(PARTIAL_GLOB)) + sorted(folder.glob(REPLACED_GLOB))  # new copies first
    for path in leftovers:
        match = LEFTOVER_NAME.fullmatch(path.name)
        final = folder / f"checkpoint-{match.group(1)}" if match else None
        if final is not None and not final.exists() and (path / CHECKPOINT_MARKER).is_file():
            logger.warning(f"restoring the complete checkpoint {path} of an interrupted save as {final}")
            path.rename(final)
        else:
            logger.warning(f"removing {path}, left by an interrupted save")
            shutil.rmtree(path, ignore_errors=True)


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: str) -> tuple[str | None, int]:
    """
    The checkpoint folder to resume from and its global step. `latest` is the newest complete checkpoint in
    `output_dir` (none: a new run). A path that does not exist, is incomplete or has no step is an error
    (`SystemExit`) that lists the checkpoints there are: a typo never starts a new run over the old one.
    """
    existing = checkpoint_dirs(output_dir)
    listing = ", ".join(str(p) for p in existing) or f"none in {output_dir}"
    if not resume_from_checkpoint:
        if existing:
            raise SystemExit(
                f"error: {output_dir} already holds checkpoints ({listing}): pass --resume_from_checkpoint latest "
                "to continue that run, or choose another --output_dir."
            )
        return None, 0
    if resume_from_checkpoint == "latest":
        if not existing:
            logger.info(f"No complete checkpoint in {output_dir} yet: starting a new run.")
            return None, 0
        path = existing[-1]
    else:
        path = Path(resume_from_checkpoint)
        if not path.is_dir():
            raise SystemExit(
                f"error: --resume_from_checkpoint {path}: no such checkpoint folder (checkpoints: {listing})."
            )
        if not is_complete_checkpoint(path):
            raise SystemExit(
                f"error: --resume_from_checkpoint {path}: an incomplete checkpoint (its save was interrupted); "
                f"checkpoints: {listing}."
            )
    step = checkpoint_step(path)
    if step is None and (path / CHECKPOINT_MARKER).is_file():
        raise SystemExit(
            f"error: --resume_from_checkpoint {path}: its {CHECKPOINT_MARKER} cannot be read (damaged or edited): "
            f"resume from another checkpoint; checkpoints: {listing}."
        )
    if step is None:
        raise SystemExit(
            f"error: --resume_from_checkpoint {path}: cannot tell its step (not named checkpoint-<step> and no "
            f"{CHECKPOINT_MARKER}); checkpoints: {listing}."
        )
    return str(path), step


def recorded_method(path: Path) -> dict | None:
    """The method configuration a checkpoint's marker records; `None` for checkpoints that record none."""
    try:
        method = json.loads((Path(path) / CHECKPOINT_MARKER).read_text()).get("method")
    except (OSError, ValueError, AttributeError):
        return None
    return method if isinstance(method, dict) else None


def check_method(checkpoint: str | None, method: dict):
    """
    Refuse to resume `checkpoint` with another method configuration than it was trained with (`method`: flag name ->
    value, as [`save_checkpoint`] records it): a changed prediction type, kappa, eta schedule, power, step count,
    latent or factor would train on from weights made for something else, and the saved scheduler would contradict
    the first part of the run. A checkpoint that records nothing (saved before records existed) is warned about.
    """
    if checkpoint is None:
        return
    recorded = recorded_method(Path(checkpoint))
    if recorded is None:
        logger.warning(f"{checkpoint} records no method configuration (an older checkpoint): resuming unchecked")
        return
    changed = [key for key in sorted(set(recorded) | set(method)) if recorded.get(key) != method.get(key)]
    if changed:
        run = " ".join(f"--{key} {recorded.get(key)}" for key in changed)
        now = " ".join(f"--{key} {method.get(key)}" for key in changed)
        raise SystemExit(
            f"error: --resume_from_checkpoint {checkpoint}: the run was trained with {run}, this resume asks for {now}; "
            "resume with the run's flags, or start a new --output_dir"
        )


class RefusedPickle(Exception):
    """A file that `torch.load(weights_only=True)` refuses: it holds objects that unpickling would run."""


def load_weights_only(path: Path):
    """
    `path` read with `torch.load(weights_only=True)` on the CPU: tensors, numbers and containers only. A file that
    needs more is a [`RefusedPickle`] (torch's reason, its first line up to 200 characters), never unpickled; an
    unreadable or truncated one an `OSError`.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise RefusedPickle(str(err).splitlines()[0][:200]) from None
    except (RuntimeError, EOFError) as err:
        raise OSError(str(err)) from None


def check_custom_states(path: Path):
    """
    `accelerate` unpickles a checkpoint's `custom_checkpoint_<n>.pkl` (the EMA state) allowing any object: each
    is read first with [`load_weights_only`], and a file that needs more is refused.
    """
    for state in sorted(Path(path).glob("custom_checkpoint_*.pkl")):
        try:
            load_weights_only(state)
        except RefusedPickle as err:
            raise SystemExit(
                f"error: --resume_from_checkpoint {path}: {state.name} holds objects that unpickling would run "
                f"(refused; {err})"
            ) from None
        except OSError as err:
            raise SystemExit(f"error: --resume_from_checkpoint {path}: {state.name} is unreadable ({err})") from None


def damaged_archives(path: Path) -> list[str]:
    """The torch state files (`*.bin`: zip archives) of checkpoint `path` that are not whole archives, by name."""
    damaged = []
    for state in sorted(Path(path).glob("*.bin")):
        try:
            with zipfile.ZipFile(state) as archive:
                whole = archive.testzip() is None
        except (zipfile.BadZipFile, OSError, EOFError):
            whole = False
        if not whole:
            damaged.append(state.name)
    return damaged


def resume(
    accelerator,
    resume_from_checkpoint: str | None,
    output_dir: str,
    steps_per_epoch: int,
    accumulation: int,
    ema=None,
):
    """
    Restore the state of `--resume_from_checkpoint` (if any) into `accelerator`. Returns the global step, the epoch
    to start in and how many batches of that epoch were already seen.

    `ema` (an `EMAModel` registered for checkpointing) is moved back to the accelerator's device: `load_state` loads
    custom objects with `map_location="cpu"` and `EMAModel.load_state_dict` replaces its shadow parameters, so on a
    GPU they would come back on the CPU and the first `ema.step` would fail.
    """
    path, global_step = resolve_checkpoint(resume_from_checkpoint, output_dir)
    if accelerator.is_main_process:
        remove_partial_checkpoints(output_dir)
    if path is not None:
        accelerator.print(f"Resuming from checkpoint {path}")
        check_custom_states(Path(path))
        try:
            accelerator.load_state(path)
        except SafetensorError as err:  # a damaged file, not another model's
            raise SystemExit(
                f"error: --resume_from_checkpoint {path}: a file of it cannot be read ({type(err).__name__}: "
                f"{str(err).strip().splitlines()[0][:200]}): damaged or truncated: resume from another checkpoint."
            ) from None
        except (RuntimeError, KeyError, ValueError) as err:  # e.g. size mismatches: another model's checkpoint
            damaged = damaged_archives(Path(path))
            if damaged:  # not another model's: a file cut short
                raise SystemExit(
                    f"error: --resume_from_checkpoint {path}: {', '.join(damaged)} cannot be read (not a whole torch "
                    "archive): damaged or truncated: resume from another checkpoint."
                ) from None
            first = str(err).strip().splitlines()
            raise SystemExit(
                f"error: --resume_from_checkpoint {path}: it does not fit this run's model or optimizer "
                f"({type(err).__name__}: {' '.join(first[:2])[:300]}); resume with the flags of the run that saved it."
            ) from None
        if ema is not None:
            ema.to(accelerator.device)
    return global_step, global_step // steps_per_epoch, (global_step % steps_per_epoch) * accumulation


def epoch_loader(accelerator, dataset, dataloader, epoch: int, skip_batches: int = 0):
    """The loader of one epoch: crops and shuffling seeded by `epoch`, the first `skip_batches` skipped (resume)."""
    dataset.set_epoch(epoch)
    dataloader.set_epoch(epoch)
    return accelerator.skip_first_batches(dataloader, skip_batches) if skip_batches else dataloader


def step_generator(seed: int, global_step: int, accelerator, device: torch.device | str = "cpu") -> torch.Generator:
    """
    A generator for one optimisation step on one process: draws do not depend on RNG state, so a resumed run
    replays exactly what a straight run would draw. `device`: where it draws (noise for a GPU batch is drawn there,
    not on the CPU and copied).
    """
    return torch.Generator(device=device).manual_seed(
        seed * 1_000_003 + global_step * accelerator.num_processes + accelerator.process_index
    )


def install_folder(partial: Path, final: Path, stale: Path):
    """
    Make the complete folder `partial` the new `final` by renames only: an existing `final` is moved to `stale`
    first and deleted last. Killed in between, `partial` (complete) or `stale` (the previous one) is left to restore.
    """
    shutil.rmtree(stale, ignore_errors=True)
    if final.exists():
        final.rename(stale)
    partial.rename(final)
    shutil.rmtree(stale, ignore_errors=True)


def install_entries(partial: Path, final: Path):
    """
    Move every entry of the complete folder `partial` into the existing folder `final`, each replacing the entry of its
    name there (folders by [`install_folder`]'s renames); what else `final` holds (a run's checkpoints) is kept.
    """
    for entry in sorted(partial.iterdir()):
        target = final / entry.name
        if target.is_symlink():
            target.unlink()
        if entry.is_dir():
            install_folder(entry, target, final / f".{entry.name}.replaced")
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)


def save_checkpoint(
    accelerator, output_dir: str, total_limit: int | None, global_step: int, method: dict | None = None
) -> str:
    """
    `accelerator.save_state` into `output_dir/.checkpoint-<step>.partial`, then a marker, then one rename to
    `checkpoint-<step>`; only then are the oldest checkpoints pruned. An interrupted save (Ctrl-C, a crash, a full
    disk) leaves every earlier checkpoint as it was, and the half-written folder is never taken for a checkpoint.
    The marker records the step and `method`, the configuration a resume must keep ([`check_method`]).
    """
    final = Path(output_dir) / f"checkpoint-{global_step}"
    partial = Path(output_dir) / f".checkpoint-{global_step}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(partial))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            record = {"step": global_step, **({"method": method} if method is not None else {})}
            (partial / CHECKPOINT_MARKER).write_text(json.dumps(record))
            # a checkpoint of this step from an earlier attempt is replaced whole
            install_folder(partial, final, Path(output_dir) / f".checkpoint-{global_step}.replaced")
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        prune_checkpoints(output_dir, total_limit, keep=final)
    logger.info(f"Saved state to {final}")
    return str(final)


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
