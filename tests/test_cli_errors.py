"""
The `deltadiff` command line on bad inputs, flags and files: every case that once lost a file, gave a wrong image with
exit status 0, hung or ended in a traceback, one test each, then later cases recorded as a table (`SECOND_PASS`), and
file names, temporary files and signals.

The rules checked throughout: a bad input gives one line `error: <path>: <problem>` and a non-zero exit while the
other files are still processed; a bad flag gives one line naming the flag and exit status 2 before the model loads,
leaving no output folder; no existing file is replaced without `--overwrite`, and no input is replaced at all.
"""

import logging
import os
import re
import stat
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import write_image
from diffusers_deltadiff.cli import main
from diffusers_deltadiff.evaluation import SSIM_WINDOW, load_pairs, min_hr_size
from diffusers_deltadiff.image_utils import to_unit_tensor
from diffusers_deltadiff.metrics import ssim_y
from diffusers_deltadiff.testing_utils import tiny_pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tiny_pipeline(seed=0).save_pretrained(path)
    return path


def write(path: Path, height=8, width=8, seed=0, fmt=None) -> Path:
    return write_image(path, height, width, seed=seed, format=fmt)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(err: str) -> list[str]:
    lines = err.strip().splitlines()
    assert all(line.startswith(("error: ", "warning: ")) for line in lines), err  # no traceback, no progress bar
    return [line for line in lines if line.startswith("error: ")]


def png_declaring(width: int, height: int) -> bytes:
    """A PNG header declaring `width` x `height` pixels (no pixel data): a decompression bomb for the size check."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------------------------
# Files lost or wrong output, exit status 0


def test_save_steps_never_replaces_an_existing_steps_file(tmp_path, model_dir, capsys):
    source = write(tmp_path / "a.png")
    steps = tmp_path / "out" / "a_steps.png"
    steps.parent.mkdir()
    steps.write_bytes(b"an original, not a result")
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "out", "--model", model_dir, "--save-steps")
    assert code == 1
    assert error_lines(err) == [f"error: {steps}: already exists (pass --overwrite to replace it)"]
    assert steps.read_bytes() == b"an original, not a result"
    assert not (tmp_path / "out" / "a.png").exists()  # the input is skipped as a whole
    code, _, err = run(
        capsys, "upscale", source, "-o", tmp_path / "out", "--model", model_dir, "--save-steps", "--overwrite"
    )
    assert code == 0, err
    assert PIL.Image.open(steps).size == (5 * 32, 32)


def test_same_name_from_two_folders_is_not_lost(tmp_path, model_dir, capsys):
    first, second = write(tmp_path / "x" / "a.png", seed=1), write(tmp_path / "y" / "a.png", seed=2)
    for flags in ([], ["--overwrite"]):
        out = tmp_path / f"out{len(flags)}"
        code, stdout, err = run(capsys, "upscale", first, second, "-o", out, "--model", model_dir, *flags)
        assert code == 1
        assert error_lines(err) == [
            f"error: {second}: its output {out / 'a.png'} is also the output of {first} "
            "(same name: upscale them into separate folders)"
        ]
        assert "1 image(s) upscaled" in stdout and "1 error(s)" in stdout
        reference = run(capsys, "upscale", first, "-o", tmp_path / f"ref{len(flags)}", "--model", model_dir)
        assert reference[0] == 0
        expected = np.asarray(PIL.Image.open(tmp_path / f"ref{len(flags)}" / "a.png"))
        np.testing.assert_array_equal(np.asarray(PIL.Image.open(out / "a.png")), expected)  # the first input's


def test_output_replacing_another_input_is_refused_before_anything_is_written(tmp_path, model_dir, capsys):
    folder = tmp_path / "photos"
    write(folder / "a.jpg", seed=1)
    original = write(folder / "a.png", seed=2).read_bytes()
    before = sorted(p.name for p in folder.iterdir())
    code, _, err = run(capsys, "upscale", folder, "-o", folder, "--format", "png", "--overwrite", "--model", model_dir)
    assert code == 1
    assert sorted(error_lines(err)) == [
        f"error: {folder / 'a.jpg'}: the output {folder / 'a.png'} would replace the input {folder / 'a.png'}",
        f"error: {folder / 'a.png'}: the output {folder / 'a.png'} would replace the input {folder / 'a.png'}",
    ]
    assert (folder / "a.png").read_bytes() == original
    assert sorted(p.name for p in folder.iterdir()) == before


def test_outputs_are_not_taken_as_inputs_on_a_rerun(tmp_path, model_dir, capsys):
    tree = tmp_path / "tree"
    write(tree / "a.png")
    for flags in ([], ["--overwrite"]):
        code, out, err = run(capsys, "upscale", tree, "-o", tree / "up", "--model", model_dir, *flags)
        assert code == 0, err
        assert "1 image(s) upscaled" in out
    assert not (tree / "up" / "up").exists()
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*.png")) == ["a.png", "up/a.png"]
    assert PIL.Image.open(tree / "up" / "a.png").size == (32, 32)  # not upscaled twice
    assert "1 file(s) in the output folder are not taken as inputs" in err


@pytest.mark.parametrize(
    "flags, name",
    [
        (["--batch-size", "-2"], "--batch-size"),
        (["--batch-size", "0"], "--batch-size"),
        (["--tile-overlap", "-4"], "--tile-overlap"),
        (["--tile-size", "-1"], "--tile-size"),
        (["--steps", "0"], "--steps"),
        (["--steps", "-1"], "--steps"),
        (["--steps", "99"], "--steps"),  # more than the model's chain: known once the model is loaded
        (["--batch-size", "two"], "--batch-size"),
    ],
)
def test_bad_tile_and_step_flags_exit_2_with_the_flags_name(tmp_path, model_dir, capsys, flags, name):
    source = write(tmp_path / "a.png", 40, 40)
    out = tmp_path / "out"
    tiles = ["--tile-size", "16", "--tile-overlap", "4"]
    code, _, err = run(capsys, "upscale", source, "-o", out, "--model", model_dir, *tiles, *flags)
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1 and name in lines[0], err
    assert not out.exists()


def test_output_file_name_must_match_the_format(tmp_path, model_dir, capsys):
    source = write(tmp_path / "a.png")
    code, _, err = run(
        capsys, "upscale", source, "-o", tmp_path / "result.jpg", "--format", "png", "--model", model_dir
    )
    assert code == 2 and "--format png" in err and len(error_lines(err)) == 1
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "r.tiff", "--model", model_dir)
    assert code == 2 and "cannot write .tiff files" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no result.jpg, no folder r.tiff
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "result.jpg", "--model", model_dir)
    assert code == 0, err
    assert PIL.Image.open(tmp_path / "result.jpg").format == "JPEG"


def test_float32_tiff_is_read_in_unit_range_and_stays_gray(tmp_path, model_dir, capsys):
    rows, cols = np.mgrid[0:8, 0:8]
    values = ((rows + cols) / 14).astype(np.float32)
    PIL.Image.fromarray(values).save(tmp_path / "f32.tif")
    image = PIL.Image.open(tmp_path / "f32.tif")
    assert image.mode == "F"
    tensor = to_unit_tensor(image)
    for channel in tensor:
        np.testing.assert_allclose(channel.numpy(), values, atol=1e-6)
    code, _, err = run(capsys, "upscale", tmp_path / "f32.tif", "-o", tmp_path / "out", "--model", model_dir)
    assert code == 0, err
    out = PIL.Image.open(tmp_path / "out" / "f32.png")
    assert out.mode.startswith("I") and out.size == (32, 32)  # gray, 16-bit
    PIL.Image.fromarray(values * 255).save(tmp_path / "f255.tif")
    code, _, err = run(capsys, "upscale", tmp_path / "f255.tif", "-o", tmp_path / "out", "--model", model_dir)
    assert code == 1 and error_lines(err)[0].startswith(f"error: {tmp_path / 'f255.tif'}: Float images must be in")


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_honour_the_umask(tmp_path, model_dir, capsys, umask):
    source = write(tmp_path / "a.png")
    previous = os.umask(umask)
    try:
        code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "out", "--model", model_dir, "--save-steps")
    finally:
        os.umask(previous)
    assert code == 0, err
    for name in ("a.png", "a_steps.png"):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o666 & ~umask


def test_animated_gif_says_only_the_first_frame_is_used(tmp_path, model_dir, capsys):
    rng = np.random.RandomState(0)
    frames = [PIL.Image.fromarray((rng.rand(8, 8, 3) * 255).astype(np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    code, _, err = run(capsys, "upscale", tmp_path / "anim.gif", "-o", tmp_path / "out", "--model", model_dir)
    assert code == 0, err
    assert f"warning: {tmp_path / 'anim.gif'}: 3 frames, only the first one is upscaled" in err.splitlines()
    assert PIL.Image.open(tmp_path / "out" / "anim.png").size == (32, 32)


def test_glob_through_a_symlink_loop_terminates(tmp_path, model_dir, capsys):
    loop = tmp_path / "loop"
    write(loop / "a.png")
    (loop / "self").symlink_to("../loop")
    code, out, err = run(capsys, "upscale", f"{loop}/**/*.png", "-o", tmp_path / "out", "--model", model_dir)
    assert code == 0, err
    assert "1 image(s) upscaled" in out and error_lines(err) == []


def test_glob_through_two_symlink_loops_does_not_hang(tmp_path):
    loop = tmp_path / "loop"
    write(loop / "a.png")
    (loop / "self").symlink_to("../loop")
    (loop / "again").symlink_to("../loop")  # 2^40 paths before the symlinks give ELOOP: a hang when followed
    script = "import sys; from diffusers_deltadiff.cli.paths import collect_inputs; print(len(collect_inputs(sys.argv[1:])[0]))"
    result = subprocess.run(
        [sys.executable, "-c", script, f"{loop}/**/*.png"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def test_decompression_bomb_is_one_line_and_others_still_run(tmp_path, model_dir, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a_bomb.png").write_bytes(png_declaring(30000, 30000))
    write(tmp_path / "in" / "b.png")
    code, out, err = run(capsys, "upscale", tmp_path / "in", "-o", tmp_path / "out", "--model", model_dir)
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'in' / 'a_bomb.png'}: image too large (")
    assert "--max-pixels" in lines[0]
    assert (tmp_path / "out" / "b.png").is_file()
    # the documented way to allow (or forbid) large images on purpose
    source = write(tmp_path / "20x20.png", 20, 20)
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "o1", "--model", model_dir, "--max-pixels", 399)
    assert code == 1 and "image too large (400 pixels, more than --max-pixels 399)" in err
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "o2", "--model", model_dir, "--max-pixels", 400)
    assert code == 0, err
    limit = PIL.Image.MAX_IMAGE_PIXELS
    PIL.Image.MAX_IMAGE_PIXELS = 100  # the flag, not Pillow's global, decides; and the global is left as it was
    try:
        code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "o3", "--model", model_dir, "--max-pixels", 0)
        assert code == 0, err
        assert PIL.Image.MAX_IMAGE_PIXELS == 100
    finally:
        PIL.Image.MAX_IMAGE_PIXELS = limit


# ---------------------------------------------------------------------------------------------------------------
# Tracebacks instead of one-line errors (evaluate, ablate)


def test_evaluate_skips_images_too_small_to_score(tmp_path, model_dir, capsys):
    for name, size in [("good1", 32), ("good2", 40), ("tiny", 3), ("small", 12)]:
        write(tmp_path / "hr" / f"{name}.png", size, size)
    code, out, err = run(
        capsys, "evaluate", "--hr", tmp_path / "hr", "--model", model_dir, "--no-lpips", "--output", tmp_path / "e"
    )
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 2
    assert lines[0].startswith(f"error: {tmp_path / 'hr' / 'small.png'}: too small to score: 12x12")
    assert lines[1].startswith(f"error: {tmp_path / 'hr' / 'tiny.png'}: too small to score: 0x0")
    rows = (tmp_path / "e" / "per_image.csv").read_text().strip().splitlines()[1:]
    assert sorted({row.split(",")[0] for row in rows}) == ["good1.png", "good2.png"]
    assert "| bicubic | 2 |" in out


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_min_hr_size_is_what_ssim_needs(scale):
    """The size limit is scikit-image's, not a guess: the smallest allowed size scores, one step less does not."""
    size = min_hr_size(scale)
    assert size % scale == 0
    image = torch.rand(3, size, size)
    assert ssim_y(image, image, scale).item() == pytest.approx(1.0)
    smaller = size - scale
    if smaller - 2 * scale < SSIM_WINDOW:
        with pytest.raises(ValueError, match="win_size"):
            ssim_y(image[:, :smaller, :smaller], image[:, :smaller, :smaller], scale)


@pytest.mark.parametrize("scale", ["0", "-1"])
def test_evaluate_scale_must_be_positive(tmp_path, model_dir, capsys, scale):
    write(tmp_path / "hr" / "a.png", 32, 32)
    out = tmp_path / "e"
    code, _, err = run(
        capsys, "evaluate", "--hr", tmp_path / "hr", "--model", model_dir, "--scale", scale, "--output", out
    )
    assert code == 2
    assert error_lines(err) == [
        f"error: argument --scale: must be at least 1, got {scale} (see `deltadiff evaluate --help`)"
    ]
    assert not out.exists()
    with pytest.raises(ValueError, match="scale"):
        load_pairs(str(tmp_path / "hr"), 0, None, None, "bicubic", 0)


@pytest.mark.parametrize(
    "flags, name",
    [
        (["--eta-start", "0.5", "--eta-end", "0.1"], "--eta-start 0.5 is larger than --eta-end 0.1"),
        (["--eta-start", "0.01,0.5", "--eta-end", "0.4,0.99"], "--eta-start 0.5 is larger than --eta-end 0.4"),
        (["--eta-start", "0"], "argument --eta-start"),
        (["--eta-end", "1.5"], "argument --eta-end"),
        (["--eta-end", "nan"], "argument --eta-end"),
        (["--steps", "0"], "argument --steps"),
        (["--steps", "1.5"], "argument --steps"),
        (["--steps", "1,2,1"], "argument --steps: 1 is given twice"),  # before: run twice, two rows
        (["--eta-start", "0.5,0.50"], "argument --eta-start: 0.5 is given twice"),
        (["--model", ""], "argument --model: must not be empty"),  # before: ': not a pipeline folder'
    ],
)
def test_ablate_schedule_flags(tmp_path, model_dir, capsys, flags, name):
    write(tmp_path / "hr" / "a.png", 32, 32)
    code, _, err = run(capsys, "ablate", "--hr", tmp_path / "hr", "--model", model_dir, *flags)
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1 and name in lines[0], err


# ---------------------------------------------------------------------------------------------------------------
# Smaller


def test_longest_legal_file_name(tmp_path, model_dir, capsys):
    source = write(tmp_path / ("a" * 240 + ".png"))
    assert len(source.name) == 244
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "out", "--model", model_dir, "--save-steps")
    assert code == 0, err
    assert sorted(len(p.name) for p in (tmp_path / "out").iterdir()) == [244, 250]
    too_long = write(tmp_path / ("b" * 250 + ".png"))  # its `_steps` name would pass the file system's limit
    code, _, err = run(capsys, "upscale", too_long, "-o", tmp_path / "out2", "--model", model_dir, "--save-steps")
    assert code == 1 and "too long for this file system" in err
    assert not (tmp_path / "out2").exists()


def test_names_too_long_to_exist_are_one_line_each(tmp_path, model_dir, capsys, monkeypatch):
    """Before: `Path.is_dir` / `exists` raised `File name too long` (an input named so, `-o` as a file named so, `-o`
    deeper than the longest path): a traceback, and the run's other inputs were not upscaled."""
    monkeypatch.chdir(tmp_path)
    source = write(tmp_path / "a.png")
    code, _, err = run(capsys, "upscale", source, "c" * 300 + ".png", "-o", "out", "--model", model_dir)
    assert code == 1 and error_lines(err) == [f"error: {'c' * 300}.png: no such file or folder"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]  # the other input still ran
    code, _, err = run(capsys, "upscale", source, "-o", "a" * 300 + ".png", "--model", model_dir)
    assert code == 1 and error_lines(err) == [
        f"error: {source}: the output name {'a' * 300}.png is too long for this file system"
    ]
    deep = "d/" * 2100 + "x.png"  # 4,205 characters: longer than any path Linux takes
    code, _, err = run(capsys, "upscale", source, "-o", deep, "--model", model_dir)
    assert code == 2 and len(error_lines(err)) == 1 and "(File name too long)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "out"]  # nothing else made


@pytest.mark.parametrize("quality", ["500", "-5", "101"])
def test_quality_range(tmp_path, model_dir, capsys, quality):
    source = write(tmp_path / "a.png")
    code, _, err = run(
        capsys,
        "upscale",
        source,
        "-o",
        tmp_path / "out",
        "--format",
        "jpg",
        "--quality",
        quality,
        "--model",
        model_dir,
    )
    assert code == 2
    assert error_lines(err) == [
        f"error: argument --quality: must be between 0 and 100, got {quality} (see `deltadiff upscale --help`)"
    ]
    assert not (tmp_path / "out").exists()


def test_device_file_is_not_reported_missing(tmp_path, model_dir, capsys):
    good = write(tmp_path / "a.png")
    code, out, err = run(capsys, "upscale", "/dev/zero", good, "-o", tmp_path / "out", "--model", model_dir)
    assert code == 1
    assert error_lines(err) == ["error: /dev/zero: not a regular file (a device, pipe or socket)"]
    assert (tmp_path / "out" / "a.png").is_file()


def test_fp16_on_cpu_is_warned_once(tmp_path, model_dir, capsys):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    diffusers_logger = logging.getLogger("diffusers")
    diffusers_logger.addHandler(handler)
    try:
        code, _, err = run(
            capsys, "upscale", write(tmp_path / "a.png"), "-o", tmp_path / "out", "--model", model_dir,
            "--dtype", "fp16", "--device", "cpu",
        )  # fmt: skip
    finally:
        diffusers_logger.removeHandler(handler)
    assert code == 0, err
    messages = [r.getMessage() for r in records] + err.splitlines()
    assert len([m for m in messages if "fp16" in m or "float16" in m]) == 1, messages
    assert err.count("warning: --dtype fp16 on the CPU") == 1


@pytest.mark.parametrize("command", ["upscale", "evaluate", "ablate"])
def test_empty_output_is_refused(tmp_path, model_dir, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "in.png", 32, 32)
    write(tmp_path / "hr" / "a.png", 32, 32)
    inputs = ["in.png"] if command == "upscale" else ["--hr", "hr"]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    code, _, err = run(capsys, command, *inputs, "--output", "", "--model", model_dir)
    assert code == 2
    assert error_lines(err)[0].startswith("error: argument ")
    assert "must not be empty" in err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_piped_stderr_holds_only_the_error_lines(tmp_path, model_dir):
    good = write(tmp_path / "a.png")
    result = subprocess.run(
        [sys.executable, "-m", "diffusers_deltadiff.cli", "upscale", str(good), str(tmp_path / "missing.png"),
         "-o", str(tmp_path / "out"), "--model", str(model_dir)],
        capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path / 'missing.png'}: no such file or folder\n"
    assert "1 image(s) upscaled" in result.stdout


# ---------------------------------------------------------------------------------------------------------------
# Later cases, one row each. `{tmp}` and `{model}` are filled in; `unchanged` files must keep
# their bytes; every stderr line must be an `error:` or `warning:` line.


def mkfifo(path: Path):
    os.mkfifo(path)


@dataclass
class Case:
    name: str
    argv: list[str]
    code: int
    setup: dict[str, str | Callable] = field(default_factory=dict)  # path -> "image", "jpeg", bytes text, callable
    err: str | None = None  # a regular expression every run must find in stderr
    exists: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    out: str | None = None  # a substring of stdout
    interrupt_after: int | None = None  # Ctrl-C on this many-th image save


UP = ["upscale", "--model", "{model}"]

SECOND_PASS = [
    Case("same file twice", UP + ["{tmp}/a.png", "{tmp}/a.png", "-o", "{tmp}/out"], 0,
         setup={"a.png": "image"}, exists=["out/a.png"], out="1 image(s) upscaled"),
    Case("same file by two spellings", UP + ["{tmp}/a.png", "{tmp}/sub/../a.png", "-o", "{tmp}/out"], 0,
         setup={"a.png": "image", "sub/keep.txt": "x"}, exists=["out/a.png"], out="1 image(s) upscaled"),
    Case("file name -o with two inputs", UP + ["{tmp}/a.png", "{tmp}/b.png", "-o", "{tmp}/out.png"], 2,
         setup={"a.png": "image", "b.png": "image"}, err=r"-o .*out\.png: a file name, but there are 2 inputs",
         absent=["out.png"]),
    Case("-o is the input itself", UP + ["{tmp}/a.png", "-o", "{tmp}/a.png", "--overwrite"], 1,
         setup={"a.png": "image"}, err=r"would replace the input", unchanged=["a.png"]),
    Case("-o through a symlink to the input folder", UP + ["{tmp}/in", "-o", "{tmp}/link", "--overwrite"], 1,
         setup={"in/a.png": "image", "link": lambda p: p.symlink_to(p.parent / "in")},
         err=r"would replace the input", unchanged=["in/a.png"]),
    Case("existing output is a symlink to the input", UP + ["{tmp}/a.png", "-o", "{tmp}/out", "--overwrite"], 1,
         setup={"a.png": "image", "out/a.png": lambda p: p.symlink_to(p.parent.parent / "a.png")},
         err=r"would replace the input", unchanged=["a.png"]),
    Case("a named pipe as input", UP + ["{tmp}/fifo.png", "{tmp}/a.png", "-o", "{tmp}/out"], 1,
         setup={"a.png": "image", "fifo.png": mkfifo}, err=r"fifo\.png: not a regular file", exists=["out/a.png"]),
    Case("empty string among the inputs", UP + ["", "{tmp}/a.png", "-o", "{tmp}/out"], 1,
         setup={"a.png": "image", "stray.png": "image"}, err=r"error: '': empty path",
         exists=["out/a.png"], absent=["out/stray.png"]),
    Case("existing output is a folder", UP + ["{tmp}/a.png", "-o", "{tmp}/out", "--overwrite"], 1,
         setup={"a.png": "image", "out/a.png/keep.txt": "x"}, err=r"exists and is not a file",
         unchanged=["out/a.png/keep.txt"]),
    Case("two inputs, one name after --format", UP + ["{tmp}/a.png", "{tmp}/a.jpeg", "-o", "{tmp}/out", "--format",
         "jpg"], 1, setup={"a.png": "image", "a.jpeg": "jpeg"}, err=r"a\.jpeg: its output .* is also the output of",
         exists=["out/a.jpg"]),
    Case("an input named like another's steps strip", UP + ["{tmp}/in", "-o", "{tmp}/out", "--save-steps"], 1,
         setup={"in/a.png": "image", "in/a_steps.png": "image"}, err=r"a_steps\.png: its output .* is also the",
         exists=["out/a.png", "out/a_steps.png"], unchanged=["in/a_steps.png"]),
    Case("nothing usable leaves no output folder", UP + ["{tmp}/bad.png", "-o", "{tmp}/new/out"], 1,
         setup={"bad.png": "not an image"}, err=r"bad\.png: not an image", absent=["new"]),
    Case("glob rerun does not pick up outputs", UP + ["{tmp}/tree/**/*.png", "-o", "{tmp}/tree/up", "--overwrite"],
         0, setup={"tree/a.png": "image", "tree/up/a.png": "image"}, absent=["tree/up/up"], out="1 image(s)"),
    Case("rerun without --overwrite keeps old, adds new", UP + ["{tmp}/a.png", "{tmp}/b.png", "-o", "{tmp}/out"], 1,
         setup={"a.png": "image", "b.png": "image", "out/a.png": "old result"}, err=r"out/a\.png: already exists",
         exists=["out/b.png"], unchanged=["out/a.png"]),
    Case("1x1 pixel image", UP + ["{tmp}/dot.png", "-o", "{tmp}/out"], 0, setup={"dot.png": "dot"},
         exists=["out/dot.png"]),
    Case("folder name with a dot", UP + ["{tmp}/a.png", "-o", "{tmp}/results.v2"], 0, setup={"a.png": "image"},
         exists=["results.v2/a.png"]),
    Case("Ctrl-C on the second image", UP + ["{tmp}/a.png", "{tmp}/b.png", "-o", "{tmp}/out"], 130,
         setup={"a.png": "image", "b.png": "image"}, err=r"error: interrupted", exists=["out/a.png"],
         absent=["out/b.png"], interrupt_after=2),
    Case("glob characters in a real file name", UP + ["{tmp}/x[1].png", "-o", "{tmp}/out"], 0,
         setup={"x[1].png": "image", "x1.png": "image"}, exists=["out/x[1].png"], absent=["out/x1.png"]),
    Case("tiny tiles on a larger image", UP + ["{tmp}/big.png", "-o", "{tmp}/out", "--tile-size", "8",
         "--tile-overlap", "8", "--batch-size", "3"], 0, setup={"big.png": "big"}, exists=["out/big.png"]),
    Case("evaluate --crop 0", ["evaluate", "--hr", "{tmp}/hr", "--crop", "0"], 2, setup={"hr/a.png": "image"},
         err=r"argument --crop: must be at least 1"),
    Case("evaluate with a file as --hr", ["evaluate", "--hr", "{tmp}/a.png", "--model", "{model}"], 2,
         setup={"a.png": "image"}, err=r"a\.png: not a folder \(--hr takes the folder of HR images\)"),
    Case("evaluate --seeds with a negative seed", ["evaluate", "--hr", "{tmp}/hr", "--seeds", "0,-1"], 2,
         setup={"hr/a.png": "image"}, err=r"argument --seeds"),
]  # fmt: skip


def make(path: Path, spec):
    path.parent.mkdir(parents=True, exist_ok=True)
    if callable(spec):
        spec(path)
    elif spec == "image":
        write(path, 8, 8, seed=len(path.name))
    elif spec == "jpeg":
        write(path, 8, 8, fmt="JPEG")
    elif spec == "dot":
        write(path, 1, 1)
    elif spec == "big":
        write(path, 20, 28)
    else:
        path.write_text(spec)


@pytest.mark.parametrize("case", SECOND_PASS, ids=[case.name for case in SECOND_PASS])
def test_second_pass(tmp_path, model_dir, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    for name, spec in case.setup.items():
        make(tmp_path / name, spec)
    kept = {name: (tmp_path / name).read_bytes() for name in case.unchanged}
    if case.interrupt_after:
        save, calls = PIL.Image.Image.save, []

        def interrupted_save(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == case.interrupt_after:
                raise KeyboardInterrupt
            return save(self, *args, **kwargs)

        monkeypatch.setattr(PIL.Image.Image, "save", interrupted_save)
    argv = [a.format(tmp=tmp_path, model=model_dir) for a in case.argv]
    code, out, err = run(capsys, *argv)
    error_lines(err)
    assert code == case.code, (out, err)
    if case.err:
        assert re.search(case.err, err), err
    if case.out:
        assert case.out in out
    for name in case.exists:
        assert (tmp_path / name).is_file(), name
        assert PIL.Image.open(tmp_path / name).size[0] % 4 == 0
    for name in case.absent:
        assert not (tmp_path / name).exists(), name
    for name, data in kept.items():
        assert (tmp_path / name).read_bytes() == data, name
    assert not list(tmp_path.rglob(".deltadiff-*.tmp")), "temporary file left behind"


# --- names, temporary files, signals ----------------------------------------------------------------------------------


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
