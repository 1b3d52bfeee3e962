"""Any output size (`--outscale`, `--width`, `--height`; `outscale.upscale`): the model of the nearest factor at or
above, then an antialiased resize to exactly the size asked for."""

import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest
import torch

from conftest import shipped_model_dir, write_image
from diffusers_deltadiff.cli import main
from diffusers_deltadiff.outscale import model_factor, resize_output, target_size, upscale
from diffusers_deltadiff.pretrained import load_default_pipeline
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "size,kwargs,expected",
    [
        ((37, 23), {"outscale": 3}, (111, 69)),
        ((37, 23), {"outscale": 1.5}, (56, 34)),  # 55.5 and 34.5 rounded half to even
        ((37, 23), {"outscale": 0.01}, (1, 1)),
        ((50, 20), {"width": 125}, (125, 50)),
        ((50, 20), {"height": 30}, (75, 30)),
        ((50, 20), {"width": 64, "height": 64}, (64, 64)),
    ],
)
def test_target_size(size, kwargs, expected):
    assert target_size(size, **kwargs) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"outscale": 0},
        {"outscale": float("nan")},
        {"outscale": 2, "width": 9},
        {"outscale": True},  # a flag, not a factor of 1
        {"width": True},
        {"outscale": 1e308},  # 10 x 1e308 overflows to inf
        {"outscale": 1e30},  # finite, but no image has 1e31 pixels on a side
        {"width": 10**40},
    ],
)
def test_target_size_refuses(kwargs):
    with pytest.raises(ValueError):
        target_size((10, 10), **kwargs)


def test_model_factor_is_the_nearest_at_or_above():
    assert [model_factor(x, [2, 4]) for x in (0.5, 1.5, 2, 2.01, 3, 4, 6)] == [2, 2, 2, 4, 4, 4, 4]
    assert model_factor(1.5, [4]) == 4


def test_resize_output_keeps_the_kind():
    pil = PIL.Image.new("RGB", (20, 12), (200, 10, 30))
    assert resize_output(pil, (15, 9)).size == (15, 9)
    tensor = torch.full((3, 12, 20), 0.5)
    assert resize_output(tensor, (15, 9)).shape == (3, 9, 15)
    assert float((resize_output(tensor, (15, 9)) - 0.5).abs().max()) < 1e-6  # flat stays flat
    array = np.full((12, 20, 3), 0.25, np.float32)
    assert resize_output(array, (30, 18)).shape == (18, 30, 3)


def test_outscale_3_on_37x23_gives_111x69(tmp_path, capsys):
    source = write_image(tmp_path / "in.png", 23, 37)
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "out.png", "--outscale", 3, "--backend", "torch")
    assert code == 0, err
    with PIL.Image.open(tmp_path / "out.png") as out:
        assert out.size == (111, 69)
        got = np.asarray(out.convert("RGB"))
    # the x4 model (the nearest factor at or above 3), then Lanczos down to 3x
    pipe = load_default_pipeline(scale=4)
    pipe.set_progress_bar_config(disable=True)
    with PIL.Image.open(source) as image:
        expected = np.asarray(pipe(image).images[0].resize((111, 69), PIL.Image.LANCZOS))
    assert np.array_equal(got, expected)


def test_outscale_below_2_runs_the_x2_model(tmp_path, capsys):
    shipped_model_dir(2)
    source = write_image(tmp_path / "in.png", 10, 14)
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "out.png", "--outscale", 1.5, "--backend", "torch")
    assert code == 0, err
    pipe = load_default_pipeline(scale=2)
    pipe.set_progress_bar_config(disable=True)
    with PIL.Image.open(source) as image:
        expected = np.asarray(pipe(image).images[0].resize((21, 15), PIL.Image.LANCZOS))
    with PIL.Image.open(tmp_path / "out.png") as out:
        assert np.array_equal(np.asarray(out), expected)


@pytest.mark.parametrize(
    "mode,flags,size", [("RGBA", ["--width", 50], (50, 31)), ("I;16", ["--height", 40], (64, 40))]
)
def test_alpha_and_16_bit_keep_their_kind(tmp_path, capsys, mode, flags, size):
    source = write_image(tmp_path / "in.png", 10, 16, mode=mode)
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "out.png", *flags)
    assert code == 0, err
    with PIL.Image.open(tmp_path / "out.png") as out:
        assert out.size == size
        assert out.mode == ("RGBA" if mode == "RGBA" else "I;16")


@pytest.mark.parametrize(
    "flags", [["--outscale", "0"], ["--outscale", "nan"], ["--outscale", "3", "--width", "9"], ["--width", "0"]]
)
def test_bad_size_flags_are_refused_before_anything(tmp_path, capsys, flags):
    source = write_image(tmp_path / "in.png", 8, 8)
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "out", *flags)
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_size_too_large_fails_the_input_before_the_model_runs(tmp_path, capsys, monkeypatch):
    """`--outscale 1e30` is finite, so the flag parser takes it; each input fails at once, with its name, and the
    model never runs (it would upscale for nothing); nothing is written."""
    from diffusers_deltadiff import DeltaDiffPipeline

    def refuse(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(DeltaDiffPipeline, "__call__", refuse)
    folder = tmp_path / "in"
    folder.mkdir()
    sources = [write_image(folder / f"{name}.png", 8, 8) for name in ("a", "b")]
    code, _, err = run(capsys, "upscale", folder, "-o", tmp_path / "out", "--outscale", "1e30", "--backend", "torch")
    assert code == 1
    lines = err.strip().splitlines()
    for source in sources:
        assert any(str(source) in line and "too large" in line for line in lines), err
    assert not any((tmp_path / "out").glob("*.png"))


def test_python_api(tmp_path):
    image = PIL.Image.open(write_image(tmp_path / "in.png", 23, 37))
    assert upscale(image, 3).size == (111, 69)
    array = np.asarray(image, dtype=np.float32) / 255
    out = upscale(array, width=74, output_type="np")  # exactly 2x: the x2 model's own output, not resized
    assert out.shape == (46, 74, 3)
    if shipped_model_dir(2):
        pipe = load_default_pipeline(scale=2)
        pipe.set_progress_bar_config(disable=True)
        np.testing.assert_array_equal(out, pipe(array, output_type="np").images[0])


@pytest.mark.parametrize("orientation", [6, 8])
@pytest.mark.parametrize("flag,expected", [("--width", (20, 15)), ("--height", (16, 12))])
def test_width_and_height_are_the_shown_ones_of_an_exif_rotated_jpeg(tmp_path, capsys, orientation, flag, expected):
    """A camera JPEG stored 9 wide and 12 tall with an EXIF orientation that turns it is shown 12 x 9; the output
    keeps the stored orientation and the tag. Before: `--width 20` sized the stored width, so the result was shown
    27 x 20."""
    exif = PIL.Image.Exif()
    exif[0x0112] = orientation
    source = write_image(tmp_path / "in.jpg", 12, 9, exif=exif, quality=95)
    value = expected[0] if flag == "--width" else expected[1]
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "out.jpg", flag, value, "--backend", "torch")
    assert code == 0, err
    with PIL.Image.open(tmp_path / "out.jpg") as out:
        assert out.getexif()[0x0112] == orientation
        assert PIL.ImageOps.exif_transpose(out).size == expected


def test_python_api_numpy_batch_of_one_numbers_and_output_types(tmp_path):
    """Before: a `(1, H, W, 3)` array was read as 1 pixel tall and H wide (a 3 x 30 result for a 10 x 12 image), NumPy
    integers and floats were "not a positive number", and `output_type="latent"` resized the latent as if an image."""
    pipe = tiny_lossless_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    array = np.random.default_rng(0).random((10, 12, 3), dtype=np.float32)
    one = upscale(array, 3, pipe=pipe, output_type="np")
    assert one.shape == (30, 36, 3)
    np.testing.assert_array_equal(upscale(array[None], 3, pipe=pipe, output_type="np"), one)
    np.testing.assert_array_equal(upscale(array, np.float32(3), pipe=pipe, output_type="np"), one)
    np.testing.assert_array_equal(upscale(array, width=np.int64(36), pipe=pipe, output_type="np"), one)
    assert target_size((12, 10), height=np.uint16(5)) == (6, 5)
    assert target_size((100, 50), np.int8(3)) == (300, 150)  # not wrapped around in 8 bits
    with pytest.raises(ValueError, match="output_type"):
        upscale(array, 3, pipe=pipe, output_type="latent")
    with pytest.raises(ValueError, match="one image"):
        upscale(np.stack([array, array]), 3, pipe=pipe, output_type="np")
    with pytest.raises(ValueError, match="one image"):
        upscale(torch.rand(2, 3, 10, 12), 3, pipe=pipe, output_type="pt")


def test_a_result_too_large_for_memory_fails_that_input_only(tmp_path, capsys, monkeypatch):
    """Before: `--width 2147483647` on a 1 x 1 image (a size any image can have, not the memory) ended the run with
    Pillow's `MemoryError` traceback, the other inputs not processed. Pillow's allocation failure is made to happen
    for the first input's result only."""
    folder = tmp_path / "in"
    for name in ("a", "b"):
        write_image(folder / f"{name}.png", 8, 8)
    resize, failed = PIL.Image.Image.resize, []

    def resize_once_out_of_memory(self, size, *args, **kwargs):
        if tuple(size) == (40, 40) and not failed:
            failed.append(size)
            raise MemoryError
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(PIL.Image.Image, "resize", resize_once_out_of_memory)
    code, _, err = run(capsys, "upscale", folder, "-o", tmp_path / "out", "--width", 40, "--backend", "torch")
    assert code == 1 and failed
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder / 'a.png'}: ") and "memory" in lines[0], err
    assert not (tmp_path / "out" / "a.png").exists()
    with PIL.Image.open(tmp_path / "out" / "b.png") as out:
        assert out.size == (40, 40)
