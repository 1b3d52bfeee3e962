"""Why RealSR's PSNR does not move: how much of each model's error a per-image gain and offset on Y would remove.

    python experiments/x4-real-camera/realsr_contrast.py ../shared/data

For bicubic and the shipped x4 models on the 100 RealSR pairs: Y-PSNR as `benchmarks/realworld.py` scores it (8-bit
output, no border crop), with the mean level matched to the HR's, and with the least-squares gain `a` and offset
`b` (`a * y + b` against the HR's Y) applied. A gain below 1 means part of the output's contrast does not match the
HR: the least-squares fit shrinks it. The last columns blur each output with a Gaussian of `--sigmas` HR pixels
(8-bit again after it): what PSNR pays for softness. This is an analysis of a benchmark, never used to choose or tune
a model (the fit, and the best blur, need the HR image).
"""

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from diffusers_deltadiff.metrics import rgb_to_y


sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from realworld import Methods, realsr_pairs  # noqa: E402 - the pairs and outputs as realworld.py scores them


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a - b) ** 2)))


def blurred(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """`(3, H, W)` `image` blurred by a Gaussian of `sigma` pixels per channel, rounded to 8 bits."""
    soft = torch.from_numpy(gaussian_filter(image.double().numpy(), (0, sigma, sigma), mode="reflect"))
    return (soft.clamp(0, 1) * 255).round() / 255


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="../shared/data (its benchmarks/RealSR), as realworld.py's --data")
    parser.add_argument("--models", default="x4,x4-real")
    parser.add_argument("--sigmas", default="0.5,1.0,1.5", help="Gaussian blurs of the output, HR pixels")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    methods = Methods({})
    names = ["bicubic", *args.models.split(",")]
    sigmas = [float(s) for s in args.sigmas.split(",") if s]
    rows = {}
    for _, hr, lr in realsr_pairs(Path(args.data)):
        target = rgb_to_y(hr[None].double())[0, 0].numpy().ravel()
        outputs = {name: methods.upscale(name, lr, tuple(hr.shape[-2:])) for name in names}
        for name, image in outputs.items():
            y = rgb_to_y(image[None].double())[0, 0].numpy().ravel()
            (gain, offset), *_ = np.linalg.lstsq(np.stack([y, np.ones_like(y)], 1), target, rcond=None)
            row = rows.setdefault(name, {"PSNR": [], "mean matched": [], "gain and offset": [], "gain a": []})
            row["PSNR"].append(psnr(y, target))
            row["mean matched"].append(psnr(y + target.mean() - y.mean(), target))
            row["gain and offset"].append(psnr(gain * y + offset, target))
            row["gain a"].append(gain)
            for sigma in sigmas:
                soft = rgb_to_y(blurred(image, sigma)[None].double())[0, 0].numpy().ravel()
                row.setdefault(f"blur {sigma:g}", []).append(psnr(soft, target))
    print("| method | " + " | ".join(next(iter(rows.values()))) + " |")
    print("|---|" + "---|" * len(next(iter(rows.values()))))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{statistics.mean(v):.3f}" for v in row.values()) + " |")


if __name__ == "__main__":
    main()
