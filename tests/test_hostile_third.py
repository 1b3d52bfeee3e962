"""
The third hostile pass (issue 18): config values, images and metadata, names, temporary files, degenerate inputs.
Each case was reproduced first, then fixed; training's data-loss cases are in `test_training.py` and concurrent
calls in `test_pipeline.py`.
"""

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import write_image
from diffusers_deltadiff import DeltaDiffPipeline
from diffusers_deltadiff.cli import main
from diffusers_deltadiff.testing_utils import tiny_pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tiny_pipeline(seed=0).save_pretrained(path)
    return path


def edited_copy(model_dir: Path, tmp_path: Path, relative: str, key: str, value) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    config_path = folder / relative
    config = json.loads(config_path.read_text())
    config[key] = value
    config_path.write_text(json.dumps(config))  # NaN and Infinity are written as JSON's NaN / Infinity
    return folder


BAD_CONFIGS = [
    ("scheduler/scheduler_config.json", "kappa", math.nan),
    ("scheduler/scheduler_config.json", "kappa", math.inf),
    ("scheduler/scheduler_config.json", "power", -0.3),
    ("scheduler/scheduler_config.json", "num_train_timesteps", 4.5),
    ("scheduler/scheduler_config.json", "num_train_timesteps", 10_000_000),
    ("scheduler/scheduler_config.json", "eta_start", "0.01"),
    ("model_index.json", "tile_context", 2.5),
    ("model_index.json", "upscale_factor", 1_000_000),
    ("model_index.json", "upscale_factor", -4),
    ("unet/config.json", "layers_per_block", 1_000_000),
    ("unet/config.json", "block_out_channels", [32, 1e9]),
    # the next ring (a separate hostile pass): black images, tracebacks, hangs, a different model, huge allocations
    ("unet/config.json", "norm_eps", math.nan),
    ("unet/config.json", "mid_block_scale_factor", math.nan),
    ("unet/config.json", "norm_eps", "1e-5"),
    ("unet/config.json", "dropout", math.nan),
    ("unet/config.json", "downsample_padding", 1000),
    ("unet/config.json", "class_embed_type", "timestep"),
    ("unet/config.json", "num_class_embeds", 100_000_000),
    ("unet/config.json", "time_embedding_dim", 1_000_000_000),
    ("vqvae/config.json", "norm_type", "bogus"),
    ("vqvae/config.json", "num_vq_embeddings", 10_000_000_000),
]


@pytest.mark.parametrize("relative, key, value", BAD_CONFIGS)
def test_bad_config_values_are_one_line_errors_naming_file_and_key(model_dir, tmp_path, relative, key, value):
    folder = edited_copy(model_dir, tmp_path, relative, key, value)
    with pytest.raises(ValueError) as error:
        DeltaDiffPipeline.from_pretrained(folder)
    message = str(error.value)
    assert "\n" not in message and str(folder / relative) in message and f"`{key}`" in message


def test_bad_config_in_the_cli_gives_a_summary_not_a_traceback(model_dir, tmp_path, capsys):
    folder = edited_copy(model_dir, tmp_path, "scheduler/scheduler_config.json", "kappa", math.nan)
    image = write_image(tmp_path / "in" / "a.png", 8, 8)
    code = main(["upscale", str(image), "--model", str(folder), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "scheduler_config.json" in lines[0] and "`kappa`" in lines[0]
    assert not (tmp_path / "out" / "a.png").exists()


def test_scheduler_built_in_code_checks_its_values():
    from diffusers_deltadiff import DeltaShiftScheduler

    for kwargs in ({"kappa": math.nan}, {"power": -1.0}, {"num_train_timesteps": 4.5}, {"eta_end": math.inf}):
        with pytest.raises(ValueError):
            DeltaShiftScheduler(**kwargs)


# --- images and metadata ---------------------------------------------------------------------------------------------


def srgb_icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def as_colour_space(icc: bytes, space: bytes) -> bytes:
    """The profile with its header's colour space field (bytes 16-20) set to `space` (`b"CMYK"`)."""
    return icc[:16] + space + icc[20:]


@pytest.fixture(scope="module")
def pipe():
    pipe = tiny_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


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


def test_array_with_alpha_is_filled_too(pipe):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 2] = 200
    rgba[..., 3] = 255
    clean = pipe(rgba[..., :3].copy(), output_type="np").images
    rgba[:4, :, 0] = 255  # garbage red ...
    rgba[:4, :, 3] = 0  # ... under transparent pixels
    np.testing.assert_array_equal(pipe(rgba, output_type="np").images, clean)


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


# --- names, temporary files, signals ---------------------------------------------------------------------------------


def test_names_that_are_not_utf8_are_processed(tmp_path, capsys, model_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    raw = os.path.join(os.fsencode(folder), b"caf\xe9.png")  # Latin-1 bytes, not UTF-8
    write_image(Path(os.fsdecode(raw)), 8, 8)
    write_image(folder / "plain.png", 8, 8)
    code = main(["upscale", str(folder), "--model", str(model_dir), "-o", str(tmp_path / "out"), "-v"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(os.listdir(os.fsencode(tmp_path / "out"))) == [b"caf\xe9.png", b"plain.png"]
    assert "caf\\udce9.png" in captured.out or "caf\\xe9.png" in captured.out


def test_control_characters_in_names_cannot_forge_lines(tmp_path, capsys, model_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.png\nerror: all your files were deleted.png").write_bytes(b"not an image")
    code = main(["upscale", str(folder), "--model", str(model_dir), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert not any(line.startswith("error: all your files") for line in lines)
    assert any("x.png\\nerror: all your files were deleted.png" in line for line in lines)


def test_stale_temporary_files_are_removed_by_a_rerun(tmp_path, capsys, model_dir):
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".deltadiff-999999999-abcdef.tmp"  # a process that no longer exists
    old_style = out / ".deltadiff-0123456789ab.tmp"  # written by an older version
    alive = out / f".deltadiff-{os.getppid()}-abcdef.tmp"  # a live process's write in progress
    user = out / ".deltadiff-notes.txt"
    for path in (dead, old_style, alive, user):
        path.write_bytes(b"x" * 10)
    image = write_image(tmp_path / "a.png", 8, 8)
    assert main(["upscale", str(image), "--model", str(model_dir), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["a.png", alive.name, user.name])


def test_sigterm_during_a_write_leaves_no_temporary_file(tmp_path, capsys, model_dir, monkeypatch):
    import signal

    image = write_image(tmp_path / "a.png", 8, 8)
    original = PIL.Image.Image.save

    def save_then_terminate(self, fp, *args, **kwargs):
        original(self, fp, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the temporary file exists

    monkeypatch.setattr(PIL.Image.Image, "save", save_then_terminate)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = main(["upscale", str(image), "--model", str(model_dir), "-o", str(tmp_path / "out")])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 143 and "error: terminated" in capsys.readouterr().err
    assert (
        not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    )  # the folder it made is gone too


# --- degenerate inputs -----------------------------------------------------------------------------------------------


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
