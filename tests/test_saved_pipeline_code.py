"""Saved pipelines carry their code: they load with diffusers alone, and with the package's own classes when it is there.

The "diffusers alone" runs happen in a subprocess whose import system cannot see `diffusers_deltadiff`: a finder at
the front of `sys.meta_path` refuses it (before any other finder, the editable install's included), so any import
of the package, direct or through a pickled or registered name, fails there.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import diffusers_deltadiff
from conftest import random_image, shipped_model_dir
from diffusers_deltadiff import DeltaDiffPipeline
from diffusers_deltadiff.pretrained import from_pretrained
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline, tiny_pipeline


PACKAGE_DIR = Path(diffusers_deltadiff.__file__).parent
# the files a saved lossless pipeline carries, and the package module each one is a copy of
CODE_FILES = {
    "pipeline.py": "pipeline_deltadiff.py",
    "pipeline_output.py": "pipeline_output.py",
    "encoding.py": "encoding.py",
    "image_utils.py": "image_utils.py",
    "config_checks.py": "config_checks.py",
    "pipeline_code.py": "pipeline_code.py",
    "tiling.py": "tiling.py",
    "tiled_execution.py": "tiled_execution.py",
    "canvas.py": "canvas.py",
    "scheduler/scheduling_delta_shift.py": "scheduling_delta_shift.py",
    "unet/unet_local_norm.py": "unet_local_norm.py",
    "vqvae/autoencoder_space_to_depth.py": "autoencoder_space_to_depth.py",
}

WITHOUT_PACKAGE = """
import importlib.abc
import sys


class RefusePackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "diffusers_deltadiff":
            raise ModuleNotFoundError(f"No module named {name!r} (hidden from this process)")


sys.meta_path.insert(0, RefusePackage())
try:
    import diffusers_deltadiff  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the package is still importable")
"""


def run_python(script: str, workdir: Path, hide_package: bool) -> str:
    """Run `script` in a fresh interpreter, offline, with its own module cache; its stdout."""
    prelude = "import os\n" + (WITHOUT_PACKAGE if hide_package else "")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(workdir / "hf_home"))
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def diffusers_alone(model_dir: Path, lr: Path, out: Path, workdir: Path, save_to: Path | None = None) -> str:
    """Load `model_dir` with `DiffusionPipeline.from_pretrained(custom_pipeline=...)` without the package, upscale."""
    script = f"""
        import numpy as np
        import torch
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(
            {str(model_dir)!r}, custom_pipeline={str(model_dir)!r}, trust_remote_code=True, torch_dtype=torch.float32
        )
        pipe.set_progress_bar_config(disable=True)
        np.save({str(out)!r}, pipe(np.load({str(lr)!r}), output_type="np").images)
        if {str(save_to)!r} != "None":
            pipe.save_pretrained({str(save_to)!r})
        print(type(pipe).__module__, *(type(c).__module__ for c in pipe.components.values()))
        assert not [name for name in sys.modules if name.startswith("diffusers_deltadiff")]
        """
    return run_python(script, workdir, hide_package=True)


def package_output(model_dir: Path, lr: np.ndarray, workdir: Path) -> np.ndarray:
    """The package's output for `lr`, from a fresh process like the diffusers-alone runs: the same threads and
    kernels, so that the two ways can be compared bit for bit."""
    np.save(workdir / "package_lr.npy", lr)
    script = f"""
        import numpy as np
        from diffusers_deltadiff.pretrained import from_pretrained

        pipe = from_pretrained({str(model_dir)!r})
        assert type(pipe.unet).__module__.startswith("diffusers_deltadiff."), type(pipe.unet)
        pipe.set_progress_bar_config(disable=True)
        np.save({str(workdir / "package_out.npy")!r}, pipe(np.load({str(workdir / "package_lr.npy")!r}), output_type="np").images)
        """
    run_python(script, workdir, hide_package=False)
    return np.load(workdir / "package_out.npy")


def saved_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "model"
    tiny_lossless_pipeline(seed=3).save_pretrained(folder)
    return folder


def test_the_pipeline_imports_every_module_it_carries_itself():
    """diffusers copies into its module cache the modules `pipeline.py` imports, not the modules those import."""
    from diffusers.utils.dynamic_modules_utils import get_relative_import_files, get_relative_imports

    source = PACKAGE_DIR / "pipeline_deltadiff.py"
    carried = {Path(path).stem for path in get_relative_import_files(str(source))}
    assert carried <= set(get_relative_imports(str(source)))


class TestSavedFolder:
    def test_code_files_are_the_package_modules(self, saved):
        assert {name for name in saved_files(saved) if name.endswith(".py")} == set(CODE_FILES)
        for saved_name, module in CODE_FILES.items():
            assert (saved / saved_name).read_bytes() == (PACKAGE_DIR / module).read_bytes(), saved_name

    def test_model_index_names_the_bare_modules(self, saved):
        index = json.loads((saved / "model_index.json").read_text())
        assert index["scheduler"] == ["scheduling_delta_shift", "DeltaShiftScheduler"]
        assert index["unet"] == ["unet_local_norm", "LocalUNet2DModel"]
        assert index["vqvae"] == ["autoencoder_space_to_depth", "SpaceToDepthAutoencoder"]
        assert index["_class_name"] == "DeltaDiffPipeline"

    def test_diffusers_components_stay_diffusers(self, tmp_path):
        tiny_pipeline().save_pretrained(tmp_path)
        index = json.loads((tmp_path / "model_index.json").read_text())
        assert index["vqvae"] == ["diffusers", "VQModel"]
        assert index["unet"] == ["diffusers", "UNet2DModel"]
        assert index["scheduler"] == ["scheduling_delta_shift", "DeltaShiftScheduler"]
        assert not list((tmp_path / "unet").glob("*.py")) and not list((tmp_path / "vqvae").glob("*.py"))

    def test_package_load_uses_package_classes(self, saved):
        pipe = DeltaDiffPipeline.from_pretrained(saved)
        for component in (pipe.scheduler, pipe.unet, pipe.vqvae):
            assert type(component).__module__.startswith("diffusers_deltadiff."), type(component)

    def test_save_config_alone_refuses_upload(self, saved, tmp_path):
        with pytest.raises(ValueError, match="save_pretrained"):
            DeltaDiffPipeline.from_pretrained(saved).save_config(tmp_path, push_to_hub=True)


class TestDiffusersAlone:
    def test_tiny_pipeline_bit_identical_and_resaves(self, saved, tmp_path):
        lr = np.asarray(random_image(20, 12, seed=4))
        np.save(tmp_path / "lr.npy", lr)
        resaved = tmp_path / "resaved"
        modules = diffusers_alone(saved, tmp_path / "lr.npy", tmp_path / "out.npy", tmp_path, save_to=resaved)
        # every class came from the folder's code, none from the package
        assert "diffusers_deltadiff" not in modules and modules.count("diffusers_modules.") == 4, modules
        np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), package_output(saved, lr, tmp_path))
        # saved again without the package: the same code and index, so it loads anywhere the first one did
        assert saved_files(resaved) == saved_files(saved)
        for name in CODE_FILES:
            assert (resaved / name).read_bytes() == (saved / name).read_bytes(), name
        for name in ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vqvae/config.json"):
            a, b = (json.loads((folder / name).read_text()) for folder in (saved, resaved))
            a.pop("_name_or_path", None), b.pop("_name_or_path", None)  # where each was loaded from
            assert a == b, name

    @pytest.mark.parametrize("scale", [4, 2])
    def test_shipped_model_saved_out(self, tmp_path, scale):
        """
        The shipped folder carries no code; saved from the package (as for the Hub), it loads with diffusers alone
        and gives bit-identical outputs, at both shipped factors.
        """
        shipped = shipped_model_dir(scale)
        model_dir = tmp_path / f"deltadiff-x{scale}"
        # saved as it is stored (float16), so both ways load the same float16 weights into float32 buffers
        from_pretrained(str(shipped), dtype=torch.float16).save_pretrained(model_dir)
        assert set(CODE_FILES) <= saved_files(model_dir)
        lr = np.asarray(random_image(24, 16, seed=5))
        np.save(tmp_path / "lr.npy", lr)
        diffusers_alone(model_dir, tmp_path / "lr.npy", tmp_path / "out.npy", tmp_path)
        np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), package_output(shipped, lr, tmp_path))


@pytest.mark.parametrize("scale", [4, 2])
def test_the_shipped_folder_holds_no_code(scale):
    """The package is the one source of the code: each shipped folder holds weights, configs and the card."""
    folder = shipped_model_dir(scale)
    assert not list(folder.rglob("*.py"))
    assert {p.name for p in folder.iterdir()} == {"README.md", "comparison.png", "model_index.json", "scheduler",
                                                   "unet", "vqvae"}  # fmt: skip


def test_older_folders_naming_package_modules_load(saved, tmp_path):
    """Folders saved before the code went along name `diffusers_deltadiff.<module>` and carry a one-line shim."""
    old = tmp_path / "old"
    shutil.copytree(saved, old)
    for saved_name in CODE_FILES:
        (old / saved_name).unlink()
    shutil.copyfile(diffusers_deltadiff.custom_pipeline_path(), old / "pipeline.py")
    index = json.loads((old / "model_index.json").read_text())
    for name in ("scheduler", "unet", "vqvae"):
        index[name][0] = f"diffusers_deltadiff.{index[name][0]}"
    (old / "model_index.json").write_text(json.dumps(index, indent=2))
    lr = np.asarray(random_image(12, 12, seed=6))
    np.save(tmp_path / "lr.npy", lr)
    np.save(tmp_path / "expected.npy", package_output(saved, lr, tmp_path))
    for load in (
        f"from diffusers_deltadiff import DeltaDiffPipeline; pipe = DeltaDiffPipeline.from_pretrained({str(old)!r})",
        "from diffusers import DiffusionPipeline; "
        f"pipe = DiffusionPipeline.from_pretrained({str(old)!r}, custom_pipeline={str(old)!r}, trust_remote_code=True)",
        # the package imports its modules on first use: diffusers must still find the ones the folder names
        "import diffusers_deltadiff; from diffusers import DiffusionPipeline; pipe = DiffusionPipeline.from_pretrained("
        f"{str(old)!r}, custom_pipeline=diffusers_deltadiff.custom_pipeline_path(), trust_remote_code=True)",
    ):
        script = f"""
            import numpy as np
            {load}
            assert type(pipe.unet).__module__ == "diffusers_deltadiff.unet_local_norm", type(pipe.unet)
            pipe.set_progress_bar_config(disable=True)
            out = pipe(np.load({str(tmp_path / "lr.npy")!r}), output_type="np").images
            np.testing.assert_array_equal(out, np.load({str(tmp_path / "expected.npy")!r}))
            print("OLD-OK")
            """
        assert "OLD-OK" in run_python(script, tmp_path, hide_package=False)
