import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffusers_deltadiff.testing_utils import tiny_pipeline
from diffusers_deltadiff.tiling import tile_starts, tile_weights


@pytest.mark.parametrize("length,tile,overlap", [(100, 32, 8), (33, 32, 8), (32, 32, 8), (10, 32, 4), (257, 64, 16)])
def test_tiles_cover_with_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    covered = np.zeros(length, dtype=int)
    for s in starts:
        covered[s : s + size] += 1
    assert covered.min() >= 1
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:]))


def test_weights_ramp_only_towards_neighbours():
    w = tile_weights(10, 12, 4, top=False, bottom=True, left=True, right=False)[0]
    assert w[0, -1] == 1 and w[-1, -1] < 1 and w[0, 0] < 1
    assert (w > 0).all()


@pytest.fixture(scope="module")
def pipe():
    pipe = tiny_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def smooth_image(height, width, seed=0):
    rng = np.random.RandomState(seed)
    noise = torch.from_numpy(rng.rand(1, 3, height // 4 + 1, width // 4 + 1).astype(np.float32))
    return F.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)[0]


def test_blending_is_exact_for_a_local_model(pipe, monkeypatch):
    """With a purely local 'model' (nearest-neighbour x4), tiles blended by the ramps equal the untiled result."""

    def local_upscale(lr, generator, output_type, **kwargs):
        out = F.interpolate(lr, scale_factor=4, mode="nearest")
        return out.float().cpu(), [out.float().cpu()] * len(pipe.scheduler.timesteps)

    monkeypatch.setattr(pipe, "_upscale_batch", local_upscale)
    image = smooth_image(45, 70)
    whole = pipe(image, output_type="pt", tile_size=0, return_intermediates=True)
    tiled = pipe(image, output_type="pt", tile_size=16, tile_overlap=4, tile_batch_size=3, return_intermediates=True)
    torch.testing.assert_close(tiled.images, whole.images, rtol=0, atol=1e-6)
    torch.testing.assert_close(tiled.intermediate_images[-1], whole.intermediate_images[-1], rtol=0, atol=1e-6)


def test_tiled_vs_untiled_real_pipeline(pipe):
    image = smooth_image(40, 52, seed=1)
    whole = pipe(image, output_type="np", tile_size=0).images
    tiled = pipe(image, output_type="np", tile_size=24, tile_overlap=8).images
    assert tiled.shape == whole.shape == (1, 160, 208, 3)
    psnr = 10 * np.log10(1.0 / np.mean((tiled - whole) ** 2))
    print(f"tiled vs untiled (random weights): {psnr:.2f} dB")
    assert np.isfinite(tiled).all() and psnr > 15
    latents = pipe(image, output_type="latent", tile_size=24, tile_overlap=8).images
    assert latents.shape == (1, 3, 40, 52)


def test_auto_tiling_and_deterministic(pipe, monkeypatch):
    monkeypatch.setattr(type(pipe), "auto_tile_threshold", 32)
    monkeypatch.setattr(type(pipe), "default_tile_size", 24)
    calls = []
    original = pipe._upscale_tiled
    monkeypatch.setattr(pipe, "_upscale_tiled", lambda *a, **k: calls.append(1) or original(*a, **k))
    image = smooth_image(36, 20)
    a = pipe(image, output_type="pt").images
    assert calls == [1]
    b = pipe(image, output_type="pt").images
    assert torch.equal(a, b) and calls == [1, 1]
    pipe(smooth_image(20, 20), output_type="pt")
    assert calls == [1, 1]  # small images are not tiled


def test_invalid_tile_arguments(pipe):
    with pytest.raises(ValueError, match="tile_size"):
        pipe(smooth_image(8, 8), tile_size=-1)
    with pytest.raises(ValueError, match="tile_overlap"):
        pipe(smooth_image(40, 40), tile_size=8, tile_overlap=8)
