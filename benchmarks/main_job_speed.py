"""The main job, timed against other models in one run: `deltadiff upscale FOLDER -o OUT` with each model in turn.

    python benchmarks/main_job_speed.py ../shared/data/benchmarks/Set5 --other outputs/old-default [--repeats 3]
    python benchmarks/main_job_speed.py ../shared/data/benchmarks/Set5 --model A --other B --other C \
        --baseline fsrcnn:outputs/abl17/fsrcnn/best --bicubic
    python benchmarks/main_job_speed.py ../shared/data/benchmarks/Set5 --backends torch,onnxruntime --bicubic
    python benchmarks/main_job_speed.py ../shared/data/benchmarks/Set5 --model outputs/x4-real-before \
        --model-args "--png-compression 6" --backends torch --variant "now=x4-real --backend auto"

Each repeat runs every job once (fresh processes, one after the other, the order rotated from one repeat to the
next, so machine noise and drift hit all alike) and the
table gives the median wall time of each and the ratio to the first job (`--model`, default the shipped model) per
repeat. The jobs: `deltadiff upscale` with a pipeline (`--model`, each `--other`); a registered baseline
(`--baseline NAME[:FOLDER]`, e.g. `fsrcnn:DIR` for an FSRCNN of `training/train_fsrcnn.py`; `--fsrcnn DIR` is
short for it) and PIL's bicubic (`--bicubic`, Pillow alone: no torch to import), each reading the same images and
writing PNG files as the CLI does (the folder's images, not its subfolders), in a fresh Python process, so the rows
compare whole jobs. `--backends` runs the first model once per `deltadiff upscale --backend` (the first, e.g. torch,
is the reference); `--variant "LABEL=MODEL ARGS..."` runs `deltadiff upscale` with a model (short name or folder)
and more of its flags (e.g. a copy of a model folder with an earlier config, and earlier flag values: the path of an
earlier release, side by side); every pipeline job's PNGs are compared with the first job's (largest difference in 8-bit levels).
One untimed run of every job comes first (it fills the onnxruntime backend's export cache, and the file cache for all).
"""

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time


# the baseline and bicubic jobs: the same inputs and outputs as `deltadiff upscale FOLDER -o OUT` (RGB PNG per image)
BASELINE_JOB = """
import torch, PIL.Image
from diffusers_deltadiff.baselines import load_baseline
from diffusers_deltadiff.image_utils import to_pil, to_unit_tensor
from pathlib import Path
torch.set_grad_enabled(False)
name, _, folder = {model!r}.partition(":")
upscaler = load_baseline(name, folder or None, {scale})
out = Path({out!r}); out.mkdir(parents=True, exist_ok=True)
suffixes = {{".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}}
for path in sorted(p for p in Path({folder!r}).iterdir() if p.suffix.lower() in suffixes):
    image = PIL.Image.open(path).convert("RGB")
    to_pil(upscaler(to_unit_tensor(image).float())).save(out / (Path(path).stem + ".png"))
"""
BICUBIC_JOB = """
import PIL.Image
from pathlib import Path
out = Path({out!r}); out.mkdir(parents=True, exist_ok=True)
suffixes = {{".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}}
for path in sorted(p for p in Path({folder!r}).iterdir() if p.suffix.lower() in suffixes):
    image = PIL.Image.open(path).convert("RGB")
    image.resize((image.width * {scale}, image.height * {scale}), PIL.Image.BICUBIC).save(out / (Path(path).stem + ".png"))
"""


def command(
    kind: str, folder: str, model: str | None, out: str, scale: int, backend: str | None = None, extra=()
) -> list[str]:
    if kind == "pipeline":
        return (
            [sys.executable, "-m", "diffusers_deltadiff.cli", "upscale", folder, "-o", out, "--overwrite"]
            + (["--model", model] if model else ["--scale", str(scale)])
            + (["--backend", backend] if backend else [])
            + list(extra)
        )
    code = BASELINE_JOB if kind == "baseline" else BICUBIC_JOB
    return [sys.executable, "-c", code.format(model=model, out=out, folder=folder, scale=scale)]


def run(argv: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--model", default=None, help="default: the shipped model of --scale")
    parser.add_argument("--other", action="append", default=[], help="a pipeline to compare with (repeatable)")
    parser.add_argument(
        "--baseline", action="append", default=[], help="NAME[:FOLDER], a registered baseline (repeatable)"
    )
    parser.add_argument("--fsrcnn", action="append", default=[], help="an FSRCNN folder: --baseline fsrcnn:FOLDER")
    parser.add_argument("--bicubic", action="store_true", help="also time PIL's bicubic upscale")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--backends", default=None, help="e.g. torch,onnxruntime: the first model on each (CLI --backend)"
    )
    parser.add_argument("--model-args", default="", help="more `deltadiff upscale` flags for the --model jobs")
    parser.add_argument(
        "--variant", action="append", default=[], help='"LABEL=MODEL ARGS...": upscale with more flags (repeatable)'
    )
    args = parser.parse_args()
    args.baseline += [f"fsrcnn:{folder}" for folder in args.fsrcnn]
    backends = args.backends.split(",") if args.backends else [None]
    if not (args.other or args.baseline or args.bicubic or args.variant or len(backends) > 1):
        parser.error("nothing to compare with: give --other, --variant, --baseline, --fsrcnn, --bicubic or --backends")

    first = args.model or f"shipped default x{args.scale}"
    first += f" {args.model_args}" if args.model_args else ""
    model_args = tuple(shlex.split(args.model_args))
    jobs = [("pipeline", args.model, first + (f", --backend {b}" if b else ""), b, model_args) for b in backends]
    jobs += [("pipeline", model, model, None, ()) for model in args.other]
    for spec in args.variant:
        label, _, words = spec.partition("=")
        model, *extra = shlex.split(words)
        jobs.append(("pipeline", model, f"{label} ({words})", None, tuple(extra)))
    jobs += [("baseline", spec, spec, None, ()) for spec in args.baseline]
    jobs += [("bicubic", None, "PIL bicubic", None, ())] if args.bicubic else []
    times = [[] for _ in jobs]
    with tempfile.TemporaryDirectory() as tmp:
        for k, (kind, model, _, backend, extra) in enumerate(jobs):  # untimed: caches filled
            run(command(kind, args.folder, model, os.path.join(tmp, str(k)), args.scale, backend, extra))
        for repeat in range(args.repeats):
            for i in range(len(jobs)):
                k = (i + repeat) % len(jobs)
                kind, model, _, backend, extra = jobs[k]
                out = os.path.join(tmp, str(k))
                times[k].append(run(command(kind, args.folder, model, out, args.scale, backend, extra)))
        differences = [output_difference(tmp, k) if job[0] == "pipeline" else None for k, job in enumerate(jobs)]
    print(
        f"| job | median s ({args.repeats} runs) | ratio to the first (per repeat) | max diff to the first "
        "(8-bit levels) |\n|---|---|---|---|"
    )
    for (_, _, label, _, _), seconds, difference in zip(jobs, times, differences):
        ratios = [a / b for a, b in zip(seconds, times[0])]
        print(
            f"| {label} | {statistics.median(seconds):.2f} | {statistics.median(ratios):.3f} "
            f"({', '.join(f'{r:.3f}' for r in ratios)}) | {'-' if difference is None else difference} |"
        )


def output_difference(tmp: str, k: int) -> int:
    """The largest pixel difference between job `k`'s PNGs and the first job's (same names), in 8-bit levels."""
    import numpy as np
    import PIL.Image

    worst = 0
    for name in sorted(os.listdir(os.path.join(tmp, "0"))):
        a, b = (np.asarray(PIL.Image.open(os.path.join(tmp, d, name)), dtype=np.int64) for d in ("0", str(k)))
        worst = max(worst, int(np.abs(a - b).max()))
    return worst


if __name__ == "__main__":
    main()
