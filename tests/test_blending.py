"""The denoise knob: a pipeline between the clean and the real-world x4 models, weight by weight; shipped models by
short name in Python and the CLI."""

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import write_image
from diffusers_deltadiff import pretrained
from diffusers_deltadiff.blending import blend_pipelines
from diffusers_deltadiff.cli import main
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline


def pair():
    clean = tiny_lossless_pipeline(seed=0)
    real = tiny_lossless_pipeline(seed=1)
    return clean, real


def test_blend_weights_are_the_weighted_mean():
    clean, real = pair()
    a, b = dict(clean.unet.state_dict()), dict(real.unet.state_dict())
    a = {k: v.clone() for k, v in a.items()}
    blended = blend_pipelines(clean, real, 0.25).unet.state_dict()
    for key, value in blended.items():
        expected = 0.75 * a[key].double() + 0.25 * b[key].double()  # computed here in float64
        assert torch.allclose(value.double(), expected, atol=1e-6), key


def test_ends_are_exactly_the_two_models():
    clean, real = pair()
    image = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    expected_clean = clean(image, output_type="np").images
    expected_real = real(image, output_type="np").images
    assert np.array_equal(blend_pipelines(*pair(), 0)(image, output_type="np").images, expected_clean)
    assert np.array_equal(blend_pipelines(*pair(), 1)(image, output_type="np").images, expected_real)
    middle = blend_pipelines(*pair(), 0.5)(image, output_type="np").images
    assert not np.array_equal(middle, expected_clean) and not np.array_equal(middle, expected_real)


def test_blend_takes_the_larger_context_and_padding():
    """Tiles of a blend need what either model needs; the real-world model's padding keeps JPEG's grid phase."""
    clean, real = pair()
    clean.register_to_config(tile_context=16, border_padding=2, default_tile_size=128)
    real.register_to_config(tile_context=48, border_padding=8, default_tile_size=256)
    blended = blend_pipelines(clean, real, 0.5)
    assert (blended.config.tile_context, blended.config.border_padding) == (48, 8)
    assert blended.config.default_tile_size == 256
    assert (clean.config.tile_context, clean.config.border_padding) == (16, 2)  # the clean model is left as it was
    real.register_to_config(tile_context=8, border_padding=0, default_tile_size=64)
    other = blend_pipelines(clean, real, 0.5)
    assert (other.config.tile_context, other.config.border_padding) == (16, 2)


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan")])
def test_strength_outside_0_1_is_refused(strength):
    with pytest.raises(ValueError, match="between 0 and 1"):
        blend_pipelines(*pair(), strength)


@pytest.mark.parametrize("strength, shown", [(1.0000001, "1.0000001"), (-1e-12, "-1e-12")])
def test_strength_just_outside_0_1_is_named_as_given(strength, shown):
    """Before: the message rounded to 6 digits, "must be between 0 and 1, got 1", naming a value that is allowed."""
    with pytest.raises(ValueError, match=rf"between 0 and 1, got {shown}$"):
        blend_pipelines(*pair(), strength)


def test_different_architectures_are_refused():
    from diffusers_deltadiff.testing_utils import tiny_pipeline

    with pytest.raises(ValueError, match="cannot blend"):
        blend_pipelines(tiny_lossless_pipeline(seed=0), tiny_pipeline(seed=0), 0.5)


def test_models_by_short_name(shipped):
    assert pretrained.shipped_models() == ["x4-real", "x4"]  # the default x4 model first
    assert pretrained.shipped_scales() == [4]
    real = pretrained.load_default_pipeline(model="x4-real")
    reference = tiny_lossless_pipeline(seed=1)
    for key, value in real.unet.state_dict().items():
        assert torch.equal(value, reference.unet.state_dict()[key])
    with pytest.raises(FileNotFoundError, match="the x2 model is not shipped.*shipped: x4-real, x4"):
        pretrained.load_default_pipeline(model="x2")
    with pytest.raises(ValueError, match="unknown shipped model 'x8'"):
        pretrained.load_default_pipeline(model="x8")


def test_cli_denoise_ends_equal_the_two_models(shipped, tmp_path, capsys):
    write_image(tmp_path / "in" / "a.png", 9, 11)
    outputs = {}
    for label, flags in {
        "clean": ["--model", "x4"],
        "real": ["--model", "x4-real"],
        "d0": ["--denoise", "0"],
        "d1": ["--denoise", "1"],
        "d05": ["--denoise", "0.5"],
    }.items():
        assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / label), *flags]) == 0
        outputs[label] = np.asarray(PIL.Image.open(tmp_path / label / "a.png"))
    assert outputs["clean"].shape == (36, 44, 3)
    assert np.array_equal(outputs["d0"], outputs["clean"])
    assert np.array_equal(outputs["d1"], outputs["real"])
    assert not np.array_equal(outputs["d05"], outputs["clean"]) and not np.array_equal(outputs["d05"], outputs["real"])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--denoise", "2"], "must be a number from 0 to 1, got 2"),
        (["--denoise", "nan"], "must be a number from 0 to 1, got nan"),
        (["--denoise", "0.5", "--scale", "2"], "--scale 2 has none"),
        (["--denoise", "0.5", "--model", "somewhere"], "leave --model out"),
    ],
)
def test_cli_denoise_errors(shipped, tmp_path, capsys, flags, message):
    write_image(tmp_path / "in.png", 8, 8)
    code = main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
