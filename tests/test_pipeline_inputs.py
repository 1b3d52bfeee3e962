"""
What `DeltaDiffPipeline.__call__` accepts: images with transparent pixels, arrays with alpha, uint8 tensors, step
counts and tile arguments, and the one-line `ValueError` (naming the argument or the shape) for what it does not.
"""

import numpy as np
import PIL.Image
import pytest
import torch

from diffusers_deltadiff.image_utils import to_unit_tensor
from diffusers_deltadiff.testing_utils import tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    pipe = tiny_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"tile_batch_size": -1}, "tile_batch_size"),
        ({"tile_batch_size": 0}, "tile_batch_size"),
        ({"tile_batch_size": 1.5}, "tile_batch_size"),
        ({"tile_overlap": -4}, "tile_overlap"),
        ({"tile_size": -1}, "tile_size"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
    ],
)
def test_bad_tile_arguments_in_the_api(pipe, kwargs, name):
    image = PIL.Image.fromarray((np.random.RandomState(0).rand(40, 40, 3) * 255).astype(np.uint8))
    with pytest.raises(ValueError, match=f"`{name}`"):
        pipe(image, **{"tile_size": 16, "tile_overlap": 4, **kwargs})


def test_api_scales_uint8_tensors_and_rejects_unscaled_floats(pipe):
    data = (np.random.RandomState(0).rand(8, 8, 3) * 255).astype(np.uint8)
    expected = to_unit_tensor(data)
    chw = torch.from_numpy(data).permute(2, 0, 1)
    torch.testing.assert_close(to_unit_tensor(chw), expected)
    out_array = pipe(data, output_type="pt").images
    out_tensor = pipe(chw, output_type="pt").images
    torch.testing.assert_close(out_tensor, out_array)
    for unscaled in (chw.float(), data.astype(np.float32), chw.float() / 127.5 - 1):
        with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
            pipe(unscaled)
    for bad in (float("nan"), float("inf")):
        broken = expected.clone()
        broken[0, 0, 0] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            pipe(broken)
        with pytest.raises(ValueError, match="NaN or infinite"):
            to_unit_tensor(broken.permute(1, 2, 0).numpy())
    # rounding noise around [0, 1] is not a different range
    torch.testing.assert_close(to_unit_tensor(expected * (1 + 1e-6)), expected.clamp(0, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("steps", [2.5, "2", True, np.float32(2)])
def test_num_inference_steps_must_be_an_integer(pipe, steps):
    with pytest.raises(ValueError, match="`num_inference_steps` must be a positive integer"):
        pipe(np.zeros((8, 8, 3), dtype=np.uint8), num_inference_steps=steps)


def test_numpy_integer_steps_are_fine(pipe):
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    out = pipe(image, num_inference_steps=np.int64(2), output_type="pt", return_intermediates=True)
    assert len(out.intermediate_images) == 2


@pytest.mark.parametrize("kind", ["rgba", "palette"])
def test_colour_under_transparent_pixels_does_not_bleed(pipe, kind):
    """A red square on transparent pixels holding green garbage upscales exactly like a plain red image."""
    red = np.zeros((12, 12, 3), np.uint8)
    red[...] = (255, 0, 0)
    garbage = red.copy()
    garbage[:, :6] = (0, 255, 0)
    alpha = np.full((12, 12), 255, np.uint8)
    alpha[:, :6] = 0
    if kind == "rgba":
        image = PIL.Image.fromarray(np.dstack([garbage, alpha]), "RGBA")
    else:
        image = PIL.Image.fromarray(garbage).quantize(2)  # a palette of red and green
        green = [i for i, c in enumerate(np.asarray(image.getpalette()).reshape(-1, 3)[:2]) if c[1] == 255][0]
        image.info["transparency"] = green
    clean = pipe(red, output_type="np").images
    np.testing.assert_array_equal(pipe(image, output_type="np").images, clean)


def test_array_with_alpha_is_filled_too(pipe):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 2] = 200
    rgba[..., 3] = 255
    clean = pipe(rgba[..., :3].copy(), output_type="np").images
    rgba[:4, :, 0] = 255  # garbage red ...
    rgba[:4, :, 3] = 0  # ... under transparent pixels
    np.testing.assert_array_equal(pipe(rgba, output_type="np").images, clean)


@pytest.mark.parametrize(
    "image, expected",
    [
        (np.zeros((0, 16, 3), np.uint8), "at least 1x1"),
        (np.zeros((8, 8, 0), np.uint8), "1 to 4 channels"),
        (torch.zeros(3, 0, 0), "at least 1x1"),
        (torch.zeros(1, 1, 3, 8, 8), "4 dimensions at most"),
        (torch.zeros(3, 8, 8, device="meta"), "meta device"),
        (PIL.Image.new("RGB", (0, 5)), "at least 1x1"),
    ],
)
def test_degenerate_inputs_are_value_errors_naming_the_shape(pipe, image, expected):
    with pytest.raises(ValueError, match=expected):
        pipe(image, output_type="np")


def _returning(value):
    return lambda pipeline, i, t, callback_kwargs: value(callback_kwargs["latents"])


@pytest.mark.parametrize(
    "callback, expected",
    [
        (_returning(lambda latents: None), "must return a dict"),
        (_returning(lambda latents: [latents]), "must return a dict"),
        (_returning(lambda latents: {"latents": None}), "a tensor of shape"),
        (_returning(lambda latents: {"latents": latents.numpy()}), "a tensor of shape"),
        (_returning(lambda latents: {"latents": latents[..., :2, :2]}), r"\(1, 3, 2, 2\)"),
        (_returning(lambda latents: {"latents": torch.cat([latents, latents])}), r"\(2, 3, 8, 8\)"),
        (5, "`callback_on_step_end` must be callable"),
    ],
)
def test_a_callback_s_return_value_is_checked(pipe, callback, expected):
    # before: `TypeError: argument of type 'NoneType' is not iterable`, an IndexError from the tiling, a torch
    # RuntimeError in `torch.cat`, or (not callable) a TypeError only after the first UNet call
    with pytest.raises(ValueError, match=expected) as error:
        pipe(np.zeros((8, 8, 3), np.uint8), callback_on_step_end=callback, output_type="np")
    assert "callback_on_step_end" in str(error.value)


def test_a_callback_s_latents_take_the_chain_s_dtype(pipe):
    image = np.random.RandomState(0).rand(8, 8, 3).astype(np.float32)
    expected = pipe(image, output_type="np").images
    as_float64 = _returning(lambda latents: {"latents": latents.double()})
    np.testing.assert_array_equal(pipe(image, callback_on_step_end=as_float64, output_type="np").images, expected)


@pytest.mark.parametrize("generator", [5, [5], "seed", [torch.Generator(), None]])
def test_a_generator_must_be_a_torch_generator(generator):
    # before: `AttributeError: 'int' object has no attribute 'device'` from diffusers' `randn_tensor`
    resshift = tiny_pipeline(seed=0, kappa=2.0)
    resshift.set_progress_bar_config(disable=True)
    images = [np.zeros((8, 8, 3), np.uint8)] * (len(generator) if isinstance(generator, list) else 1)
    with pytest.raises(TypeError, match="`generator` must be a `torch.Generator`"):
        resshift(images, generator=generator, output_type="np")


def test_big_endian_uint16_arrays_are_uint16(pipe):
    # 16-bit data read from big-endian files (PNM, FITS, raw `>u2`); before: "Unsupported array dtype >u2: use uint8
    # (0-255), uint16 (0-65535) or float in [0, 1]"
    data = (np.random.RandomState(0).rand(8, 8, 3) * 65535).astype(np.uint16)
    expected = pipe(data, output_type="np").images
    np.testing.assert_array_equal(pipe(data.astype(">u2"), output_type="np").images, expected)


@pytest.mark.parametrize("names", [None, "latents", 5])
def test_callback_tensor_inputs_must_be_a_list_of_names(pipe, names):
    # before: "'NoneType' object is not iterable", and "latents" was read as ['l', 'a', 't', 'e', 'n', 't', 's']
    with pytest.raises(ValueError, match="`callback_on_step_end_tensor_inputs` must be a list of names"):
        pipe(np.zeros((8, 8, 3), np.uint8), callback_on_step_end_tensor_inputs=names)


@pytest.mark.parametrize(
    "args, name",
    [
        (((40, 40), 2.5), "tile_size"),  # before: numpy's "'float' object cannot be interpreted as an integer"
        (((40, 40), True), "tile_size"),  # before: 602176 pixels, as tile_size=1
        (((40, 40), -1), "tile_size"),  # before: "The tile size must be positive" (no argument named)
        (((40, 40), 8, 2.5), "tile_context"),  # before: 5184.0, a float
        (((40, 40), 8, -1), "tile_context"),
        (((0, 40),), "size"),  # before: 0 pixels
        (((-40, 40),), "size"),  # before: 0 pixels
        (((40.5, 40),), "size"),
        (((40,),), "size"),  # before: IndexError
        ((40,), "size"),  # before: "'int' object is not subscriptable"
    ],
)
def test_unet_pixels_checks_its_arguments_as_a_call_does(pipe, args, name):
    with pytest.raises(ValueError, match=f"`{name}"):
        pipe.unet_pixels(*args)


def test_unet_pixels_takes_numpy_integers(pipe):
    assert pipe.unet_pixels((np.int64(40), 40), np.int64(8), np.int64(4)) == pipe.unet_pixels((40, 40), 8, 4)
