"""Super-resolution fidelity metrics with the field's protocol (basicsr / ResShift / DeltaDiff).

Images are RGB floats in `[0, 1]`, `(B, 3, H, W)` or `(3, H, W)`. They are rounded to 8 bits (as when saved to PNG),
converted to the Y channel of YCbCr (`16 + 65.481 R + 128.553 G + 24.966 B`), `crop_border` pixels are dropped on
every side, and PSNR / SSIM are computed on `[0, 255]` values in float64.

SSIM is scikit-image's with Wang et al.'s settings (Gaussian window 11, sigma 1.5, population covariance), which
equals basicsr's `calculate_ssim` to float precision. torchmetrics' SSIM was tried and does not follow this
protocol (0.6212 vs 0.6192 on the same Y pair), so it is not used.
"""

import torch


def rgb_to_y(images: torch.Tensor) -> torch.Tensor:
    """The Y channel (BT.601, studio range `[16, 235]`) of RGB images in `[0, 1]`, as `(B, 1, H, W)` in float64."""
    images = images if images.ndim == 4 else images[None]
    images = (images.double().clamp(0, 1) * 255).round() / 255
    weights = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float64, device=images.device)
    return (16.0 + torch.einsum("bchw,c->bhw", images, weights))[:, None]


def rgb_to_cbcr(images: torch.Tensor) -> torch.Tensor:
    """The Cb and Cr channels (BT.601, studio range `[16, 240]`) of RGB images in `[0, 1]`, `(B, 2, H, W)` float64."""
    images = images if images.ndim == 4 else images[None]
    images = (images.double().clamp(0, 1) * 255).round() / 255
    weights = torch.tensor(
        [[-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=torch.float64, device=images.device
    )
    return 128.0 + torch.einsum("bchw,kc->bkhw", images, weights)


def _crop(images: torch.Tensor, crop_border: int) -> torch.Tensor:
    return images[..., crop_border:-crop_border, crop_border:-crop_border] if crop_border else images


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 4) -> torch.Tensor:
    """Per-image PSNR (dB) on the Y channel."""
    sr_y, hr_y = _crop(rgb_to_y(sr), crop_border), _crop(rgb_to_y(hr), crop_border)
    mse = ((sr_y - hr_y) ** 2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))


def psnr_cbcr(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 4) -> torch.Tensor:
    """Per-image PSNR (dB) of the Cb and Cr channels together: how true the colours are (`(B,)`)."""
    sr_c, hr_c = _crop(rgb_to_cbcr(sr), crop_border), _crop(rgb_to_cbcr(hr), crop_border)
    mse = ((sr_c - hr_c) ** 2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 4) -> torch.Tensor:
    """Per-image SSIM on the Y channel."""
    from skimage.metrics import structural_similarity

    sr_y, hr_y = _crop(rgb_to_y(sr), crop_border), _crop(rgb_to_y(hr), crop_border)
    values = [
        structural_similarity(
            a[0].cpu().numpy(),
            b[0].cpu().numpy(),
            data_range=255.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for a, b in zip(sr_y, hr_y)
    ]
    return torch.tensor(values, dtype=torch.float64)


def block_edge_energy(image: torch.Tensor, block: int) -> float:
    """
    How visible a grid of `block`-pixel blocks is in a `(3, H, W)` image in `[0, 1]` (JPEG's 8x8 blocks, upscaled:
    `block = 8 * scale`): the mean absolute Y-level step between neighbours across the block edges, minus the mean
    step between all other neighbours, over rows and columns together. 0 for an image without a grid; an image that
    sharpens its input's blocks scores higher than a bicubic upscale of it.
    """
    y = rgb_to_y(image[None].double())[0, 0]
    across, within = [], []
    for steps in ((y[:, 1:] - y[:, :-1]).abs(), (y[1:, :] - y[:-1, :]).abs().T):
        edge = (torch.arange(steps.shape[1]) + 1) % block == 0
        across.append(steps[:, edge].flatten())
        within.append(steps[:, ~edge].flatten())
    return float(torch.cat(across).mean() - torch.cat(within).mean())
