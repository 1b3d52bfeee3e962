"""The degradation registry tried as a hostile user would: tiny and odd-sized images, images that are not RGB floats,
seeds of any size, odd factors, pickling for spawned data-loader workers, threads, and the mixture's draws."""

import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import write_image
from diffusers_deltadiff.degradations import DEGRADATIONS, Degradation


pytest.importorskip("albumentations")
KINDS = list(DEGRADATIONS)


def random_hr(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


def is_random(kind: str) -> bool:
    """Whether `kind` draws anything from its seed (its outputs for seeds 0..3 differ)."""
    degrade, hr = Degradation(kind, 4), random_hr(32, 32)
    first = degrade(hr, 0)
    return any(not torch.equal(degrade(hr, seed), first) for seed in range(1, 4))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_hr_smaller_than_the_factor_is_a_one_line_error(kind, scale):
    """Before: 'height and width must be > 0' from PIL, or an OpenCV assertion with its source path, by kind."""
    degrade = Degradation(kind, scale)
    for height, width in [(1, 1), (scale - 1, 40), (40, scale - 1)]:
        with pytest.raises(ValueError, match=f"smaller than the factor {scale}: it has no LR pixel"):
            degrade(random_hr(height, width), 0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_the_smallest_and_odd_sizes_give_the_floor_size(kind, scale):
    """An HR image of one LR pixel, and sides that are not multiples of the factor (kernels larger than the image)."""
    degrade = Degradation(kind, scale)
    for height, width in [(scale, scale), (scale * 2 + 1, scale), (scale * 3 + scale - 1, scale * 5 + 1)]:
        for seed in range(3):
            lr = degrade(random_hr(height, width, seed), seed)
            assert lr.shape == (3, height // scale, width // scale), (height, width, seed)
            assert 0 <= lr.min() and lr.max() <= 1 and torch.equal(lr * 255, (lr * 255).round())


@pytest.mark.parametrize("kind", KINDS)
def test_what_is_not_one_rgb_float_image_is_refused(kind):
    """Before: RGBA came out with 3 or 4 channels by kind, uint8 (0-255) gave a white LR, a batch or a grey image
    failed deep inside PIL, OpenCV or a permute."""
    degrade = Degradation(kind, 4)
    bad = {
        "grey": torch.rand(1, 32, 32),
        "rgba": torch.rand(4, 32, 32),
        "batch": torch.rand(2, 3, 32, 32),
        "uint8": (torch.rand(3, 32, 32) * 255).to(torch.uint8),
        "numpy": np.random.rand(3, 32, 32).astype(np.float32),
        "pil": PIL.Image.new("RGB", (32, 32)),
    }
    for label, hr in bad.items():
        with pytest.raises(ValueError, match=r"takes one \(3, H, W\) floating image"):
            degrade(hr, 0)
    assert degrade(torch.rand(3, 32, 32, dtype=torch.float64), 0).shape == (3, 8, 8)


@pytest.mark.parametrize("kind", KINDS)
def test_seeds_of_any_size(kind):
    """Any non-negative integer is a seed, each its own: before, `noise15` failed from 2**64 ('Overflow when
    unpacking long long') and `realesrgan` / `mild` gave seed 0's image for 2**32 (the seed wrapped)."""
    degrade, hr = Degradation(kind, 4), random_hr(32, 32)
    zero = degrade(hr, 0)
    random = is_random(kind)
    for seed in [2**32, 2**63, 2**64, 2**100]:
        lr = degrade(hr, seed)
        assert torch.equal(lr, degrade(hr, seed)), seed  # still one image per seed
        assert torch.equal(lr, zero) != random, seed
    assert torch.equal(degrade(hr, np.int64(7)), degrade(hr, 7))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [-1, 1.5, True, "3", None])
def test_seeds_that_are_not_non_negative_integers_are_refused(kind, seed):
    """Before: -1 was refused by some kinds (NumPy's message) and ran as 2**32 - 1 or ignored by others."""
    with pytest.raises(ValueError, match="seed is an integer of at least 0"):
        Degradation(kind, 4)(random_hr(16, 16), seed)


@pytest.mark.parametrize("scale", [0, -2, 2.0, True])
def test_a_factor_that_is_not_a_positive_integer_is_refused(scale):
    """Before: scale 0 was accepted and failed at the first image with a ZeroDivisionError."""
    with pytest.raises(ValueError, match="scale is an integer of at least 1"):
        Degradation("bicubic", scale)


@pytest.mark.parametrize("kind", KINDS)
def test_every_degradation_pickles_after_use(kind):
    """What a spawned data-loader worker (macOS, Windows) receives. Before: `bicubic`, the default, and `realworld`
    could not be pickled (local lambdas), so any training run with workers failed there."""
    degrade, hr = Degradation(kind, 4), random_hr(40, 36)
    expected = [degrade(hr, seed) for seed in range(4)]
    copy = pickle.loads(pickle.dumps(degrade))
    assert [torch.equal(copy(hr, seed), out) for seed, out in enumerate(expected)] == [True] * 4


@pytest.mark.parametrize("kind", ["realesrgan", "mild", "realworld"])
def test_threads_share_one_degradation_deterministically(kind):
    """Before: the albumentations pipeline was seeded and run in two steps, so threads sharing it mixed their
    random states: 49 of 120 `realesrgan` outputs differed from the sequential ones under 4 threads."""
    hr = random_hr(48, 48)
    expected = {seed: Degradation(kind, 4)(hr, seed) for seed in range(24)}
    shared = Degradation(kind, 4)
    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(lambda seed: (seed, shared(hr, seed)), list(expected) * 3))
    assert all(torch.equal(out, expected[seed]) for seed, out in outputs)


@pytest.mark.parametrize("kind", ["realesrgan", "realworld"])
def test_an_output_does_not_depend_on_earlier_calls(kind):
    hr = random_hr(40, 40)
    fresh = Degradation(kind, 4)(hr, 11)
    used = Degradation(kind, 4)
    for seed in range(5):
        used(random_hr(24 + 4 * seed, 32, seed), seed)  # other sizes and seeds first
    assert torch.equal(used(hr, 11), fresh)


def test_the_training_data_pickles_with_its_degradation(tmp_path):
    """What a spawned data-loader worker receives: the training data with `realworld` LR, pickled, gives the same
    samples as in this process (a worker started by `spawn` itself took 90 s here: too slow for a unit test)."""
    from diffusers_deltadiff.data import SRTrainDataset

    paths = [str(write_image(tmp_path / f"{i}.png", 40, 44, seed=i)) for i in range(2)]
    dataset = SRTrainDataset(paths, resolution=32, degradation="realworld", seed=3)
    expected = [dataset[i] for i in range(2)]
    worker = pickle.loads(pickle.dumps(dataset))
    for index, sample in enumerate(expected):
        assert torch.equal(worker[index]["lr"], sample["lr"]) and torch.equal(worker[index]["hr"], sample["hr"])


def test_the_mixture_draws_its_branches_at_its_weights_and_fresh_inner_seeds():
    """Over 4,000 seeds each branch is drawn at its weight (within 4 standard deviations), and the seeds handed to
    the branches are all different (no two samples share a degradation)."""
    from diffusers_deltadiff.degradations.mixture import Mixture

    mix, n = Mixture(4), 4000
    draws = [np.random.default_rng(seed) for seed in range(n)]
    branches = np.array([int(rng.choice(len(mix.branches), p=mix.weights)) for rng in draws])
    inner = [int(rng.integers(2**32)) for rng in draws]
    counts = np.bincount(branches, minlength=len(mix.branches))
    spread = 4 * np.sqrt(n * mix.weights * (1 - mix.weights))
    assert np.all(np.abs(counts - n * mix.weights) <= spread), (counts, n * mix.weights)
    assert len(set(inner)) == n


def test_grey_rgba_16_bit_and_odd_sized_hr_files_in_evaluation(tmp_path):
    """Evaluation reads every HR file as RGB in [0, 1] (16-bit scaled, not clipped to white) and degrades it."""
    from diffusers_deltadiff.evaluation import load_pairs

    write_image(tmp_path / "grey.png", 48, 40, mode="L")
    write_image(tmp_path / "rgba.png", 48, 40, mode="RGBA")
    write_image(tmp_path / "deep.png", 48, 40, mode="I;16")
    write_image(tmp_path / "odd.png", 49, 43)
    pairs, errors = load_pairs(str(tmp_path), 4, None, None, "realworld", 0)
    assert errors == [] and len(pairs) == 4
    for name, hr, lr in pairs:
        assert hr.shape == (3, 48, 40) and lr.shape == (3, 12, 10), name
    deep = {name: hr for name, hr, _ in pairs}["deep.png"]
    values = np.asarray(PIL.Image.open(tmp_path / "deep.png")).astype(np.float64) / 65535
    assert np.abs(deep[0].double().numpy() - values).max() <= 1 / 255 + 1e-6


def test_a_huge_evaluation_seed_scores_every_image(tmp_path):
    """Before: `evaluate --degradation noise15 --seed 200000000000000` reported every image as an error."""
    from diffusers_deltadiff.evaluation import load_pairs

    for index in range(2):
        write_image(tmp_path / f"{index}.png", 32, 32, seed=index)
    pairs, errors = load_pairs(str(tmp_path), 4, None, None, "noise15", 200_000_000_000_000)
    assert errors == [] and len(pairs) == 2
    assert not torch.equal(pairs[0][2], load_pairs(str(tmp_path), 4, None, None, "noise15", 0)[0][0][2])
