"""
The trainer's resume and start flags (issue 29): a checkpoint records the method it was trained with and a resume
that changes it is refused; a checkpoint's pickled EMA state is never run; UNet sizes the norm layers cannot split,
and starts that are not pipelines, are one-line flag errors, not tracebacks.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import load_trainer
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline
from diffusers_deltadiff.training_utils import CHECKPOINT_MARKER, check_method, recorded_method, save_checkpoint


ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--lossless_latent", "--resolution", "32", "--train_batch_size", "2", "--dataloader_num_workers", "0",
    "--report_to", "none", "--unet_block_out_channels", "16,32", "--unet_norm_num_groups", "8",
    "--unet_attention_levels", "", "--unet_layers_per_block", "1", "--checkpointing_steps", "2",
]  # fmt: skip
METHOD = ["--prediction_type", "residual", "--kappa", "0", "--eta_end", "0.99"]


@pytest.fixture(scope="module")
def trainer():
    from accelerate import PartialState

    PartialState(cpu=True)
    return load_trainer()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    for i in range(4):
        array = (np.random.RandomState(i).rand(40, 40, 3) * 255).astype(np.uint8)
        PIL.Image.fromarray(array).save(folder / f"img{i}.png")
    return folder


def train(trainer, data: Path, out: Path, *flags):
    args = trainer.parse_args([*TINY, "--train_data_dir", str(data), "--output_dir", str(out), *flags])
    trainer.main(args)


@pytest.fixture(scope="module")
def run(trainer, data, tmp_path_factory):
    """Two steps of a residual, kappa-0 run with EMA, checkpointed at step 2 (a few seconds)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    train(trainer, data, out, *METHOD, "--max_train_steps", "2", "--use_ema")
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def test_a_checkpoint_records_the_method(run):
    assert recorded_method(run / "checkpoint-2") == {
        "prediction_type": "residual",
        "kappa": 0.0,
        "eta_start": 0.01,
        "eta_end": 0.99,
        "power": 0.3,
        "num_train_timesteps": 4,
        "scale": 4,
        "lossless_latent": True,
    }


def test_a_resume_that_changes_the_method_is_refused(trainer, data, run, tmp_path):
    """Before: it went on silently, and the saved scheduler contradicted the first half of training."""
    out = copy_of(run, tmp_path)
    weights = (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    changed = ["--prediction_type", "sample", "--kappa", "2", "--eta_end", "0.5"]
    with pytest.raises(SystemExit) as stop:
        train(
            trainer, data, out, *changed, "--max_train_steps", "4", "--use_ema", "--resume_from_checkpoint", "latest"
        )
    message = str(stop.value.code)
    assert message == (
        f"error: --resume_from_checkpoint {out / 'checkpoint-2'}: the run was trained with --eta_end 0.99 --kappa 0.0 "
        "--prediction_type residual, this resume asks for --eta_end 0.5 --kappa 2.0 --prediction_type sample; "
        "resume with the run's flags, or start a new --output_dir"
    )
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == weights


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--num_train_timesteps", "8"], "--num_train_timesteps 4"),
        (["--power", "1.0"], "--power 0.3"),
        (["--eta_start", "0.04"], "--eta_start 0.01"),
        (["--scale", "2"], "--scale 4"),
    ],
)
def test_every_recorded_setting_is_checked(run, flags, named, trainer):
    args = trainer.parse_args(
        [*TINY, "--train_data_dir", "d", *METHOD, *flags, "--resolution", "32", "--output_dir", "o"]
    )
    with pytest.raises(SystemExit, match=f"the run was trained with {named}"):
        check_method(str(run / "checkpoint-2"), trainer.method_record(args))


def test_the_same_method_resumes(trainer, data, run, tmp_path):
    out = copy_of(run, tmp_path)
    train(trainer, data, out, *METHOD, "--max_train_steps", "4", "--use_ema", "--resume_from_checkpoint", "latest")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert recorded_method(out / "checkpoint-4")["prediction_type"] == "residual"


def test_a_checkpoint_without_a_record_resumes_with_a_warning(tmp_path, caplog):
    """Checkpoints saved before the record existed (a run in progress) still resume."""
    folder = tmp_path / "checkpoint-2"
    folder.mkdir()
    (folder / CHECKPOINT_MARKER).write_text(json.dumps({"step": 2}))
    check_method(str(folder), {"kappa": 2.0})
    assert "records no method configuration" in caplog.text


class FakeAccelerator:
    is_main_process = True

    def wait_for_everyone(self):
        pass

    def save_state(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)


def test_save_checkpoint_writes_the_record(tmp_path):
    save_checkpoint(FakeAccelerator(), str(tmp_path), None, 6, {"kappa": 0.0})
    assert json.loads((tmp_path / "checkpoint-6" / CHECKPOINT_MARKER).read_text()) == {
        "step": 6,
        "method": {"kappa": 0.0},
    }


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_ema_state_is_refused_not_run(trainer, data, run, tmp_path):
    """accelerate unpickles `custom_checkpoint_0.pkl` with any objects allowed: before, resuming ran the command."""
    out = copy_of(run, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"decay": RunsCode(marker)}, out / "checkpoint-2" / "custom_checkpoint_0.pkl")
    with pytest.raises(SystemExit) as stop:
        train(trainer, data, out, *METHOD, "--max_train_steps", "4", "--use_ema", "--resume_from_checkpoint", "latest")
    assert not marker.exists()
    assert str(stop.value.code).startswith(
        f"error: --resume_from_checkpoint {out / 'checkpoint-2'}: custom_checkpoint_0.pkl holds objects that "
        "unpickling would run (refused; "
    )


def flag_error(trainer, capsys, argv) -> str:
    with pytest.raises(SystemExit) as stop:
        trainer.parse_args(argv)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


def test_channels_the_norm_groups_cannot_split_are_a_flag_error(trainer, capsys):
    """Before: a ValueError traceback from GroupNorm, after the data and the autoencoder were loaded."""
    argv = ["--lossless_latent", "--train_data_dir", "d", "--unet_block_out_channels", "48,96,100"]
    message = flag_error(trainer, capsys, argv)
    assert message.endswith(
        "--unet_block_out_channels 48,96,100: every count must be a multiple of --unet_norm_num_groups 32 (the norm "
        "layers split the channels into that many groups); 48,100 is not."
    )
    message = flag_error(trainer, capsys, [*argv[:3], "--unet_norm_num_groups", "0"])
    assert message.endswith("--unet_norm_num_groups must be at least 1, got 0.")
    trainer.parse_args([*argv[:3], "--unet_block_out_channels", "48,96", "--unet_norm_num_groups", "16"])  # fine


@pytest.mark.parametrize("flag", ["--unet_init_from", "--pretrained_model_name_or_path"])
@pytest.mark.parametrize("what", ["a run's checkpoint", "an empty folder", "a missing folder", "a file"])
def test_a_start_that_is_not_a_pipeline_is_a_flag_error(trainer, capsys, run, tmp_path, flag, what):
    """Before: a traceback from `DeltaDiffPipeline.from_pretrained`."""
    (tmp_path / "a file").write_text("x")
    start = {
        "a run's checkpoint": run / "checkpoint-2",
        "an empty folder": tmp_path,
        "a missing folder": tmp_path / "missing",
        "a file": tmp_path / "a file",
    }[what]
    message = flag_error(trainer, capsys, ["--lossless_latent", "--train_data_dir", "d", flag, str(start)])
    assert message.endswith(
        f"{flag} {start}: not a DeltaDiffPipeline folder (no model_index.json; a training run "
        "saves its pipeline there at the end, its checkpoint-N folders hold none)."
    )


def test_a_start_that_cannot_load_is_one_line(trainer, tmp_path):
    folder = tmp_path / "start"
    tiny_lossless_pipeline(seed=0).save_pretrained(folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    args = trainer.parse_args(["--lossless_latent", "--train_data_dir", "d", "--unet_init_from", str(folder)])
    with pytest.raises(SystemExit) as stop:
        trainer.build_unet(args, 48)
    message = str(stop.value.code)
    assert message.startswith(f"error: --unet_init_from {folder}: cannot load the pipeline (") and "\n" not in message


def test_rerunning_a_finished_run_trains_no_step_past_the_end(trainer, data, tmp_path):
    """
    The recipes' "resumable: rerun the same command" on a finished run whose last step is mid-epoch (3 steps of 2 per
    epoch). Before: it trained step 4 and replaced the finished pipeline with it.
    """
    out = tmp_path / "run"
    flags = [*METHOD, "--max_train_steps", "3", "--checkpointing_steps", "3", "--resume_from_checkpoint", "latest"]
    train(trainer, data, out, *flags)
    weights = (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    train(trainer, data, out, *flags)
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--checkpointing_steps", "0", "must be at least 1, got 0"),  # was a ZeroDivisionError after step 1
        ("--validation_steps", "0", "must be at least 1, got 0"),  # the same, with --validation_data_dir
        ("--scale", "0", "must be at least 1, got 0"),  # ZeroDivisionError in parse_args
        ("--gradient_accumulation_steps", "0", "must be at least 1, got 0"),  # ZeroDivisionError
        ("--train_batch_size", "0", "must be at least 1, got 0"),  # a DataLoader ValueError traceback
        ("--resolution", "-32", "must be at least 1, got -32"),  # a degradation traceback
        ("--max_train_steps", "0", "must be at least 1, got 0"),  # saved an untrained pipeline, exit 0
        ("--max_train_steps", "-3", "must be at least 1, got -3"),
        ("--num_train_epochs", "0", "must be at least 1, got 0"),
        ("--checkpoints_total_limit", "0", "must be at least 1, got 0"),  # kept 1 anyway
        ("--dataloader_num_workers", "-1", "must be at least 0, got -1"),
        ("--lr_warmup_steps", "-1", "must be at least 0, got -1"),
        ("--num_validation_images", "0", "must be at least 1, got 0"),  # validated nothing, silently
        ("--learning_rate", "-1", "must be a finite number of at least 0, got -1"),  # AdamW's ValueError traceback
        ("--learning_rate", "nan", "must be a finite number of at least 0, got nan"),
        ("--ema_decay", "2", "must be a number from 0 to 1, got 2"),
        ("--hr_downscale", "nan", "--hr_downscale must be at least 1, got nan."),  # every image 'unreadable'
    ],
)
def test_a_number_out_of_range_is_a_flag_error(trainer, capsys, flag, value, message):
    """Before: a traceback, a crash after the first step, or a run that did something else than asked (see each)."""
    assert flag_error(trainer, capsys, ["--lossless_latent", "--train_data_dir", "d", flag, value]).endswith(message)


def test_a_truncated_checkpoint_is_a_one_line_error(trainer, data, run, tmp_path):
    """Before: a SafetensorError traceback from accelerate's load_state."""
    out = copy_of(run, tmp_path)
    weights = out / "checkpoint-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(SystemExit) as stop:
        train(trainer, data, out, *METHOD, "--max_train_steps", "4", "--use_ema", "--resume_from_checkpoint", "latest")
    message = str(stop.value.code)
    assert message.startswith(
        f"error: --resume_from_checkpoint {out / 'checkpoint-2'}: a file of it cannot be read (SafetensorError: "
    )
    assert message.endswith("damaged or truncated: resume from another checkpoint.") and "\n" not in message


@pytest.mark.parametrize(
    "what, message",
    [
        ("a missing training folder", "--train_data_dir {x}: no such folder"),  # was a FileNotFoundError traceback
        ("a training file", "--train_data_dir {x}: not a folder"),
        ("an empty training folder", "--train_data_dir {x}: no images (.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp, "),
        ("a missing LR folder", "--train_lr_dir {x}: no such folder"),  # every image 'unreadable', a traceback
        ("a missing validation folder", "--validation_data_dir {x}: no such folder"),  # validated nothing, silently
        ("an empty validation folder", "--validation_data_dir {x}: no images (.png, "),
        ("an output file", "--output_dir {x}: {x} is not a folder"),  # a FileExistsError traceback
        ("an output under a file", "--output_dir {x}/run: {x} is not a folder"),  # NotADirectoryError
    ],
)
def test_a_folder_that_is_not_one_stops_the_run_before_it_writes(trainer, data, tmp_path, what, message):
    x = tmp_path / "x"
    if "file" in what:
        x.write_text("not a folder")
    elif "empty" in what:
        x.mkdir()
    flag_values = {
        "training": ["--train_data_dir", str(x)],
        "LR": ["--train_data_dir", str(data), "--train_lr_dir", str(x)],
        "validation": ["--train_data_dir", str(data), "--validation_data_dir", str(x)],
        "output": ["--train_data_dir", str(data)],
    }
    flags = next(value for key, value in flag_values.items() if key in what)
    out = x / "run" if "under" in what else x if "output" in what else tmp_path / "out"
    args = trainer.parse_args([*TINY, *flags, "--output_dir", str(out), "--max_train_steps", "1"])
    with pytest.raises(SystemExit) as stop:
        trainer.main(args)
    assert str(stop.value.code).startswith("error: " + message.format(x=x)), stop.value.code
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("resume", [[], ["--resume_from_checkpoint", "latest"]])
def test_a_new_run_into_a_finished_one_is_refused(trainer, data, tmp_path, resume):
    """A finished run that saved no checkpoint (fewer steps than --checkpointing_steps). Before: replaced, silently."""
    out = tmp_path / "run"
    train(trainer, data, out, "--max_train_steps", "1")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "train.log"}
    with pytest.raises(SystemExit) as stop:
        train(trainer, data, out, "--max_train_steps", "1", "--learning_rate", "1e-3", *resume)
    assert str(stop.value.code) == (
        f"error: {out} already holds a trained pipeline (model_index.json) and no checkpoint to resume: choose "
        "another --output_dir"
    )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "train.log"} == before


@pytest.mark.parametrize("name", ["optimizer.bin", "scheduler.bin"])
def test_a_truncated_state_file_is_named_as_damaged(trainer, data, run, tmp_path, name):
    """
    Before: a truncated optimizer or scheduler state (torch's zip archive cut short) was reported as "it does not fit
    this run's model or optimizer ... resume with the flags of the run that saved it", sending the user after flags
    that were right. Now it names the damaged file.
    """
    out = copy_of(run, tmp_path)
    state = out / "checkpoint-2" / name
    state.write_bytes(state.read_bytes()[:200])
    with pytest.raises(SystemExit) as stop:
        train(trainer, data, out, *METHOD, "--max_train_steps", "4", "--use_ema", "--resume_from_checkpoint", "latest")
    message = str(stop.value.code)
    assert message == (
        f"error: --resume_from_checkpoint {out / 'checkpoint-2'}: {name} cannot be read (not a whole torch archive): "
        "damaged or truncated: resume from another checkpoint."
    )


def test_a_damaged_marker_is_named(trainer, data, run, tmp_path):
    """Before: "cannot tell its step (not named checkpoint-<step> and no deltadiff_checkpoint.json)" for a folder
    named checkpoint-2 that holds the file."""
    out = copy_of(run, tmp_path)
    marker = out / "checkpoint-2" / "deltadiff_checkpoint.json"
    marker.write_text(marker.read_text()[:10])
    with pytest.raises(SystemExit) as stop:
        train(trainer, data, out, *METHOD, "--max_train_steps", "4", "--use_ema", "--resume_from_checkpoint", "latest")
    assert str(stop.value.code).startswith(
        f"error: --resume_from_checkpoint {out / 'checkpoint-2'}: its deltadiff_checkpoint.json cannot be read "
        "(damaged or edited): resume from another checkpoint; checkpoints: "
    )


def test_a_batch_larger_than_the_training_images_stops_before_it_writes(trainer, data, tmp_path):
    """Before: 'N training images are fewer than one batch per process', without `error:`, after the output folder
    and its train.log were made."""
    out = tmp_path / "out"
    args = trainer.parse_args(
        [*TINY, "--train_data_dir", str(data), "--output_dir", str(out), "--train_batch_size", "5"]
    )
    with pytest.raises(SystemExit) as stop:
        trainer.main(args)
    assert str(stop.value.code) == f"error: --train_batch_size 5: more than the 4 images of --train_data_dir {data}"
    assert not out.exists()


def test_an_lr_folder_with_two_images_for_one_name_stops_before_it_writes(trainer, data, tmp_path):
    """Before: the run trained on whichever of `img0.png` and `img0x4.png` sorted last, without a word."""
    lr, out = tmp_path / "lr", tmp_path / "out"
    lr.mkdir()
    for name in ("img0.png", "img0x4.png"):
        PIL.Image.new("RGB", (10, 10)).save(lr / name)
    args = trainer.parse_args(
        [*TINY, "--train_data_dir", str(data), "--output_dir", str(out), "--train_lr_dir", str(lr)]
    )
    with pytest.raises(SystemExit) as stop:
        trainer.main(args)
    assert str(stop.value.code) == (
        f"error: --train_lr_dir {lr}: 2 LR images pair with the HR name img0 ({lr / 'img0.png'}, {lr / 'img0x4.png'}): "
        "keep one"
    )
    assert not out.exists()
