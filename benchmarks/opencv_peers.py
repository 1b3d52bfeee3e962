"""Published networks whose weights sit in public git repositories, run beside DeltaDiff on this machine (issue 30).

    python -m venv /tmp/peers && /tmp/peers/bin/pip install "opencv-contrib-python-headless<5"
    OMP_NUM_THREADS=1 python benchmarks/opencv_peers.py --python /tmp/peers/bin/python \
        --peer fsrcnn:FSRCNN_x4.pb --peer espcn:ESPCN_x4.pb \
        --set ../shared/data/benchmarks/Set5 --set ../shared/data/benchmarks/Set14 [--model x4] [--repeats 3]

The peers are the models of OpenCV's `dnn_superres` module, each run in a few lines (`PEER_JOB`):
- FSRCNN x4 (Dong et al., 2016): https://github.com/Saafke/FSRCNN_Tensorflow, `models/FSRCNN_x4.pb` (Apache-2.0);
- ESPCN x4 (Shi et al., 2016): https://github.com/fannymonori/TF-ESPCN, `export/ESPCN_x4.pb` (Apache-2.0).
OpenCV 5 dropped the TensorFlow reader they need, and albumentations (the `training` extra) needs OpenCV 5, so they
run in an interpreter of their own (`--python`, with `opencv-contrib-python-headless<5`); nothing here imports it.

For every set: the LR images by the protocol's bicubic downscale (or, `--lr cv2-cubic`, OpenCV's non-antialiased one,
which the OpenCV models were trained on), written as PNG; each job upscales that LR folder
to PNG files in a fresh process (`deltadiff upscale` with each `--model` on each `--backends` entry, each peer, PIL
bicubic), every job once untimed, then `--repeats` rounds with the order rotated; then every job's PNGs are scored
against HR (Y-PSNR / SSIM, a `scale`-pixel border cropped, as `deltadiff evaluate` does). The peers and PIL get the
same thread count as torch (`OMP_NUM_THREADS`).
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import PIL.Image

from diffusers_deltadiff.degradations.cv2_cubic import cv2_cubic_downsample
from diffusers_deltadiff.evaluation import load_pairs
from diffusers_deltadiff.image_utils import to_pil, to_unit_tensor
from diffusers_deltadiff.metrics import psnr_y, ssim_y


sys.path.insert(0, str(Path(__file__).resolve().parent))
from main_job_speed import BICUBIC_JOB, command, run  # noqa: E402


PEER_JOB = """
import os, pathlib, cv2
cv2.setNumThreads(int(os.environ.get("OMP_NUM_THREADS", "0")))
sr = cv2.dnn_superres.DnnSuperResImpl_create()
sr.readModel({weights!r})
sr.setModel({algorithm!r}, {scale})
out = pathlib.Path({out!r}); out.mkdir(parents=True, exist_ok=True)
for path in sorted(pathlib.Path({folder!r}).glob("*.png")):
    cv2.imwrite(str(out / path.name), sr.upsample(cv2.imread(str(path))))
"""


def jobs_for(args, folder: str, out: str) -> dict[str, list[str]]:
    """`{label: argv}` of every job on the LR `folder`, each writing to `out/<index>`."""
    argv = {}
    for model in args.model:
        for backend in args.backends.split(","):
            job = command("pipeline", folder, model, os.path.join(out, str(len(argv))), args.scale, backend)
            argv[f"DeltaDiff {model} ({backend})"] = job
    for spec in args.peer:
        algorithm, _, weights = spec.partition(":")
        code = PEER_JOB.format(
            weights=str(Path(weights).resolve()),
            algorithm=algorithm,
            scale=args.scale,
            out=os.path.join(out, str(len(argv))),
            folder=folder,
        )
        argv[f"{algorithm.upper()} ({Path(weights).name}, OpenCV dnn_superres)"] = [args.python, "-c", code]
    code = BICUBIC_JOB.format(folder=folder, out=os.path.join(out, str(len(argv))), scale=args.scale)
    argv["PIL bicubic"] = [sys.executable, "-c", code]
    return argv


def scores(pairs, folder: Path, scale: int) -> tuple[float, float]:
    """Mean Y-PSNR and SSIM of the PNGs in `folder` (named as the LR images) against the HR images of `pairs`."""
    psnrs, ssims = [], []
    for name, hr, _ in pairs:
        sr = to_unit_tensor(PIL.Image.open(folder / (Path(name).stem + ".png")).convert("RGB"))
        sr = sr[:, : hr.shape[1], : hr.shape[2]]
        psnrs.append(psnr_y(sr[None], hr[None], scale).item())
        ssims.append(ssim_y(sr[None], hr[None], scale).item())
    return statistics.mean(psnrs), statistics.mean(ssims)


def bench_set(args, hr_dir: str):
    pairs, errors = load_pairs(hr_dir, args.scale, None, None, "bicubic", 0)
    for error in errors:
        print(f"skipped {error}", file=sys.stderr)
    if args.lr == "cv2-cubic":  # the downscale the OpenCV models were trained on: cv2.resize, no antialiasing
        pairs = [(name, hr, cv2_cubic_downsample(hr, args.scale)) for name, hr, _ in pairs]
    megapixels = sum(hr.shape[1] * hr.shape[2] for _, hr, _ in pairs) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        lr_dir = Path(tmp) / "lr"
        lr_dir.mkdir()
        for name, _, lr in pairs:
            to_pil(lr).save(lr_dir / (Path(name).stem + ".png"))
        jobs = jobs_for(args, str(lr_dir), tmp)
        labels = list(jobs)
        for label in labels:  # untimed: caches filled (ONNX Runtime's export, the file cache)
            run(jobs[label])
        times = {label: [] for label in labels}
        for repeat in range(args.repeats):
            for i in range(len(labels)):
                label = labels[(i + repeat) % len(labels)]
                times[label].append(run(jobs[label]))
        quality = {label: scores(pairs, Path(tmp) / str(k), args.scale) for k, label in enumerate(labels)}
    print(
        f"\n{hr_dir}: {len(pairs)} images, x{args.scale}, LR by {args.lr}, {megapixels:.2f} output MP, "
        f"{os.environ.get('OMP_NUM_THREADS', 'all')} thread(s), {args.repeats} repeats\n"
    )
    print("| job | Y-PSNR (dB) | SSIM | s per output MP (median, whole job) | x the first job (per repeat) |")
    print("|---|---|---|---|---|")
    first = times[labels[0]]
    for label in labels:
        ratios = ", ".join(f"{a / b:.3f}" for a, b in zip(times[label], first))
        psnr, ssim = quality[label]
        seconds = statistics.median(times[label])
        print(f"| {label} | {psnr:.2f} | {ssim:.4f} | {seconds / megapixels:.3f} | {ratios} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="an interpreter with opencv-contrib-python-headless<5")
    parser.add_argument("--peer", action="append", default=[], help="ALGORITHM:WEIGHTS.pb (fsrcnn, espcn, ...)")
    parser.add_argument("--set", action="append", required=True, help="an HR benchmark folder (repeatable)")
    parser.add_argument("--model", action="append", default=None, help="shipped short name or folder (default x4)")
    parser.add_argument("--backends", default="torch", help="comma-separated `deltadiff upscale --backend` values")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--lr",
        choices=["pil-bicubic", "cv2-cubic"],
        default="pil-bicubic",
        help="the protocol's antialiased bicubic LR, or cv2.resize INTER_CUBIC (what the OpenCV models trained on)",
    )
    args = parser.parse_args()
    args.model = args.model or ["x4"]
    for hr_dir in args.set:
        bench_set(args, hr_dir)


if __name__ == "__main__":
    main()
