"""GPU smoke test: what no CPU test can show, in a few minutes on one CUDA GPU. Exits 0 with a "skipped"
line where there is no CUDA device.

    python tests/gpu_smoke.py [--workdir /tmp/deltadiff-smoke] [--size 512]

1. The shipped pipeline in fp32, fp16 and bf16 on a synthetic photo-like image: the largest difference from fp32 in
   8-bit levels, and seconds per output megapixel (after one warm-up call), with and without tiling.
2. A 20-step EMA training run (`training/train_deltadiff.py`, lossless latent, starting from the shipped model) that
   saves a checkpoint at step 20, then a resume from it for 10 more steps (the EMA comes back on the GPU).
3. `deltadiff upscale` on a folder, on the GPU.
4. With two or more GPUs: a 2-rank `torchrun` upscale of one image, so that rank 1 has no work and waits for rank 0,
   once with a `--process-timeout` shorter than rank 0's work (the run must fail: the setting is honoured) and once
   with the default (it must pass, although rank 0 works longer than the shortened timeout).
Every section prints its result and "ok" or "FAILED"; the exit status is the number of failed sections.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch


ROOT = Path(__file__).resolve().parents[1]


def synthetic_photo(size: int, seed: int = 0) -> PIL.Image.Image:
    """Smooth colour fields, edges and fine texture: something like a photo, with no file to ship."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.5 + 0.4 * np.sin(6 * x + c) * np.cos(4 * y - c) for c in (0.0, 1.0, 2.0)], axis=-1)
    image[(x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.05] *= 0.3  # a dark disc: hard edges
    image += 0.05 * rng.standard_normal(image.shape)  # texture
    return PIL.Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))


def command(args: list[str], env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=full_env, timeout=timeout)


def section_dtypes(size: int) -> bool:
    from diffusers_deltadiff import load_default_pipeline

    image = synthetic_photo(size)
    outputs, ok = {}, True
    print("| dtype | tile_size | max diff vs fp32 (8-bit levels) | s per output MP |\n|---|---|---|---|")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        pipe = load_default_pipeline(dtype=dtype).to("cuda")
        pipe.set_progress_bar_config(disable=True)
        for tile_size in (0, 64):
            pipe(image, output_type="np", tile_size=tile_size)  # warm-up
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = pipe(image, output_type="np", tile_size=tile_size).images[0]
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            outputs[dtype, tile_size] = out
            reference = outputs[torch.float32, tile_size]
            diff = float(np.abs(out - reference).max() * 255)
            finite = bool(np.isfinite(out).all())
            ok &= finite and (dtype != torch.float32 or diff == 0)
            megapixels = out.shape[0] * out.shape[1] / 1e6
            print(
                f"| {str(dtype).split('.')[-1]} | {tile_size or 'whole'} | {diff:.2f} | {seconds / megapixels:.3f} |"
            )
        del pipe
    tiled_vs_whole = float(np.abs(outputs[torch.float32, 64] - outputs[torch.float32, 0]).max() * 255)
    print(f"fp32 tiles vs whole: max diff {tiled_vs_whole:.4f} levels")
    return ok


def section_training(workdir: Path) -> bool:
    data = workdir / "train"
    data.mkdir(parents=True, exist_ok=True)
    for seed in range(8):
        synthetic_photo(256, seed).save(data / f"photo{seed}.png")
    out = workdir / "run"
    common = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "training/train_deltadiff.py",
        "--lossless_latent", "--pretrained_model_name_or_path", str(ROOT / "src/diffusers_deltadiff/pretrained/deltadiff-x4"),
        "--prediction_type", "residual", "--unet_norm", "pixel", "--unet_attention_levels", "",
        "--train_data_dir", str(data), "--resolution", "128", "--train_batch_size", "4", "--learning_rate", "1e-5",
        "--train_through_chain", "--loss", "l1", "--use_ema", "--checkpointing_steps", "20",
        "--dataloader_num_workers", "2", "--report_to", "none", "--output_dir", str(out),
    ]  # fmt: skip
    first = command([*common, "--max_train_steps", "20"])
    second = command([*common, "--max_train_steps", "30", "--resume_from_checkpoint", "latest"])
    ok = (
        first.returncode == 0
        and second.returncode == 0
        and "Resuming from checkpoint" in second.stdout + second.stderr
    )
    for name, result in (("20 steps", first), ("resume + 10", second)):
        tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        print(f"{name}: exit {result.returncode}; " + " | ".join(tail))
    return ok


def section_cli(workdir: Path) -> bool:
    folder = workdir / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(3):
        synthetic_photo(128 + 32 * seed, seed).save(folder / f"in{seed}.png")
    start = time.perf_counter()
    result = command([sys.executable, "-m", "diffusers_deltadiff.cli", "upscale", str(folder), "-o",
                      str(workdir / "outputs"), "--device", "cuda", "--overwrite"])  # fmt: skip
    written = sorted(p.name for p in (workdir / "outputs").glob("*.png"))
    print(
        f"deltadiff upscale: exit {result.returncode}, {len(written)} written in {time.perf_counter() - start:.1f} s"
    )
    if result.returncode:
        print(result.stderr[-2000:])
    return result.returncode == 0 and len(written) == 3


def section_two_ranks(workdir: Path, size: int) -> bool:
    folder = workdir / "one"
    folder.mkdir(parents=True, exist_ok=True)
    synthetic_photo(size * 4).save(folder / "big.png")  # one job: rank 1 has none and waits in the gather

    def launch(*flags):
        start = time.perf_counter()
        result = command([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                          "diffusers_deltadiff.cli", "upscale", str(folder), "-o", str(workdir / "two"),
                          "--overwrite", "--tile-size", "64", *flags], timeout=1800)  # fmt: skip
        return result, time.perf_counter() - start

    passed, seconds = launch()
    print(f"default timeout: exit {passed.returncode} after {seconds:.0f} s")
    short = max(0.1, seconds / 60 / 4)  # a quarter of the whole run: rank 0 works longer than that
    failed, seconds_short = launch("--process-timeout", f"{short:.2f}")
    print(f"--process-timeout {short:.2f} min: exit {failed.returncode} after {seconds_short:.0f} s (must fail)")
    return passed.returncode == 0 and failed.returncode != 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=None, help="default: a temporary folder")
    parser.add_argument("--size", type=int, default=512, help="LR side of the dtype section's image")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("skipped: no CUDA device (this smoke test is for GPUs; the CPU suite is `make test`)")
        return 0
    print(f"torch {torch.__version__}, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="deltadiff-smoke-"))
    sections = [("pipeline fp32 / fp16 / bf16", lambda: section_dtypes(args.size))]
    sections += [("training: 20 EMA steps, checkpoint, resume + 10", lambda: section_training(workdir))]
    sections += [("CLI upscale of a folder", lambda: section_cli(workdir))]
    if torch.cuda.device_count() >= 2:
        sections += [("2 ranks, one without work", lambda: section_two_ranks(workdir, args.size))]
    else:
        print("(one GPU: the 2-rank section is skipped)")
    failures = 0
    for name, run in sections:
        print(f"\n## {name}")
        start = time.perf_counter()
        try:
            ok = run()
        except Exception as err:  # noqa: BLE001 - a smoke test reports every section
            print(f"{type(err).__name__}: {err}")
            ok = False
        print(f"{'ok' if ok else 'FAILED'} ({time.perf_counter() - start:.0f} s)")
        failures += not ok
    return failures


if __name__ == "__main__":
    sys.exit(main())
