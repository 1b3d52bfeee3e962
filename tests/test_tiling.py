import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline, tiny_pipeline
from diffusers_deltadiff.tiling import Box, plan_tiles


@pytest.mark.parametrize(
    "height,width,tile,context,multiple",
    [(100, 70, 32, 8, 4), (33, 32, 32, 8, 1), (32, 32, 64, 4, 4), (40, 12, 8, 0, 4)],
)
def test_plan_covers_the_canvas_once(height, width, tile, context, multiple):
    tiles = plan_tiles(height, width, tile, context, multiple)
    covered = np.zeros((height, width), dtype=int)
    for t in tiles:
        covered[t.inner.top : t.inner.bottom, t.inner.left : t.inner.right] += 1
        # the outer box holds the inner one plus the context where the canvas allows, on the UNet's grid
        assert t.outer.top <= t.inner.top and t.outer.bottom >= t.inner.bottom
        assert t.outer.left <= t.inner.left and t.outer.right >= t.inner.right
        rounded_context = -(-context // multiple) * multiple
        assert t.outer.top == max(t.inner.top - rounded_context, 0)
        assert t.outer.right == min(t.inner.right + rounded_context, width)
        assert t.inner.top % multiple == 0 and t.outer.left % multiple == 0
    assert (covered == 1).all()


def test_box_scaling():
    box = Box(2, 6, 4, 10)
    assert box.scaled(4) == Box(8, 24, 16, 40)
    assert box.scaled(1, 2) == Box(1, 3, 2, 5)
    assert box.shape == (4, 6)
    assert Box(3, 5, 4, 6).within(box) == Box(1, 3, 0, 2)
    with pytest.raises(ValueError, match="whole pixels"):
        Box(1, 2, 0, 2).scaled(1, 2)


def test_plan_rejects_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        plan_tiles(10, 10, 0, 2)
    with pytest.raises(ValueError, match="context"):
        plan_tiles(10, 10, 4, -1)


def smooth_image(height, width, seed=0):
    rng = np.random.RandomState(seed)
    noise = torch.from_numpy(rng.rand(1, 3, height // 4 + 1, width // 4 + 1).astype(np.float32))
    return F.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)[0]


def psnr(a, b):
    return 10 * np.log10(1.0 / max(float(np.mean((np.asarray(a) - np.asarray(b)) ** 2)), 1e-20))


@pytest.fixture(scope="module")
def local_pipe():
    pipe = tiny_lossless_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("tile_size,tile_batch_size", [(8, 1), (12, 3), (16, 4), (20, 2)])
def test_local_model_tiles_equal_the_whole_image(local_pipe, tile_size, tile_batch_size):
    """A model whose layers see only local context, with a context wider than its receptive field: tiles are exact."""
    image = smooth_image(45, 70)
    whole = local_pipe(image, output_type="np", tile_size=0, return_intermediates=True)
    tiled = local_pipe(
        image,
        output_type="np",
        tile_size=tile_size,
        tile_overlap=32,
        tile_batch_size=tile_batch_size,
        return_intermediates=True,
    )
    assert tiled.images.shape == whole.images.shape == (1, 180, 280, 3)
    np.testing.assert_allclose(tiled.images, whole.images, rtol=0, atol=1e-5)
    for a, b in zip(tiled.intermediate_images, whole.intermediate_images):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_no_seams_on_a_flat_gradient(local_pipe):
    """Small tiles and the default context on a smooth ramp: tiling adds no step anywhere, least of all at tile edges."""
    ramp = torch.linspace(0.2, 0.8, 64)
    image = torch.stack([ramp[None, :].expand(48, 64)] * 3)
    whole = local_pipe(image, output_type="np", tile_size=0).images[0]
    tiled = local_pipe(image, output_type="np", tile_size=8).images[0]
    assert psnr(tiled, whole) > 45
    # a seam is a jump of (tiled - whole) across a tile edge (every 8 LR = 32 output pixels): none reaches 1/255
    difference = (tiled - whole).mean(axis=2)
    jumps = np.abs(np.diff(difference, axis=1))
    assert jumps.max() < 1 / 255 and np.abs(difference).max() < 1 / 255
    # and a model that ignored the context would show them: tiles without context differ visibly at their edges
    no_context = local_pipe(image, output_type="np", tile_size=8, tile_overlap=0).images[0]
    assert np.abs(np.diff((no_context - whole).mean(axis=2), axis=1))[:, 31::32].max() > 1 / 255


def test_pil_output_is_the_rounded_float_output(local_pipe):
    image = smooth_image(40, 36, seed=2)
    as_float = local_pipe(image, output_type="np", tile_size=8).images[0]
    as_pil = np.asarray(local_pipe(image, tile_size=8).images[0])
    np.testing.assert_array_equal(as_pil, (as_float * 255).round().astype(np.uint8))


def test_tiled_global_model_runs(local_pipe):
    """A VQ autoencoder and a GroupNorm / attention UNet see per-tile statistics: tiled output is close, not equal."""
    pipe = tiny_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    image = smooth_image(40, 52, seed=1)
    whole = pipe(image, output_type="np", tile_size=0).images
    tiled = pipe(image, output_type="np", tile_size=24, tile_overlap=8).images
    assert tiled.shape == whole.shape == (1, 160, 208, 3) and np.isfinite(tiled).all()
    latents = pipe(image, output_type="latent", tile_size=24, tile_overlap=8).images
    assert latents.shape == (1, 3, 40, 52)


def test_auto_tiling_and_deterministic(local_pipe, monkeypatch):
    monkeypatch.setattr(type(local_pipe), "auto_tile_threshold", 32)
    monkeypatch.setattr(type(local_pipe), "default_tile_size", 16)
    plans = []
    original = local_pipe._plan
    monkeypatch.setattr(local_pipe, "_plan", lambda *a, **k: plans.append(original(*a, **k)) or plans[-1])
    image = smooth_image(36, 20)
    a = local_pipe(image, output_type="pt").images
    assert len(plans[-1]) == 3 * 2  # 36 x 20 latent pixels in 16-pixel tiles
    b = local_pipe(image, output_type="pt").images
    assert torch.equal(a, b)
    local_pipe(smooth_image(20, 20), output_type="pt")
    assert len(plans[-1]) == 1  # small images are not tiled


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"tile_size": -1}, "tile_size"),
        ({"tile_size": 2.5}, "tile_size"),
        ({"tile_overlap": -4}, "tile_overlap"),
        ({"tile_batch_size": 0}, "tile_batch_size"),
        ({"tile_batch_size": -2}, "tile_batch_size"),
    ],
)
def test_invalid_tile_arguments(local_pipe, kwargs, name):
    with pytest.raises(ValueError, match=name):
        local_pipe(smooth_image(8, 8), **kwargs)
