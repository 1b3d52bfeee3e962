"""The main job, timed against another model in one run: `deltadiff upscale FOLDER -o OUT` with each model in turn.

    python benchmarks/main_job_speed.py ../shared/data/benchmarks/Set5 --other outputs/old-default [--repeats 3]

Each repeat runs the command once per model (fresh processes, alternating, so machine noise hits both alike) and the
table gives the median wall time of each and the ratio new / other per repeat.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def run(folder: str, model: str | None, out: str) -> float:
    command = [sys.executable, "-m", "diffusers_deltadiff.cli", "upscale", folder, "-o", out, "--overwrite"]
    command += ["--model", model] if model else []
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--model", default=None, help="default: the shipped model")
    parser.add_argument("--other", required=True, help="the model to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    new, other = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            new.append(run(args.folder, args.model, os.path.join(tmp, "new")))
            other.append(run(args.folder, args.other, os.path.join(tmp, "other")))
    ratios = [a / b for a, b in zip(new, other)]
    print(f"| model | median s ({args.repeats} runs) |\n|---|---|")
    print(f"| {args.model or 'shipped default'} | {statistics.median(new):.1f} |")
    print(f"| {args.other} | {statistics.median(other):.1f} |")
    print(
        f"ratio new / other per repeat: {', '.join(f'{r:.3f}' for r in ratios)} (median {statistics.median(ratios):.3f})"
    )


if __name__ == "__main__":
    main()
