"""
What a degradation does to the LR images, measured: the earlier `realesrgan` (before the registry) against the
current one, with RealSR's real camera LR images as the reference.

    python benchmarks/degradation_stats.py --crops outputs/data/heldout40 --realsr ../shared/data/benchmarks/RealSR

For every LR image (x4, from 128-pixel HR crops of held-out photos at fixed seeds; RealSR: its LR against its HR):
- `PSNR to clean`: Y-PSNR of the LR against the protocol's clean bicubic LR of the same HR (how far it moves);
- `noise`: Immerkaer's fast noise estimate of the LR's Y, in 8-bit levels;
- `blocks`: the JPEG 8x8 block-edge energy of the LR ([`~metrics.block_edge_energy`]);
- `detail`: the LR's mean gradient over the clean LR's (below 1: blurred; above: sharpened or noisy);
- `smallest`: the share whose intermediate image fell below a quarter of the LR size (the earlier model's second
  resize compounded with the first; detail that no model can bring back).
"""

import argparse
import math
import statistics
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diffusers_deltadiff.data import list_images, open_image
from diffusers_deltadiff.degradations import Degradation, bicubic_downsample
from diffusers_deltadiff.image_utils import to_unit_tensor
from diffusers_deltadiff.metrics import block_edge_energy, psnr_y, rgb_to_y


def earlier_second_order(size: int, scale: int = 4):
    """The `realesrgan` degradation as it was before the registry (commit e903c6a), for the comparison."""
    import albumentations as A

    def stage(blur_sigma, resize_range, noise_std, p_blur=1.0):
        return [
            A.AdvancedBlur(blur_limit=(7, 21), sigma_x_limit=blur_sigma, sigma_y_limit=blur_sigma,
                           noise_limit=(0.75, 1.25), p=p_blur),
            A.RandomScale(scale_limit=(resize_range[0] - 1, resize_range[1] - 1), interpolation=2, p=1.0),
            A.GaussNoise(std_range=noise_std, p=0.5),
            A.ImageCompression(quality_range=(30, 95), p=1.0),
        ]  # fmt: skip

    first = stage((0.2, 3.0), (0.15, 1.5), (0.004, 0.12))
    second = stage((0.2, 1.5), (0.3, 1.2), (0.004, 0.1), p_blur=0.8)
    compose = A.Compose([*first, *second, A.Resize(size // scale, size // scale, interpolation=2, p=1.0)])

    def degrade(hr, seed):
        compose.set_random_seed(seed)
        image = (hr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        return torch.from_numpy(compose(image=image)["image"].astype(np.float32) / 255).permute(2, 0, 1)

    return degrade


def noise_level(image: torch.Tensor) -> float:
    """Immerkaer (1996): sigma = sqrt(pi / 2) / (6 (W - 2) (H - 2)) * sum |Y * M|, in 8-bit levels."""
    y = rgb_to_y(image[None].double())
    mask = torch.tensor([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=torch.float64)[None, None]
    response = torch.nn.functional.conv2d(y, mask).abs().sum().item()
    height, width = y.shape[-2:]
    return math.sqrt(math.pi / 2) * response / (6 * (width - 2) * (height - 2))


def gradient(image: torch.Tensor) -> float:
    y = rgb_to_y(image[None].double())[0, 0]
    return float((y[:, 1:] - y[:, :-1]).abs().mean() + (y[1:] - y[:-1]).abs().mean())


def stats(lr: torch.Tensor, clean: torch.Tensor) -> dict:
    return {
        "PSNR to clean": min(psnr_y(lr[None], clean[None], 0).item(), 60.0),  # identical: 60
        "noise": noise_level(lr),
        "blocks": block_edge_energy(lr, 8),
        "detail": gradient(lr) / max(gradient(clean), 1e-6),
    }


def summary(rows: list[dict]) -> str:
    keys = rows[0].keys()
    return " | ".join(
        f"{statistics.median(r[k] for r in rows):.2f} [{np.percentile([r[k] for r in rows], 10):.2f}, "
        f"{np.percentile([r[k] for r in rows], 90):.2f}]"
        for k in keys
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", required=True, help="held-out HR photos (outputs/data/heldout40)")
    parser.add_argument("--realsr", default=None, help="RealSR folder (test_HR, test_LR), the real reference")
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--also", default="", help="more registered degradations to measure, comma-separated")
    args = parser.parse_args()

    photos = [to_unit_tensor(open_image(p)[0]) for p in list_images(args.crops)]
    rng = np.random.default_rng(0)
    crops = []
    for index in range(args.samples):
        photo = photos[index % len(photos)]
        top = int(rng.integers(0, photo.shape[1] - args.size + 1))
        left = int(rng.integers(0, photo.shape[2] - args.size + 1))
        crops.append(photo[:, top : top + args.size, left : left + args.size])
    degradations = {
        "earlier realesrgan": earlier_second_order(args.size),
        "realesrgan (now)": Degradation("realesrgan"),
        "realworld (the x4-real training mix)": Degradation("realworld"),
        **{name: Degradation(name) for name in args.also.split(",") if name},
    }
    lines = [
        "| LR images | n | " + " | ".join(stats(crops[0][:, ::4, ::4], crops[0][:, ::4, ::4]).keys()) + " |",
        "|---|---|---|---|---|---|",
    ]
    for label, degrade in degradations.items():
        rows = []
        for seed, hr in enumerate(tqdm(crops, desc=label, leave=False)):
            rows.append(stats(degrade(hr, seed), bicubic_downsample(hr, 4)))
        lines.append(f"| {label} | {len(rows)} | {summary(rows)} |")
    if args.realsr:
        rows = []
        for path in list_images(str(Path(args.realsr) / "test_HR")):
            hr = to_unit_tensor(open_image(path)[0])
            lr = to_unit_tensor(open_image(str(Path(args.realsr) / "test_LR" / Path(path).name))[0])
            rows.append(stats(lr, bicubic_downsample(hr, 4)))
        lines.append(f"| RealSR test LR (real camera) | {len(rows)} | {summary(rows)} |")
    print("median [10th, 90th percentile]\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
