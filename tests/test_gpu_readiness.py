"""
Issue 21: defects that only a GPU (or MPS, or several ranks) shows, reproduced on the CPU with stand-ins: a device
the accelerator reports, a bf16-cast model, an interpolation kernel that does not exist, counted UNet batches.
"""

import datetime
import importlib.util
from pathlib import Path

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
    cli.process_state(args)
    assert made == [{"timeout": datetime.timedelta(minutes=90)}]
    made.clear()
    cli.process_state(cli.build_parser().parse_args(["upscale", "x", "-o", "y"]))
    assert made == [{"timeout": datetime.timedelta(days=1)}]  # the default: a day, not NCCL's 10 minutes


def test_a_cpu_group_on_a_mac_still_upscales_on_mps(monkeypatch):
    """accelerate groups MPS processes on the CPU (gloo): `--device auto` must not follow it there."""
    from types import SimpleNamespace

    from diffusers_deltadiff import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    state = SimpleNamespace(device=torch.device("cpu"))
    assert cli.process_device(SimpleNamespace(device="auto"), state) == "mps"
    assert cli.process_device(SimpleNamespace(device="cpu"), state) == "cpu"  # asked for the CPU: the CPU
