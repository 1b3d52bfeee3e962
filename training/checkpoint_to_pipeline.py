#!/usr/bin/env python
"""Save the pipeline of one training checkpoint: its EMA weights (or raw weights), the run's other components.

    python training/checkpoint_to_pipeline.py --run outputs/deltadiff-x4 --checkpoint 3000 --output outputs/best

`train_deltadiff.py` saves the pipeline of its last step in `--run`, and an `accelerate` state every
`--checkpointing_steps` in `--run/checkpoint-N`. To ship the checkpoint that scored best on held-out images, this
puts that checkpoint's UNet weights (the EMA copy when the run kept one, as the final pipeline does) into the run's
pipeline and saves it.
"""

import argparse
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file

from diffusers_deltadiff.pretrained import from_pretrained


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="the --output_dir of a finished train_deltadiff.py run")
    parser.add_argument("--checkpoint", required=True, help="a step N (for checkpoint-N) or a checkpoint folder")
    parser.add_argument("--output", required=True, help="where to save the pipeline")
    parser.add_argument("--raw", action="store_true", help="the raw weights, not the EMA copy")
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


def main(args):
    folder = Path(args.checkpoint)
    if not folder.is_dir():
        folder = Path(args.run) / f"checkpoint-{args.checkpoint}"
    if not folder.is_dir():
        raise SystemExit(f"error: {folder}: no such checkpoint folder")
    pipe = from_pretrained(args.run)
    ema_file = folder / "custom_checkpoint_0.pkl"
    if args.raw or not ema_file.is_file():
        pipe.unet.load_state_dict(unwrapped_state_dict(load_file(folder / "model.safetensors")))
        source = "raw weights"
    else:
        ema = EMAModel(pipe.unet.parameters())
        ema.load_state_dict(torch.load(ema_file, map_location="cpu", weights_only=False))
        ema.copy_to(pipe.unet.parameters())
        source = f"EMA weights (decay {ema.decay}, step {ema.optimization_step})"
    pipe.save_pretrained(args.output)
    print(f"saved {folder.name} ({source}) as a pipeline in {args.output}")


if __name__ == "__main__":
    main(parse_args())
