"""`deltadiff ablate --output` (issue 29's kind): the table is written whole or not at all, and an --output that cannot
be written is refused before the sweep, not after it."""

import errno
import os

import pytest

from conftest import write_image
from diffusers_deltadiff import atomic_files
from diffusers_deltadiff.cli import ablate as ablate_command
from diffusers_deltadiff.cli import main
from diffusers_deltadiff.testing_utils import tiny_pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tiny_pipeline(seed=0).save_pretrained(path)
    return path


@pytest.fixture
def hr(tmp_path):
    for i in range(2):
        write_image(tmp_path / "hr" / f"img{i}.png", 24, 24, seed=i)
    return tmp_path / "hr"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr()


def test_a_full_disk_keeps_the_previous_table(tmp_path, hr, model_dir, capsys, monkeypatch):
    """Before: the table was written in place, so a full disk left a truncated one."""
    table = tmp_path / "table.md"
    table.write_text("the previous table\n")

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic_files.os, "write", full)
    code, captured = run(capsys, "ablate", "--hr", hr, "--model", model_dir, "--steps", 1, "--output", table)
    assert code == 2 and f"error: {table}: cannot write the table (No space left on device)" in captured.err
    assert table.read_text() == "the previous table\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "hr",
        "table.md",
    ]


@pytest.mark.parametrize("where", ["a folder", "in a missing folder"])
def test_an_output_that_cannot_be_written_is_refused_before_the_sweep(
    tmp_path, hr, model_dir, capsys, monkeypatch, where
):
    """Before: the whole sweep ran, then the table could not be written."""
    output = tmp_path if where == "a folder" else tmp_path / "missing" / "table.md"
    monkeypatch.setattr(ablate_command, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    code, captured = run(capsys, "ablate", "--hr", hr, "--model", model_dir, "--output", output)
    assert code == 2
    expected = (
        "a folder: name the markdown file to write" if where == "a folder" else f"{output.parent} is not a folder"
    )
    assert captured.err.strip() == f"error: --output {output}: {expected}"
