"""The small default model shipped inside the package."""

from pathlib import Path

import numpy as np
import PIL.Image
import torch
from safetensors import safe_open

from diffusers_deltadiff import DeltaDiffPipeline, DeltaShiftScheduler, LocalUNet2DModel, SpaceToDepthAutoencoder
from diffusers_deltadiff.cli import main
from diffusers_deltadiff.pretrained import default_model_path, load_default_pipeline


def test_shipped_files():
    path = default_model_path()
    assert path is not None, "the package must ship its default model"
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30 * 2**20
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert {p.parent.name for p in weights} == {"unet", "vqvae"}
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    for file in weights:
        with safe_open(file, "pt") as handle:
            assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"F16"}
    card = (Path(path) / "README.md").read_text()
    assert "licen" in card.lower() and "sun_hays80" in card


def test_loads_as_float32_and_upscales():
    pipe = load_default_pipeline()
    assert isinstance(pipe, DeltaDiffPipeline) and isinstance(pipe.scheduler, DeltaShiftScheduler)
    assert pipe.scheduler.config.kappa == 0 and pipe.upscale_factor == 4
    # the kind that beats bicubic: lossless latent, local layers, residual prediction, a measured tile context
    assert isinstance(pipe.vqvae, SpaceToDepthAutoencoder) and isinstance(pipe.unet, LocalUNet2DModel)
    assert pipe.scheduler.config.prediction_type == "residual" and pipe.config.tile_context == 16
    assert {p.dtype for p in pipe.unet.parameters()} == {torch.float32}
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.RandomState(0)
    image = PIL.Image.fromarray((rng.rand(12, 16, 3) * 255).astype(np.uint8))
    a = pipe(image, output_type="np").images
    b = pipe(image, output_type="np").images
    assert a.shape == (1, 48, 64, 3) and np.array_equal(a, b)


def test_cli_uses_default_model(tmp_path, capsys):
    rng = np.random.RandomState(1)
    PIL.Image.fromarray((rng.rand(10, 10, 3) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    assert main(["upscale", str(tmp_path / "x.png"), "-o", str(tmp_path / "out")]) == 0
    assert PIL.Image.open(tmp_path / "out" / "x.png").size == (40, 40)
