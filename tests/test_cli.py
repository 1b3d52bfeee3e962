import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from conftest import write_image
from diffusers_deltadiff.cli import main
from diffusers_deltadiff.testing_utils import tiny_pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tiny_pipeline(seed=0).save_pretrained(path)
    return path


def write(path: Path, height=12, width=16, mode="RGB", seed=0, **save_kwargs):
    return write_image(path, height, width, mode, seed, **save_kwargs)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class TestUpscale:
    def test_sizes_modes_and_tree(self, tmp_path, model_dir, capsys):
        write(tmp_path / "in" / "rgb.png", 12, 16)
        write(tmp_path / "in" / "sub" / "gray.png", 9, 7, mode="L")
        write(tmp_path / "in" / "sub" / "alpha.png", 8, 8, mode="RGBA")
        write(tmp_path / "in" / "deep16.png", 10, 6, mode="I;16")
        code, out, err = run(capsys, "upscale", tmp_path / "in", "-o", tmp_path / "out", "--model", model_dir)
        assert code == 0, err
        assert "4 image(s) upscaled" in out
        expected = {"rgb.png": ((64, 48), "RGB"), "sub/gray.png": ((28, 36), "L"), "sub/alpha.png": ((32, 32), "RGBA")}
        for name, (size, mode) in expected.items():
            image = PIL.Image.open(tmp_path / "out" / name)
            assert (image.size, image.mode) == (size, mode), name
        deep = PIL.Image.open(tmp_path / "out" / "deep16.png")
        assert deep.size == (24, 40) and deep.mode.startswith("I")
        assert np.asarray(deep).max() > 255  # written with 16-bit depth

    def test_formats_metadata_and_single_file_output(self, tmp_path, model_dir, capsys):
        from PIL import ImageCms

        icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # an RGB profile fits: kept
        source = write(tmp_path / "photo.jpg", 12, 12, icc_profile=icc)
        for fmt in ("png", "jpg", "webp"):
            code, _, err = run(
                capsys, "upscale", source, "-o", tmp_path / "out", "--model", model_dir, "--format", fmt
            )
            assert code == 0, err
            out = PIL.Image.open(tmp_path / "out" / f"photo.{fmt}")
            assert out.format == {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[fmt]
            assert out.size == (48, 48)
            assert out.info.get("icc_profile") == icc
        code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "single.webp", "--model", model_dir)
        assert code == 0, err
        assert PIL.Image.open(tmp_path / "single.webp").size == (48, 48)

    def test_glob_and_save_steps(self, tmp_path, model_dir, capsys):
        write(tmp_path / "a1.png", 8, 8)
        write(tmp_path / "a2.png", 8, 10)
        write(tmp_path / "b.png", 8, 8)
        code, _, err = run(
            capsys, "upscale", str(tmp_path / "a*.png"), "-o", tmp_path / "out", "--model", model_dir, "--save-steps"
        )
        assert code == 0, err
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
            "a1.png",
            "a1_steps.png",
            "a2.png",
            "a2_steps.png",
        ]
        # bicubic start + one image per reverse step (4)
        assert PIL.Image.open(tmp_path / "out" / "a2_steps.png").size == (5 * 40, 32)

    def test_never_overwrites_without_flag(self, tmp_path, model_dir, capsys):
        source = write(tmp_path / "x.png", 8, 8)
        dest = tmp_path / "out" / "x.png"
        dest.parent.mkdir()
        dest.write_bytes(b"keep me")
        code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "out", "--model", model_dir)
        assert code == 1
        assert f"error: {dest}: already exists (pass --overwrite to replace it)" in err
        assert dest.read_bytes() == b"keep me"
        code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "out", "--model", model_dir, "--overwrite")
        assert code == 0, err
        assert PIL.Image.open(dest).size == (32, 32)

    def test_bad_inputs_are_reported_and_others_processed(self, tmp_path, model_dir, capsys):
        good = write(tmp_path / "in" / "good.png", 8, 8)
        (tmp_path / "in" / "text.png").write_text("not an image at all")
        data = good.read_bytes()
        (tmp_path / "in" / "truncated.png").write_bytes(data[: len(data) // 2])
        (tmp_path / "in" / "empty.png").write_bytes(b"")
        (tmp_path / "noimages").mkdir()
        (tmp_path / "noimages" / "readme.txt").write_text("hi")
        code, out, err = run(
            capsys, "upscale", tmp_path / "in", tmp_path / "noimages", tmp_path / "missing.png",
            "-o", tmp_path / "out", "--model", model_dir,
        )  # fmt: skip
        assert code == 1
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert f"error: {tmp_path / 'in' / 'text.png'}: not an image" in lines
        assert any(line.startswith(f"error: {tmp_path / 'in' / 'truncated.png'}: unreadable image") for line in lines)
        assert f"error: {tmp_path / 'in' / 'empty.png'}: empty file" in lines
        assert any(line.startswith(f"error: {tmp_path / 'noimages'}: no images") for line in lines)
        assert f"error: {tmp_path / 'missing.png'}: no such file or folder" in lines
        assert len(lines) == 5
        assert (tmp_path / "out" / "good.png").is_file()
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]  # nothing half-written
        assert "1 image(s) upscaled" in out and "5 error(s)" in out

    def test_unwritable_output(self, tmp_path, model_dir, capsys):
        source = write(tmp_path / "x.png", 8, 8)
        (tmp_path / "afile").write_text("a file, not a folder")
        code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "afile" / "out", "--model", model_dir)
        assert code == 2
        assert err.strip().startswith(f"error: {tmp_path / 'afile' / 'out'}: cannot create the output folder")

    def test_missing_and_corrupt_model(self, tmp_path, model_dir, capsys):
        source = write(tmp_path / "x.png", 8, 8)
        code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "o1", "--model", tmp_path / "nope")
        assert code == 2 and err.strip() == f"error: {tmp_path / 'nope'}: model folder not found"
        (tmp_path / "notamodel").mkdir()
        code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "o2", "--model", tmp_path / "notamodel")
        assert code == 2 and "not a pipeline folder (no model_index.json)" in err
        broken = tmp_path / "broken"
        tiny_pipeline(seed=0).save_pretrained(broken)
        weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "o3", "--model", broken)
        assert code == 2 and err.strip().startswith(f"error: {broken}: cannot load the model (")
        assert len(err.strip().splitlines()) == 1
        assert not (tmp_path / "o3" / "x.png").exists()

    def test_console_script_exit_code(self, tmp_path):
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "diffusers_deltadiff.cli",
                "upscale",
                str(tmp_path / "nothing.png"),
                "-o",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        assert result.returncode != 0
        assert f"error: {tmp_path / 'nothing.png'}: no such file or folder" in result.stderr


class TestEvaluate:
    def test_evaluate_writes_table_csv_grid(self, tmp_path, model_dir, capsys):
        for i in range(3):
            write(tmp_path / "hr" / f"img{i}.png", 34, 41, seed=i)
        code, out, err = run(
            capsys, "evaluate", "--hr", tmp_path / "hr", "--model", f"tiny={model_dir}", "--output", tmp_path / "eval"
        )
        assert code == 0, err
        assert "| bicubic | 3 |" in out and "| tiny | 3 |" in out
        assert "LPIPS" in out
        rows = (tmp_path / "eval" / "per_image.csv").read_text().strip().splitlines()
        assert rows[0].startswith("image,method,seed,psnr_y,ssim_y,psnr_cbcr,lpips,lr_psnr_y") and len(rows) == 1 + 6
        grid = PIL.Image.open(tmp_path / "eval" / "grid.png")
        assert grid.size == (3 * 40, 2 * 3 * 32)  # bicubic | tiny | HR (mod-cropped to 32x40), plain and zoomed

    def test_scale_mismatch_and_missing_hr(self, tmp_path, model_dir, capsys):
        write(tmp_path / "hr" / "a.png", 16, 16)
        code, _, err = run(capsys, "evaluate", "--hr", tmp_path / "hr", "--model", model_dir, "--scale", "2")
        assert code == 2 and "upscales x4, not x2" in err
        code, _, err = run(capsys, "evaluate", "--hr", tmp_path / "nope", "--model", model_dir)
        assert code == 2 and "HR folder not found" in err

    def test_ablate_table(self, tmp_path, model_dir, capsys):
        write(tmp_path / "hr" / "a.png", 32, 32)
        code, out, err = run(
            capsys, "ablate", "--hr", tmp_path / "hr", "--model", model_dir,
            "--eta-start", "0.01,0.05", "--eta-end", "0.99", "--steps", "1,4", "--output", tmp_path / "table.md",
        )  # fmt: skip
        assert code == 0, err
        table = (tmp_path / "table.md").read_text()
        assert table.count("\n| 0.0") == 4  # 2 eta_1 x 1 eta_T x 2 step counts


def test_tile_flags_and_their_deprecated_spellings(tmp_path, model_dir, capsys):
    """
    `--tile-context` and `--tile-batch-size` carry the Python API's names; `--tile-overlap` and `--batch-size` still
    work, with a warning naming the new flag, and give the same file.
    """
    source = write(tmp_path / "a.png", 20, 24)
    runs = {
        "new": ["--tile-size", "8", "--tile-context", "4", "--tile-batch-size", "3"],
        "old": ["--tile-size", "8", "--tile-overlap", "4", "--batch-size", "3"],
        "no-context": ["--tile-size", "8", "--tile-context", "0"],
    }
    images, errors = {}, {}
    for name, flags in runs.items():
        code, _, errors[name] = run(
            capsys, "upscale", source, "-o", tmp_path / f"{name}.png", "--model", model_dir, *flags
        )
        assert code == 0, errors[name]
        images[name] = np.asarray(PIL.Image.open(tmp_path / f"{name}.png"))
    assert "deprecated" not in errors["new"]
    assert "--tile-overlap is deprecated" in errors["old"] and "use --tile-context" in errors["old"]
    assert "--batch-size is deprecated" in errors["old"] and "use --tile-batch-size" in errors["old"]
    np.testing.assert_array_equal(images["old"], images["new"])
    assert not np.array_equal(images["no-context"], images["new"])  # the context does reach the pipeline
