"""`deltadiff export`: every shipped model as one ONNX graph that ONNX Runtime runs to the pipeline's own output.

The reference is the torch pipeline itself (its padding, tiles and streaming), the graph is traced separately
([`UpscalerGraph`] rewrites the padding for dynamic sizes): outputs agree within half an 8-bit level.
"""

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from diffusers_deltadiff.pretrained import SHIPPED_MODELS, from_pretrained, model_path, shipped_models


ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from conftest import one_at_a_time_then_together, run_together  # noqa: E402
from diffusers_deltadiff import atomic_files, onnx_export  # noqa: E402
from diffusers_deltadiff.cli import main  # noqa: E402
from diffusers_deltadiff.onnx_export import UpscalerGraph, export_onnx  # noqa: E402
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline  # noqa: E402


EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
HALF_LEVEL = 0.5 / 255


def photo(name: str, height: int | None = None, width: int | None = None, size=None) -> np.ndarray:
    """An example photo (`examples/images`) as float32 `(H, W, 3)` in [0, 1]: cropped to `height` x `width` from
    the top left, or resized (PIL bicubic) to `size` `(height, width)`."""
    image = PIL.Image.open(EXAMPLES / name).convert("RGB")
    if size is not None:
        image = image.resize(size[::-1], PIL.Image.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 255
    return array[:height, :width]


def run_onnx(session, images: list[np.ndarray]) -> np.ndarray:
    """`(B, H, W, 3)` outputs of the exported graph for same-size `(H, W, 3)` images."""
    batch = np.stack([image.transpose(2, 0, 1) for image in images])
    return session.run(None, {"image": np.ascontiguousarray(batch)})[0].transpose(0, 2, 3, 1)


def session(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module", params=shipped_models())
def exported(request, tmp_path_factory):
    """`(pipeline, ONNX Runtime session, metadata)` of every shipped model (x4, x2, and x4-real when it ships)."""
    name = request.param
    pipe = from_pretrained(model_path(name))
    pipe.set_progress_bar_config(disable=True)
    path = export_onnx(name, tmp_path_factory.mktemp("onnx") / f"{name}.onnx")
    metadata = {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}
    return name, pipe, session(path), metadata


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(lambda: photo("chelsea.png", 37, 23), id="37x23"),
        pytest.param(lambda: photo("coffee.png"), id="coffee-100x150"),
        pytest.param(lambda: photo("astronaut.png", 1, 1), id="1x1"),
        pytest.param(lambda: photo("rocket.png", 2, 3), id="2x3"),
        pytest.param(lambda: photo("astronaut.png", 5, 7), id="5x7"),
        # taller than the automatic tiling threshold: the pipeline runs tiles, streamed; the graph the whole image
        pytest.param(lambda: photo("rocket.png", size=(300, 21)), id="300x21-tiled"),
    ],
)
def test_exported_graph_matches_the_pipeline(exported, image):
    _, pipe, onnx_session, _ = exported
    lr = image()
    expected = pipe(lr, output_type="np").images[0]
    got = run_onnx(onnx_session, [lr])[0]
    assert got.shape == (lr.shape[0] * pipe.upscale_factor, lr.shape[1] * pipe.upscale_factor, 3)
    assert np.abs(got - expected).max() <= HALF_LEVEL


def test_batch_keeps_each_image_its_own_gray_rule(exported):
    _, pipe, onnx_session, _ = exported
    colour = photo("chelsea.png", 19, 26)
    gray = np.repeat(colour.mean(axis=2, keepdims=True), 3, axis=2)
    expected = pipe([colour, gray], output_type="np").images
    got = run_onnx(onnx_session, [colour, gray])
    assert np.abs(got - expected).max() <= HALF_LEVEL
    assert np.array_equal(got[1][..., 0], got[1][..., 2])  # gray in, gray out
    assert np.abs(got[0][..., 0] - got[0][..., 2]).max() > 0.05


def test_metadata_describes_the_model(exported):
    name, pipe, _, metadata = exported
    card = Path(model_path(name)) / "README.md"
    front_matter = card.read_text().split("---")[1] if card.is_file() else ""
    licenses = [line.split(":", 1)[1].strip() for line in front_matter.splitlines() if line.startswith("license:")]
    license = licenses[0] if licenses else "unknown"
    assert metadata["model_name"] == SHIPPED_MODELS[name]
    assert metadata["license"] == license
    assert metadata["upscale_factor"] == str(pipe.upscale_factor)
    assert metadata["num_inference_steps"] == str(pipe.scheduler.default_steps)
    assert metadata["border_padding"] == str(pipe.config.border_padding)
    assert metadata["input_size_multiple"] == "1"


@pytest.mark.parametrize("steps", [4, 2])
def test_multi_step_chain_is_unrolled(tmp_path, steps):
    pipe = tiny_lossless_pipeline(scale=2)
    pipe.set_progress_bar_config(disable=True)
    path = export_onnx(pipe, tmp_path / "tiny.onnx", num_inference_steps=steps)
    lr = photo("coffee.png", 13, 18)
    expected = pipe(lr, num_inference_steps=steps, output_type="np").images[0]
    one_step = pipe(lr, num_inference_steps=1, output_type="np").images[0]
    got = run_onnx(session(path), [lr])[0]
    assert np.abs(got - expected).max() <= HALF_LEVEL
    assert np.abs(got - one_step).max() > 10 * HALF_LEVEL  # the steps count: the graph is not the one-step chain


def test_stochastic_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="stochastic"):
        UpscalerGraph(tiny_lossless_pipeline(kappa=2.0))
    folder = tmp_path / "resshift"
    tiny_lossless_pipeline(kappa=2.0).save_pretrained(folder)
    assert main(["export", str(folder), "-o", str(tmp_path / "out.onnx")]) == 2
    assert not (tmp_path / "out.onnx").exists()


def test_cli_writes_once_and_refuses_to_overwrite(tmp_path, capsys):
    folder = tmp_path / "tiny-x2"
    tiny_lossless_pipeline(scale=2).save_pretrained(folder)
    output = tmp_path / "tiny.onnx"
    assert main(["export", str(folder), "-o", str(output), "--steps", "2"]) == 0
    metadata = {prop.key: prop.value for prop in onnx.load(str(output)).metadata_props}
    assert (metadata["model_name"], metadata["upscale_factor"], metadata["num_inference_steps"]) == (
        "tiny-x2",
        "2",
        "2",
    )
    written = output.read_bytes()
    assert main(["export", str(folder), "-o", str(output)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert output.read_bytes() == written
    assert main(["export", str(folder), "-o", str(tmp_path / "model.txt")]) == 2
    assert main(["export", str(folder), "-o", str(output), "--steps", "9", "--overwrite"]) == 2
    assert output.read_bytes() == written
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp" or p.name.startswith(".")] == []


def umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@pytest.mark.parametrize("overwrite", [True, False])
def test_two_exports_to_one_path_at_once(tmp_path, monkeypatch, overwrite):
    """
    Both exports are traced before either writes (a barrier), so they always overlap. Before: both traced into the one
    `.tiny.onnx.tmp`, and the second rename found its file taken by the first (FileNotFoundError). Now the file is one
    export's whole graph, with the umask's mode, and no temporary file is left; without `overwrite` the later one is
    refused (`AlreadyExists`) instead of replacing the other's.
    """
    # one trace at a time (the exporter has global state), then both wait until both have traced
    monkeypatch.setattr(onnx_export, "trace_to_onnx", one_at_a_time_then_together(onnx_export.trace_to_onnx))
    pipes = [tiny_lossless_pipeline(seed=seed, scale=2) for seed in (0, 1)]  # other weights: whose file it is shows
    output = tmp_path / "tiny.onnx"
    results = run_together([lambda pipe=pipe: export_onnx(pipe, output, 1, overwrite=overwrite) for pipe in pipes])
    if overwrite:
        assert results == [output, output]
    else:
        assert sorted(type(r).__name__ for r in results) == ["AlreadyExists", "PosixPath"], results
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"]
    assert stat.S_IMODE(output.stat().st_mode) == umask_mode()
    lr = photo("coffee.png", 9, 11)
    got = run_onnx(session(output), [lr])[0]
    matches = [
        np.abs(got - pipe(lr, num_inference_steps=1, output_type="np").images[0]).max() <= HALF_LEVEL for pipe in pipes
    ]
    assert sorted(matches) == [False, True]


def test_an_interrupted_export_leaves_nothing(tmp_path, monkeypatch):
    """An interrupt while the file is written: the previous file stays as it was, and no temporary file is left."""
    output = tmp_path / "tiny.onnx"
    output.write_bytes(b"the previous export")

    def interrupted(fd, data):
        os.write(fd, bytes(memoryview(data)[:100]))
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_files, "write_whole", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(tiny_lossless_pipeline(scale=2), output, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"] and output.read_bytes() == b"the previous export"


def test_cli_export_removes_a_killed_export_s_temporary_file(tmp_path, capsys):
    """A SIGKILLed export leaves its temporary file; the next export into that folder removes it (its process is gone)."""
    folder = tmp_path / "tiny-x2"
    tiny_lossless_pipeline(scale=2).save_pretrained(folder)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{atomic_files.TMP_PREFIX}{dead.pid}-0123456789ab{atomic_files.TMP_SUFFIX}"
    stale.write_bytes(b"half an export")
    assert main(["export", str(folder), "-o", str(tmp_path / "tiny.onnx"), "--steps", "1"]) == 0, capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-x2", "tiny.onnx"]
    session(tmp_path / "tiny.onnx")


def test_cli_export_keeps_a_file_another_run_wrote_meanwhile(tmp_path, capsys, monkeypatch):
    """The output appears after the flags were checked (another export): without --overwrite it is kept, one line."""
    folder = tmp_path / "tiny-x2"
    tiny_lossless_pipeline(scale=2).save_pretrained(folder)
    output = tmp_path / "tiny.onnx"
    real_trace = onnx_export.trace_to_onnx

    def and_another_run_writes(*args, **kwargs):
        real_trace(*args, **kwargs)
        output.write_bytes(b"the other run's export")

    monkeypatch.setattr(onnx_export, "trace_to_onnx", and_another_run_writes)
    assert main(["export", str(folder), "-o", str(output), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: -o {output}: already exists (pass --overwrite to replace it)"
    assert output.read_bytes() == b"the other run's export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-x2", "tiny.onnx"]


@pytest.mark.parametrize("output", ["a" * 300 + ".onnx", "a/" * 2100 + "x.onnx"], ids=["long-name", "long-path"])
def test_cli_export_to_a_name_too_long_is_one_line(tmp_path, capsys, monkeypatch, output):
    """Before: `Path.is_dir` raised `File name too long` from the flag check, a traceback with exit status 1."""
    monkeypatch.chdir(tmp_path)
    assert main(["export", "x4", "-o", output]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: -o {output}: ") and "too long" in err
    assert list(tmp_path.iterdir()) == []


def test_model_name_of_a_folder_given_as_dot(tmp_path, monkeypatch):
    """Before: `deltadiff export . -o ...` wrote `model_name` "" (the name of the path "."), not the folder's."""
    folder = tmp_path / "tiny-x2"
    tiny_lossless_pipeline(scale=2).save_pretrained(folder)
    monkeypatch.chdir(folder)
    assert main(["export", ".", "-o", str(tmp_path / "tiny.onnx"), "--steps", "1"]) == 0
    model = onnx.load(str(tmp_path / "tiny.onnx"))
    assert {prop.key: prop.value for prop in model.metadata_props}["model_name"] == "tiny-x2"
    assert model.doc_string == "tiny-x2: x2 upscaling"
