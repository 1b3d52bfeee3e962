"""Baselines and the `Upscaler` protocol: a registered baseline is evaluated with no other edit; stochastic methods
run once per seed, deterministic ones once."""

import csv
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from conftest import random_image
from diffusers_deltadiff import DeltaShiftScheduler
from diffusers_deltadiff.baselines import BASELINES, load_baseline
from diffusers_deltadiff.baselines.fsrcnn import FSRCNN
from diffusers_deltadiff.evaluation import evaluate, load_pairs
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline
from diffusers_deltadiff.upscaler import PipelineUpscaler, Upscaler, as_upscaler
from toy_baseline import Nearest, load_nearest


ROOT = Path(__file__).resolve().parents[1]


def y_psnr_by_hand(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """Y-PSNR of 8-bit RGB arrays written out: BT.601 studio-range luma, `border` pixels cropped, peak 255."""
    weights = np.array([65.481, 128.553, 24.966])
    sr_y, hr_y = (16 + (a.astype(np.float64) / 255) @ weights for a in (sr, hr))
    crop = (slice(border, -border), slice(border, -border))
    return float(10 * np.log10(255.0**2 / np.mean((sr_y[crop] - hr_y[crop]) ** 2)))


@pytest.fixture
def hr_folder(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    for index, (height, width) in enumerate([(48, 64), (56, 40)]):
        random_image(height, width, seed=index).save(folder / f"img{index}.png")
    return folder


def test_quality_scores_a_registered_toy_baseline(hr_folder, tmp_path, monkeypatch):
    """One registry line (here `monkeypatch.setitem`) and `benchmarks/quality.py --baseline nearest` scores it."""
    monkeypatch.setitem(BASELINES, "nearest", load_nearest)
    out = tmp_path / "out"
    argv = [
        "quality.py",
        "--benchmarks",
        str(hr_folder),
        "--baseline",
        "nearest",
        "--seeds",
        "0",
        "--output",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "benchmarks" / "quality.py"), run_name="__main__")

    rows = list(csv.DictReader((out / "hr" / "per_image.csv").open()))
    assert sorted({row["method"] for row in rows}) == ["bicubic", "nearest"]
    nearest = {row["image"]: row for row in rows if row["method"] == "nearest"}
    assert sorted(nearest) == ["img0.png", "img1.png"] and all(row["seed"] == "" for row in nearest.values())
    for name, row in nearest.items():
        hr = PIL.Image.open(hr_folder / name)
        lr = np.asarray(hr.resize((hr.width // 4, hr.height // 4), PIL.Image.BICUBIC))
        sr = lr.repeat(4, axis=0).repeat(4, axis=1)
        assert float(row["psnr_y"]) == pytest.approx(y_psnr_by_hand(sr, np.asarray(hr), 4), abs=1e-3)
    assert "| nearest | 2 |" in (out / "quality.md").read_text()


def test_quality_refuses_an_unknown_baseline(hr_folder, tmp_path, monkeypatch, capsys):
    argv = ["quality.py", "--benchmarks", str(hr_folder), "--baseline", "nope", "--output", str(tmp_path / "out")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "benchmarks" / "quality.py"), run_name="__main__")
    assert exit_info.value.code == 2
    assert "Unknown baseline 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("method", "runs"),
    [
        (Nearest(4), [None]),
        (Nearest(4, stochastic=True), [0, 1, 2]),
        (tiny_lossless_pipeline(), [None]),
        (
            tiny_lossless_pipeline(**{"kappa": 2.0, "eta_end": 0.9801}),  # ResShift: a noisy chain
            [0, 1, 2],
        ),
    ],
    ids=["deterministic-toy", "stochastic-toy", "deltadiff-pipeline", "resshift-pipeline"],
)
def test_evaluate_runs_stochastic_methods_once_per_seed(hr_folder, method, runs):
    pairs, errors = load_pairs(str(hr_folder), 4, None, None, "bicubic", 0)
    assert not errors
    if hasattr(method, "set_progress_bar_config"):
        method.set_progress_bar_config(disable=True)
    result = evaluate(pairs, {"m": method}, seeds=(0, 1, 2), grid_images=0)
    seeds = [score.seed for score in result.scores if score.method == "m" and score.image == "img0.png"]
    assert seeds == runs
    psnrs = {score.psnr for score in result.scores if score.method == "m" and score.image == "img0.png"}
    assert len(psnrs) == len(runs)  # each seed its own output


def test_pipeline_upscaler_follows_the_scheduler():
    pipe = tiny_lossless_pipeline()
    assert isinstance(as_upscaler(pipe), PipelineUpscaler) and not as_upscaler(pipe).stochastic
    pipe.scheduler = DeltaShiftScheduler.from_config(pipe.scheduler.config, kappa=2.0, eta_end=0.9801)
    assert as_upscaler(pipe).stochastic
    toy = Nearest(4)
    assert isinstance(toy, Upscaler) and as_upscaler(toy) is toy


def test_bicubic_baseline_is_pil_bicubic():
    image = random_image(12, 10, seed=3)
    lr = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    expected = np.asarray(image.resize((40, 48), PIL.Image.BICUBIC), dtype=np.float32) / 255
    sr = load_baseline("bicubic", scale=4)(lr)
    np.testing.assert_array_equal(sr.permute(1, 2, 0).numpy(), expected)


def save_fsrcnn(folder: Path, model: FSRCNN):
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "fsrcnn.safetensors"))
    (folder / "config.json").write_text(json.dumps({"scale": model.scale}))


def test_fsrcnn_baseline_loads_its_folder(tmp_path):
    """An untrained FSRCNN (last layer at zero) is torch's bicubic upscale, clamped; the factor must match."""
    save_fsrcnn(tmp_path / "x2", FSRCNN(scale=2))
    lr = torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(0))
    sr = load_baseline("fsrcnn", str(tmp_path / "x2"), scale=2)(lr)
    expected = F.interpolate(lr[None], scale_factor=2, mode="bicubic", align_corners=False)[0].clamp(0, 1)
    torch.testing.assert_close(sr, expected)
    with pytest.raises(ValueError, match="an x2 FSRCNN, asked for x4"):
        load_baseline("fsrcnn", str(tmp_path / "x2"), scale=4)
    with pytest.raises(ValueError, match="needs the folder"):
        load_baseline("fsrcnn", None, scale=2)
