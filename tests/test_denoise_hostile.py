"""The denoise knob and the shipped models by short name, tried as a hostile user would: odd strengths, odd
folders, a half-shipped pair, pipelines that cannot be blended, the caller's pipeline after a blend, half precision,
and the multi-process path of `upscale`."""

import contextlib
import os

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import configure, write_image
from diffusers_deltadiff import pretrained
from diffusers_deltadiff.blending import blend_pipelines
from diffusers_deltadiff.cli import main
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline


def weights(pipe) -> dict:
    return {key: value.clone() for key, value in pipe.unet.state_dict().items()}


def upscale(tmp_path, label: str, *flags) -> tuple[int, np.ndarray | None]:
    """`deltadiff upscale in.png -o <label>/ FLAGS`: the exit status and the pixels written, if any."""
    source = tmp_path / "in.png"
    if not source.exists():
        write_image(source, 9, 11)
    code = main(["upscale", str(source), "-o", str(tmp_path / label), *flags])
    out = tmp_path / label / "in.png"
    return code, np.asarray(PIL.Image.open(out)) if out.exists() else None


# the Python API


def test_blend_leaves_the_caller_pipelines_unchanged():
    """Before: the clean pipeline passed in was modified in place and returned, so a caller reusing it (or blending
    it again at another strength) got the blended weights."""
    clean, real = tiny_lossless_pipeline(seed=0), tiny_lossless_pipeline(seed=1)
    before_clean, before_real = weights(clean), weights(real)
    half = blend_pipelines(clean, real, 0.5)
    assert half is not clean and half.unet is not clean.unet
    for key, value in clean.unet.state_dict().items():
        assert torch.equal(value, before_clean[key]), key
        assert torch.equal(real.unet.state_dict()[key], before_real[key]), key
    # blending the same clean pipeline again gives the weights of a fresh blend
    quarter = blend_pipelines(clean, real, 0.25).unet.state_dict()
    for key, value in quarter.items():
        expected = 0.75 * before_clean[key].double() + 0.25 * before_real[key].double()
        assert torch.allclose(value.double(), expected, atol=1e-6), key


def test_blend_refuses_pipelines_of_another_method():
    """Before: a residual-predicting UNet was blended with a sample-predicting one (the result kept clean's
    scheduler and meant nothing); a model of another default step count blended without a word."""
    clean = tiny_lossless_pipeline(seed=0)
    with pytest.raises(ValueError, match=r"schedulers differ \(prediction_type\)"):
        blend_pipelines(clean, tiny_lossless_pipeline(seed=1, prediction_type="sample"), 0.5)
    with pytest.raises(ValueError, match=r"schedulers differ \(default_inference_steps\)"):
        blend_pipelines(clean, tiny_lossless_pipeline(seed=1, default_inference_steps=1), 0.5)


def test_blend_in_between_takes_the_larger_context_and_padding(monkeypatch):
    """Tile context and border padding are the larger of the two in between and real's own at 1, as documented."""
    clean, real = tiny_lossless_pipeline(seed=0), tiny_lossless_pipeline(seed=1)
    configure(monkeypatch, real, tile_context=8, border_padding=3)
    blended = blend_pipelines(clean, real, 0.5)
    assert blended.config.tile_context == max(clean.config.tile_context, 8)
    assert blended.config.border_padding == max(clean.config.border_padding, 3) == 3
    assert blend_pipelines(clean, real, 1).config.tile_context == 8


def test_blend_in_half_precision():
    """fp16 pipelines blend in float32 and stay fp16: each weight is the float32 mean rounded once to fp16."""
    clean = tiny_lossless_pipeline(seed=0).to(dtype=torch.float16)
    real = tiny_lossless_pipeline(seed=1).to(dtype=torch.float16)
    start, end = weights(clean), weights(real)
    blended = blend_pipelines(clean, real, 0.3)
    for key, value in blended.unet.state_dict().items():
        assert value.dtype == torch.float16, key
        a, b = start[key].double(), end[key].double()
        expected = (a + 0.3 * (b - a)).to(torch.float16)  # computed here in float64, rounded once
        assert torch.allclose(value.float(), expected.float(), rtol=0, atol=float(expected.abs().max()) * 2**-10)


@pytest.mark.parametrize("strength", [True, "0.5", "abc", 0.5j, [0.5]])
def test_denoise_that_is_not_a_number_is_refused_before_loading(shipped, monkeypatch, strength):
    """Before: `denoise=True` ran as 1 and `denoise="0.5"` as 0.5; `"abc"` failed only after both models loaded."""

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(pretrained, "from_pretrained", no_loading)
    with pytest.raises(TypeError, match="must be a number from 0 to 1"):
        pretrained.load_default_pipeline(denoise=strength)


def test_a_model_and_another_factor_are_refused(shipped):
    """Before: `load_default_pipeline(model="x4", scale=2)` returned the x4 model without a word."""
    with pytest.raises(ValueError, match=r"the x4 model upscales x4, not x2"):
        pretrained.load_default_pipeline(model="x4", scale=2)
    assert pretrained.load_default_pipeline(model="x4", scale=4).upscale_factor == 4


def test_scale_zero_is_not_the_default_factor(shipped):
    """`scale=0` is a factor with no model, not "the default" (a falsy value)."""
    with pytest.raises(FileNotFoundError, match="no shipped x0 model"):
        pretrained.load_default_pipeline(scale=0)


# the command line


@pytest.mark.parametrize("value, same_as", [("-0", "x4"), ("1e-400", "x4"), (" 1 ", "x4-real")])
def test_cli_denoise_odd_spellings_of_the_ends(shipped, tmp_path, value, same_as):
    """`-0` and an underflowing `1e-400` are 0 (the clean model), ` 1 ` is 1."""
    code, out = upscale(tmp_path, "odd", "--denoise", value)
    assert code == 0
    assert np.array_equal(out, upscale(tmp_path, same_as, "--model", same_as)[1])


@pytest.mark.parametrize("value", ["0x1", "inf", "-inf", "1_0", "0,5", "", "True"])
def test_cli_denoise_odd_values_are_flag_errors(shipped, tmp_path, capsys, value):
    code, out = upscale(tmp_path, "out", "--denoise", value)
    assert code == 2 and out is None and not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert err.startswith("error: argument --denoise") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("model", ["someone/model", "FOLDER"])
def test_cli_denoise_with_a_folder_or_hub_id_is_refused(shipped, tmp_path, capsys, model):
    model = str(shipped / "deltadiff-x4") if model == "FOLDER" else model
    code, out = upscale(tmp_path, "out", "--denoise", "0.5", "--model", model)
    assert code == 2 and out is None
    assert "leave --model out" in capsys.readouterr().err


def test_cli_denoise_blends_the_shipped_models_whatever_the_working_folder_holds(
    shipped, tmp_path, monkeypatch, capsys
):
    """Before: a folder named `x4-real` (or `x4`) in the working folder replaced the shipped model in the blend (a
    pipeline silently, an empty folder as an error)."""
    expected = upscale(tmp_path, "reference", "--denoise", "0.5")[1]
    work = tmp_path / "work"
    tiny_lossless_pipeline(seed=7).save_pretrained(work / "x4-real")  # another model of the same architecture
    (work / "x4").mkdir()
    monkeypatch.chdir(work)
    code, out = upscale(tmp_path, "from_work", "--denoise", "0.5")
    assert code == 0 and np.array_equal(out, expected)


@pytest.mark.parametrize("missing", ["model_index.json", "unet/diffusion_pytorch_model.safetensors"])
def test_cli_denoise_with_a_half_shipped_pair(shipped, tmp_path, capfd, missing):
    """An x4-real folder without its index or its weights: an error line naming it, exit 2, nothing written."""
    (shipped / "deltadiff-x4-real" / missing).unlink()
    code, out = upscale(tmp_path, "out", "--denoise", "0.5")
    assert code == 2 and out is None and not (tmp_path / "out").exists()
    lines = capfd.readouterr().err.strip().splitlines()  # before: diffusers' own log line about the file too
    assert len(lines) == 1 and lines[0].startswith("error:") and "x4-real" in lines[0], lines


def test_a_model_without_its_weights_is_one_line_on_the_real_stderr(shipped, tmp_path):
    """As a user's terminal sees it (a fresh process, diffusers' own logging): before, diffusers added 'An error
    occurred while trying to fetch ...' and 'Defaulting to unsafe serialization' (a fallback to pickled `.bin`
    weights) to the error line, which named the `.bin` file it then missed."""
    import subprocess
    import sys

    (shipped / "deltadiff-x4-real" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    write_image(tmp_path / "in.png", 9, 11)
    script = (
        "import sys; from pathlib import Path; from diffusers_deltadiff import pretrained; "
        f"pretrained.PRETRAINED_DIR = Path({str(shipped)!r}); from diffusers_deltadiff.cli import main; "
        f"sys.exit(main(['upscale', {str(tmp_path / 'in.png')!r}, '-o', {str(tmp_path / 'out')!r}, '--denoise', '0.5']))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "diffusion_pytorch_model.safetensors" in lines[0]


def test_cli_denoise_steps_are_checked(shipped, tmp_path, capsys):
    code, out = upscale(tmp_path, "out", "--denoise", "0.5", "--steps", "9")
    assert code == 2 and out is None
    assert "--steps 9" in capsys.readouterr().err


class OneProcessGroup:
    """accelerate's `PartialState` of a group of one, for the multi-process code path in this process."""

    is_main_process, process_index, num_processes = True, 0, 1
    device = torch.device("cpu")

    @contextlib.contextmanager
    def split_between_processes(self, jobs):
        yield jobs


def test_denoise_reaches_the_multi_process_path(shipped, tmp_path, monkeypatch):
    """`upscale` under torchrun / accelerate (WORLD_SIZE > 1) blends as one process does."""
    import accelerate.utils

    from diffusers_deltadiff.cli import distributed
    from diffusers_deltadiff.cli import upscale as upscale_command

    expected = upscale(tmp_path, "one", "--denoise", "0.5")[1]
    clean = upscale(tmp_path, "clean", "--model", "x4")[1]
    monkeypatch.setattr(upscale_command, "launched_processes", lambda: 2)
    monkeypatch.setattr(distributed, "process_state", lambda args: OneProcessGroup())
    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", lambda objects, *args, **kwargs: objects)
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda objects: objects)
    monkeypatch.setitem(os.environ, "WORLD_SIZE", "2")
    code, out = upscale(tmp_path, "group", "--denoise", "0.5")
    assert code == 0
    assert np.array_equal(out, expected) and not np.array_equal(out, clean)


def test_denoise_reruns_into_one_folder(shipped, tmp_path, capsys):
    """A second `--denoise` run into the same folder refuses to replace the first's output, `--skip-existing` keeps
    it, `--overwrite` with another strength replaces it."""
    first = upscale(tmp_path, "out", "--denoise", "0.25")[1]
    code, out = upscale(tmp_path, "out", "--denoise", "0.75")
    assert code != 0 and np.array_equal(out, first)
    assert "already exists" in capsys.readouterr().err
    code, out = upscale(tmp_path, "out", "--denoise", "0.75", "--skip-existing")
    assert code == 0 and np.array_equal(out, first)
    code, out = upscale(tmp_path, "out", "--denoise", "0.75", "--overwrite")
    assert code == 0 and np.array_equal(out, upscale(tmp_path, "reference", "--denoise", "0.75")[1])


def test_denoise_on_onnx_runtime_runs_the_blended_weights(shipped, tmp_path, monkeypatch):
    """The ONNX Runtime backend exports the blended UNet (its cache is keyed by the weights), not the clean one."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("diffusers_deltadiff.cli.backend")
    monkeypatch.setenv("DELTADIFF_CACHE", str(tmp_path / "cache"))
    clean = upscale(tmp_path, "clean", "--model", "x4", "--backend", "onnxruntime")[1]
    code, out = upscale(tmp_path, "ort", "--denoise", "0.5", "--backend", "onnxruntime")
    assert code == 0
    torch_out = upscale(tmp_path, "torch", "--denoise", "0.5", "--backend", "torch")[1]
    assert np.abs(out.astype(int) - torch_out.astype(int)).max() <= 1 and not np.array_equal(out, clean)


@pytest.mark.parametrize("outscale", ["1.5", "2"])
def test_cli_denoise_with_an_outscale_below_4_runs_the_blend(shipped, tmp_path, capsys, outscale):
    """Before: `--outscale` at or below 2 chose the shipped x2 model for `--denoise`, which then failed with
    "--scale 2 has none", a flag the user never passed; the blend is x4, so it runs and is resized down."""
    tiny_lossless_pipeline(seed=2, scale=2).save_pretrained(shipped / "deltadiff-x2")  # an x2 model is shipped too
    code, out = upscale(tmp_path, "out", "--denoise", "0.5", "--outscale", outscale, "--backend", "torch")
    assert code == 0, capsys.readouterr().err
    pipe = pretrained.load_default_pipeline(denoise=0.5)
    pipe.set_progress_bar_config(disable=True)
    with PIL.Image.open(tmp_path / "in.png") as image:
        size = (round(image.width * float(outscale)), round(image.height * float(outscale)))
        expected = np.asarray(pipe(image).images[0].resize(size, PIL.Image.LANCZOS))
    assert np.array_equal(out, expected)
