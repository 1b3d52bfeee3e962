"""The shipped real-world x4 model (`x4-real`): files, JPEG blocks not amplified, the denoise ends, tiles."""

import io
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from safetensors import safe_open

from diffusers_deltadiff.blending import blend_pipelines
from diffusers_deltadiff.image_utils import bicubic_resize, to_unit_tensor
from diffusers_deltadiff.metrics import block_edge_energy
from diffusers_deltadiff.pretrained import load_default_pipeline, model_path


REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(model_path("x4-real") is None, reason="no shipped x4-real model")


@pytest.fixture(scope="module")
def pipes():
    pipes = {name: load_default_pipeline(model=name) for name in ("x4", "x4-real")}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes


def jpeg(image: PIL.Image.Image, quality: int) -> PIL.Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return PIL.Image.open(buffer).convert("RGB")


def test_shipped_files():
    folder = Path(model_path("x4-real"))
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30 * 2**20
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert {p.parent.name for p in weights} == {"unet", "vqvae"}
    for file in weights:
        with safe_open(file, "pt") as handle:
            assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"F16"}
    card = (folder / "README.md").read_text()
    assert "RealSR" in card and "licen" in card.lower() and "bsds400" in card


def block_energies(pipes, name: str) -> dict[str, float]:
    """The 8x8 block-edge energy of bicubic and both x4 models on the example image `name` saved as JPEG-40."""
    lr = jpeg(PIL.Image.open(REPO / "examples" / "images" / name), 40)
    source = to_unit_tensor(lr)
    size = (source.shape[1] * 4, source.shape[2] * 4)
    energies = {"bicubic": block_edge_energy(bicubic_resize(source, size), 32)}
    for model, pipe in pipes.items():
        energies[model] = block_edge_energy(pipe(lr, output_type="pt").images[0], 32)
    return energies


@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png"])
def test_fewer_jpeg_blocks_than_the_clean_model(pipes, name):
    energies = block_energies(pipes, name)
    assert energies["x4-real"] < energies["x4"]
    assert energies["x4"] > energies["bicubic"]  # the clean model sharpens the blocks


@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png"])
def test_no_amplified_jpeg_blocks(pipes, name):
    """On a JPEG-40 input the 8x8 block-edge energy of the output is no higher than bicubic's."""
    energies = block_energies(pipes, name)
    assert energies["x4-real"] <= energies["bicubic"], energies


@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png"])
def test_blurred_inputs_gain_more_than_with_the_clean_model(pipes, name):
    """v0.4's stage (camera images: a lens's blur, then the downscale): on a photo blurred by 1.6 pixels before its
    bicubic downscale, x4-real's output is closer to the photo than the clean model's (Set14 / BSD68: +1.88 / +1.38
    dB over bicubic against +1.30 / +0.95), and both beat bicubic."""
    from diffusers_deltadiff.degradations import Degradation
    from diffusers_deltadiff.metrics import psnr_y

    hr = to_unit_tensor(PIL.Image.open(REPO / "examples" / "images" / name).convert("RGB"))
    hr = hr[:, : hr.shape[1] // 4 * 4, : hr.shape[2] // 4 * 4]
    lr = Degradation("blur", 4)(hr, 0)
    psnr = {"bicubic": psnr_y(bicubic_resize(lr, tuple(hr.shape[-2:]))[None], hr[None], 4).item()}
    for model, pipe in pipes.items():
        psnr[model] = psnr_y(pipe(lr, output_type="pt").images[0][None].float(), hr[None], 4).item()
    assert psnr["x4-real"] > psnr["x4"] > psnr["bicubic"], psnr


def test_denoise_ends_are_the_two_models(pipes):
    lr = PIL.Image.open(REPO / "examples" / "images" / "chelsea.png").convert("RGB").crop((0, 0, 40, 32))
    ends = {name: pipe(lr, output_type="np").images for name, pipe in pipes.items()}
    assert np.array_equal(load_default_pipeline(denoise=0)(lr, output_type="np").images, ends["x4"])
    assert np.array_equal(load_default_pipeline(denoise=1)(lr, output_type="np").images, ends["x4-real"])
    half = blend_pipelines(load_default_pipeline(model="x4"), load_default_pipeline(model="x4-real"), 0.5)
    middle = half(lr, output_type="np").images
    assert not np.array_equal(middle, ends["x4"]) and not np.array_equal(middle, ends["x4-real"])


def test_tiles_equal_the_whole_image(pipes):
    """The model's tile context (48) makes small tiles (many seams) the whole image's to 0.05 level; 32, v0.1's, is
    told apart on the same crop: fine-tuning widened what the UNet looks at."""
    pipe = pipes["x4-real"]
    assert pipe.config.tile_context == 48
    lr = to_unit_tensor(PIL.Image.open(REPO / "examples" / "images" / "astronaut.png").convert("RGB"))[:, :128, :128]
    whole = pipe(lr, output_type="np", tile_size=0).images
    tiled = pipe(lr, output_type="np", tile_size=32).images
    assert np.abs(whole - tiled).max() < 0.05 / 255
    narrower = pipe(lr, output_type="np", tile_size=32, tile_context=32).images
    assert np.abs(whole - narrower).max() > 0.1 / 255
