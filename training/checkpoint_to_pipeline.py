#!/usr/bin/env python
"""Save the pipeline of one training checkpoint: its EMA weights (or raw weights), the run's other components.

    python training/checkpoint_to_pipeline.py --run outputs/deltadiff-x4 --checkpoint 3000 --output outputs/best

`train_deltadiff.py` saves the pipeline of its last step in `--run`, and an `accelerate` state every
`--checkpointing_steps` in `--run/checkpoint-N`. To ship the checkpoint that scored best on held-out images, this
puts that checkpoint's UNet weights (the EMA copy when the run kept one, as the final pipeline does) into the run's
pipeline and saves it.
"""

import argparse
import shutil
import tempfile
from pathlib import Path

from diffusers.training_utils import EMAModel
from safetensors import SafetensorError
from safetensors.torch import load_file

from diffusers_deltadiff.console import one_line
from diffusers_deltadiff.pretrained import from_pretrained
from diffusers_deltadiff.training_utils import RefusedPickle, install_entries, load_weights_only


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="the --output_dir of a finished train_deltadiff.py run")
    parser.add_argument("--checkpoint", required=True, help="a step N (for checkpoint-N) or a checkpoint folder")
    parser.add_argument("--output", required=True, help="where to save the pipeline (a new folder)")
    parser.add_argument("--raw", action="store_true", help="the raw weights, not the EMA copy")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the pipeline in an existing --output (its model_index.json, components and card; other files "
        "there, such as a run's checkpoints, are kept)",
    )
    return parser.parse_args(input_args)


WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel / DeepSpeed, and torch.compile


def unwrapped_state_dict(state_dict: dict) -> dict:
    """
    The state dict of the bare model: a multi-process run saves its DDP-wrapped UNet (`module.` keys), a compiled
    one `_orig_mod.` keys; strip those wrapper prefixes (repeatedly: a compiled model inside DDP has both).
    """
    unwrapped = {}
    for key, value in state_dict.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        unwrapped[key] = value
    return unwrapped


def checkpoint_folder(args) -> Path:
    folder = Path(args.checkpoint)
    if not folder.is_dir():
        folder = Path(args.run) / f"checkpoint-{args.checkpoint}"
    if not folder.is_dir():
        raise SystemExit(f"error: {folder}: no such checkpoint folder")
    return folder


def load_run(run: str):
    """The pipeline a finished run saved in its folder; a one-line error for anything that is not one."""
    if not (Path(run) / "model_index.json").is_file():
        raise SystemExit(
            f"error: --run {run}: not a finished training run (no model_index.json: train_deltadiff.py saves its "
            "pipeline there at the end)"
        )
    try:
        return from_pretrained(run)
    except Exception as err:  # noqa: BLE001 - any loading failure becomes one line
        raise SystemExit(f"error: --run {run}: cannot load its pipeline ({one_line(err)})") from None


def load_ema_state(path: Path) -> dict:
    """
    An EMA state saved by `accelerate` (`custom_checkpoint_0.pkl`), read with `load_weights_only`: tensors, numbers
    and containers only. A file that needs anything else is refused: unpickling it could run any code.
    """
    try:
        return load_weights_only(path)
    except RefusedPickle as err:
        raise SystemExit(
            f"error: {path}: not a plain EMA state (it holds objects that unpickling would run: refused; {err})"
        ) from None
    except OSError as err:
        raise SystemExit(f"error: {path}: unreadable EMA state ({one_line(err)})") from None


def load_checkpoint_weights(pipe, folder: Path, raw: bool) -> str:
    """Put the checkpoint's UNet weights (the EMA copy unless `raw`) into `pipe`; what was loaded, in words."""
    ema_file = folder / "custom_checkpoint_0.pkl"
    try:
        if raw or not ema_file.is_file():
            weights = folder / "model.safetensors"
            if not weights.is_file():
                raise SystemExit(f"error: {folder}: no model.safetensors (not a checkpoint of train_deltadiff.py)")
            try:
                state_dict = load_file(weights)
            except SafetensorError as err:
                raise SystemExit(f"error: {weights}: unreadable ({one_line(err)}; truncated?)") from None
            pipe.unet.load_state_dict(unwrapped_state_dict(state_dict))
            return "raw weights"
        ema = EMAModel(pipe.unet.parameters())
        ema.load_state_dict(load_ema_state(ema_file))
        ema.copy_to(pipe.unet.parameters())
        return f"EMA weights (decay {ema.decay}, step {ema.optimization_step})"
    except (RuntimeError, ValueError, KeyError, OSError) as err:
        raise SystemExit(
            f"error: {folder}: its weights do not fit the UNet of --run ({one_line(err)[:300]}): a checkpoint of "
            "another run?"
        ) from None


def check_output(output: Path, overwrite: bool):
    """Before anything is loaded: an existing `--output` is replaced only with `--overwrite`."""
    if output.exists() or output.is_symlink():
        if not overwrite:
            raise SystemExit(f"error: --output {output}: already exists (pass --overwrite to replace its pipeline)")
        if not output.is_dir():
            raise SystemExit(f"error: --output {output}: exists and is not a folder")


def main(args):
    output = Path(args.output)
    check_output(output, args.overwrite)
    folder = checkpoint_folder(args)
    pipe = load_run(args.run)
    source = load_checkpoint_weights(pipe, folder, args.raw)
    try:
        save_whole(pipe, output)
    except OSError as err:
        raise SystemExit(f"error: --output {output}: cannot save the pipeline ({one_line(err)}); nothing replaced")
    print(f"saved {folder.name} ({source}) as a pipeline in {args.output}")


def save_whole(pipe, output: Path):
    """
    Save into a new folder next to `output`, then move it into place: a failed save (full disk, interrupt) leaves
    `output` as it was. An existing `output` has each saved entry replaced ([`install_entries`]), nothing else.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        pipe.save_pretrained(partial)
        if output.exists():
            install_entries(partial, output)
        else:
            partial.rename(output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


if __name__ == "__main__":
    main(parse_args())
