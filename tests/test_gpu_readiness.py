"""
Defects that only a GPU (or MPS, or several ranks) shows, reproduced on the CPU with stand-ins: a device
the accelerator reports, a bf16-cast model, an interpolation kernel that does not exist, counted UNet batches.
"""

import datetime
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from diffusers.training_utils import EMAModel

from diffusers_deltadiff import DeltaShiftScheduler, LocalUNet2DModel
from diffusers_deltadiff.training_utils import resume, save_checkpoint


ROOT = Path(__file__).resolve().parents[1]


def load_trainer():
    spec = importlib.util.spec_from_file_location("train_deltadiff", ROOT / "training" / "train_deltadiff.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class OnDevice:
    """An accelerator that reports `device` (as one on a GPU would) and does everything else as the CPU one."""

    def __init__(self, accelerator, device):
        self._accelerator, self.device = accelerator, torch.device(device)

    def __getattr__(self, name):
        return getattr(self._accelerator, name)


def test_resume_puts_the_ema_back_on_the_accelerator_device(tmp_path):
    """`load_state` maps custom objects to the CPU: without the move, EMA weights would stay there on a GPU run."""
    accelerator = Accelerator(cpu=True, project_config=ProjectConfiguration(project_dir=str(tmp_path)))
    model = accelerator.prepare(torch.nn.Linear(3, 2))
    ema = EMAModel(model.parameters())
    accelerator.register_for_checkpointing(ema)
    save_checkpoint(accelerator, str(tmp_path), None, 2)

    ema.to("meta")  # the state a GPU run has before resuming: shadow weights on the model's device
    # the `meta` device stands in for `cuda`: `load_state` still brings the saved EMA back on the CPU
    step, _, _ = resume(OnDevice(accelerator, "meta"), "latest", str(tmp_path), 10, 1, ema=ema)
    assert step == 2
    assert {p.device.type for p in ema.shadow_params} == {"meta"}

    # and without an EMA to move, resuming is unchanged
    assert resume(accelerator, "latest", str(tmp_path), 10, 1)[0] == 2


def tiny_local_unet():
    torch.manual_seed(0)
    return LocalUNet2DModel(
        sample_size=8,
        in_channels=6,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        add_attention=False,
        norm_num_groups=8,
    )


def test_training_input_follows_a_bf16_cast_unet():
    """Under DeepSpeed bf16 the whole UNet is cast and takes no float32 input ("Input type (float) and bias type")."""
    trainer = load_trainer()
    unet = tiny_local_unet().to(torch.bfloat16)
    y, condition = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    assert trainer.unet_input(unet, y, condition).dtype == torch.bfloat16
    scheduler = DeltaShiftScheduler(prediction_type="residual")
    final, predictions = trainer.unrolled_chain(unet, scheduler, y, condition, 2)
    assert final.dtype == torch.float32 and len(predictions) == 2  # the chain's arithmetic stays in float32
    assert trainer.unet_input(tiny_local_unet(), y, condition).dtype == torch.float32  # autocast runs keep float32


def test_the_upscale_group_waits_as_long_as_the_flag_says(monkeypatch):
    """NCCL's watchdog default (10 minutes) would abort a process that waits for slower ones: the CLI sets its own."""
    import accelerate

    from diffusers_deltadiff import cli
    from diffusers_deltadiff.cli import distributed

    made = []

    class RecordingState:
        def __init__(self, cpu=False, **kwargs):
            made.append(kwargs)
            self.num_processes = 2

        @staticmethod
        def _reset_state():
            pass

    monkeypatch.setattr(accelerate, "PartialState", RecordingState)
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = cli.build_parser().parse_args(["upscale", "x", "-o", "y", "--process-timeout", "90"])
    distributed.process_state(args)
    assert made == [{"timeout": datetime.timedelta(minutes=90)}]
    made.clear()
    distributed.process_state(cli.build_parser().parse_args(["upscale", "x", "-o", "y"]))
    assert made == [{"timeout": datetime.timedelta(days=1)}]  # the default: a day, not NCCL's 10 minutes


def test_a_cpu_group_on_a_mac_still_upscales_on_mps(monkeypatch):
    """accelerate groups MPS processes on the CPU (gloo): `--device auto` must not follow it there."""
    from types import SimpleNamespace

    from diffusers_deltadiff.cli.distributed import process_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    state = SimpleNamespace(device=torch.device("cpu"))
    assert process_device(SimpleNamespace(device="auto"), state) == "mps"
    assert process_device(SimpleNamespace(device="cpu"), state) == "cpu"  # asked for the CPU: the CPU


def test_bicubic_kernels_missing_on_old_mps_are_known():
    from diffusers_deltadiff.image_utils import lacks_bicubic_kernel

    assert lacks_bicubic_kernel("mps", antialias=False, version="2.5.1")
    assert not lacks_bicubic_kernel("mps", antialias=False, version="2.6.0")
    assert lacks_bicubic_kernel("mps", antialias=True, version="2.7.1")
    assert not lacks_bicubic_kernel("mps", antialias=True, version="2.10.0+cpu")  # 2.10 > 2.8: numbers, not text
    assert not lacks_bicubic_kernel("cuda", antialias=True, version="2.1.0")
    assert not lacks_bicubic_kernel("cpu", antialias=True, version="2.1.0")


def test_a_missing_bicubic_kernel_runs_on_the_cpu_with_the_same_result(monkeypatch):
    """Stand-in for MPS on torch < 2.6: the device lacks the kernel, so the resize runs on the CPU in float32."""
    import torch.nn.functional as F

    from diffusers_deltadiff import image_utils

    images = torch.rand(2, 3, 7, 5) * 2 - 1
    expected_up = F.interpolate(images, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)
    expected_down = F.interpolate(images, size=(3, 2), mode="bicubic", align_corners=False, antialias=True)
    monkeypatch.setattr(image_utils, "lacks_bicubic_kernel", lambda device, antialias: True)
    half = images.to(torch.bfloat16)
    assert image_utils.bicubic_upsample(half, 4).dtype == torch.bfloat16  # back in the input's dtype
    assert torch.equal(image_utils.bicubic_upsample(images, 4), expected_up)
    assert torch.equal(image_utils.resize_to(images, (3, 2)), expected_down.clamp(-1, 1))


def unet_batches(pipe) -> list[int]:
    """Record the batch size of every UNet call of `pipe` (a forward pre-hook)."""
    sizes = []
    pipe.unet.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    return sizes


@pytest.mark.parametrize("tile_size", [0, 4])  # whole canvases, and tiles (4 latent pixels: 3 x 3 tiles)
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_the_unet_batch_never_exceeds_tile_batch_size(tile_size, batch):
    """Five frames of one size used to run as one UNet batch of 5 x `tile_batch_size` tiles."""
    from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline

    pipe = tiny_lossless_pipeline()
    pipe.set_progress_bar_config(disable=True)
    frames = [torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    sizes = unet_batches(pipe)
    kwargs = {"output_type": "np", "tile_size": tile_size, "tile_batch_size": batch, "num_inference_steps": 2}
    together = pipe(frames, **kwargs).images
    assert sizes and max(sizes) <= batch
    assert sum(sizes) == 5 * 2 * (9 if tile_size else 1)  # every tile of every frame at every step, once
    assert isinstance(together, np.ndarray) and together.shape == (5, 48, 48, 3)  # one array, as before
    # each frame as it comes out alone (the reference: one image per call)
    alone = np.concatenate([pipe(frame, **{**kwargs, "tile_batch_size": 1}).images for frame in frames])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_the_scheduler_steps_with_python_int_timesteps():
    """`int(t)` of a device tensor syncs the GPU: the pipeline hands the scheduler ints, once per call."""
    from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline

    pipe = tiny_lossless_pipeline()
    pipe.set_progress_bar_config(disable=True)
    seen = []
    step = type(pipe.scheduler).step

    def recording_step(self, model_output, timestep, *args, **kwargs):
        seen.append(type(timestep))
        return step(self, model_output, timestep, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(pipe.scheduler), "step", recording_step)
        pipe(torch.rand(3, 12, 12), output_type="np", tile_size=4)  # tiled, streamed
        pipe(torch.rand(3, 12, 12), output_type="np", tile_size=4, callback_on_step_end=lambda *a: {})  # tiled
        pipe(torch.rand(3, 12, 12), output_type="np", tile_size=0)  # whole
    assert seen and set(seen) == {int}


def test_the_gpu_smoke_script_skips_cleanly_without_cuda():
    import subprocess
    import sys

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "gpu_smoke.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("skipped: no CUDA device")


def test_a_one_pass_model_is_validated_on_its_one_pass():
    trainer = load_trainer()
    args = trainer.parse_args(
        ["--lossless_latent", "--train_data_dir", "x", "--train_through_chain", "--chain_steps", "1"]
    )
    assert trainer.validation_steps(args) == 1
    args = trainer.parse_args(
        ["--lossless_latent", "--train_data_dir", "x", "--train_through_chain", "--chain_steps", "1,2"]
    )
    assert trainer.validation_steps(args) == 2
    assert (
        trainer.validation_steps(
            trainer.parse_args(["--lossless_latent", "--train_data_dir", "x", "--train_through_chain"])
        )
        is None
    )
    assert trainer.validation_steps(trainer.parse_args(["--lossless_latent", "--train_data_dir", "x"])) is None
