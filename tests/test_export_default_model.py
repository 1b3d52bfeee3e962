"""
`training/export_default_model.py` (issue 29): everything is checked before anything is built, the new model folder
(card included) is built next to the target and swapped in whole; a failure leaves the shipped folder as it was.
"""

import importlib.util
import os
import stat
from pathlib import Path

import pytest

from conftest import write_image
from diffusers_deltadiff import DeltaDiffPipeline
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline


ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "# deltadiff-x4\n\n<!-- comparison -->\n\n## Usage\n\n<!-- usage -->\n"
CSV_HEADER = "image,method,seed,psnr_y,ssim_y,psnr_cbcr,lpips,lr_psnr_y\n"


def load_script():
    spec = importlib.util.spec_from_file_location(
        "export_default_model", ROOT / "training" / "export_default_model.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


exporter = load_script()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A trained pipeline, its card text, quality results for it, check images."""
    root = tmp_path_factory.mktemp("export")
    tiny_lossless_pipeline(seed=0).save_pretrained(root / "trained")
    (root / "card.md").write_text(TEMPLATE)
    (root / "results" / "Set5").mkdir(parents=True)
    (root / "results" / "Set5" / "per_image.csv").write_text(
        CSV_HEADER + "a.png,new,,30.1,0.91,,,40.0\nb.png,new,,29.9,0.90,,,40.0\na.png,bicubic,,28.0,0.85,,,39.0\n"
    )
    for i in range(2):
        write_image(root / "check" / f"{i}.png", 32, 32, seed=i)
    return root


def export(inputs: Path, target: Path, *extra) -> str | None:
    """Run an export in-process; the error it stops with, or `None`."""
    argv = [
        "--pipeline", inputs / "trained", "--card", inputs / "card.md", "--results", inputs / "results",
        "--method", "new", "--check_images", inputs / "check", "--output_dir", target, "--min_psnr", "20", *extra,
    ]  # fmt: skip
    try:
        exporter.main(exporter.parse_args([str(a) for a in argv]))
    except SystemExit as stop:
        return str(stop.code)
    return None


def snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder): (p.read_bytes() if p.is_file() else None, stat.S_IMODE(p.stat().st_mode))
        for p in sorted([folder, *folder.rglob("*")])
    }


def siblings(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir())


@pytest.fixture
def shipped(inputs, tmp_path):
    """An exported model in place, as the package ships one."""
    target = tmp_path / "pretrained" / "deltadiff-x4"
    assert export(inputs, target) is None
    return target


def test_an_export_is_complete_and_honours_the_umask(shipped):
    names = {p.name for p in shipped.iterdir()}
    assert {"README.md", "comparison.png", "model_index.json", "unet", "vqvae", "scheduler"} <= names
    assert not [p for p in shipped.rglob("*") if p.suffix in (".py", ".bin")]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(shipped.stat().st_mode) == 0o777 & ~umask  # was 0700: a temporary folder's mode
    files = [p for p in shipped.rglob("*") if p.is_file()]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o666 & ~umask}  # weights were 0600
    assert "PSNR" in (shipped / "README.md").read_text() and siblings(shipped) == ["deltadiff-x4"]
    DeltaDiffPipeline.from_pretrained(shipped)


@pytest.mark.parametrize(
    "problem, message",
    [
        ("no per_image.csv", "error: --results {results}: {results}: no <benchmark>/per_image.csv found"),
        ("a wrong --method", "error: --results {results}: {results}/Set5/per_image.csv: no rows for method 'old'"),
        ("no card markers", "error: {card}: ValueError: the card template has no <!-- usage --> marker"),
        ("no check images", "error: --check_images {check}: no images there for the float16 check"),
        ("a float16 check that fails", "error: float16 storage changes outputs too much"),
    ],
)
def test_a_failing_export_leaves_the_shipped_model_as_it_was(inputs, shipped, tmp_path, problem, message):
    """Before: the target was deleted and replaced before the card's inputs were read: a traceback, no card, 0700."""
    before = snapshot(shipped)
    results, card, check, extra = inputs / "results", inputs / "card.md", inputs / "check", []
    if problem == "no per_image.csv":
        results = tmp_path / "empty"
        results.mkdir()
    elif problem == "a wrong --method":
        extra = ["--method", "old"]
    elif problem == "no card markers":
        card = tmp_path / "card.md"
        card.write_text("# a card without markers\n")
    elif problem == "no check images":
        check = tmp_path / "no-images"
        check.mkdir()
    else:
        extra = ["--min_psnr", "1000"]
    stop = export(inputs, shipped, "--results", results, "--card", card, "--check_images", check, *extra)
    assert stop.startswith(message.format(results=results, card=card, check=check)), stop
    assert "\n" not in stop
    assert snapshot(shipped) == before and siblings(shipped) == ["deltadiff-x4"]


def test_a_folder_that_is_not_a_model_is_never_replaced(inputs, tmp_path):
    """`--output_dir` mistyped onto another folder: it was deleted whole (`shutil.rmtree`) before."""
    other = tmp_path / "src"
    write_image(other / "keep.png")
    stop = export(inputs, other)
    assert (
        stop == f"error: {other}: a folder that holds no exported model (no model_index.json): refusing to replace it"
    )
    assert [p.name for p in other.iterdir()] == ["keep.png"]


def test_a_pipeline_that_is_not_one_is_a_one_line_error(inputs, tmp_path):
    stop = export(inputs, tmp_path / "out", "--pipeline", tmp_path)
    assert stop == f"error: --pipeline {tmp_path}: not a pipeline folder (no model_index.json)"
    assert not (tmp_path / "out").exists()


def test_card_only_checks_the_results_first(inputs, shipped):
    before = snapshot(shipped)
    argv = ["--card_only", "--card", inputs / "card.md", "--results", inputs / "results", "--output_dir", shipped]
    try:
        exporter.main(exporter.parse_args([str(a) for a in [*argv, "--method", "old"]]))
    except SystemExit as stop:
        assert str(stop.code).startswith(f"error: --results {inputs / 'results'}: ")
    else:
        pytest.fail("a wrong --method was accepted")
    assert snapshot(shipped) == before
    (shipped / "README.md").write_text("stale")
    exporter.main(exporter.parse_args([str(a) for a in [*argv, "--method", "new"]]))
    assert "PSNR" in (shipped / "README.md").read_text() and siblings(shipped) == ["deltadiff-x4"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--border_padding", "5"], "--card_only rewrites the card only: --border_padding is for an export"),
        (["--pipeline", "trained"], "--card_only rewrites the card only: --pipeline is for an export"),
        (
            ["--tile_context", "8", "--default_inference_steps", "1"],
            "--tile_context, --default_inference_steps are for an export",
        ),
        (["--scale", "0"], "argument --scale: must be at least 1, got 0"),  # was the x4 model's card
    ],
)
def test_card_only_refuses_what_it_would_not_do(inputs, capsys, flags, message):
    """Before: each was ignored silently (the card rewritten, the border padding and the rest not changed)."""
    argv = ["--card_only", "--results", inputs / "results", *flags]
    with pytest.raises(SystemExit) as stop:
        exporter.parse_args([str(a) for a in argv])
    assert stop.value.code == 2 and message in capsys.readouterr().err
