"""
Image files in and out through `deltadiff upscale` (`image_io`): transparency, colour profiles, metadata an output
cannot carry, and bit depths Pillow reads narrower than stored, each kept, dropped with a warning, or said.
"""

import numpy as np
import PIL.Image
import pytest

from diffusers_deltadiff.cli import main
from diffusers_deltadiff.testing_utils import tiny_pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tiny_pipeline(seed=0).save_pretrained(path)
    return path


def srgb_icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def as_colour_space(icc: bytes, space: bytes) -> bytes:
    """The profile with its header's colour space field (bytes 16-20) set to `space` (`b"CMYK"`)."""
    return icc[:16] + space + icc[20:]


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_transparent_colour_key_keeps_its_transparency(tmp_path, capsys, model_dir, mode):
    """PNG's tRNS colour key on RGB and gray images: the output keeps the alpha it implies."""
    array = np.full((8, 8, 3) if mode == "RGB" else (8, 8), 200, np.uint8)
    array[:4] = 10
    source = tmp_path / f"key_{mode}.png"
    PIL.Image.fromarray(array, mode).save(source, transparency=(10, 10, 10) if mode == "RGB" else 10)
    assert main(["upscale", str(source), "--model", str(model_dir), "-o", str(tmp_path / "out.png")]) == 0
    with PIL.Image.open(tmp_path / "out.png") as out:
        assert out.mode == ("RGBA" if mode == "RGB" else "LA")
        alpha = np.asarray(out.getchannel("A"))
    assert alpha[:12].max() == 0 and alpha[20:].min() == 255  # hidden rows stay hidden, visible ones opaque


def test_profiles_that_do_not_fit_the_output_are_dropped(tmp_path, capsys, model_dir):
    cmyk = PIL.Image.new("CMYK", (8, 8), (0, 200, 200, 0))
    source = tmp_path / "in" / "cmyk.jpg"
    source.parent.mkdir()
    cmyk.save(source, icc_profile=as_colour_space(srgb_icc(), b"CMYK"))
    rgb_with_rgb_profile, profile = tmp_path / "in" / "rgb.png", srgb_icc()
    PIL.Image.new("RGB", (8, 8), (10, 200, 30)).save(rgb_with_rgb_profile, icc_profile=profile)
    code = main(["upscale", str(tmp_path / "in"), "--model", str(model_dir), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    with PIL.Image.open(tmp_path / "out" / "cmyk.jpg") as out:
        out.load()
        assert out.mode == "RGB" and "icc_profile" not in out.info
    with PIL.Image.open(tmp_path / "out" / "rgb.png") as out:
        assert out.info.get("icc_profile") == profile  # a profile that fits is kept


def test_metadata_an_output_cannot_carry_is_dropped_and_the_file_reads_back(tmp_path, capsys, model_dir):
    """EXIF larger than a JPEG segment (kept by a PNG input): the JPEG output drops it with a warning and re-opens."""
    exif = b"Exif\x00\x00" + b"II*\x00\x08\x00\x00\x00\x00\x00" + bytes(70_000)
    source = tmp_path / "big_exif.png"
    PIL.Image.new("RGB", (8, 8), (30, 60, 90)).save(source, exif=exif)
    assert len(PIL.Image.open(source).info["exif"]) > 65_533
    code = main(["upscale", str(source), "--model", str(model_dir), "-o", str(tmp_path / "out.jpg")])
    err = capsys.readouterr().err
    assert code == 0 and "metadata (exif) made an unreadable file: dropped" in err
    with PIL.Image.open(tmp_path / "out.jpg") as out:
        out.load()
        assert out.size == (32, 32) and "exif" not in out.info


def test_sixteen_bit_colour_is_not_dropped_silently(tmp_path, capsys, model_dir):
    """Pillow reads 48-bit PNGs as 8-bit RGB: say so (the PNG is written by hand: Pillow cannot write one)."""
    import struct
    import zlib

    height, width = 4, 6
    rows = b"".join(b"\0" + np.arange(width * 3, dtype=">u2").tobytes() * 1 for _ in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    source = tmp_path / "deep.png"
    source.write_bytes(png)
    code = main(["upscale", str(source), "--model", str(model_dir), "-o", str(tmp_path / "out.png")])
    err = capsys.readouterr().err
    assert code == 0 and "16 bits per colour channel, read as 8 bits" in err


def test_png_compression_changes_the_file_not_the_pixels(tmp_path, capsys, model_dir):
    """`--png-compression 0` (stored) and `9`: the same pixels as the default (1); the file sizes in zlib's order."""
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 255, 24 * 24 * 3).reshape(24, 24, 3)
    PIL.Image.fromarray((smooth + rng.integers(0, 3, smooth.shape)).astype(np.uint8)).save(tmp_path / "in.png")
    pixels, sizes = {}, {}
    for level in (None, "0", "9"):
        out = tmp_path / f"out_{level}.png"
        flags = [] if level is None else ["--png-compression", level]
        assert main(["upscale", str(tmp_path / "in.png"), "--model", str(model_dir), "-o", str(out), *flags]) == 0
        with PIL.Image.open(out) as image:
            pixels[level] = np.asarray(image)
        sizes[level] = out.stat().st_size
    assert np.array_equal(pixels[None], pixels["0"]) and np.array_equal(pixels[None], pixels["9"])
    assert sizes["0"] > sizes[None] > sizes["9"]  # 0 stores (3 bytes a pixel and more), 1 compresses, 9 the most
    assert sizes["0"] >= pixels["0"].size


@pytest.mark.parametrize("level", ["10", "-1", "fast"])
def test_png_compression_out_of_range_is_a_flag_error(tmp_path, capsys, model_dir, level):
    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "in.png"), "--model", str(model_dir), "--png-compression", level]) == 2
    assert "--png-compression" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "in.png"]
