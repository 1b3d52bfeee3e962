"""Time and peak memory of `deltadiff upscale` on large images: seconds and peak RSS per output megapixel.

    python benchmarks/large_images.py [--sizes 256,512,1024,2048] [--model DIR] [--old_model DIR] [--old_code DIR]

Every size is a fresh `deltadiff upscale` process under `/usr/bin/time -v` (peak RSS = "Maximum resident set size"),
on a synthetic LR image (smooth random colours, PNG). Time should grow linearly with the pixels and memory stay flat.
With `--old_model`, the largest size is also run with that model in the same session, for a ratio; with `--old_code`
(a checkout of an older revision, e.g. `git worktree add /tmp/prev <rev>`), with that revision's package code
(`PYTHONPATH=<DIR>/src`) and the same model.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image


def lr_image(size: int, path: Path, seed: int = 0):
    rng = np.random.RandomState(seed)
    small = PIL.Image.fromarray((rng.rand(size // 16 + 1, size // 16 + 1, 3) * 255).astype(np.uint8))
    small.resize((size, size), PIL.Image.BICUBIC).save(path)


def upscale(source: Path, out_dir: Path, model: str | None, extra: list[str], code: str | None = None):
    """Wall seconds and peak RSS (GiB) of one `deltadiff upscale` run (with the package in `<code>/src` if given)."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "diffusers_deltadiff.cli", "upscale", str(source)]
    command += ["-o", str(out_dir), "--overwrite", *(["--model", model] if model else []), *extra]
    start = time.perf_counter()
    env = dict(os.environ, HF_HUB_OFFLINE="1", **({"PYTHONPATH": str(Path(code) / "src")} if code else {}))
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"deltadiff upscale failed:\n{result.stderr[-2000:]}")
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return seconds, rss_kib / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,512,1024", help="LR sizes (square); outputs are 4x")
    parser.add_argument("--model", default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--old_model", default=None, help="a second model to time on the largest size")
    parser.add_argument("--old_code", default=None, help="a checkout of an older revision to time on the largest size")
    parser.add_argument("--extra", default="", help="extra flags for deltadiff upscale, e.g. '--batch-size 8'")
    args = parser.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")]
    extra = args.extra.split()
    print("| LR | output | seconds | peak RSS (GiB) | s / output MP | peak RSS (MiB) / output MP |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        rows = {}
        for size in sizes:
            source = Path(tmp) / f"lr{size}.png"
            lr_image(size, source)
            seconds, rss = upscale(source, Path(tmp) / "out", args.model, extra)
            megapixels = (4 * size) ** 2 / 1e6
            rows[size] = seconds
            print(
                f"| {size}² | {4 * size}² | {seconds:.1f} | {rss:.2f} | {seconds / megapixels:.2f} | "
                f"{rss * 1024 / megapixels:.1f} |",
                flush=True,
            )
        if args.old_model:
            size = sizes[-1]
            old_seconds, old_rss = upscale(Path(tmp) / f"lr{size}.png", Path(tmp) / "out_old", args.old_model, extra)
            print(
                f"\nLR {size}² with {args.old_model}: {old_seconds:.1f} s, peak RSS {old_rss:.2f} GiB; "
                f"new / old time ratio {rows[size] / old_seconds:.3f}"
            )
        if args.old_code:
            size = sizes[-1]
            source = Path(tmp) / f"lr{size}.png"
            old_seconds, old_rss = upscale(source, Path(tmp) / "out_old", args.model, extra, args.old_code)
            print(
                f"\nLR {size}² with the code of {args.old_code}: {old_seconds:.1f} s, peak RSS {old_rss:.2f} GiB; "
                f"new / old time ratio {rows[size] / old_seconds:.3f}, peak RSS ratio {rss / old_rss:.3f}"
            )


if __name__ == "__main__":
    main()
