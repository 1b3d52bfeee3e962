import math

import numpy as np
import pytest
import skimage.metrics as skimage_metrics  # the independent reference implementation
import torch

from diffusers_deltadiff.evaluation import mod_crop
from diffusers_deltadiff.image_utils import bicubic_resize
from diffusers_deltadiff.metrics import psnr_y, rgb_to_y, ssim_y


def known_pair(seed=0, size=(70, 90)):
    """A smooth 'HR' image and a noisy, slightly blurred 'SR' version of it, 8-bit."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0 : size[0], 0 : size[1]] / 20.0
    hr = np.stack([np.sin(x + c) * np.cos(y - c) for c in (0.0, 1.0, 2.0)], axis=-1) * 0.4 + 0.5
    sr = np.clip(hr + rng.normal(0, 0.05, hr.shape), 0, 1)
    to8 = lambda a: (a * 255).round().astype(np.uint8)  # noqa: E731
    return to8(hr), to8(sr)


def reference_y(image_uint8):
    """basicsr's `bgr2ycbcr(..., y_only=True)` written out for RGB: 16 + (65.481 R + 128.553 G + 24.966 B) / 255."""
    rgb = image_uint8.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def as_tensor(image_uint8):
    return torch.from_numpy(image_uint8.astype(np.float32) / 255).permute(2, 0, 1)


def wang_ssim(a, b, data_range=255.0):
    """
    SSIM of Wang et al. (2004) written out: 11x11 Gaussian window (sigma 1.5) over the 'valid' positions, K1 = 0.01,
    K2 = 0.03, population (co)variances, mean of the SSIM map. The window sums are taken with NumPy's sliding
    windows, nothing shared with scikit-image (what `metrics.py` calls) or OpenCV (basicsr's).
    """
    offsets = np.arange(11) - 5
    g = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def filt(image):
        return np.einsum("ijkl,kl->ij", np.lib.stride_tricks.sliding_window_view(image, (11, 11)), window)

    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a, var_b = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_matches_wang_et_al_written_out(seed):
    """The protocol's SSIM against an independent implementation of the formula (not the library metrics.py uses)."""
    hr, sr = known_pair(seed)
    border = 4
    expected = wang_ssim(
        reference_y(sr)[border:-border, border:-border], reference_y(hr)[border:-border, border:-border]
    )
    ssim = ssim_y(as_tensor(sr), as_tensor(hr), crop_border=border).item()
    print(f"seed {seed}: SSIM {ssim:.6f} vs written out {expected:.6f}")
    assert abs(ssim - expected) < 1e-6
    # and the reference can tell images apart: an SR halfway to HR scores higher
    halfway = np.clip(reference_y(sr) * 0.5 + reference_y(hr) * 0.5, 0, 255)[border:-border, border:-border]
    assert wang_ssim(halfway, reference_y(hr)[border:-border, border:-border]) > expected


@pytest.mark.parametrize("seed", [0, 1])
def test_psnr_ssim_match_scikit_image(seed):
    hr, sr = known_pair(seed)
    border = 4
    hr_y = reference_y(hr)[border:-border, border:-border]
    sr_y = reference_y(sr)[border:-border, border:-border]
    psnr_ref = skimage_metrics.peak_signal_noise_ratio(hr_y, sr_y, data_range=255)
    ssim_ref = skimage_metrics.structural_similarity(
        hr_y, sr_y, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    psnr = psnr_y(as_tensor(sr), as_tensor(hr), crop_border=border).item()
    ssim = ssim_y(as_tensor(sr), as_tensor(hr), crop_border=border).item()
    print(f"seed {seed}: PSNR {psnr:.4f} vs {psnr_ref:.4f}, SSIM {ssim:.5f} vs {ssim_ref:.5f}")
    assert abs(psnr - psnr_ref) < 0.01
    assert abs(ssim - ssim_ref) < 0.001


def test_y_channel_and_identity():
    hr, _ = known_pair()
    np.testing.assert_allclose(rgb_to_y(as_tensor(hr))[0, 0].numpy(), reference_y(hr), atol=1e-9)
    assert ssim_y(as_tensor(hr), as_tensor(hr)).item() == pytest.approx(1.0)
    assert psnr_y(as_tensor(hr), as_tensor(hr)).item() > 90


def test_batched_metrics_are_per_image():
    pairs = [known_pair(s) for s in (0, 1)]
    sr = torch.stack([as_tensor(p[1]) for p in pairs])
    hr = torch.stack([as_tensor(p[0]) for p in pairs])
    batched = psnr_y(sr, hr)
    assert batched.shape == (2,)
    assert batched[1].item() == pytest.approx(psnr_y(sr[1], hr[1]).item())


def test_mod_crop_and_bicubic_baseline_protocol():
    image = torch.rand(3, 67, 90)
    cropped = mod_crop(image, 4)
    assert cropped.shape == (3, 64, 88)
    assert mod_crop(image, 4, crop=50).shape == (3, 48, 48)
    lr = bicubic_resize(cropped, (16, 22))
    assert lr.shape == (3, 16, 22)


def test_cbcr_of_pure_colours():
    """Cb/Cr of pure colours against the BT.601 studio-range values written out (ITU-R BT.601 tables)."""
    from diffusers_deltadiff.metrics import psnr_cbcr, rgb_to_cbcr

    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0], [0, 0, 0]])
    images = colours[:, :, None, None]
    cbcr = rgb_to_cbcr(images)[:, :, 0, 0]
    # BT.601 8-bit: red (90, 240), green (54, 34), blue (240, 110), white and black (128, 128)
    expected = torch.tensor([[90.0, 240.0], [54.0, 34.0], [240.0, 110.0], [128.0, 128.0], [128.0, 128.0]])
    torch.testing.assert_close(cbcr.float(), expected, rtol=0, atol=0.5)
    grey = torch.full((1, 3, 16, 16), 128 / 255)
    tinted = grey.clone()
    tinted[:, 2] = 153 / 255  # 25 levels more blue
    cb, cr = 112.0 * 25 / 255, -18.214 * 25 / 255
    expected_psnr = 10 * math.log10(255.0**2 / ((cb**2 + cr**2) / 2))
    assert psnr_cbcr(tinted, grey, 0).item() == pytest.approx(expected_psnr, abs=1e-9)
    assert psnr_cbcr(grey, grey, 0).item() == pytest.approx(10 * math.log10(255.0**2 / 1e-10))


def test_block_edge_energy():
    from diffusers_deltadiff.metrics import block_edge_energy

    # a horizontal ramp: every step the same, edges or not -> 0
    ramp = (torch.arange(64) * 3 / 255).expand(3, 64, 64).contiguous()  # 8-bit levels, 3 apart
    assert abs(block_edge_energy(ramp, 8)) < 1e-9
    # flat 8x8 blocks of random grey levels: all steps sit on the block edges
    levels = torch.randint(0, 256, (8, 8), generator=torch.Generator().manual_seed(0)) / 255  # 8-bit levels
    blocks = levels.repeat_interleave(8, 0).repeat_interleave(8, 1).expand(3, 64, 64)
    y = 16 + (65.481 + 128.553 + 24.966) * levels.double()  # the Y of a grey level, here
    across = torch.cat([(y[:, 1:] - y[:, :-1]).abs().flatten(), (y[1:] - y[:-1]).abs().flatten()])
    on_edges = across.mean()  # each block-level step is repeated along the 8 pixels of its edge
    assert abs(block_edge_energy(blocks, 8) - float(on_edges)) < 1e-6
    assert abs(block_edge_energy(blocks, 16)) != abs(block_edge_energy(blocks, 8))
