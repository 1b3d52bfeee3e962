"""Real `accelerate launch` runs of the training scripts, a few steps on tiny images written to a temp folder."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import VQModel
from safetensors.torch import load_file

from diffusers_deltadiff import DeltaDiffPipeline, DeltaShiftScheduler, LocalUNet2DModel, SpaceToDepthAutoencoder
from diffusers_deltadiff.testing_utils import tiny_vqmodel


ROOT = Path(__file__).resolve().parents[1]
TINY_UNET = [
    "--unet_block_out_channels", "32,64",
    "--unet_attention_levels", "1",
    "--unet_norm_num_groups", "8",
    "--unet_layers_per_block", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    data = root / "data"
    (data / "nested").mkdir(parents=True)
    for i in range(6):
        rng = np.random.RandomState(i)
        image = PIL.Image.fromarray((rng.rand(40 + 4 * i, 36, 3) * 255).astype(np.uint8))
        image.save(data / ("nested" if i % 2 else ".") / f"img{i}.png")
    (data / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    tiny_vqmodel().save_pretrained(root / "vq")
    return root


def run(command, workdir, name):
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_HOME=str(workdir / "hf_home"),
        HF_DATASETS_CACHE=str(workdir / "hf_home" / "datasets"),
        ACCELERATE_USE_CPU="true",
        OMP_NUM_THREADS="1",
    )
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    (workdir / f"{name}.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


def accelerate_launch(script, args):
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu", script, *args]


def deltadiff_args(workdir, output_dir, *extra):
    return [
        "--vqvae_model_name_or_path", str(workdir / "vq"),
        "--train_data_dir", str(workdir / "data"),
        "--resolution", "32",
        "--train_batch_size", "2",
        "--dataloader_num_workers", "0",
        "--report_to", "none",
        "--output_dir", str(output_dir),
        *TINY_UNET,
        *extra,
    ]  # fmt: skip


def test_train_deltadiff(workdir):
    out = workdir / "deltadiff"
    log = run(
        accelerate_launch(
            "training/train_deltadiff.py",
            deltadiff_args(
                workdir,
                out,
                "--max_train_steps",
                "3",
                "--checkpointing_steps",
                "2",
                "--validation_data_dir",
                str(workdir / "data"),
                "--validation_steps",
                "2",
                "--num_validation_images",
                "2",
                "--validation_resolution",
                "32",
                "--use_ema",
                "--report_to",
                "tensorboard",
            ),  # fmt: skip
        ),
        workdir,
        "deltadiff",
    )
    assert "1 unreadable training image(s) were skipped" in log
    assert "corrupt.png" in log
    assert (out / "checkpoint-2").is_dir()
    assert sorted(p.name for p in (out / "validation").glob("*.png")) == ["step-0000002.png", "step-0000003.png"]
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    card = (out / "README.md").read_text()
    assert "DeltaDiff (kappa = 0" in card and "val/psnr_y" in card and "license: apache-2.0" in card

    pipe = DeltaDiffPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, DeltaShiftScheduler) and pipe.scheduler.config.kappa == 0
    assert pipe(np.zeros((8, 12, 3), dtype=np.uint8), output_type="np").images.shape == (1, 32, 48, 3)


def test_train_lossless_residual_local(workdir):
    """The shipped default's recipe: lossless latent, residual prediction from a zeroed output, per-pixel norms."""
    out = workdir / "lossless"
    args = [
        "--lossless_latent",
        "--prediction_type", "residual",
        "--unet_norm", "pixel",
        "--unet_attention_levels", "",
        "--zero_init_output",
        "--hr_downscale", "1.5",
        "--train_data_dir", str(workdir / "data"),
        "--resolution", "32",
        "--train_batch_size", "2",
        "--dataloader_num_workers", "0",
        "--report_to", "none",
        "--unet_block_out_channels", "16,32",
        "--unet_norm_num_groups", "8",
        "--unet_layers_per_block", "1",
        "--max_train_steps", "2",
        "--use_ema",
        "--output_dir", str(out),
    ]  # fmt: skip
    run(accelerate_launch("training/train_deltadiff.py", args), workdir, "lossless")
    pipe = DeltaDiffPipeline.from_pretrained(out)
    assert isinstance(pipe.vqvae, SpaceToDepthAutoencoder) and isinstance(pipe.unet, LocalUNet2DModel)
    assert pipe.scheduler.config.prediction_type == "residual"
    assert pipe.unet.config.in_channels == 51 and pipe.unet.config.out_channels == 48
    assert "lossless space-to-depth" in (out / "README.md").read_text()
    # 2 steps moved the zeroed output layer away from zero (so training reached it)
    assert pipe.unet.conv_out.weight.abs().max() > 0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--unet_norm", "pixel"], "has no attention"),
        (["--hr_downscale", "0.5"], "--hr_downscale must be at least 1"),
    ],
)
def test_recipe_flag_errors(workdir, flags, message):
    command = [sys.executable, "training/train_deltadiff.py", "--lossless_latent", "--train_data_dir", "x", *flags]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr


def test_latent_flags_are_exclusive(workdir):
    command = [sys.executable, "training/train_deltadiff.py", "--train_data_dir", "x"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--vqvae_model_name_or_path" in result.stderr
    both = [*command, "--lossless_latent", "--vqvae_model_name_or_path", "vq"]
    result = subprocess.run(both, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "not allowed with" in result.stderr


def test_resume_gives_identical_weights(workdir):
    """4 steps straight vs 2 steps + resume for 2 (mid-epoch, ResShift noise, EMA, warm-up/cosine LR)."""
    common = [
        "--max_train_steps", "4",
        "--checkpointing_steps", "2",
        "--use_ema",
        "--kappa", "2.0",
        "--lr_scheduler", "cosine",
        "--lr_warmup_steps", "1",
    ]  # fmt: skip
    straight, resumed = workdir / "straight", workdir / "resumed"
    run(accelerate_launch("training/train_deltadiff.py", deltadiff_args(workdir, straight, *common)), workdir, "a")
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-2", resumed / "checkpoint-2")
    log = run(
        accelerate_launch(
            "training/train_deltadiff.py",
            deltadiff_args(workdir, resumed, *common, "--resume_from_checkpoint", "latest"),
        ),
        workdir,
        "b",
    )
    assert "Resuming from checkpoint" in log
    a = load_file(straight / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    initial = load_file(straight / "checkpoint-2" / "model.safetensors")
    assert any(not torch.equal(initial[k], a[k]) for k in a)  # the last 2 steps did change the weights


def test_two_process_cpu_launch(workdir):
    out = workdir / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "training/train_deltadiff.py",
        *deltadiff_args(workdir, out, "--max_train_steps", "2", "--train_batch_size", "1", "--checkpointing_steps", "2"),
        "--validation_data_dir", str(workdir / "data"),
        "--num_validation_images", "3",
        "--validation_resolution", "32",
        "--validation_steps", "2",
    ]  # fmt: skip
    log = run(command, workdir, "ddp")
    assert log.count("DistributedType.MULTI_CPU") == 2 and "Num processes: 2" in log
    assert (out / "checkpoint-2").is_dir()
    DeltaDiffPipeline.from_pretrained(out)

    # the 2-process run's checkpoint becomes a pipeline, with exactly the weights the run saved itself at
    # that step (no EMA here: the final pipeline is the raw step 2); wrapper prefixes are tested below
    run(
        [sys.executable, "training/checkpoint_to_pipeline.py", "--run", str(out), "--checkpoint", "2", "--raw",
         "--output", str(workdir / "ddp-step2")],
        workdir,
        "ddp-export",
    )  # fmt: skip
    exported = DeltaDiffPipeline.from_pretrained(workdir / "ddp-step2").unet.state_dict()
    final = DeltaDiffPipeline.from_pretrained(out).unet.state_dict()
    assert exported.keys() == final.keys()
    assert all(torch.equal(exported[key], final[key]) for key in final)


def test_train_vqmodel(workdir):
    out = workdir / "vqmodel"
    args = [
        "--train_data_dir", str(workdir / "data"),
        "--resolution", "32",
        "--train_batch_size", "2",
        "--max_train_steps", "4",
        "--block_out_channels", "8,16,16",
        "--norm_num_groups", "8",
        "--num_vq_embeddings", "32",
        "--warmup_steps", "2",
        "--dead_code_steps", "2",
        "--checkpointing_steps", "2",
        "--checkpoints_total_limit", "1",
        "--validation_data_dir", str(workdir / "data"),
        "--validation_steps", "4",
        "--num_validation_images", "2",
        "--validation_resolution", "32",
        "--dataloader_num_workers", "0",
        "--report_to", "none",
        "--output_dir", str(out),
    ]  # fmt: skip
    log = run(accelerate_launch("training/train_vqmodel.py", args), workdir, "vq")
    assert "codebook initialised from encoder outputs" in log
    assert "VQ round-trip Y-PSNR" in log
    vqvae = VQModel.from_pretrained(out)
    assert vqvae.config.latent_channels == 3 and len(vqvae.config.block_out_channels) == 3
    assert (out / "diffusion_pytorch_model.safetensors").is_file()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]  # --checkpoints_total_limit 1


@pytest.mark.parametrize("script", ["training/train_deltadiff.py", "training/train_vqmodel.py"])
def test_lpips_weight_without_lpips_stops_both_scripts(workdir, script):
    """One rule for both trainers: a requested LPIPS loss that cannot load stops the run, naming the reason."""
    try:
        import lpips  # noqa: F401

        pytest.skip("lpips is installed here; the rule is checked where it is not")
    except ImportError:
        pass
    extra = ["--lossless_latent", "--train_batch_size", "2"] if "deltadiff" in script else []  # 7 images here
    command = [sys.executable, script, *extra, "--train_data_dir", str(workdir / "data"), "--lpips_weight", "0.5"]
    command += ["--output_dir", str(workdir / f"lpips-{Path(script).stem}"), "--report_to", "none"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "--lpips_weight 0.5: the `lpips` package is not installed" in result.stderr


# --- checkpoints are never lost --------------------------------------------------------------------------------------


class FakeAccelerator:
    """What `save_checkpoint` / `resume` use of an Accelerator; `save_state` writes what accelerate writes."""

    is_main_process = True

    def __init__(self, interrupt_after: str | None = None):
        self.interrupt_after = interrupt_after

    def wait_for_everyone(self):
        pass

    def save_state(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
            (Path(path) / name).write_bytes(b"x")
            if name == self.interrupt_after:
                raise KeyboardInterrupt


def fake_checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x")
    if complete:
        torch.save({}, path / "optimizer.bin")  # a whole torch archive, as accelerate writes
        (path / "random_states_0.pkl").write_bytes(b"x")
    return path


def test_checkpoint_names_are_parsed_strictly(tmp_path):
    from diffusers_deltadiff.training_utils import checkpoint_dirs, resolve_checkpoint

    fake_checkpoint(tmp_path, 10)
    fake_checkpoint(tmp_path, 9)
    fake_checkpoint(tmp_path, 12, complete=False)  # half-written by an older version: never `latest`
    (tmp_path / "checkpoint-2.tar").write_bytes(b"not mine")
    (tmp_path / "checkpoint-best").mkdir()
    (tmp_path / "checkpoint-x-3").mkdir()
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["checkpoint-9", "checkpoint-10"]
    assert resolve_checkpoint("latest", str(tmp_path)) == (str(tmp_path / "checkpoint-10"), 10)


def test_resume_from_a_missing_checkpoint_is_an_error_that_lists_the_others(tmp_path):
    from diffusers_deltadiff.training_utils import resolve_checkpoint

    fake_checkpoint(tmp_path, 8)
    with pytest.raises(SystemExit) as error:
        resolve_checkpoint(str(tmp_path / "checkpoint-80"), str(tmp_path))
    assert "checkpoint-80: no such checkpoint folder" in str(error.value)
    assert str(tmp_path / "checkpoint-8") in str(error.value)
    with pytest.raises(SystemExit, match="incomplete checkpoint"):
        resolve_checkpoint(str(fake_checkpoint(tmp_path, 9, complete=False)), str(tmp_path))
    odd = tmp_path / "my-backup"
    shutil.copytree(tmp_path / "checkpoint-8", odd)
    with pytest.raises(SystemExit, match="cannot tell its step"):
        resolve_checkpoint(str(odd), str(tmp_path))
    # a fresh run never starts over existing checkpoints; `latest` in an empty folder is a new run
    with pytest.raises(SystemExit, match="already holds checkpoints"):
        resolve_checkpoint(None, str(tmp_path))
    assert resolve_checkpoint("latest", str(tmp_path / "new")) == (None, 0)


def test_interrupted_save_keeps_the_last_checkpoint(tmp_path):
    from diffusers_deltadiff.training_utils import checkpoint_dirs, resolve_checkpoint, save_checkpoint

    save_checkpoint(FakeAccelerator(), str(tmp_path), 1, 4)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["checkpoint-4"]
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(FakeAccelerator(interrupt_after="optimizer.bin"), str(tmp_path), 1, 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]  # no half-written folder, nothing pruned
    assert resolve_checkpoint("latest", str(tmp_path)) == (str(tmp_path / "checkpoint-4"), 4)
    # a step marker makes a renamed checkpoint resumable
    shutil.copytree(tmp_path / "checkpoint-4", tmp_path / "kept")
    assert resolve_checkpoint(str(tmp_path / "kept"), str(tmp_path)) == (str(tmp_path / "kept"), 4)
    save_checkpoint(FakeAccelerator(), str(tmp_path), 1, 6)  # complete: only now is checkpoint-4 pruned
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["checkpoint-6"]


SLOW_SAVE = """
import runpy, sys, time
from pathlib import Path
import accelerate

flag = Path(sys.argv[1])
original = accelerate.Accelerator.save_state
def slow_save_state(self, output_dir=None, **kwargs):
    location = original(self, output_dir, **kwargs)
    if Path(output_dir).name == ".checkpoint-4.partial":  # the second checkpoint: signal, then stay in the save until interrupted
        flag.write_text("saving")
        time.sleep(120)
    return location
accelerate.Accelerator.save_state = slow_save_state
sys.argv = ["train_deltadiff.py", *sys.argv[2:]]
runpy.run_path("training/train_deltadiff.py", run_name="__main__")
"""


def test_sigint_during_a_checkpoint_save_loses_nothing(workdir):
    """A real Ctrl-C while `checkpoint-4` is being written, with `--checkpoints_total_limit 1`; then `latest`."""
    import signal
    import time

    out, signal_file = workdir / "sigint", workdir / "saving.flag"
    wrapper = workdir / "slow_save.py"
    wrapper.write_text(SLOW_SAVE)
    common = ["--max_train_steps", "6", "--checkpointing_steps", "2", "--checkpoints_total_limit", "1"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", HF_HOME=str(workdir / "hf_home"))
    command = [sys.executable, str(wrapper), str(signal_file), *deltadiff_args(workdir, out, *common)]
    log_file = workdir / "sigint.log"
    with open(log_file, "wb") as log:  # a file, not a pipe: a full pipe would stall the run
        # a suite started in the background (`make test &`) inherits SIGINT ignored; Ctrl-C reaches a foreground run
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    deadline = time.monotonic() + 300
    while not signal_file.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert signal_file.exists(), log_file.read_text()[-3000:]
    before = sorted(p.name for p in out.iterdir() if "checkpoint" in p.name)
    assert before == [".checkpoint-4.partial", "checkpoint-2"]
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    output = log_file.read_text()
    assert process.returncode != 0 and "KeyboardInterrupt" in output
    after = sorted(p.name for p in out.iterdir() if "checkpoint" in p.name)
    assert after == ["checkpoint-2"]  # the old checkpoint survives, the half-written one is gone
    log = run(
        accelerate_launch(
            "training/train_deltadiff.py", deltadiff_args(workdir, out, *common, "--resume_from_checkpoint", "latest")
        ),
        workdir,
        "sigint-resume",
    )
    assert "Resuming from checkpoint" in log and "checkpoint-2" in log
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6"]
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_resume_typo_fails_and_keeps_the_run(workdir):
    out = workdir / "typo"
    common = ["--max_train_steps", "2", "--checkpointing_steps", "2", "--checkpoints_total_limit", "1"]
    run(accelerate_launch("training/train_deltadiff.py", deltadiff_args(workdir, out, *common)), workdir, "typo-a")
    (out / "checkpoint-2.tar").write_bytes(b"a user's archive")  # not a checkpoint: left alone, no crash
    model = out / "unet" / "diffusion_pytorch_model.safetensors"
    weights = model.read_bytes()
    typo = [*common, "--max_train_steps", "4", "--resume_from_checkpoint", str(out / "checkpoint-20")]
    result = subprocess.run(
        accelerate_launch("training/train_deltadiff.py", deltadiff_args(workdir, out, *typo)),
        cwd=ROOT,
        env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    assert "checkpoint-20: no such checkpoint folder" in result.stderr and "checkpoint-2" in result.stderr
    assert (out / "checkpoint-2").is_dir() and model.read_bytes() == weights
    # the same folder resumed properly: continues from step 2, the archive untouched
    resumed = [*common, "--max_train_steps", "4", "--resume_from_checkpoint", "latest"]
    run(accelerate_launch("training/train_deltadiff.py", deltadiff_args(workdir, out, *resumed)), workdir, "typo-b")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2.tar", "checkpoint-4"]
    assert (out / "checkpoint-2.tar").read_bytes() == b"a user's archive"


def test_train_through_chain(workdir):
    """The unrolled deterministic chain (L1 on the final latent), resumable, and the best held-out model saved."""
    out = workdir / "chain"
    flags = [
        "--max_train_steps", "2", "--train_through_chain", "--loss", "l1", "--chain_steps", "1,2",
        "--chain_intermediate_weight", "0.5", "--validation_data_dir", str(workdir / "data"),
        "--validation_steps", "1", "--num_validation_images", "1", "--validation_resolution", "32", "--save_best",
        "--deterministic",
    ]  # fmt: skip
    run(accelerate_launch("training/train_deltadiff.py", deltadiff_args(workdir, out, *flags)), workdir, "chain")
    import json

    history = [json.loads(line) for line in (out / "validation" / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2]
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["val/psnr_y"] == max(h["val/psnr_y"] for h in history)
    assert DeltaDiffPipeline.from_pretrained(out / "best").unet is not None
    for saved in (out, out / "best"):  # both run the chain they were validated on (the longest trained) by default
        assert DeltaDiffPipeline.from_pretrained(saved).scheduler.config.default_inference_steps == 2


def test_a_kill_while_replacing_a_checkpoint_keeps_it(tmp_path):
    """Killed between the two renames of a replacement: the complete copy becomes `checkpoint-N` again on resume."""
    from diffusers_deltadiff.training_utils import checkpoint_dirs, remove_partial_checkpoints, save_checkpoint

    save_checkpoint(FakeAccelerator(), str(tmp_path), None, 4)
    (tmp_path / "checkpoint-4").rename(tmp_path / ".checkpoint-4.replaced")  # the state after the first rename
    save_checkpoint(FakeAccelerator(), str(tmp_path), None, 2)
    shutil.copytree(tmp_path / "checkpoint-2", tmp_path / ".checkpoint-6.partial")  # complete, not yet renamed
    (tmp_path / ".checkpoint-8.partial").mkdir()  # half-written: no marker
    remove_partial_checkpoints(str(tmp_path))
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert not list(tmp_path.glob(".checkpoint-*"))


def test_pruning_unlinks_a_symlinked_checkpoint(tmp_path):
    from diffusers_deltadiff.training_utils import checkpoint_dirs, save_checkpoint

    elsewhere = tmp_path / "other-run"
    save_checkpoint(FakeAccelerator(), str(elsewhere), None, 2)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint-2").symlink_to(elsewhere / "checkpoint-2")
    save_checkpoint(FakeAccelerator(), str(run_dir), 1, 4)
    assert [p.name for p in checkpoint_dirs(run_dir)] == ["checkpoint-4"]
    assert (elsewhere / "checkpoint-2" / "optimizer.bin").is_file()  # the other run's checkpoint is untouched


def test_a_checkpoint_of_another_model_is_a_one_line_error(tmp_path):
    from diffusers_deltadiff.training_utils import resume

    class Mismatched(FakeAccelerator):
        def print(self, *args):
            pass

        def load_state(self, path):
            raise RuntimeError("Error(s) in loading state_dict for UNet2DModel:\n\tsize mismatch for conv_in.weight")

    fake_checkpoint(tmp_path, 2)
    with pytest.raises(SystemExit) as error:
        resume(Mismatched(), "latest", str(tmp_path), 10, 1)
    assert "does not fit this run's model" in str(error.value) and "size mismatch" in str(error.value)
    assert "\n" not in str(error.value)


def test_an_interrupted_best_save_is_finished_on_restart(tmp_path):
    """`--save_best` killed between its renames: the complete new best, or else the previous one, is `best`."""
    import importlib.util
    import json

    from accelerate import PartialState

    PartialState(cpu=True)  # the trainer logs through accelerate
    spec = importlib.util.spec_from_file_location("train_deltadiff", ROOT / "training" / "train_deltadiff.py")
    trainer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trainer)
    for name, psnr in ((".best.old", 14.69), (".best.partial", 14.80)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "best.json").write_text(json.dumps({"step": 3, "val/psnr_y": psnr}))
    assert trainer.best_validation_psnr(str(tmp_path)) == 14.80
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    (tmp_path / "best").rename(tmp_path / ".best.old")  # killed after the first rename, before the new one was made
    assert trainer.best_validation_psnr(str(tmp_path)) == 14.80
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_checkpoint_keys_of_wrapped_models_are_unwrapped():
    """`module.` (DDP, DataParallel, DeepSpeed) and `_orig_mod.` (torch.compile) prefixes, alone or nested."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "checkpoint_to_pipeline", ROOT / "training" / "checkpoint_to_pipeline.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4))
    wrapped = torch.nn.DataParallel(torch.compile(model))  # keys `module._orig_mod.0.weight`, ...
    keys = list(wrapped.state_dict())
    assert keys[0].startswith("module._orig_mod.")
    unwrapped = module.unwrapped_state_dict(wrapped.state_dict())
    assert list(unwrapped) == list(model.state_dict())
    model.load_state_dict(unwrapped)  # strict


def test_a_x2_unet_transplanted_from_a_x4_model(tmp_path):
    """`--unet_init_from`: a x4 model's UNet for a x2 latent: shape and inner weights copied, the two ends new."""
    import importlib.util

    from accelerate import PartialState

    from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline

    PartialState(cpu=True)  # the trainer logs through accelerate
    spec = importlib.util.spec_from_file_location("train_deltadiff", ROOT / "training" / "train_deltadiff.py")
    trainer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trainer)
    tiny_lossless_pipeline(seed=1).save_pretrained(tmp_path / "x4")
    source = DeltaDiffPipeline.from_pretrained(tmp_path / "x4").unet
    args = trainer.parse_args(
        ["--lossless_latent", "--upscale_factor", "2", "--unet_init_from", str(tmp_path / "x4"), "--zero_init_output",
         "--train_data_dir", str(tmp_path), "--resolution", "32", "--output_dir", str(tmp_path / "out")]
    )  # fmt: skip
    unet = trainer.build_unet(args, 12)
    assert type(unet) is type(source) and unet.config.block_out_channels == source.config.block_out_channels
    assert (unet.config.in_channels, unet.config.out_channels) == (15, 12)
    assert (source.config.in_channels, source.config.out_channels) == (51, 48)
    mine, theirs = unet.state_dict(), source.state_dict()
    differ = {k for k in mine if mine[k].shape != theirs[k].shape}
    assert differ == {"conv_in.weight", "conv_out.weight", "conv_out.bias"}
    assert all(torch.equal(mine[k], theirs[k]) for k in mine if k not in differ)
    assert not unet.conv_out.weight.any() and not unet.conv_out.bias.any()
    with pytest.raises(SystemExit):
        trainer.parse_args(["--unet_init_from", "a", "--pretrained_model_name_or_path", "b", "--train_data_dir", "d"])
