"""
x2 as well as x4: one command picks the model for a factor, a model of another factor is an error naming
both, and a x2 pipeline upscales, tiles, streams, runs on several processes, trains and loads with diffusers alone.
(The tiling and streaming tests of `test_tiling.py` run at both factors.)
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from conftest import write_image
from diffusers_deltadiff.cli import main
from diffusers_deltadiff.pretrained import default_model_path, load_default_pipeline, shipped_scales
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline
from test_distributed_upscale import free_port


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def x2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("x2") / "model"
    tiny_lossless_pipeline(seed=0, scale=2).save_pretrained(path)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_x2_model_upscales_by_two_whatever_the_size(x2_dir, tmp_path, capsys):
    for name, (height, width) in {"odd.png": (11, 7), "wide.png": (9, 40)}.items():
        write_image(tmp_path / "in" / name, height, width)
    code, out, err = run(capsys, "upscale", tmp_path / "in", "-o", tmp_path / "out", "--model", x2_dir)
    assert code == 0, err
    for name, (height, width) in {"odd.png": (11, 7), "wide.png": (9, 40)}.items():
        with PIL.Image.open(tmp_path / "out" / name) as image:
            assert image.size == (2 * width, 2 * height)
    # asked for by factor: the same
    code, _, err = run(capsys, "upscale", tmp_path / "in", "-o", tmp_path / "out2", "--model", x2_dir, "--scale", 2)
    assert code == 0, err
    for name in ("odd.png", "wide.png"):
        assert np.array_equal(np.asarray(PIL.Image.open(tmp_path / "out" / name)),
                              np.asarray(PIL.Image.open(tmp_path / "out2" / name)))  # fmt: skip


def test_a_model_of_another_factor_is_an_error_naming_both(x2_dir, tmp_path, capsys):
    write_image(tmp_path / "in.png", 8, 8)
    code, _, err = run(capsys, "upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", x2_dir, "--scale", 4)
    assert code == 2
    assert err.strip() == f"error: {x2_dir}: the model upscales x2, not x4 (--scale 4)"
    assert not (tmp_path / "out").exists()


def test_scale_2_without_a_shipped_x2_model_says_so(tmp_path, capsys, monkeypatch):
    """An installation that carries only the x4 model (the package's folder of shipped models seen with x4 alone)."""
    import diffusers_deltadiff.pretrained as pretrained

    only_x4 = tmp_path / "pretrained"
    only_x4.mkdir()
    (only_x4 / "deltadiff-x4").symlink_to(pretrained.default_model_dir(4), target_is_directory=True)
    (only_x4 / "deltadiff-x2").mkdir()  # an empty folder (a partial copy) is not a model
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", only_x4)
    assert shipped_scales() == [4]
    write_image(tmp_path / "in.png", 8, 8)
    code, _, err = run(capsys, "upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--scale", 2)
    assert code == 2
    assert err.strip() == "error: no x2 model is shipped with this installation (shipped: x4): pass --model DIR"
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="no shipped x2 model"):
        load_default_pipeline(scale=2)


@pytest.mark.skipif(default_model_path(4) is None, reason="no shipped x4 model")
def test_the_default_factor_is_4(tmp_path, capsys):
    write_image(tmp_path / "in.png", 8, 6)
    code, _, err = run(capsys, "upscale", tmp_path / "in.png", "-o", tmp_path / "out.png", "--scale", 4)
    assert code == 0, err
    assert PIL.Image.open(tmp_path / "out.png").size == (24, 32)


def test_evaluate_and_ablate_at_x2(x2_dir, tmp_path, capsys):
    for seed in range(2):
        write_image(tmp_path / "hr" / f"{seed}.png", 24, 28, seed=seed)
    code, out, err = run(capsys, "evaluate", "--hr", tmp_path / "hr", "--model", x2_dir, "--scale", 2, "--no-lpips",
                         "--output", tmp_path / "eval")  # fmt: skip
    assert code == 0, err
    assert "x2" in (tmp_path / "eval" / "summary.md").read_text() or "model" in out
    code, out, err = run(capsys, "ablate", "--hr", tmp_path / "hr", "--model", x2_dir, "--scale", 2, "--steps", "1,2")
    assert code == 0, err
    assert "x2" in out, out
    code, _, err = run(capsys, "evaluate", "--hr", tmp_path / "hr", "--model", x2_dir, "--no-lpips")  # --scale 4
    assert code == 2 and "the model upscales x2, not x4" in err


def test_x2_on_two_processes_equals_one(x2_dir, tmp_path):
    for seed in range(3):
        write_image(tmp_path / "in" / f"f{seed}.png", 10 + seed, 12, seed=seed)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MKL_CBWR="AUTO,STRICT")
    args = ["-m", "diffusers_deltadiff.cli", "upscale", str(tmp_path / "in"), "--model", str(x2_dir)]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), *args, "-o", str(tmp_path / "two")], capture_output=True, text=True, env=env,
                         timeout=300)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, *args, "-o", str(tmp_path / "one")], capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    for seed in range(3):
        a, b = (np.asarray(PIL.Image.open(tmp_path / d / f"f{seed}.png")) for d in ("one", "two"))
        assert a.shape == ((10 + seed) * 2, 24, 3) and np.array_equal(a, b)


def test_x2_loads_with_diffusers_alone(x2_dir, tmp_path):
    from test_saved_pipeline_code import diffusers_alone, package_output

    lr = np.asarray(PIL.Image.open(write_image(tmp_path / "lr.png", 13, 9)))
    np.save(tmp_path / "lr.npy", lr)
    diffusers_alone(x2_dir, tmp_path / "lr.npy", tmp_path / "out.npy", tmp_path)
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (1, 26, 18, 3)
    np.testing.assert_array_equal(out, package_output(x2_dir, lr, tmp_path))


def test_training_a_x2_model(tmp_path):
    for seed in range(4):
        write_image(tmp_path / "data" / f"{seed}.png", 40, 36, seed=seed)
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu",
        "training/train_deltadiff.py", "--lossless_latent", "--upscale_factor", "2", "--prediction_type", "residual",
        "--unet_norm", "pixel", "--unet_attention_levels", "", "--zero_init_output", "--unet_block_out_channels",
        "16,32", "--unet_layers_per_block", "1", "--unet_norm_num_groups", "8", "--train_data_dir",
        str(tmp_path / "data"), "--resolution", "16", "--train_batch_size", "2", "--max_train_steps", "2",
        "--train_through_chain", "--loss", "l1", "--dataloader_num_workers", "0", "--report_to", "none",
        "--output_dir", str(out),
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    from diffusers_deltadiff import DeltaDiffPipeline

    pipe = DeltaDiffPipeline.from_pretrained(out)
    assert pipe.upscale_factor == 2 and pipe.vqvae.config.latent_channels == 12
    pipe.set_progress_bar_config(disable=True)
    assert pipe(np.zeros((7, 5, 3), dtype=np.uint8), output_type="np").images.shape == (1, 14, 10, 3)


@pytest.mark.skipif(default_model_path(2) is None, reason="no shipped x2 model")
def test_evaluate_scale_2_uses_the_shipped_x2_model_and_crops_2_pixels(tmp_path, capsys):
    """`evaluate --scale 2` with no `--model` scores the shipped x2 model, with the protocol's crop border of 2: the
    Y-PSNR it writes equals scikit-image's on the pipeline's own output with 2 pixels cropped (not 4). The HR image
    has a bright frame 3 pixels from its edge, inside a 2-pixel crop and outside a 4-pixel one."""
    from skimage.color import rgb2ycbcr
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.RandomState(7)
    hr = (rng.rand(40, 44, 3) * 60 + 90).astype(np.uint8)
    hr[3, 3:-3] = hr[-4, 3:-3] = hr[3:-3, 3] = hr[3:-3, -4] = 255
    lr = PIL.Image.fromarray(hr).resize((22, 20), PIL.Image.BICUBIC)
    (tmp_path / "hr").mkdir(), (tmp_path / "lr").mkdir()
    PIL.Image.fromarray(hr).save(tmp_path / "hr" / "frame.png")
    lr.save(tmp_path / "lr" / "frame.png")
    code, _, err = run(capsys, "evaluate", "--hr", tmp_path / "hr", "--lr", tmp_path / "lr", "--scale", 2,
                       "--no-lpips", "--baseline", "none", "--output", tmp_path / "eval")  # fmt: skip
    assert code == 0, err
    rows = (tmp_path / "eval" / "per_image.csv").read_text().splitlines()
    header, row = rows[0].split(","), rows[1].split(",")
    written = float(row[header.index("psnr_y")])

    pipe = load_default_pipeline(scale=2)
    pipe.set_progress_bar_config(disable=True)
    sr = pipe(lr, output_type="np").images[0]
    y_sr, y_hr = rgb2ycbcr(sr)[..., 0], rgb2ycbcr(hr / 255.0)[..., 0]

    def psnr(border):
        inner = (slice(border, -border), slice(border, -border))
        return peak_signal_noise_ratio(y_hr[inner], y_sr[inner], data_range=255)

    assert written == pytest.approx(psnr(2), abs=1e-3)
    assert abs(psnr(4) - psnr(2)) > 0.1  # the border counts: a 4-pixel crop would be told apart
