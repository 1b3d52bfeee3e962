"""Train the FSRCNN baseline (`diffusers_deltadiff.baselines.fsrcnn`) on the same data, crops, LR protocol and selection
rule as the DeltaDiff models, for the equal-budget tables. Resumable: rerun the same command.

    python training/train_fsrcnn.py --train_data_dir outputs/data/train451 \
        --validation_data_dir outputs/data/heldout40 --max_minutes 30 --output_dir outputs/abl17/fsrcnn

The budget is wall time (`--max_minutes`, counted across resumes) or steps (`--max_train_steps`), whichever ends
first. The learning rate decays with a cosine over the budget (wall time or steps, whichever runs out first). Every `--validation_steps` the model is scored
on the held-out photos (320-pixel centre crops, Y-PSNR, crop 4), and the best one is kept as `<output_dir>/best`
(`fsrcnn.safetensors` + `config.json`), the folder `benchmarks/quality.py --baseline fsrcnn:FOLDER` reads.
"""

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from diffusers_deltadiff.baselines.fsrcnn import FSRCNN
from diffusers_deltadiff.data import SRTrainDataset, list_images, make_dataloader
from diffusers_deltadiff.degradations import bicubic_downsample
from diffusers_deltadiff.metrics import psnr_y
from diffusers_deltadiff.training_utils import load_center_crops


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_data_dir", required=True)
    parser.add_argument("--validation_data_dir", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=128, help="HR crop size")
    parser.add_argument("--train_batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--max_train_steps", type=int, default=100_000)
    parser.add_argument("--max_minutes", type=float, default=None, help="wall-time budget, summed over resumes")
    parser.add_argument("--validation_steps", type=int, default=1000)
    parser.add_argument("--validation_resolution", type=int, default=320)
    parser.add_argument("--num_validation_images", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def save_atomic(tensors: dict, path: Path, metadata: dict | None = None):
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    os.replace(partial, path)


@torch.no_grad()
def validate(model, images, scale: int) -> float:
    model.eval()
    scores = []
    for hr in images:
        lr = bicubic_downsample(hr, scale)
        sr = model(lr[None]).clamp(0, 1)[0]
        scores.append(psnr_y(sr, hr, scale).item())
    model.train()
    return sum(scores) / len(scores)


def save_model(model, folder: Path, metadata: dict):
    folder.mkdir(parents=True, exist_ok=True)
    save_atomic({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "fsrcnn.safetensors")
    (folder / "config.json").write_text(json.dumps(metadata, indent=2) + "\n")


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = FSRCNN(scale=args.scale)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    state = {"step": 0, "seconds": 0.0, "best_psnr": -math.inf, "history": []}
    budget = args.max_minutes * 60 if args.max_minutes else math.inf

    def progress() -> float:  # the fraction of the budget spent: steps or wall time, whichever runs out first
        return min(1.0, max(state["step"] / args.max_train_steps, state["seconds"] / budget))

    def set_learning_rate():  # cosine decay over the budget
        for group in optimizer.param_groups:
            group["lr"] = args.learning_rate * 0.5 * (1 + math.cos(math.pi * progress()))

    if (out / "state.pt").exists():
        saved = torch.load(out / "state.pt", weights_only=True)  # tensors, numbers and lists: nothing to run
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        print(f"resumed at step {state['step']} ({state['seconds'] / 60:.1f} min)", flush=True)

    # the DeltaDiff trainer's validation set: the same centre crops of the same held-out photos
    validation = load_center_crops(
        args.validation_data_dir, args.num_validation_images, args.validation_resolution, multiple=args.scale
    )
    dataset = SRTrainDataset(list_images(args.train_data_dir), resolution=args.resolution, scale=args.scale)

    def checkpoint():
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "state": state,
            },
            out / "state.pt.partial",
        )
        os.replace(out / "state.pt.partial", out / "state.pt")

    epoch = state["step"] // max(1, len(dataset) // args.train_batch_size)
    since = time.perf_counter()
    done = False
    while not done:
        dataset.set_epoch(epoch)
        loader = make_dataloader(dataset, args.train_batch_size, 0, seed=args.seed + epoch)
        for batch in loader:
            hr, lr = (batch["hr"] + 1) / 2, (batch["lr"] + 1) / 2
            loss = F.l1_loss(model(lr), hr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            set_learning_rate()
            optimizer.step()
            state["step"] += 1
            now = time.perf_counter()
            state["seconds"] += now - since
            since = now
            done = state["step"] >= args.max_train_steps or state["seconds"] >= budget
            if state["step"] % args.validation_steps == 0 or done:
                psnr = validate(model, validation, args.scale)
                state["history"].append({"step": state["step"], "minutes": state["seconds"] / 60, "psnr_y": psnr})
                print(
                    f"step {state['step']} ({state['seconds'] / 60:.1f} min): loss {loss.item():.4f}, "
                    f"held-out Y-PSNR {psnr:.2f}",
                    flush=True,
                )
                if psnr > state["best_psnr"]:
                    state["best_psnr"] = psnr
                    save_model(model, out / "best", {"scale": args.scale, "step": state["step"], "psnr_y": psnr})
                checkpoint()
                since = time.perf_counter()  # validation and saving are not training time
            if done:
                break
        epoch += 1
    save_model(model, out, {"scale": args.scale, "step": state["step"], "minutes": state["seconds"] / 60})
    (out / "history.json").write_text(json.dumps(state["history"], indent=2) + "\n")
    print(f"done: {state['step']} steps in {state['seconds'] / 60:.1f} min, best held-out {state['best_psnr']:.2f}")


if __name__ == "__main__":
    main()
