import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import diffusers_deltadiff.tiled_execution as pipeline_module
from conftest import configure
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline, tiny_pipeline
from diffusers_deltadiff.tiling import Box, RowWindow, column_strips, plan_tiles, tile_rows


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


@pytest.mark.parametrize("max_width,halo", [(32, 8), (20, 0), (8, 100), (1000, 8)])
def test_column_strips_partition_the_columns(max_width, halo):
    tiles = plan_tiles(40, 70, 8, 4)
    strips = column_strips(tiles, max_width, halo)
    owned = [(own.left, own.right) for own, _, _ in strips]
    assert owned[0][0] == 0 and owned[-1][1] == 70
    assert all(a[1] == b[0] for a, b in zip(owned, owned[1:]))  # every column in exactly one strip
    for own, region, strip_tiles in strips:
        assert own.right - own.left <= max(max_width, 8)
        # the halo: at least `halo` columns on each side, or up to the canvas edge
        assert region.left <= max(own.left - halo, 0) and region.right >= min(own.right + halo, 70)
        assert (region.top, region.bottom) == (0, 40)
        assert {t.inner for t in strip_tiles} == {t.inner for t in tiles if region.left <= t.inner.left < region.right}
        assert all(t.outer.left >= region.left and t.outer.right <= region.right for t in strip_tiles)
    assert len(tile_rows(tiles)) == 5 and all(len(row) == 9 for row in tile_rows(tiles))


def test_row_window():
    canvas = torch.arange(6 * 5.0).reshape(1, 6, 5)
    window = RowWindow(left=1)
    window.append(canvas[:, 0:2, 1:5])
    window.append(canvas[:, 2:4, 1:5])
    assert (window.start, window.stop) == (0, 4)
    assert torch.equal(window.crop(Box(1, 3, 2, 4)), canvas[:, 1:3, 2:4])  # across two bands
    window.drop_before(1)  # the first band still holds row 1
    assert (window.start, window.stop) == (0, 4)
    window.drop_before(3)
    assert (window.start, window.stop) == (2, 4)
    assert torch.equal(window.crop(Box(3, 4, 2, 4)), canvas[:, 3:4, 2:4])
    with pytest.raises(IndexError, match="not held"):
        window.crop(Box(1, 4, 1, 3))


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


@pytest.fixture(scope="module", params=[4, 2], ids=["x4", "x2"])
def factor_pipe(request):
    """The tiny lossless pipeline at each shipped factor (x2: a 12-channel space-to-depth latent)."""
    pipe = tiny_lossless_pipeline(seed=0, scale=request.param)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("tile_size,tile_batch_size", [(8, 1), (12, 3), (16, 4), (20, 2)])
def test_local_model_tiles_equal_the_whole_image(factor_pipe, tile_size, tile_batch_size):
    """A model whose layers see only local context, with a context wider than its receptive field: tiles are exact."""
    local_pipe, scale = factor_pipe, factor_pipe.upscale_factor
    image = smooth_image(45, 70)
    whole = local_pipe(image, output_type="np", tile_size=0, return_intermediates=True)
    tiled = local_pipe(
        image,
        output_type="np",
        tile_size=tile_size,
        tile_context=32,
        tile_batch_size=tile_batch_size,
        return_intermediates=True,
    )
    assert tiled.images.shape == whole.images.shape == (1, 45 * scale, 70 * scale, 3)
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
    no_context = local_pipe(image, output_type="np", tile_size=8, tile_context=0).images[0]
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
    tiled = pipe(image, output_type="np", tile_size=24, tile_context=8).images
    assert tiled.shape == whole.shape == (1, 160, 208, 3) and np.isfinite(tiled).all()
    latents = pipe(image, output_type="latent", tile_size=24, tile_context=8).images
    assert latents.shape == (1, 3, 40, 52)


def test_auto_tiling_and_deterministic(local_pipe, monkeypatch):
    configure(monkeypatch, local_pipe, auto_tile_threshold=32, default_tile_size=16)
    plans = []
    original = pipeline_module.TiledExecutor.plan
    monkeypatch.setattr(pipeline_module.TiledExecutor, "plan", lambda *a: plans.append(original(*a)) or plans[-1])
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
        ({"tile_context": -4}, "tile_context"),
        ({"tile_overlap": -4}, "tile_overlap"),
        ({"tile_context": 4, "tile_overlap": 4}, "tile_context` only"),
        ({"tile_batch_size": 0}, "tile_batch_size"),
        ({"tile_batch_size": -2}, "tile_batch_size"),
    ],
)
def test_invalid_tile_arguments(local_pipe, kwargs, name):
    with pytest.raises(ValueError, match=name):
        local_pipe(smooth_image(8, 8), **kwargs)


def test_tile_overlap_is_a_deprecated_spelling_of_tile_context(local_pipe):
    """Scripts written for `tile_overlap` keep working, with a `FutureWarning`; unknown keywords stay a `TypeError`."""
    image = smooth_image(20, 28, seed=7)
    expected = local_pipe(image, output_type="np", tile_size=8, tile_context=4).images
    default = local_pipe(image, output_type="np", tile_size=8).images  # the pipeline's own context (32)
    assert np.abs(expected - default).max() > 1e-4  # the value passed does matter
    with pytest.warns(FutureWarning, match="tile_context"):
        old = local_pipe(image, output_type="np", tile_size=8, tile_overlap=4).images
    np.testing.assert_array_equal(old, expected)
    with pytest.warns(FutureWarning, match="tile_context"):
        assert local_pipe.unet_pixels((20, 28), 8, tile_overlap=4) == local_pipe.unet_pixels((20, 28), 8, 4)
    with pytest.raises(TypeError, match="tile_overlapp"):
        local_pipe(image, tile_overlapp=4)


@pytest.mark.parametrize("output_type", ["np", "pil", "pt"])
def test_streaming_equals_the_canvas_path(factor_pipe, output_type, monkeypatch):
    """Tiles streamed down the image in column strips give the whole-canvas path's output (to float error)."""
    local_pipe = factor_pipe
    configure(monkeypatch, local_pipe, stream_width=16)
    image = smooth_image(44, 76, seed=3)
    run = functools.partial(local_pipe, image, 2, output_type=output_type)  # 2 steps: a wavefront of two tile rows
    streamed = run(tile_size=8).images
    configure(monkeypatch, local_pipe, stream_tiles=False)
    canvas = run(tile_size=8).images
    whole = run(tile_size=0).images
    if output_type == "pil":
        streamed, canvas, whole = (np.stack([np.asarray(im) for im in ims]) for ims in (streamed, canvas, whole))
        np.testing.assert_array_equal(streamed, canvas)
        assert np.abs(streamed.astype(int) - whole.astype(int)).max() <= 1
        return
    np.testing.assert_allclose(np.asarray(streamed), np.asarray(canvas), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(streamed), np.asarray(whole), rtol=0, atol=1e-5)


def test_strips_need_their_halo(local_pipe, monkeypatch):
    """The control: strips cut without a halo differ visibly from the whole image, so the test above can fail."""
    configure(monkeypatch, local_pipe, stream_width=16)
    image = smooth_image(20, 76, seed=4)
    whole = local_pipe(image, output_type="np", tile_size=8).images
    monkeypatch.setattr(pipeline_module, "column_strips", lambda tiles, width, halo: column_strips(tiles, width, 0))
    cut = local_pipe(image, output_type="np", tile_size=8).images
    assert np.abs(cut - whole).max() > 1 / 255


def test_streaming_holds_a_few_rows_of_a_strip(local_pipe, monkeypatch):
    """Memory does not grow with the image: the latents held at any time span a few tile rows of one strip."""
    held = []
    append = RowWindow.append

    def recording_append(self, band):
        append(self, band)
        held.append((self.stop - self.start, self.width))

    monkeypatch.setattr(RowWindow, "append", recording_append)
    configure(monkeypatch, local_pipe, stream_width=16)
    image = smooth_image(80, 120, seed=5)  # an 80 x 120 latent canvas in tiles of 8: 10 rows, 15 columns
    local_pipe(image, tile_size=8, tile_context=8)
    steps, tile, context = 4, 8, 8
    halo = (steps + 2) * context
    rows, columns = zip(*held)
    # a wavefront holds a tile row per step ahead and the context, whatever the image height; a strip and its halo
    assert max(rows) <= (steps + 3) * tile + 2 * context < 80
    assert max(columns) <= 16 + 2 * halo < 120


@pytest.mark.parametrize("tile_batch_size,return_intermediates", [(1, False), (3, False), (3, True)])
def test_progress_total_counts_every_unet_call(local_pipe, monkeypatch, tile_batch_size, return_intermediates):
    """The progress bar's total is the number of UNet calls made, streamed (strips, halo tiles) or not."""
    import contextlib

    bars = []

    class Bar:
        def __init__(self, total):
            self.total, self.n = total, 0

        def update(self, n=1):
            self.n += n

    @contextlib.contextmanager
    def progress_bar(total=None, **kwargs):
        bars.append(Bar(total))
        yield bars[-1]

    monkeypatch.setattr(local_pipe, "progress_bar", progress_bar)
    configure(monkeypatch, local_pipe, stream_width=16)
    local_pipe(
        smooth_image(30, 70, seed=6),
        output_type="np",
        tile_size=8,
        tile_context=8,
        tile_batch_size=tile_batch_size,
        return_intermediates=return_intermediates,
    )
    assert bars[-1].n == bars[-1].total > 0


def test_border_padding_keeps_tiles_and_streaming_exact(monkeypatch):
    """With `border_padding`, the whole image, tiles and the streamed strips still agree, and the size is exact."""
    pipe = tiny_lossless_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    pipe.register_to_config(border_padding=3)
    configure(monkeypatch, pipe, stream_width=16)
    image = smooth_image(17, 27, seed=5)
    whole = pipe(image, output_type="np", tile_size=0).images
    streamed = pipe(image, output_type="np", tile_size=8).images
    configure(monkeypatch, pipe, stream_tiles=False)
    canvas = pipe(image, output_type="np", tile_size=8).images
    assert whole.shape == streamed.shape == canvas.shape == (1, 68, 108, 3)
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-5)
    np.testing.assert_allclose(canvas, whole, rtol=0, atol=1e-5)
    latents = pipe(image, output_type="latent", tile_size=0).images
    assert tuple(latents.shape) == (1, 48, 17, 27)


def test_border_padding_is_reflection_around_the_image():
    """The padded run equals running the reflected image by hand and cropping (an independent computation)."""
    pipe = tiny_lossless_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    image = smooth_image(20, 24, seed=6)
    by_hand = F.pad(image[None], (2, 2, 2, 2), mode="reflect")[0]
    reference = pipe(by_hand, output_type="pt", tile_size=0).images[..., 8:-8, 8:-8]
    pipe.register_to_config(border_padding=2)
    padded = pipe(image, output_type="pt", tile_size=0).images
    torch.testing.assert_close(padded, reference, rtol=0, atol=0)


def test_the_wavefront_computes_every_row_once_per_step_in_order():
    """`Wavefront.advance`: each tile row once per level, each level after the one it reads, few rows held at once."""
    from diffusers_deltadiff.tiling import Wavefront, plan_tiles

    tiles = plan_tiles(40, 16, 8, 4)  # 5 tile rows of 2 tiles, context 4
    region = Box(0, 40, 0, 16)
    wave = Wavefront(tiles, region, num_steps=3, whole_canvas=False, start_is_y=True)
    order, held = [], []
    for j in wave.output_rows():
        for level in range(4):
            for k in wave.advance(level, j):
                if level:  # the rows it sees must be held at the level below
                    top, bottom = wave.seen[k]
                    assert wave.x[level - 1].start <= top and bottom <= wave.x[level - 1].stop
                band = torch.zeros(1, 1, 8, 16)
                (wave.y if level == 0 else wave.x[level]).append(band)
                if level == 0:
                    wave.condition.append(band)
                order.append((level, k))
                held.append(sum(w.stop - w.start for w in wave.x[1:]) + (wave.y.stop - wave.y.start))
        top, bottom = wave.seen[j]
        assert wave.x[-1].start <= top and bottom <= wave.x[-1].stop  # the output row can be decoded
        wave.decoded_row()
    for level in range(4):
        assert [k for lv, k in order if lv == level] == list(range(5))  # every row once, top to bottom
    assert max(held) < 5 * 8 * 4  # never every row of every level at once
    whole = Wavefront(tiles, region, num_steps=3, whole_canvas=True, start_is_y=False)
    assert [list(whole.advance(level, 0)) for level in range(4)] == [[0], [0], [0], [0]]  # one row: the canvas


def test_pil_canvas_rounds_as_numpy_does():
    """The 8-bit canvas rounds half to even, as `np.round` (and diffusers' `numpy_to_pil`) would, at every level."""
    from diffusers_deltadiff.canvas import PILCanvas

    levels = torch.arange(0, 255.001, 0.25, dtype=torch.float64) / 255  # integers, quarters and halves
    images = torch.cat([levels, torch.rand(3 * 40 * 40 - levels.numel(), dtype=torch.float64)]).float()
    images = images.reshape(1, 3, 40, 40)
    canvas = PILCanvas(1, (40, 40))
    canvas.paste(Box(0, 40, 0, 40), images)
    expected = np.round(images[0].permute(1, 2, 0).numpy() * np.float32(255)).astype(np.uint8)
    assert np.array_equal(np.asarray(canvas.result()[0]), expected)
