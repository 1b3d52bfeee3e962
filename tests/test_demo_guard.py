"""
The demo's guards (issue 29): the cost guard bounds the UNet work a request really runs against a fixed budget (the
page's own sliders, or the API, cannot raise it), the controls stay within what the page offers, and the results
are removed when the demo is stopped with SIGTERM.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import PIL.Image
import pytest


gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from diffusers_deltadiff.demo import MAX_TILE_CONTEXT, MAX_TILE_SIZE, build_demo, check_cost, checked_controls  # noqa: E402
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline  # noqa: E402


MAX_PIXELS = 64 * 64


@pytest.fixture(scope="module")
def pipe():
    pipe = tiny_lossless_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def largest_work(pipe) -> int:
    """The budget, from the pipeline's own accounting: the largest square admitted, with the page's default tiles."""
    defaults = (pipe.config.default_tile_size, pipe.config.tile_context)
    return max(pipe.unet_pixels((64, 64)), pipe.unet_pixels((64, 64), *defaults))


@pytest.mark.parametrize("tile_size, tile_context", [(16, 64), (16, 32), (1, 16), (1, 64)])
def test_small_tiles_and_wide_contexts_cannot_raise_the_budget(pipe, tile_size, tile_context):
    """Before: the budget was computed with the request's own tiles, so these were accepted (50x to 670x the work)."""
    image = PIL.Image.new("RGB", (64, 64))
    assert pipe.unet_pixels((64, 64), tile_size, tile_context) > 2 * largest_work(pipe)  # really much more work
    with pytest.raises(gr.Error, match=r"a 64x64 image costs as much as \d+\.\d times the largest image"):
        check_cost(pipe, image, MAX_PIXELS, "big.png", tile_size, tile_context)


def test_every_accepted_setting_stays_within_the_budget(pipe):
    """Over the page's whole grid of tile settings: whatever is accepted runs at most the fixed budget."""
    image = PIL.Image.new("RGB", (64, 64))
    budget, accepted = largest_work(pipe), 0
    for tile_size in range(0, MAX_TILE_SIZE + 1, 16):
        for tile_context in range(0, MAX_TILE_CONTEXT + 1, 8):
            try:
                check_cost(pipe, image, MAX_PIXELS, "a.png", tile_size, tile_context)
            except gr.Error:
                continue
            accepted += 1
            assert pipe.unet_pixels((64, 64), tile_size, tile_context) <= budget, (tile_size, tile_context)
    assert accepted > 0
    check_cost(pipe, image, MAX_PIXELS, "a.png", pipe.config.default_tile_size, pipe.config.tile_context)  # the page


@pytest.mark.parametrize(
    "steps, tile_size, tile_context, message",
    [
        (1, 1, 0, "tile size: must be 0 (never tile) or at least 16, got 1"),
        (1, 8.5, 0, "tile size: must be a whole number from 0 to 512, got 8.5"),
        (1, 10_000, 0, "tile size: must be a whole number from 0 to 512, got 10000"),
        (1, 128, -1, "tile context: must be a whole number from 0 to 64, got -1"),
        (1, 128, 10**6, "tile context: must be a whole number from 0 to 64"),
        (1, 128, float("nan"), "tile context: must be a whole number from 0 to 64, got nan"),
        (0, 128, 16, "reverse steps: must be a whole number from 1 to 4, got 0"),
        (10**9, 128, 16, "reverse steps: must be a whole number from 1 to 4"),
        ("4", 128, 16, "reverse steps: must be a whole number from 1 to 4, got '4'"),
    ],
)
def test_controls_outside_the_page_are_refused(pipe, steps, tile_size, tile_context, message):
    with pytest.raises(gr.Error, match=message.replace("(", r"\(").replace(")", r"\)")):
        checked_controls(pipe, steps, tile_size, tile_context)


def test_controls_the_page_offers_pass(pipe):
    assert checked_controls(pipe, 4, 0, 0) == (4, 0, 0)
    assert checked_controls(pipe, 1.0, 512.0, 64.0) == (1, 512, 64)


@pytest.fixture(scope="module")
def client(pipe):
    demo = build_demo(pipe, max_pixels=MAX_PIXELS)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        demo.close()


def test_the_served_api_applies_the_guards(client, tmp_path):
    image = tmp_path / "square.png"
    PIL.Image.new("RGB", (64, 64), (90, 120, 150)).save(image)
    with pytest.raises(gradio_client.exceptions.AppError, match=r"square\.png: a 64x64 image costs as much as"):
        client.predict(gradio_client.handle_file(str(image)), 1, 16, 64, api_name="/upscale")
    with pytest.raises(gradio_client.exceptions.AppError, match=r"tile size: must be 0 \(never tile\) or at least"):
        client.predict(gradio_client.handle_file(str(image)), 1, 1, 0, api_name="/upscale")
    (_, sr), result, _ = client.predict(gradio_client.handle_file(str(image)), 1, 0, 0, api_name="/upscale")
    assert PIL.Image.open(result).size == (256, 256)


def served_demo(model: Path, tmp_path: Path):
    """`python -m diffusers_deltadiff.demo` in its own process, temp folders inside `tmp_path`; `(process, url)`."""
    port = free_port()
    temp, gradio_temp = tmp_path / "tmp", tmp_path / "gradio"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "GRADIO_TEMP_DIR": str(gradio_temp), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "diffusers_deltadiff.demo", "--model", str(model), "--port", str(port)]
    log = open(tmp_path / "demo.log", "wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "config", timeout=5) as response:
                json.loads(response.read())
            return process, url
        except OSError:
            assert process.poll() is None, (tmp_path / "demo.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "demo.log").read_text()
            time.sleep(0.5)


def test_sigterm_removes_the_results(pipe, tmp_path):
    """Before: the results stayed in the temp folder (the cleanup was an `atexit` handler, which SIGTERM skips)."""
    model = tmp_path / "model"
    pipe.save_pretrained(model)
    process, url = served_demo(model, tmp_path)
    try:
        image = tmp_path / "photo.png"
        PIL.Image.new("RGB", (16, 16), (90, 120, 150)).save(image)
        client = gradio_client.Client(url, verbose=False, download_files=False)
        client.predict(gradio_client.handle_file(str(image)), 1, 0, 0, api_name="/upscale")
        results = list((tmp_path / "tmp").glob("deltadiff-demo-*/*/photo_x4.png"))
        assert len(results) == 1  # the result is there while the demo runs
        copies = list((tmp_path / "gradio").rglob("photo_x4.png"))
        assert copies  # Gradio serves a copy of it from its own cache
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 143, (tmp_path / "demo.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
    assert list((tmp_path / "tmp").glob("deltadiff-demo-*")) == []
    assert [p for p in copies if p.exists()] == []  # Gradio's copies of it too
