"""
Saved configurations are checked when a pipeline loads (`config_checks`): a value that would give a black image, a
traceback, a hang or a huge allocation is a one-line `ValueError` naming the file and the key, and a one-line error
in the CLI; a scheduler built in code checks its values too.
"""

import json
import math
import shutil
from pathlib import Path

import pytest

from conftest import write_image
from diffusers_deltadiff import DeltaDiffPipeline
from diffusers_deltadiff.cli import main
from diffusers_deltadiff.testing_utils import tiny_pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tiny_pipeline(seed=0).save_pretrained(path)
    return path


def edited_copy(model_dir: Path, tmp_path: Path, relative: str, key: str, value) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    config_path = folder / relative
    config = json.loads(config_path.read_text())
    config[key] = value
    config_path.write_text(json.dumps(config))  # NaN and Infinity are written as JSON's NaN / Infinity
    return folder


BAD_CONFIGS = [
    ("scheduler/scheduler_config.json", "kappa", math.nan),
    ("scheduler/scheduler_config.json", "kappa", math.inf),
    ("scheduler/scheduler_config.json", "power", -0.3),
    ("scheduler/scheduler_config.json", "num_train_timesteps", 4.5),
    ("scheduler/scheduler_config.json", "num_train_timesteps", 10_000_000),
    ("scheduler/scheduler_config.json", "eta_start", "0.01"),
    # more steps by default than the chain has (T = 4): before, a ValueError that did not name the file
    ("scheduler/scheduler_config.json", "default_inference_steps", 9),
    ("model_index.json", "tile_context", 2.5),
    ("model_index.json", "upscale_factor", 1_000_000),
    ("model_index.json", "upscale_factor", -4),
    ("unet/config.json", "layers_per_block", 1_000_000),
    ("unet/config.json", "block_out_channels", [32, 1e9]),
    # values that gave black images, tracebacks, hangs, a different model or huge allocations
    ("unet/config.json", "norm_eps", math.nan),
    ("unet/config.json", "mid_block_scale_factor", math.nan),
    ("unet/config.json", "norm_eps", "1e-5"),
    ("unet/config.json", "dropout", math.nan),
    ("unet/config.json", "downsample_padding", 1000),
    ("unet/config.json", "class_embed_type", "timestep"),
    ("unet/config.json", "num_class_embeds", 100_000_000),
    ("unet/config.json", "time_embedding_dim", 1_000_000_000),
    ("vqvae/config.json", "norm_type", "bogus"),
    ("vqvae/config.json", "num_vq_embeddings", 10_000_000_000),
]


@pytest.mark.parametrize("relative, key, value", BAD_CONFIGS)
def test_bad_config_values_are_one_line_errors_naming_file_and_key(model_dir, tmp_path, relative, key, value):
    folder = edited_copy(model_dir, tmp_path, relative, key, value)
    with pytest.raises(ValueError) as error:
        DeltaDiffPipeline.from_pretrained(folder)
    message = str(error.value)
    assert "\n" not in message and str(folder / relative) in message and f"`{key}`" in message


def test_bad_config_in_the_cli_gives_a_summary_not_a_traceback(model_dir, tmp_path, capsys):
    folder = edited_copy(model_dir, tmp_path, "scheduler/scheduler_config.json", "kappa", math.nan)
    image = write_image(tmp_path / "in" / "a.png", 8, 8)
    code = main(["upscale", str(image), "--model", str(folder), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "scheduler_config.json" in lines[0] and "`kappa`" in lines[0]
    assert not (tmp_path / "out" / "a.png").exists()


def test_scheduler_built_in_code_checks_its_values():
    from diffusers_deltadiff import DeltaShiftScheduler

    for kwargs in ({"kappa": math.nan}, {"power": -1.0}, {"num_train_timesteps": 4.5}, {"eta_end": math.inf}):
        with pytest.raises(ValueError):
            DeltaShiftScheduler(**kwargs)
