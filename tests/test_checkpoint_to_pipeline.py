"""
`training/checkpoint_to_pipeline.py` (issue 29): a checkpoint's pickles are never run, an existing pipeline is never
replaced without `--overwrite` (nor half-replaced by a failed save), and a `--run` or checkpoint that is not one is a
one-line error.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

from diffusers_deltadiff.testing_utils import tiny_pipeline


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "checkpoint_to_pipeline.py"


def load_script():
    spec = importlib.util.spec_from_file_location("checkpoint_to_pipeline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


converter = load_script()


def convert(*argv) -> str | None:
    """Run the script's `main` in-process; the error message it exits with, or `None`."""
    try:
        converter.main(converter.parse_args([str(a) for a in argv]))
    except SystemExit as stop:
        return str(stop.code)
    return None


@pytest.fixture
def run(tmp_path):
    """A finished run (its pipeline) with `checkpoint-2`: other UNet weights, and their EMA copy, as accelerate saves."""
    folder = tmp_path / "run"
    tiny_pipeline(seed=0).save_pretrained(folder)
    checkpoint = folder / "checkpoint-2"
    checkpoint.mkdir()
    unet = tiny_pipeline(seed=1).unet
    save_file({f"module.{k}": v.contiguous() for k, v in unet.state_dict().items()}, checkpoint / "model.safetensors")
    ema = EMAModel(tiny_pipeline(seed=2).unet.parameters())
    torch.save(ema.state_dict(), checkpoint / "custom_checkpoint_0.pkl")
    return folder


def unet_weights(folder: Path) -> dict:
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def test_the_ema_weights_become_a_pipeline(run, tmp_path):
    assert convert("--run", run, "--checkpoint", 2, "--output", tmp_path / "best") is None
    expected = tiny_pipeline(seed=2).unet.state_dict()  # the EMA copy: the seed-2 weights
    saved = unet_weights(tmp_path / "best")
    assert all(torch.equal(saved[k], expected[k]) for k in expected)
    assert convert("--run", run, "--checkpoint", 2, "--output", tmp_path / "raw", "--raw") is None
    raw = tiny_pipeline(seed=1).unet.state_dict()
    assert all(torch.equal(unet_weights(tmp_path / "raw")[k], raw[k]) for k in raw)


class RunsCode:
    """What a crafted checkpoint pickles: unpickling it runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_ema_pickle_is_refused_not_run(run, tmp_path):
    """Before: the EMA file was read with `torch.load` allowing any object, and it ran the shell command."""
    marker = tmp_path / "pwned"
    torch.save({"shadow_params": [], "decay": RunsCode(marker)}, run / "checkpoint-2" / "custom_checkpoint_0.pkl")
    message = convert("--run", run, "--checkpoint", 2, "--output", tmp_path / "best")
    assert not marker.exists()
    assert message.startswith(f"error: {run / 'checkpoint-2' / 'custom_checkpoint_0.pkl'}: not a plain EMA state")
    assert "\n" not in message and not (tmp_path / "best").exists()


def test_an_existing_pipeline_is_not_replaced_without_overwrite(run, tmp_path):
    """Before: `--output` onto the run's own final model silently replaced it with the checkpoint's weights."""
    before = unet_weights(run)
    message = convert("--run", run, "--checkpoint", 2, "--output", run)
    assert message == f"error: --output {run}: already exists (pass --overwrite to replace its pipeline)"
    after = unet_weights(run)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_overwrite_replaces_the_pipeline_and_keeps_the_rest(run, tmp_path):
    (run / "logs").mkdir()
    (run / "logs" / "events").write_text("kept")
    assert convert("--run", run, "--checkpoint", 2, "--output", run, "--overwrite") is None
    expected = tiny_pipeline(seed=2).unet.state_dict()
    assert all(torch.equal(unet_weights(run)[k], expected[k]) for k in expected)
    assert (run / "checkpoint-2" / "model.safetensors").is_file() and (run / "logs" / "events").read_text() == "kept"
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no leftovers


def test_a_failed_save_leaves_the_existing_pipeline_whole(run, tmp_path, monkeypatch):
    from diffusers_deltadiff import DeltaDiffPipeline

    target = tmp_path / "best"
    assert convert("--run", run, "--checkpoint", 2, "--output", target, "--raw") is None
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    real_save = DeltaDiffPipeline.save_pretrained

    def disk_full_half_way(self, folder, **kwargs):
        real_save(self, folder, **kwargs)
        (Path(folder) / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"trunc")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DeltaDiffPipeline, "save_pretrained", disk_full_half_way)
    message = convert("--run", run, "--checkpoint", 2, "--output", target, "--overwrite")
    assert message == (
        f"error: --output {target}: cannot save the pipeline (OSError: [Errno 28] No space left on device); "
        "nothing replaced"
    )
    assert {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "run"]  # the partial folder is gone


@pytest.mark.parametrize("what", ["missing", "empty folder", "a checkpoint"])
def test_a_run_that_is_not_one_is_a_one_line_error(run, tmp_path, what):
    """Before: a traceback from `DeltaDiffPipeline.from_pretrained`."""
    not_a_run = {"missing": tmp_path / "nope", "empty folder": tmp_path, "a checkpoint": run / "checkpoint-2"}[what]
    message = convert("--run", not_a_run, "--checkpoint", run / "checkpoint-2", "--output", tmp_path / "out")
    assert message == (
        f"error: --run {not_a_run}: not a finished training run (no model_index.json: train_deltadiff.py saves its "
        "pipeline there at the end)"
    )


def test_a_checkpoint_of_another_model_is_a_one_line_error(run, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    save_file({"conv_in.weight": torch.zeros(1, 1, 1, 1)}, other / "model.safetensors")
    message = convert("--run", run, "--checkpoint", other, "--output", tmp_path / "out")
    assert message.startswith(f"error: {other}: its weights do not fit the UNet of --run (RuntimeError: ")
    assert "\n" not in message and not (tmp_path / "out").exists()


def test_the_command_line_exits_1_with_one_line(run, tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--run", str(run), "--checkpoint", "2", "--output", str(run)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --output {run}: already exists (pass --overwrite to replace its pipeline)"
    )


MAKE_CANDIDATE = ROOT / "training" / "make_candidate.py"


def make_candidate(*argv) -> subprocess.CompletedProcess:
    command = [sys.executable, str(MAKE_CANDIDATE), *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_make_candidate_never_deletes_a_folder_that_is_not_a_candidate(run, tmp_path):
    """Before: an existing folder without model_index.json (here one of notes) was deleted whole, and the exit was 0."""
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "notes.txt").write_text("kept")
    result = make_candidate(run, folder, "--border_padding", "2")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {folder}: exists and is not a candidate (no model_index.json): choose another folder"
    )
    assert (folder / "sub" / "notes.txt").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "run"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["missing", "cand", "--border_padding", "2"],
            "error: {tmp}/missing: not a pipeline folder (no model_index.json)",
        ),
        (["run", "cand", "--border_padding", "-1"], "argument --border_padding: must be between 0 and 256, got -1"),
        (["run", "cand", "--border_padding", "2", "--default_inference_steps", "0"], "must be at least 1, got 0"),
    ],
)
def test_make_candidate_bad_input_is_one_line(run, tmp_path, argv, message):
    """Before: a FileNotFoundError traceback from shutil.copytree; a negative padding made a candidate that fails to load."""
    argv = [str(tmp_path / a) if a in ("missing", "run", "cand") else a for a in argv]
    result = make_candidate(*argv)
    assert result.returncode in (1, 2)
    assert result.stderr.strip().splitlines()[-1].endswith(message.format(tmp=tmp_path)), result.stderr
    assert not (tmp_path / "cand").exists() and not (tmp_path / "cand.tmp").exists()


def test_make_candidate_sets_the_inference_settings(run, tmp_path):
    result = make_candidate(run, tmp_path / "cand", "--border_padding", "3", "--default_inference_steps", "1")
    assert result.returncode == 0, result.stderr
    index = (tmp_path / "cand" / "model_index.json").read_text()
    assert '"border_padding": 3' in index
    assert '"default_inference_steps": 1' in (tmp_path / "cand" / "scheduler" / "scheduler_config.json").read_text()


def test_truncated_checkpoint_weights_are_a_one_line_error(run, tmp_path):
    """Before: a SafetensorError traceback."""
    weights = run / "checkpoint-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    message = convert("--run", run, "--checkpoint", 2, "--output", tmp_path / "out", "--raw")
    assert message.startswith(f"error: {weights}: unreadable (SafetensorError: ") and message.endswith("truncated?)")
    assert "\n" not in message and not (tmp_path / "out").exists()
