"""The CLI's graph path on ONNX Runtime: the exported graph stands in for the pipeline, diffusers never imported."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from conftest import random_image, write_image
from diffusers_deltadiff.cli import main
from diffusers_deltadiff.cli.backend import graph_upscaler
from diffusers_deltadiff.encoding import bicubic_space_to_depth
from diffusers_deltadiff.onnx_upscaler import GraphUpscaler, graph_cache_path
from diffusers_deltadiff.pretrained import from_pretrained
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline


pytest.importorskip("onnxruntime")

HALF_LEVEL = 0.5 / 255


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Each test its own cache folder: which runs export is part of what is tested."""
    folder = tmp_path / "onnx-cache"
    monkeypatch.setenv("DELTADIFF_CACHE", str(folder))
    return folder


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def saved_model(folder, seed=0, **config):
    pipe = tiny_lossless_pipeline(seed=seed)
    pipe.register_to_config(**config)
    pipe.save_pretrained(folder)
    return folder


def levels(path):
    with PIL.Image.open(path) as image:
        return np.asarray(image).astype(np.int64)


def loaded_graph(folder, steps=None):
    """The upscaler `deltadiff upscale --model folder` runs, and a list that counts the pipeline loads it makes."""
    loads = []

    def load():
        loads.append(1)
        return from_pretrained(str(folder))

    args = SimpleNamespace(steps=steps, backend="auto", model=str(folder))
    return graph_upscaler(args, str(folder), None, load), loads


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [(1, 1), (1, 5), (2, 2), (7, 3), (16, 11)])
def test_bicubic_space_to_depth_is_the_upsampling_rearranged(scale, size):
    """The graph's `y`, a grouped 5x5 convolution at LR size, against torch's own bicubic upsampling, clamped and
    rearranged: equal within float error at every size, edges included."""
    lr = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(scale)) * 2 - 1
    upsampled = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False) if scale > 1 else lr
    expected = F.pixel_unshuffle(upsampled.clamp(-1, 1), scale)
    got = bicubic_space_to_depth(lr, scale)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) < 1e-5


def test_the_graph_computes_what_the_pipeline_computes(tmp_path):
    """Float outputs within half an 8-bit level of the torch pipeline's (gray in, gray out; alpha dropped), at odd
    sizes; the pipeline itself is never loaded once the graph is cached (the first load exports it)."""
    folder = saved_model(tmp_path / "model", seed=3)
    pipe = tiny_lossless_pipeline(seed=3)
    upscaler, loads = loaded_graph(folder)  # exports
    assert isinstance(upscaler, GraphUpscaler) and loads == [1]
    upscaler, loads = loaded_graph(folder)  # from the cache
    for mode in ("RGB", "L", "RGBA"):
        for size in ((9, 13), (1, 1), (4, 17)):
            image = random_image(*size, seed=1, mode=mode)
            expected = pipe(image, output_type="pt").images
            got = upscaler(image, output_type="pt").images
            assert got.shape == expected.shape == (1, 3, 4 * size[0], 4 * size[1]), (mode, size)
            assert float((got - expected).abs().max()) < HALF_LEVEL, (mode, size)
            pil = np.asarray(upscaler(image).images[0]).astype(int)
            assert np.abs(pil - np.asarray(expected[0].permute(1, 2, 0) * 255).round()).max() <= 1, (mode, size)
    assert loads == []


def test_calls_the_graph_cannot_make_go_to_the_pipeline(tmp_path):
    """An image the pipeline tiles (over `auto_tile_threshold`), another step count, a tile size, the steps strip:
    the pipeline computes them (loaded once, on the first such call); the rest never loads it."""
    folder = saved_model(tmp_path / "model", seed=5, auto_tile_threshold=8)
    pipe = from_pretrained(str(folder))
    loaded_graph(folder)
    upscaler, loads = loaded_graph(folder)
    small, large = random_image(8, 6, seed=2), random_image(9, 20, seed=3)
    upscaler(small)
    assert loads == []
    for image, kwargs in [
        (large, {}),
        (small, {"num_inference_steps": 2}),
        (small, {"tile_size": 4}),
        (small, {"return_intermediates": True}),
    ]:
        got = upscaler(image, output_type="pt", **kwargs)
        expected = pipe(image, output_type="pt", **kwargs)
        assert float((got.images - expected.images).abs().max()) < HALF_LEVEL
        assert (got.intermediate_images is None) == (expected.intermediate_images is None)
    assert loads == [1]
    whole = upscaler(large, output_type="pt", tile_size=0).images  # asked whole: the graph
    assert float((whole - pipe(large, output_type="pt", tile_size=0).images).abs().max()) < HALF_LEVEL
    assert loads == [1]


def test_a_second_run_imports_neither_diffusers_nor_the_pipeline(tmp_path):
    """
    The point of the graph path: `deltadiff upscale` spent about 3 s importing diffusers before its first image.
    Before, every run imported it; now only the run that exports the graph does, and the output is the same file.
    """
    folder = saved_model(tmp_path / "model", seed=1)
    source = write_image(tmp_path / "a.png", 10, 7)
    script = (
        "import sys; from diffusers_deltadiff.cli import main; code = main(sys.argv[1:]); "
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(('diffusers', 'onnx'))})); sys.exit(code)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    imported = []
    for name in ("first", "second"):
        argv = ["upscale", str(source), "-o", str(tmp_path / f"{name}.png"), "--model", str(folder)]
        done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        imported.append(done.stdout.strip().splitlines()[-1])
    assert imported == [
        "['diffusers', 'diffusers_deltadiff', 'onnx', 'onnxruntime']",
        "['diffusers_deltadiff', 'onnxruntime']",
    ]
    assert (tmp_path / "first.png").read_bytes() == (tmp_path / "second.png").read_bytes()


def test_the_package_still_gives_its_submodules_as_attributes():
    """
    `import diffusers_deltadiff` imports its classes on first use, and no longer every module with them: its
    submodules stay attributes, as the model cards' `diffusers_deltadiff.pretrained.load_default_pipeline(...)` and
    code written before use them (an `AttributeError` since the package became lazy); a name it lacks is still one.
    """
    script = (
        "import sys, diffusers_deltadiff as d; assert 'diffusers' not in sys.modules; "
        "print(d.pretrained.load_default_pipeline.__name__, d.onnx_export.export_onnx.__name__, "
        "d.DeltaDiffPipeline.__name__, hasattr(d, 'nope'), hasattr(d, '__nope__'))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == ["load_default_pipeline", "export_onnx", "DeltaDiffPipeline", "False", "False"], (
        done.stderr
    )


def test_a_changed_model_is_never_served_by_the_old_graph(tmp_path, capsys):
    """Other weights saved into the same folder (a fine-tune written over, a model copied in): the next run exports
    and runs the new model, within a level of torch's output of it."""
    folder, source = tmp_path / "model", write_image(tmp_path / "a.png", 9, 11)
    outputs = {}
    for seed in (1, 2):
        saved_model(folder, seed=seed)
        for backend in ("auto", "torch"):
            out = tmp_path / f"{seed}-{backend}.png"
            code, _, err = run(capsys, "upscale", source, "-o", out, "--model", folder, "--backend", backend)
            assert code == 0, err
            outputs[seed, backend] = levels(out)
    assert np.abs(outputs[2, "auto"] - outputs[2, "torch"]).max() <= 1
    assert np.abs(outputs[2, "auto"] - outputs[1, "auto"]).max() > 10
    assert len(list((tmp_path / "onnx-cache").glob("graph-*.onnx"))) == 2


def test_a_folder_config_change_is_a_new_graph(tmp_path):
    """The key covers every file of the model, configs included: a changed border padding is another graph."""
    folder = saved_model(tmp_path / "model")
    first = graph_cache_path(folder, None)
    assert graph_cache_path(folder, None) == first and graph_cache_path(folder, 2) != first
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "border_padding": 3}))
    assert graph_cache_path(folder, None) != first
    other = saved_model(tmp_path / "other")  # the same model in another folder: the same file
    assert graph_cache_path(other, None) == first


def test_a_cache_that_cannot_be_written_runs_the_pipeline(tmp_path, capsys, monkeypatch):
    """`DELTADIFF_CACHE` naming a file (or a read-only folder): the run still upscales, with the pipeline."""
    folder, source = saved_model(tmp_path / "model", seed=2), write_image(tmp_path / "a.png", 6, 9)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("DELTADIFF_CACHE", str(blocker))
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "out.png", "--model", folder)
    assert code == 0 and err == "", err
    code, _, err = run(
        capsys, "upscale", source, "-o", tmp_path / "torch.png", "--model", folder, "--backend", "torch"
    )
    assert np.abs(levels(tmp_path / "out.png") - levels(tmp_path / "torch.png")).max() <= 1
    assert blocker.read_text() == ""


def test_a_stochastic_model_runs_on_the_pipeline(tmp_path, capsys):
    """ResShift (kappa > 0) has no single graph: the pipeline runs it, seeded as on torch, and no graph is cached."""
    folder, source = tmp_path / "model", write_image(tmp_path / "a.png", 6, 9)
    tiny_lossless_pipeline(seed=4, kappa=2.0).save_pretrained(folder)
    for backend in ("auto", "torch"):
        code, _, err = run(capsys, "upscale", source, "-o", tmp_path / f"{backend}.png", "--model", folder,
                           "--backend", backend)  # fmt: skip
        assert code == 0, err
    assert np.abs(levels(tmp_path / "auto.png") - levels(tmp_path / "torch.png")).max() <= 1
    assert not list((tmp_path / "onnx-cache").glob("graph-*"))


def test_a_graph_read_from_the_cache_counts_as_used(tmp_path, capsys):
    """The cache keeps the most recently used exports: a run that reads a graph marks it (its modification time)."""
    folder, source = saved_model(tmp_path / "model", seed=6), write_image(tmp_path / "a.png", 5, 7)
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "first.png", "--model", folder)
    assert code == 0, err
    path = graph_cache_path(folder, None)
    os.utime(path, (1_000_000, 1_000_000))
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "again.png", "--model", folder)
    assert code == 0, err
    assert path.stat().st_mtime > 1_000_000


class FailingOnWideImages:
    """An ONNX Runtime session that fails, as ONNX Runtime does (its own exception class), on inputs over 10 wide."""

    def __init__(self, session, error):
        self.session, self.error = session, error

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, outputs, feeds):
        if next(iter(feeds.values())).shape[-1] > 10:
            raise self.error
        return self.session.run(outputs, feeds)


def test_an_onnx_runtime_failure_is_one_error_line_and_the_other_images_are_upscaled(tmp_path, capsys, monkeypatch):
    """
    ONNX Runtime's exceptions are no `RuntimeError`s: a whole image larger than the memory (`--tile-size 0`) stopped
    the run with a traceback, leaving the other images undone. Now a failed allocation is the torch path's
    out-of-memory line, another failure a `RuntimeError` line, and the run goes on.
    """
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    from diffusers_deltadiff import onnx_backend

    inputs, folder = tmp_path / "in", saved_model(tmp_path / "model", seed=2)
    write_image(inputs / "a.png", 6, 7)
    write_image(inputs / "b.png", 6, 20)
    real = onnx_backend.cpu_session
    for message, expected in [
        ("Failed to allocate memory for requested buffer of size 376320000", "out of memory (MemoryError): ask"),
        ("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code", "RuntimeError: ONNX Runtime: [ONNXRuntimeError]"),
    ]:
        session = lambda model, error=Fail(message): FailingOnWideImages(real(model), error)  # noqa: E731
        monkeypatch.setattr(onnx_backend, "cpu_session", session)
        out = tmp_path / f"out-{expected[:3]}"
        code, _, err = run(capsys, "upscale", inputs, "-o", out, "--model", folder, "--tile-size", 0)
        assert code == 1
        assert [line.startswith(f"error: {inputs / 'b.png'}: {expected}") for line in err.splitlines()] == [True]
        assert sorted(p.name for p in out.iterdir()) == ["a.png"]


def identity_onnx() -> bytes:
    """A valid ONNX file that is no exported graph: `image` to `upscaled` unchanged, no metadata."""
    import onnx

    value = onnx.helper.make_tensor_value_info
    node = onnx.helper.make_node("Identity", ["image"], ["upscaled"])
    graph = onnx.helper.make_graph(
        [node],
        "identity",
        [value("image", onnx.TensorProto.FLOAT, None)],
        [value("upscaled", onnx.TensorProto.FLOAT, None)],
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("intruder", ["an x2 model's graph", "an ONNX file with no metadata"])
def test_another_file_under_the_graphs_name_is_exported_again(tmp_path, capsys, intruder):
    """
    A cached file ONNX Runtime reads but that is not this model's graph (a cache folder copied or synced by hand, a
    file written over): it was run as the graph, upscaling x2 where the model upscales x4, or it stopped the run with
    a `KeyError` traceback. Now its metadata is checked: the graph is exported again, and the output is torch's.
    """
    from diffusers_deltadiff.onnx_export import export_onnx

    folder, source = saved_model(tmp_path / "model", seed=2), write_image(tmp_path / "a.png", 6, 9)
    path = graph_cache_path(folder, None)
    path.parent.mkdir(parents=True)
    if intruder == "an ONNX file with no metadata":
        path.write_bytes(identity_onnx())
    else:
        export_onnx(tiny_lossless_pipeline(seed=2, scale=2), path)
    for backend in ("auto", "torch"):
        code, _, err = run(capsys, "upscale", source, "-o", tmp_path / f"{backend}.png", "--model", folder,
                           "--backend", backend)  # fmt: skip
        assert code == 0 and err == "", err
    assert levels(tmp_path / "auto.png").shape == levels(tmp_path / "torch.png").shape == (24, 36, 3)
    assert np.abs(levels(tmp_path / "auto.png") - levels(tmp_path / "torch.png")).max() <= 1
    upscaler, loads = loaded_graph(folder)  # the exported graph replaced the intruder
    assert isinstance(upscaler, GraphUpscaler) and upscaler.upscale_factor == 4 and loads == []
