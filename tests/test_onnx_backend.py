"""The ONNX Runtime backend: the pipeline with its UNet in ONNX Runtime computes what the torch pipeline computes.

The tiling tests of the torch path are run here again, unchanged, on pipelines whose UNet is an ONNX Runtime session.
"""

import os
import stat
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

import test_default_model
import test_tiling
from conftest import one_at_a_time_then_together, run_together, write_image
from diffusers_deltadiff import onnx_backend
from diffusers_deltadiff.cli import main
from diffusers_deltadiff.onnx_backend import OnnxRuntimeUNet, resolve_backend, unet_cache_path, use_onnxruntime
from diffusers_deltadiff.onnx_upscaler import graph_cache_path
from diffusers_deltadiff.pretrained import from_pretrained, load_default_pipeline
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline


pytest.importorskip("onnxruntime")

HALF_LEVEL = 0.5 / 255


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    """Exported UNets go to a folder of this test session, not the user's cache."""
    folder = tmp_path_factory.getbasetemp() / "onnx-cache"
    monkeypatch.setenv("DELTADIFF_CACHE", str(folder))
    return folder


def on_onnxruntime(pipe):
    pipe.set_progress_bar_config(disable=True)
    return use_onnxruntime(pipe)


@pytest.fixture(scope="module", params=[4, 2], ids=["x4", "x2"])
def factor_pipes(request):
    """`(torch, onnxruntime)` tiny lossless pipelines of one factor, the same weights."""
    torch_pipe = tiny_lossless_pipeline(seed=0, scale=request.param)
    torch_pipe.set_progress_bar_config(disable=True)
    return torch_pipe, on_onnxruntime(tiny_lossless_pipeline(seed=0, scale=request.param))


def test_the_unet_stand_in_is_what_the_pipeline_sees(factor_pipes):
    torch_pipe, ort_pipe = factor_pipes
    assert isinstance(ort_pipe.unet, OnnxRuntimeUNet)
    assert ort_pipe.unet.config == torch_pipe.unet.config and ort_pipe.unet.dtype == torch.float32
    assert ort_pipe.device.type == "cpu" and ort_pipe.lr_size_multiple == torch_pipe.lr_size_multiple
    sample = torch.randn(3, torch_pipe.unet.config.in_channels, 8, 12)
    for timestep in (torch.full((3,), 2), 2, torch.tensor(2)):
        with torch.no_grad():
            expected = torch_pipe.unet(sample, timestep).sample
        got = ort_pipe.unet(sample, timestep).sample
        assert got.shape == expected.shape and float((got - expected).abs().max()) < 1e-4
    assert use_onnxruntime(ort_pipe) is ort_pipe and isinstance(ort_pipe.unet, OnnxRuntimeUNet)


@pytest.mark.parametrize("tile_size,tile_batch_size", [(8, 1), (12, 3)])
def test_tiles_equal_the_whole_image_on_onnxruntime(factor_pipes, tile_size, tile_batch_size):
    test_tiling.test_local_model_tiles_equal_the_whole_image(factor_pipes[1], tile_size, tile_batch_size)


@pytest.mark.parametrize("output_type", ["pil"])  # exact stream = canvas, whole within a level
def test_streaming_equals_the_canvas_path_on_onnxruntime(factor_pipes, output_type, monkeypatch):
    test_tiling.test_streaming_equals_the_canvas_path(factor_pipes[1], output_type, monkeypatch)


@test_default_model.SCALES  # every shipped model, as the torch test runs them
def test_shipped_tiles_equal_the_whole_image_on_onnxruntime(name, scale, monkeypatch):
    monkeypatch.setattr(
        test_default_model, "load_default_pipeline", lambda **kwargs: on_onnxruntime(load_default_pipeline(**kwargs))
    )
    test_default_model.test_tiles_equal_the_whole_image(name, scale)


@test_default_model.SCALES
def test_shipped_models_match_torch(name, scale):
    torch_pipe = load_default_pipeline(model=name)
    torch_pipe.set_progress_bar_config(disable=True)
    ort_pipe = on_onnxruntime(load_default_pipeline(model=name))
    photo = PIL.Image.open(Path(__file__).resolve().parents[1] / "examples" / "images" / "chelsea.png")
    for kwargs in ({}, {"tile_size": 16}):  # whole, and tiled with the model's own context
        expected = torch_pipe(photo, output_type="np", **kwargs).images
        got = ort_pipe(photo, output_type="np", **kwargs).images
        assert np.abs(got - expected).max() <= HALF_LEVEL


def test_hostile_inputs_fail_as_on_torch(factor_pipes):
    torch_pipe, ort_pipe = factor_pipes
    bad = np.full((6, 7, 3), np.nan, dtype=np.float32)
    for pipe in factor_pipes:
        with pytest.raises(ValueError, match="NaN"):
            pipe(bad)
        with pytest.raises(ValueError, match="tile_size"):
            pipe(np.zeros((6, 7, 3), np.float32), tile_size=-1)


def test_resolve_backend(monkeypatch):
    assert resolve_backend("auto", "cpu", torch.float32) == "onnxruntime"
    assert resolve_backend("auto", "cpu", torch.bfloat16) == "torch"
    assert resolve_backend("auto", "cuda", torch.float32) == "torch"
    assert resolve_backend("torch", "cpu", torch.float32) == "torch"
    with pytest.raises(ValueError, match="float32 on the CPU"):
        resolve_backend("onnxruntime", "cuda", torch.float32)
    monkeypatch.setattr("diffusers_deltadiff.onnx_backend.onnxruntime_available", lambda: False)
    assert resolve_backend("auto", "cpu", torch.float32) == "torch"
    with pytest.raises(ValueError, match=r"diffusers-deltadiff\[onnx\]"):
        resolve_backend("onnxruntime", "cpu", torch.float32)


def test_export_is_cached_by_weights(cache, tmp_path):
    unet = tiny_lossless_pipeline(seed=0).unet
    path = unet_cache_path(unet)
    OnnxRuntimeUNet(unet)
    assert path.is_file() and path.parent == cache
    inode = path.stat().st_ino  # an export writes a new file and renames it over; a read only marks it used (mtime)
    OnnxRuntimeUNet(unet)
    assert path.stat().st_ino == inode  # read, not exported again
    assert unet_cache_path(tiny_lossless_pipeline(seed=1).unet) != path  # other weights, another file
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    stand_in = OnnxRuntimeUNet(unet, cache_folder=blocked / "cache")  # cannot be written: exported in memory
    sample = torch.randn(1, unet.config.in_channels, 8, 8)
    with torch.no_grad():
        assert float((stand_in(sample, 1).sample - unet(sample, 1).sample).abs().max()) < 1e-4


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("mode", ["RGBA", "I;16"])
def test_cli_backends_write_the_same_files(tmp_path, capsys, mode):
    """Alpha and 16-bit outputs go through the same code on both backends: the files agree within a level."""
    model = tmp_path / "model"
    tiny_lossless_pipeline(seed=0).save_pretrained(model)
    source = write_image(tmp_path / "in" / "a.png", 11, 14, mode=mode)
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        code, _, err = run(capsys, "upscale", source, "-o", tmp_path / backend, "--model", model, "--backend", backend)
        assert code == 0, err
        with PIL.Image.open(tmp_path / backend / "a.png") as image:
            outputs[backend] = (image.mode, np.asarray(image).astype(np.int64))
    (torch_mode, a), (ort_mode, b) = outputs["torch"], outputs["onnxruntime"]
    assert torch_mode == ort_mode and a.shape == b.shape == ((44, 56, 4) if mode == "RGBA" else (44, 56))
    assert np.abs(a - b).max() <= (1 if mode == "RGBA" else 257)  # one level of 8 bits
    if mode == "RGBA":
        assert np.array_equal(a[..., 3], b[..., 3])


def test_cli_refuses_an_onnxruntime_backend_it_cannot_serve(tmp_path, capsys):
    source = write_image(tmp_path / "a.png", 8, 8)
    code, _, err = run(
        capsys, "upscale", source, "-o", tmp_path / "out", "--backend", "onnxruntime", "--dtype", "bf16"
    )
    assert code == 2
    assert (
        err.strip()
        == "error: --backend onnxruntime: the onnxruntime backend runs float32 on the CPU, not bfloat16 on cpu"
    )
    assert not (tmp_path / "out").exists()


def test_auto_falls_back_to_torch_where_onnxruntime_cannot_run_the_model(tmp_path, capsys, monkeypatch):
    """
    A model ONNX Runtime cannot take (an operator it lacks, an export that fails). Before: `--backend auto`, the
    default, stopped with "pass --backend torch", so a model torch runs failed unless the user knew the flag. Now auto
    runs it with torch and says so in one warning line; an explicit `--backend onnxruntime` is still a flag error.
    """

    class Unrunnable(torch.nn.Module):
        def __init__(self, unet, cache_folder=None):
            raise RuntimeError(
                "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for Op\nmore"
            )

    model = tmp_path / "model"
    tiny_lossless_pipeline(seed=7).save_pretrained(model)
    source = write_image(tmp_path / "a.png", 9, 13)
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "torch.png", "--model", model, "--backend", "torch")
    assert code == 0, err
    monkeypatch.setattr(onnx_backend, "OnnxRuntimeUNet", Unrunnable)
    monkeypatch.setattr(onnx_backend, "cpu_session", Unrunnable)  # nor the whole graph
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "auto.png", "--model", model)
    assert code == 0, err
    assert err.strip() == (
        "warning: --backend auto: ONNX Runtime cannot run this model (RuntimeError: [ONNXRuntimeError] : 9 : "
        "NOT_IMPLEMENTED : Could not find an implementation for Op): torch runs it"
    )
    assert (tmp_path / "auto.png").read_bytes() == (tmp_path / "torch.png").read_bytes()
    code, _, err = run(
        capsys, "upscale", source, "-o", tmp_path / "ort.png", "--model", model, "--backend", "onnxruntime"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: --backend onnxruntime: cannot run the model there (RuntimeError: [ONNXRuntimeError]")
    assert not (tmp_path / "ort.png").exists()


def test_an_empty_cache_filled_at_once(tmp_path, monkeypatch):
    """
    Two stand-ins for one UNet start together on an empty cache, both exported before either writes (a barrier).
    Before: in one process they shared the temporary name `.<file>.<pid>.tmp`, so the second rename found its file
    taken and fell back to an uncached in-memory model. Now both get the cached file, which ONNX Runtime loads, with
    the umask's mode, and nothing else is left in the folder.
    """
    # one trace at a time (the exporter has global state), then both wait until both have exported
    monkeypatch.setattr(onnx_backend, "export_unet", one_at_a_time_then_together(onnx_backend.export_unet))
    unet = tiny_lossless_pipeline(seed=2).unet
    folder = tmp_path / "cache"
    results = run_together([lambda: onnx_backend.unet_model(unet, folder)] * 2)
    path = unet_cache_path(unet, folder)
    assert results == [str(path), str(path)]
    assert list(folder.iterdir()) == [path]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    sample = torch.randn(1, unet.config.in_channels, 8, 8)
    with torch.no_grad():
        expected = unet(sample, 1).sample
    got = OnnxRuntimeUNet(unet, cache_folder=folder)(sample, 1).sample  # read from the cache
    assert float((got - expected).abs().max()) < 1e-4


@pytest.mark.parametrize("damage", ["truncated", "empty"])
@pytest.mark.parametrize("kind", ["graph", "unet"])
def test_a_damaged_cache_file_is_exported_again(tmp_path, capsys, cache, damage, kind):
    """
    A cached graph or UNet that ONNX Runtime cannot read (cut short by a copy, a full disk or an older version's
    crash). Before: every later run failed, `--backend auto` (the default) included, until the user found the file and
    removed it. Now it is exported again and replaces the damaged file; the output is the first run's. (The whole
    graph runs whole images; the UNet alone, the pipeline's tiles.)
    """
    model = tmp_path / "model"
    tiny_lossless_pipeline(seed=4).save_pretrained(model)
    source = write_image(tmp_path / "a.png", 9, 13)
    tiles = ["--tile-size", "4"] if kind == "unet" else []
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "first.png", "--model", model, *tiles)
    assert code == 0, err
    path = graph_cache_path(model, None) if kind == "graph" else unet_cache_path(from_pretrained(model).unet)
    whole = path.stat().st_size
    path.write_bytes(path.read_bytes()[: whole // 2] if damage == "truncated" else b"")
    code, _, err = run(capsys, "upscale", source, "-o", tmp_path / "again.png", "--model", model, *tiles)
    assert code == 0, err
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "first.png").read_bytes()
    assert path.stat().st_size == whole


def test_an_export_killed_midway_leaves_no_file_for_good(tmp_path):
    """
    Before: a process killed (SIGKILL) while writing the cache left its temporary file, about 17 MB, in the cache
    folder for good: nothing ever removed it. Now the next export removes those of processes that are gone, and keeps
    those of live processes and of this process's other threads (writes under way).
    """
    import subprocess

    from diffusers_deltadiff.atomic_files import TMP_PREFIX, TMP_SUFFIX

    finished = subprocess.Popen(["true"])
    finished.wait()
    folder = tmp_path / "cache"
    folder.mkdir()
    killed, old = folder / f"{TMP_PREFIX}{finished.pid}-0a1b2c{TMP_SUFFIX}", folder / f"{TMP_PREFIX}old{TMP_SUFFIX}"
    live, mine = folder / f"{TMP_PREFIX}1-3d4e5f{TMP_SUFFIX}", folder / f"{TMP_PREFIX}{os.getpid()}-6a7b8c{TMP_SUFFIX}"
    for path in (killed, old, live, mine):
        path.write_bytes(b"part of an export")
    unet = tiny_lossless_pipeline(seed=8).unet
    assert onnx_backend.unet_model(unet, folder) == str(unet_cache_path(unet, folder))
    assert sorted(folder.iterdir()) == sorted([live, mine, unet_cache_path(unet, folder)])


def test_one_model_in_two_folders_has_one_cache_file(tmp_path, monkeypatch):
    """
    Before: the cache name hashed the whole config, `_name_or_path` (the folder it was loaded from) included, so the
    same model loaded as `model`, `./model`, an absolute path or a copy was exported again and cached once per path.
    """
    tiny_lossless_pipeline(seed=5).save_pretrained(tmp_path / "model")
    tiny_lossless_pipeline(seed=5).save_pretrained(tmp_path / "copy")
    monkeypatch.chdir(tmp_path)
    unets = [from_pretrained(path).unet for path in ("model", "./model", str(tmp_path / "model"), "copy")]
    assert len({unet_cache_path(unet) for unet in unets}) == 1
    assert unet_cache_path(from_pretrained("model").unet) != unet_cache_path(tiny_lossless_pipeline(seed=6).unet)


def test_the_cache_keeps_the_most_recently_used_exports(tmp_path):
    """
    Before: the cache only grew, 17 MB for every model, release and `--denoise` value ever run (each blend is a UNet
    of its own). Now a new export leaves the `CACHE_FILES` most recently used exports (a read counts as a use) and
    nothing else of the folder is touched.
    """
    folder = tmp_path / "cache"
    folder.mkdir()
    now = time.time()
    fakes = [folder / f"unet-{i:032x}.onnx" for i in range(onnx_backend.CACHE_FILES)]
    fakes += [folder / f"graph-{i:012x}-{i:032x}.onnx" for i in range(2)]
    for age, path in enumerate(fakes):  # the first the newest
        path.write_bytes(b"an export")
        os.utime(path, (now - 100 - age, now - 100 - age))
    others = [folder / "notes.txt", folder / "mine.onnx"]
    for path in others:
        path.write_bytes(b"not ours")
        os.utime(path, (now - 10_000, now - 10_000))
    onnx_backend.mark_used(fakes[-1])  # the oldest, just read
    unet = tiny_lossless_pipeline(seed=9).unet
    new = Path(onnx_backend.unet_model(unet, folder))
    kept = sorted(p for p in folder.iterdir() if p not in others)
    assert kept == sorted([new, fakes[-1], *fakes[: onnx_backend.CACHE_FILES - 2]])
    assert all(p.read_bytes() == b"not ours" for p in others)
    assert onnx_backend.unet_model(unet, folder) == str(new)  # a hit: nothing removed
    assert len(list(folder.iterdir())) == onnx_backend.CACHE_FILES + 2
