"""
A `model_index.json` naming the wrong class for a component (issue 29): one "cannot load" line and exit status 2,
before any weight is read; not warnings, random weights and then an error for every image (or a traceback).
"""

import json
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


def renamed(model_dir: Path, tmp_path: Path, component: str, library: str, name: str) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index[component] = [library, name]
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


WRONG_CLASSES = [
    # before: loaded with "weights not used" warnings, random weights, then a tensor-size error for every image
    ("unet", "diffusers", "UNet2DConditionModel", "a DeltaDiff pipeline takes UNet2DModel or LocalUNet2DModel"),
    # before: a traceback from DDPMScheduler.set_timesteps
    ("scheduler", "diffusers", "DDPMScheduler", "a DeltaDiff pipeline takes DeltaShiftScheduler"),
    ("vqvae", "diffusers", "AutoencoderKL", "a DeltaDiff pipeline takes VQModel or SpaceToDepthAutoencoder"),
    # a class the pipeline takes, but not the one the weights were saved from
    ("unet", "diffusers_deltadiff.unet_local_norm", "LocalUNet2DModel", "was saved from UNet2DModel"),
    ("vqvae", "diffusers_deltadiff", "SpaceToDepthAutoencoder", "was saved from VQModel"),
]


@pytest.mark.parametrize("component, library, name, reason", WRONG_CLASSES)
def test_a_wrong_class_is_one_cannot_load_line(model_dir, tmp_path, capsys, component, library, name, reason):
    folder = renamed(model_dir, tmp_path, component, library, name)
    images = [write_image(tmp_path / "in" / f"{c}.png", 8, 8) for c in "ab"]
    code = main(["upscale", *map(str, images), "--model", str(folder), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line]
    assert lines == [
        f"error: {folder}: cannot load the model (ValueError: {folder / 'model_index.json'}: `{component}` names "
        f"{name}, {reason})"
        if "takes" in reason
        else f"error: {folder}: cannot load the model (ValueError: {folder / 'model_index.json'}: `{component}` "
        f"names {name}, but {folder / component / 'config.json'} {reason})"
    ]
    assert not (tmp_path / "out").exists()


def test_the_python_api_says_it_before_reading_weights(model_dir, tmp_path):
    folder = renamed(model_dir, tmp_path, "unet", "diffusers", "UNet2DConditionModel")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # never reached
    with pytest.raises(ValueError, match=r"`unet` names UNet2DConditionModel, a DeltaDiff pipeline takes"):
        DeltaDiffPipeline.from_pretrained(folder)


def test_the_right_classes_still_load(model_dir):
    assert type(DeltaDiffPipeline.from_pretrained(model_dir).unet).__name__ == "UNet2DModel"
