"""Helpers shared by the tests: seeded random images, in memory or written to disk; the shipped models.

The scripts of `training/` are importable from the tests by module name (`import convert_vq_f4_to_diffusers`): the
one place where the tests' import path is extended.
"""

import os
import sys
import threading
from pathlib import Path

import numpy as np
import PIL.Image
import pytest


sys.path.append(str(Path(__file__).resolve().parents[1] / "training"))


@pytest.fixture(autouse=True, scope="session")
def onnx_cache(tmp_path_factory):
    """UNets exported for the onnxruntime backend (the CLI's default where it is installed) are cached in this test
    session's folder, not the user's; subprocesses inherit it."""
    os.environ["DELTADIFF_CACHE"] = str(tmp_path_factory.mktemp("onnx-cache"))


def random_image(height: int, width: int, seed: int = 0, mode: str = "RGB") -> PIL.Image.Image:
    """A seeded random image of `mode` (`RGB`, `RGBA`, `L` or 16-bit `I;16`)."""
    rng = np.random.RandomState(seed)
    if mode == "I;16":
        return PIL.Image.fromarray((rng.rand(height, width) * 65535).astype(np.uint16))
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (height, width) if channels is None else (height, width, channels)
    return PIL.Image.fromarray((rng.rand(*shape) * 255).astype(np.uint8), mode=mode)


def write_image(
    path: Path, height: int = 12, width: int = 16, mode: str = "RGB", seed: int = 0, **save_kwargs
) -> Path:
    """[`random_image`] saved to `path` (parent folders made), with Pillow's `save` keyword arguments."""
    path.parent.mkdir(parents=True, exist_ok=True)
    random_image(height, width, seed, mode).save(path, **save_kwargs)
    return path


def shipped_model_dir(scale: int) -> Path:
    """The folder of the model of factor `scale` shipped with the package; the test is skipped where there is none
    (`test_default_model.py` is where a missing one fails)."""
    from diffusers_deltadiff.pretrained import default_model_path

    path = default_model_path(scale)
    if path is None:
        pytest.skip(f"no shipped x{scale} model in this installation")
    return Path(path)


def configure(monkeypatch, pipe, **values):
    """Set pipeline config values (the tiling knobs) for one test: restored after it."""
    from diffusers.configuration_utils import FrozenDict

    monkeypatch.setattr(pipe, "_internal_dict", FrozenDict({**pipe.config, **values}))


def load_trainer():
    """`training/train_deltadiff.py` (a script, not a package module) loaded as a module, fresh."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "training" / "train_deltadiff.py"
    spec = importlib.util.spec_from_file_location("train_deltadiff", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """An installation whose x4 and x4-real models are two tiny random pipelines of one architecture."""
    from diffusers_deltadiff import pretrained
    from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline

    folder = tmp_path / "pretrained"
    tiny_lossless_pipeline(seed=0).save_pretrained(folder / "deltadiff-x4")
    tiny_lossless_pipeline(seed=1).save_pretrained(folder / "deltadiff-x4-real")
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", folder)
    return folder


def run_together(calls) -> list:
    """Run `calls` in threads at once; what each returned, or the exception it raised."""
    results = [None] * len(calls)

    def run(i, call):
        try:
            results[i] = call()
        except BaseException as err:  # noqa: BLE001 - reported to the test
            results[i] = err

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def one_at_a_time_then_together(function, parties: int = 2):
    """
    `function` wrapped for `parties` threads: the calls run one at a time (a lock), then each waits until all have
    run (a barrier), so what the callers do next always overlaps.
    """
    lock, barrier = threading.Lock(), threading.Barrier(parties, timeout=60)

    def wrapped(*args, **kwargs):
        with lock:
            result = function(*args, **kwargs)
        barrier.wait()
        return result

    return wrapped
