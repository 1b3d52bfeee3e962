"""The degradation registry: every entry seeded and shaped, the JPEG entries against PIL, Real-ESRGAN's families,
and a toy degradation added with one registry line that the trainer's data, evaluation and the CLI all see."""

import io

import numpy as np
import PIL.Image
import pytest
import torch

from diffusers_deltadiff import degradations
from diffusers_deltadiff.degradations import DEGRADATIONS, Degradation, bicubic_downsample


def smooth_image(height=64, width=72, seed=0) -> torch.Tensor:
    rng = np.random.RandomState(seed)
    image = PIL.Image.fromarray((rng.rand(height, width, 3) * 255).astype(np.uint8)).resize((width, height))
    image = image.filter(PIL.ImageFilter.GaussianBlur(1.5))
    return torch.from_numpy(np.asarray(image).astype(np.float32) / 255).permute(2, 0, 1)


@pytest.mark.parametrize("kind", list(DEGRADATIONS))
def test_every_degradation_is_seeded_and_sized(kind):
    if kind in ("mild", "realesrgan", "realworld", "realworld-heavy"):
        pytest.importorskip("albumentations")
    hr = smooth_image(64, 72)
    degrade = Degradation(kind, 4)
    a, b = degrade(hr, 5), degrade(hr, 5)
    assert a.shape == (3, 16, 18)
    assert torch.equal(a, b)
    assert 0 <= a.min() and a.max() <= 1
    assert torch.equal(a * 255, (a * 255).round())  # 8-bit values, as a saved LR file


def test_random_degradations_depend_on_the_seed():
    pytest.importorskip("albumentations")
    hr = smooth_image(64, 64)
    for kind in ("jpeg", "mild", "realesrgan", "realworld"):
        degrade = Degradation(kind, 4)
        outputs = [degrade(hr, seed) for seed in range(6)]
        assert any(not torch.equal(outputs[0], other) for other in outputs[1:]), kind


def test_fixed_quality_jpeg_is_pil_jpeg_of_the_bicubic_lr():
    hr = smooth_image()
    lr = bicubic_downsample(hr, 4)
    pil = PIL.Image.fromarray((lr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=40)
    expected = torch.from_numpy(np.asarray(PIL.Image.open(buffer)).astype(np.float32) / 255).permute(2, 0, 1)
    assert torch.equal(Degradation("jpeg40", 4)(hr, 0), expected)
    assert not torch.equal(Degradation("jpeg70", 4)(hr, 0), expected)


def test_second_order_is_harsher_than_bicubic_on_average():
    """Blur, noise and JPEG move the LR away from the clean bicubic LR: mean error well above rounding."""
    pytest.importorskip("albumentations")
    hr = smooth_image(128, 128)
    clean = bicubic_downsample(hr, 4)
    degrade = Degradation("realesrgan", 4)
    errors = [float((degrade(hr, seed) - clean).abs().mean()) for seed in range(8)]
    assert np.mean(errors) > 2 / 255


def test_plateau_kernel_matches_its_formula():
    pytest.importorskip("albumentations")
    from diffusers_deltadiff.degradations.second_order import plateau_kernel

    kernel = plateau_kernel(7, 1.5, 1.5, 0.0, 1.0)
    assert kernel.shape == (7, 7) and abs(kernel.sum() - 1) < 1e-5
    # isotropic, beta 1: 1 / (1 + r^2 / sigma^2), computed here point by point
    expected = np.array([[1 / (1 + (x * x + y * y) / 2.25) for x in range(-3, 4)] for y in range(-3, 4)])
    np.testing.assert_allclose(kernel, expected / expected.sum(), rtol=1e-5)


def test_unknown_degradation_names_the_choices():
    with pytest.raises(ValueError, match="Unknown degradation 'gaussian'.*bicubic"):
        Degradation("gaussian")


class ToyDarken:
    """A toy degradation: the bicubic LR at half brightness (what a new file in degradations/ would hold)."""

    def __init__(self, scale):
        self.scale = scale

    def __call__(self, hr, seed):
        return (bicubic_downsample(hr, self.scale) * 127).round() / 255


def test_a_toy_degradation_needs_one_registry_line(monkeypatch, tmp_path):
    from diffusers_deltadiff.cli import build_parser
    from diffusers_deltadiff.data import SRTrainDataset
    from diffusers_deltadiff.evaluation import load_pairs

    monkeypatch.setitem(degradations.DEGRADATIONS, "toy", ToyDarken)  # the one registry line
    hr = smooth_image(64, 64)
    expected = (bicubic_downsample(hr, 4) * 127).round() / 255
    assert torch.equal(Degradation("toy", 4)(hr, 0), expected)
    # evaluation
    PIL.Image.fromarray((hr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / "a.png")
    hr_read = torch.from_numpy(np.asarray(PIL.Image.open(tmp_path / "a.png")).astype(np.float32) / 255)
    (_, _, lr), *_ = load_pairs(str(tmp_path), 4, None, None, "toy", 0)[0]
    assert torch.equal(lr, (bicubic_downsample(hr_read.permute(2, 0, 1), 4) * 127).round() / 255)
    # training data
    dataset = SRTrainDataset([str(tmp_path / "a.png")], resolution=32, degradation="toy", random_flip=False)
    sample = dataset[0]
    assert float(sample["lr"].max()) <= 127 / 255 * 2 - 1 + 1e-6
    # the CLI's choices are read from the registry when the parser is built
    args = build_parser().parse_args(["evaluate", "--hr", str(tmp_path), "--degradation", "toy"])
    assert args.degradation == "toy"


def test_the_mixture_draws_each_branch_and_keeps_it_seeded():
    """`realworld` gives, per seed, exactly one of its branches' outputs for that sample."""
    pytest.importorskip("albumentations")
    from diffusers_deltadiff.degradations.mixture import Mixture

    hr = smooth_image(64, 64)
    mix = Mixture(4)
    seen = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        branch = int(rng.choice(4, p=mix.weights))
        expected = mix.branches[branch](hr, int(rng.integers(2**32)))  # drawn here as the mixture draws
        assert torch.equal(mix(hr, seed), expected)
        seen.add(branch)
    assert seen == {0, 1, 2, 3}
    heavy = Mixture(4, weights=(0.2, 0.2, 0.0, 0.6))
    assert not any(int(np.random.default_rng(s).choice(4, p=heavy.weights)) == 2 for s in range(40))  # no mild


def test_aliased_nearest_samples_every_fourth_pixel():
    """Without antialiasing, nearest at x4 keeps the pixel at 4i + 2 (the sample nearest each LR pixel's centre)."""
    from diffusers_deltadiff.degradations.aliased import aliased_downsample

    hr = torch.randint(0, 256, (3, 16, 20)).float() / 255
    assert torch.equal(aliased_downsample(hr, 4, "nearest-exact"), hr[:, 2::4, 2::4])
    # bicubic sampling without antialiasing keeps more of a fine pattern than the protocol's antialiased bicubic
    stripes = torch.zeros(3, 64, 64)
    stripes[:, :, ::3] = 1  # a period of 3 HR pixels: folded to a visible pattern, not averaged away
    aliased = aliased_downsample(stripes, 4, "bicubic")
    protocol = Degradation("bicubic", 4)(stripes, 0)
    assert aliased.std() > 2 * protocol.std()


def test_mixture_takes_four_to_six_weights():
    from diffusers_deltadiff.degradations.mixture import Mixture

    hr = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    five = Mixture(4, weights=(0, 0, 0, 0, 1))(hr, 3)  # only the aliased branch
    assert five.shape == (3, 16, 16)
    six = Mixture(4, weights=(0, 0, 0, 0, 0, 1))(hr, 3)  # only the camera branch
    assert six.shape == (3, 16, 16)
    with pytest.raises(ValueError, match="4 to 6 weights"):
        Mixture(4, weights=(1, 1, 1))
    with pytest.raises(ValueError, match="4 to 6 weights"):
        Mixture(4, weights=(1,) * 7)


def test_camera_kernel_is_the_product_of_two_gaussians():
    """Isotropic, and anisotropic at a right angle, the 2-D kernel is the outer product of 1-D Gaussians."""
    import numpy as np

    from diffusers_deltadiff.degradations.camera import gaussian_kernel

    def gauss(sigma, radius):
        x = np.arange(-radius, radius + 1)
        g = np.exp(-(x**2) / (2 * sigma**2))
        return g / g.sum()

    iso = gaussian_kernel(1.3, 1.3, 0.0).numpy()
    assert np.allclose(iso, np.outer(gauss(1.3, 4), gauss(1.3, 4)), atol=1e-12)
    aniso = gaussian_kernel(2.0, 0.7, np.pi / 2).numpy()  # sigma 2 along y, 0.7 along x
    assert np.allclose(aniso, np.outer(gauss(2.0, 6), gauss(0.7, 6)), atol=1e-12)


def test_camera_is_a_softer_clean_lr():
    """Near the protocol's LR (no blocks, little noise) but with less detail: what RealSR's LR measures."""
    from diffusers_deltadiff.degradations.camera import Camera

    hr = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    hr = torch.nn.functional.interpolate(hr[None], size=(128, 128), mode="bicubic")[0].clamp(0, 1)
    clean = bicubic_downsample(hr, 4)
    detail = lambda x: (x[:, 1:] - x[:, :-1]).abs().mean() + (x[:, :, 1:] - x[:, :, :-1]).abs().mean()  # noqa: E731
    for seed in range(8):
        lr = Camera(4)(hr, seed)
        assert lr.shape == clean.shape
        assert detail(lr) < detail(clean)
        assert 10 * torch.log10(1 / ((lr - clean) ** 2).mean()) > 25


def test_cv2_cubic_is_the_cubic_kernel_sampled_between_pixels():
    """At x4, OpenCV's INTER_CUBIC samples each output pixel halfway between source pixels 4i+1 and 4i+2 with the
    cubic kernel (a = -0.75): weights -0.09375, 0.59375, 0.59375, -0.09375 on pixels 4i..4i+3, per axis, no
    antialiasing; computed here with NumPy."""
    import numpy as np

    pytest.importorskip("cv2")
    image = np.random.default_rng(0).integers(0, 256, (32, 40, 3)).astype(np.uint8)
    lr = Degradation("cv2-cubic", 4)(torch.from_numpy(image).permute(2, 0, 1).float() / 255, 0)
    weights = np.array([-0.09375, 0.59375, 0.59375, -0.09375])
    rows = np.stack([np.tensordot(image[4 * i : 4 * i + 4].astype(float), weights, (0, 0)) for i in range(8)])
    both = np.stack([np.tensordot(rows[:, 4 * j : 4 * j + 4], weights, (1, 0)) for j in range(10)], 1)
    expected = np.clip(np.round(both), 0, 255)
    np.testing.assert_array_equal((lr.permute(1, 2, 0).numpy() * 255).round(), expected)
