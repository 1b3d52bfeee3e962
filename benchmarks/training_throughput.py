"""Training throughput on this machine, measured in one run: the data loader alone, then `train_deltadiff.py`.

    python benchmarks/training_throughput.py --train_data_dir ../shared/data/train/sun_hays80

Defaults: 256x256 HR crops, batch 4, 2 loader workers, the small UNet of the CPU recipe,
a random f4 VQModel (channels 32/64/64, the size of the shipped one). Prints samples/s of both and their ratio
(how many times faster the loader is than training: above 1 means the loader is not the bottleneck).
"""

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffusers_deltadiff.data import SRTrainDataset, load_hr_dataset, make_dataloader
from diffusers_deltadiff.testing_utils import recipe_vqmodel


ROOT = Path(__file__).resolve().parents[1]


def loader_samples_per_s(args) -> float:
    dataset = SRTrainDataset(load_hr_dataset(train_data_dir=args.train_data_dir), args.resolution, 4, seed=0)
    loader = make_dataloader(dataset, args.batch_size, num_workers=args.workers, seed=0)
    iterator = iter(loader)
    next(iterator)  # workers started
    start, samples = time.perf_counter(), 0
    for _ in range(args.loader_batches):
        try:
            batch = next(iterator)
        except StopIteration:
            dataset.set_epoch(dataset.epoch + 1)
            iterator = iter(loader)
            batch = next(iterator)
        samples += batch["hr"].shape[0]
    return samples / (time.perf_counter() - start)


def train_samples_per_s(args, workdir: Path) -> float:
    recipe_vqmodel(seed=0).save_pretrained(workdir / "vq")
    command = [
        sys.executable, "training/train_deltadiff.py",
        "--vqvae_model_name_or_path", str(workdir / "vq"),
        "--train_data_dir", args.train_data_dir,
        "--resolution", str(args.resolution),
        "--train_batch_size", str(args.batch_size),
        "--dataloader_num_workers", str(args.workers),
        "--max_train_steps", str(args.train_steps),
        "--unet_block_out_channels", args.unet_block_out_channels,
        "--unet_layers_per_block", "1",
        "--checkpointing_steps", "1000000",
        "--report_to", "none",
        "--output_dir", str(workdir / "out"),
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    log = result.stdout + result.stderr
    match = re.search(r"training throughput: ([0-9.]+) samples/s", log)
    if result.returncode != 0 or not match:
        raise SystemExit(f"training run failed:\n{log[-3000:]}")
    params = re.search(r"UNet parameters = ([0-9,]+)", log)
    print(f"UNet parameters: {params.group(1) if params else '?'} ({args.unet_block_out_channels})")
    return float(match.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_data_dir", required=True)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loader_batches", type=int, default=40)
    parser.add_argument("--train_steps", type=int, default=8)
    parser.add_argument("--unet_block_out_channels", default="64,128,128")
    args = parser.parse_args()

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"crops {args.resolution}x{args.resolution}, batch {args.batch_size}, {args.workers} loader workers")
    loader = loader_samples_per_s(args)
    print(f"loader alone:     {loader:8.2f} samples/s ({args.loader_batches} batches)")
    with tempfile.TemporaryDirectory() as tmp:
        train = train_samples_per_s(args, Path(tmp))
    print(f"train_deltadiff:  {train:8.2f} samples/s ({args.train_steps} steps, first not timed)")
    print(f"loader / training: {loader / train:.1f}x")


if __name__ == "__main__":
    main()
