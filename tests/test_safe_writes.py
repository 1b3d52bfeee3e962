"""
Writes that fail half-way, and runs that race (issue 29): an output is written whole or not at all, whatever the
format and whatever step of the save fails, and a file this run did not claim is never replaced.
"""

import errno
import os
import subprocess
import uuid
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from conftest import write_image
from diffusers_deltadiff import atomic_files
from diffusers_deltadiff.atomic_files import AlreadyExists, write_file_atomic
from diffusers_deltadiff.cli import main, upscaling
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A x4 model that returns bicubic (zero residual): outputs can be checked against the input's content."""
    path = tmp_path_factory.mktemp("model")
    tiny_lossless_pipeline(seed=0, zero_output=True).save_pretrained(path)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 8 KiB tmpfs (root only; skipped elsewhere): big enough for the folder, too small for any output."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip()})")
    (mount / "out").mkdir()
    yield mount / "out"
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp"])
def test_a_full_disk_is_an_error_and_leaves_no_file(tmp_path, model_dir, tiny_disk, capsys, fmt):
    """Before: a JPEG onto a full disk exited 0, "1 image(s) upscaled", and left a truncated file."""
    image = write_image(tmp_path / "in" / "photo.jpg", 64, 64, format="JPEG", quality=95)
    code, out, err = run(capsys, "upscale", image, "-o", tiny_disk, "--model", model_dir, "--format", fmt)
    assert code == 1, (out, err)
    assert "No space left on device" in err and str(image) in err
    assert "0 image(s) upscaled" in out
    assert leftovers(tiny_disk) == []
    # a rerun with --skip-existing has nothing broken to keep: it tries again (and fails again, the disk being full)
    code, out, err = run(capsys, "upscale", image, "-o", tiny_disk, "--model", model_dir, "--skip-existing")
    assert code == 1 and "No space left on device" in err and leftovers(tiny_disk) == []


def failing(name: str, after_calls: int = 0):
    """A stand-in for `os.<name>` that raises ENOSPC (as a full disk does) after `after_calls` good calls."""
    real = getattr(os, name)
    calls = []

    def fake(*args):
        calls.append(args)
        if len(calls) > after_calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args)

    return fake


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp"])
@pytest.mark.parametrize("step", ["write", "fsync", "link"])
def test_every_step_of_a_save_that_fails_leaves_no_file(tmp_path, model_dir, capsys, monkeypatch, fmt, step):
    """The first write, the flush to the device, the rename into place: each failing is one error line, exit 1."""
    image = write_image(tmp_path / "in" / "photo.png", 16, 16)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    monkeypatch.setattr(atomic_files.os, step, failing(step))
    code, out, err = run(capsys, "upscale", image, "-o", out_dir, "--model", model_dir, "--format", fmt)
    monkeypatch.undo()
    assert code == 1, (out, err)
    assert err.strip().splitlines()[-1].startswith(f"error: {image}: ") and "No space left" in err
    assert leftovers(out_dir) == []


def test_a_write_interrupted_half_way_leaves_no_file(tmp_path, model_dir, capsys, monkeypatch):
    """A short first write (part of the file on disk), then the disk is full."""
    real_write = os.write
    calls = []

    def half_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    image = write_image(tmp_path / "in" / "photo.png", 16, 16)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    monkeypatch.setattr(atomic_files.os, "write", half_then_full)
    code, out, err = run(capsys, "upscale", image, "-o", out_dir, "--model", model_dir, "--format", "jpg")
    monkeypatch.undo()
    assert code == 1 and len(calls) == 2 and leftovers(out_dir) == []


def test_a_failed_replace_keeps_the_previous_file(tmp_path, model_dir, capsys, monkeypatch):
    """`--overwrite` onto an existing output, the disk full: the old output is kept whole."""
    image = write_image(tmp_path / "in" / "photo.png", 16, 16)
    out_dir = tmp_path / "out"
    assert run(capsys, "upscale", image, "-o", out_dir, "--model", model_dir)[0] == 0
    before = (out_dir / "photo.png").read_bytes()
    monkeypatch.setattr(atomic_files.os, "write", failing("write"))
    code, _, err = run(capsys, "upscale", image, "-o", out_dir, "--model", model_dir, "--overwrite")
    monkeypatch.undo()
    assert code == 1 and "No space left" in err
    assert (out_dir / "photo.png").read_bytes() == before and leftovers(out_dir) == ["photo.png"]


def racing_pipeline(monkeypatch, dest: Path, content: bytes):
    """While this run upscales, another run writes `dest` (the race that two runs into one folder have)."""
    real_load = upscaling.load_upscaler

    def load(*args, **kwargs):
        pipe = real_load(*args, **kwargs)

        class Racing:
            def __getattr__(self, name):
                return getattr(pipe, name)

            def __call__(self, *call_args, **call_kwargs):
                dest.write_bytes(content)
                return pipe(*call_args, **call_kwargs)

        return Racing()

    monkeypatch.setattr(upscaling, "load_upscaler", load)


def test_a_file_another_run_wrote_meanwhile_is_never_replaced(tmp_path, model_dir, capsys, monkeypatch):
    """Before: the later writer replaced the other run's file, both exited 0."""
    image = write_image(tmp_path / "x" / "a.png", 16, 16)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    racing_pipeline(monkeypatch, out_dir / "a.png", b"the other run's result")
    code, out, err = run(capsys, "upscale", image, "-o", out_dir, "--model", model_dir)
    assert code == 1, (out, err)
    assert f"error: {out_dir / 'a.png'}: already exists" in err
    assert (out_dir / "a.png").read_bytes() == b"the other run's result"
    assert leftovers(out_dir) == ["a.png"]


def test_skip_existing_leaves_a_file_another_run_wrote_meanwhile(tmp_path, model_dir, capsys, monkeypatch):
    image = write_image(tmp_path / "x" / "a.png", 16, 16)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    racing_pipeline(monkeypatch, out_dir / "a.png", b"the other run's result")
    code, out, err = run(capsys, "upscale", image, "-o", out_dir, "--model", model_dir, "--skip-existing")
    assert code == 0, (out, err)
    assert "0 image(s) upscaled" in out and "1 skipped" in out
    assert (out_dir / "a.png").read_bytes() == b"the other run's result"


def test_overwrite_replaces_what_another_run_wrote(tmp_path, model_dir, capsys, monkeypatch):
    image = write_image(tmp_path / "x" / "a.png", 16, 16)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    racing_pipeline(monkeypatch, out_dir / "a.png", b"the other run's result")
    code, out, err = run(capsys, "upscale", image, "-o", out_dir, "--model", model_dir, "--overwrite")
    assert code == 0, (out, err)
    assert PIL.Image.open(out_dir / "a.png").size == (64, 64)


def test_exclusive_install_without_hard_links(tmp_path, monkeypatch):
    """File systems without hard links: the name is claimed by an exclusive create; an existing file still wins."""

    def no_links(*args):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(atomic_files.os, "link", no_links)
    write_file_atomic(tmp_path / "new.bin", b"new")
    assert (tmp_path / "new.bin").read_bytes() == b"new"
    (tmp_path / "old.bin").write_bytes(b"old")
    with pytest.raises(AlreadyExists):
        write_file_atomic(tmp_path / "old.bin", b"new")
    assert (tmp_path / "old.bin").read_bytes() == b"old" and leftovers(tmp_path) == ["new.bin", "old.bin"]


def test_rgba_written_as_jpeg_is_composited_on_white_with_a_warning(tmp_path, model_dir, capsys):
    """Before: the alpha was dropped silently, and a logo on transparency became a solid (here black) square."""
    rgba = np.zeros((16, 16, 4), np.uint8)  # transparent black everywhere
    rgba[4:12, 4:12] = (200, 30, 30, 255)  # an opaque red square in the middle
    image = tmp_path / "in" / "logo.png"
    image.parent.mkdir()
    PIL.Image.fromarray(rgba, "RGBA").save(image)
    code, out, err = run(capsys, "upscale", image, "-o", tmp_path / "out", "--model", model_dir, "--format", "jpg")
    assert code == 0, (out, err)
    assert f"warning: {image}: a JPEG output cannot keep its transparency: composited on a white background" in err
    result = np.asarray(PIL.Image.open(tmp_path / "out" / "logo.jpg").convert("RGB")).astype(int)
    assert result.shape == (64, 64, 3)
    assert result[:8, :8].min() > 240  # the transparent corner is white, not black
    assert abs(result[32, 32] - (200, 30, 30)).max() < 20  # the opaque middle keeps its colour


def test_gray_with_alpha_as_jpeg_stays_gray(tmp_path, model_dir, capsys):
    image = tmp_path / "in" / "mark.png"
    write_image(image, 16, 16, mode="RGBA")
    PIL.Image.open(image).convert("LA").save(image)
    code, out, err = run(capsys, "upscale", image, "-o", tmp_path / "out", "--model", model_dir, "--format", "jpg")
    assert code == 0 and "composited on a white background" in err
    assert PIL.Image.open(tmp_path / "out" / "mark.jpg").mode == "L"


def test_rgba_as_png_or_webp_keeps_its_alpha_without_a_warning(tmp_path, model_dir, capsys):
    image = write_image(tmp_path / "in" / "logo.png", 16, 16, mode="RGBA")
    for fmt in ("png", "webp"):
        code, out, err = run(capsys, "upscale", image, "-o", tmp_path / fmt, "--model", model_dir, "--format", fmt)
        assert code == 0 and "transparency" not in err
        assert PIL.Image.open(tmp_path / fmt / f"logo.{fmt}").mode == "RGBA"
