"""The Gradio demo, served for real: driven through `gradio_client` and, when Chromium is installed, a headless browser.

The browser test writes its screenshot to `outputs/ci/demo_screenshot.png` (and the test's tmp folder).
"""

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import pytest
import torch


gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from diffusers_deltadiff.demo import build_demo, main  # noqa: E402
from diffusers_deltadiff.image_utils import bicubic_resize, to_pil, to_unit_tensor  # noqa: E402
from diffusers_deltadiff.metrics import psnr_y  # noqa: E402
from diffusers_deltadiff.pretrained import load_default_pipeline, shipped_models, shipped_scales  # noqa: E402
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline  # noqa: E402


REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "outputs" / "ci" / "demo_screenshot.png"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
MAX_PIXELS = 64 * 64  # the served demo's limit: small, so that "too large" is cheap to test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def picture(size: int, seed: int = 0) -> PIL.Image.Image:
    """A smooth test picture (colour disc, bars and a line on a gradient, drawn at 4x then downscaled) of `size`^2."""
    big = 4 * size
    ramp = np.linspace(40, 215, big, dtype=np.float32)
    canvas = np.stack([ramp[None, :].repeat(big, 0), ramp[:, None].repeat(big, 1), np.full((big, big), 120.0)], -1)
    image = PIL.Image.fromarray(canvas.astype(np.uint8))
    draw = PIL.ImageDraw.Draw(image)
    rng = np.random.RandomState(seed)
    draw.ellipse([big * 0.15, big * 0.2, big * 0.6, big * 0.65], fill=tuple(int(c) for c in rng.randint(0, 255, 3)))
    for k in range(4):
        x = big * (0.65 + 0.07 * k)
        draw.rectangle([x, big * 0.15, x + big * 0.035, big * 0.85], fill=(250, 250, 250) if k % 2 else (10, 10, 10))
    draw.line([0, big * 0.9, big, big * 0.75], fill=(200, 30, 30), width=max(1, big // 40))
    return image.resize((size, size), PIL.Image.BICUBIC)


@pytest.fixture(scope="module")
def pipe():
    pipe = load_default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe_x2():
    """A tiny x2 pipeline of the shipped kind, next to the shipped x4 model in the served demo."""
    pipe = tiny_lossless_pipeline(seed=3, scale=2, default_inference_steps=1)  # a one-pass model: 1 step by default
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def served(pipe, pipe_x2):
    """The demo on the shipped model and a x2 one, launched on 127.0.0.1 (a free port) for the module; its URL."""
    demo = build_demo({2: pipe_x2, 4: pipe}, max_pixels=MAX_PIXELS)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(served):
    return gradio_client.Client(served, verbose=False)


def test_upscale_end_to_end(client, pipe, tmp_path):
    image = picture(24)
    path = tmp_path / "small.png"
    image.save(path)
    steps = pipe.scheduler.config.default_inference_steps or pipe.scheduler.config.num_train_timesteps  # the page's
    (bicubic, deltadiff), result, strip = client.predict(
        gradio_client.handle_file(str(path)), steps, 128, 16, api_name="/upscale"
    )

    out = PIL.Image.open(result)
    assert Path(result).name == "small_x4.png" and out.format == "PNG"
    assert out.size == (96, 96) and out.mode == "RGB"
    sr = to_unit_tensor(out)
    # independently meaningful: the result downscaled back is the input (DeltaDiff's fidelity), and it is what the
    # pipeline gives when called directly with its defaults
    assert psnr_y(bicubic_resize(sr, (24, 24)), to_unit_tensor(image)) > 25
    direct = to_pil(pipe(image, output_type="pt").images[0])
    assert np.array_equal(np.asarray(out), np.asarray(direct))
    # the slider: PIL bicubic on the left, the result on the right; the strip: the start then every step
    assert np.array_equal(np.asarray(PIL.Image.open(deltadiff).convert("RGB")), np.asarray(out))
    expected_bicubic = to_pil(bicubic_resize(to_unit_tensor(image), (96, 96)))
    assert np.array_equal(np.asarray(PIL.Image.open(bicubic).convert("RGB")), np.asarray(expected_bicubic))
    strip = PIL.Image.open(strip)
    assert strip.size == ((steps + 1) * 96, 96)
    last = np.asarray(strip.convert("RGB"))[:, steps * 96 :]
    assert np.array_equal(last, np.asarray(out))


def test_controls_reach_the_pipeline(client, pipe, tmp_path):
    """One reverse step in tiles of 16 latent pixels: a two-frame strip, and the pipeline's output for those settings."""
    image = picture(32, seed=1)  # tiles of 16 with context 8 on it cost no more than the demo's largest image
    path = tmp_path / "tiles.png"
    image.save(path)
    _, result, strip = client.predict(gradio_client.handle_file(str(path)), 1, 16, 8, api_name="/upscale")
    assert PIL.Image.open(strip).size == (2 * 128, 128)
    direct = pipe(image, num_inference_steps=1, tile_size=16, tile_overlap=8, output_type="pt").images[0]
    assert np.array_equal(np.asarray(PIL.Image.open(result)), np.asarray(to_pil(direct)))
    whole = pipe(image, num_inference_steps=1, tile_size=0, output_type="pt").images[0]
    assert not torch.equal(direct, whole)  # tiles of 16 with context 8: close to the whole image, not identical


def test_the_factor_choice(client, pipe_x2, tmp_path):
    """The served demo offers x4 (the default, when the factor is left out) and x2; each factor runs its own model."""
    image = picture(20, seed=2)
    path = tmp_path / "f.png"
    image.save(path)
    _, result, strip = client.predict(gradio_client.handle_file(str(path)), 2, 0, 16, "x2", api_name="/upscale")
    out = PIL.Image.open(result)
    assert Path(result).name == "f_x2.png" and out.size == (40, 40)
    direct = pipe_x2(image, num_inference_steps=2, tile_size=0, output_type="pt").images[0]
    assert np.array_equal(np.asarray(out), np.asarray(to_pil(direct)))
    assert PIL.Image.open(strip).size == (3 * 40, 40)
    _, result, _ = client.predict(gradio_client.handle_file(str(path)), 1, 0, 16, "x4", api_name="/upscale")
    assert Path(result).name == "f_x4.png" and PIL.Image.open(result).size == (80, 80)
    with pytest.raises(gradio_client.exceptions.AppError):
        client.predict(gradio_client.handle_file(str(path)), 1, 0, 16, "x3", api_name="/upscale")


def test_switching_the_factor_sets_its_model_s_controls(pipe, pipe_x2):
    demo = build_demo({2: pipe_x2, 4: pipe})
    (switch,) = [f.fn for f in demo.fns.values() if f.fn.__name__ == "switch"]
    steps, size, overlap, run, comparison, result, strip, denoise = switch("x2")
    assert (steps.maximum, steps.value) == (4, 1)  # the x2 model runs 1 of its 4 steps by default
    assert size.value == pipe_x2.config.default_tile_size and overlap.value == pipe_x2.config.tile_context
    assert run.value == "Upscale x2" and comparison.value is None and result is None and strip is None
    assert not denoise.visible  # no x4 / x4-real pair to blend
    steps, *_ = switch("x4")
    assert (steps.maximum, steps.value) == (4, pipe.scheduler.config.default_inference_steps or 4)

    def block(demo, elem_id):
        return [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id][0]

    assert block(demo, "factor").value == "x4" and block(demo, "factor").visible  # x4 first; shown with a choice
    alone = build_demo(pipe_x2)
    assert block(alone, "factor").value == "x2" and not block(alone, "factor").visible
    assert block(alone, "steps").value == 1 and block(alone, "steps").maximum == 4  # the page opens at the default
    with pytest.raises(ValueError):
        build_demo({})
    with pytest.raises(ValueError, match="x2 upscales x4"):
        build_demo({2: pipe})


def test_the_model_choice_and_the_denoise_slider(tmp_path):
    """Models by name; where x4 and x4-real are both offered, denoise 0 and 1 run exactly them, 0.5 a blend."""
    clean, real = (tiny_lossless_pipeline(seed=seed) for seed in (0, 1))
    for each in (clean, real):
        each.set_progress_bar_config(disable=True)
    demo = build_demo({"x4": clean, "x4-real": real})
    fns = {f.fn.__name__: f.fn for f in demo.fns.values()}
    *_, denoise = fns["switch"]("x4-real")
    assert denoise.visible and denoise.value == 1.0
    *_, denoise = fns["switch"]("x4")
    assert denoise.visible and denoise.value == 0.0
    path = tmp_path / "p.png"
    picture(12).save(path)
    quiet = lambda *args, **kwargs: None  # noqa: E731 - no Gradio progress outside a request

    def run(model, strength):
        _, file, _ = fns["upscale"](str(path), 1, 0, 16, progress=quiet, factor=model, denoise=strength)
        return np.asarray(PIL.Image.open(file))

    expected = {
        name: np.asarray(each(PIL.Image.open(path), num_inference_steps=1, output_type="pil").images[0])
        for name, each in {"x4": clean, "x4-real": real}.items()
    }
    assert np.array_equal(run("x4", 0), expected["x4"]) and np.array_equal(run("x4", 1), expected["x4-real"])
    assert np.array_equal(run("x4-real", None), expected["x4-real"])
    middle = run("x4", 0.5)
    assert not np.array_equal(middle, expected["x4"]) and not np.array_equal(middle, expected["x4-real"])
    with pytest.raises(gr.Error, match="between 0 and 1"):
        run("x4", 1.5)


def test_output_scale(client, pipe, tmp_path):
    """Output scale 3 on the x4 model: the x4 result resized by PIL's Lanczos to exactly 3x, on the slider and in the PNG."""
    image = picture(37, seed=4).resize((37, 23), PIL.Image.BICUBIC)  # odd sizes: 111x69 at 3x
    path = tmp_path / "odd.png"
    image.save(path)
    (bicubic, deltadiff), result, strip = client.predict(
        gradio_client.handle_file(str(path)), 1, 0, 16, factor="x4", outscale=3, api_name="/upscale"
    )
    out = PIL.Image.open(result)
    assert Path(result).name == "odd_x3.png" and out.size == (111, 69) and out.mode == "RGB"
    x4 = pipe(image, num_inference_steps=1, tile_size=0, output_type="pil").images[0]
    assert x4.size == (148, 92)
    assert np.array_equal(np.asarray(out), np.asarray(x4.resize((111, 69), PIL.Image.LANCZOS)))
    assert np.array_equal(np.asarray(PIL.Image.open(deltadiff).convert("RGB")), np.asarray(out))
    expected_bicubic = image.resize((111, 69), PIL.Image.BICUBIC)
    assert np.array_equal(np.asarray(PIL.Image.open(bicubic).convert("RGB")), np.asarray(expected_bicubic))
    assert PIL.Image.open(strip).size == (2 * 148, 92)  # the reverse steps, at the model's own factor

    _, result, _ = client.predict(
        gradio_client.handle_file(str(path)), 1, 0, 16, "x2", outscale=1.5, api_name="/upscale"
    )
    assert Path(result).name == "odd_x1.5.png" and PIL.Image.open(result).size == (
        56,
        34,
    )  # 55.5, 34.5 rounded to even


def test_output_scale_left_out_changes_nothing(client, tmp_path):
    """Empty, 0 or the model's own factor: the same files as a call that leaves the control out."""
    path = tmp_path / "same.png"
    picture(20, seed=5).save(path)

    def run(*extra, **by_name):
        (bicubic, deltadiff), result, _ = client.predict(
            gradio_client.handle_file(str(path)), 1, 0, 16, *extra, api_name="/upscale", **by_name
        )
        return Path(result).name, [np.asarray(PIL.Image.open(f)) for f in (bicubic, deltadiff, result)]

    name, without = run()
    assert name == "same_x4.png" and without[2].shape == (80, 80, 3)
    for value in (None, 0, 4, 4.0):
        for other_name, other in (run(outscale=value), run("x4", 0.0, value)):  # by name, and all seven in order
            assert other_name == name and all(np.array_equal(a, b) for a, b in zip(other, without)), value


@pytest.mark.parametrize(
    "value, message",
    [
        (-3, "`outscale` must be a positive number, got -3"),
        (float("nan"), "`outscale` must be a positive number, got nan"),
        (float("inf"), "`outscale` must be a positive number, got inf"),
        ("3", "`outscale` must be a positive number, got '3'"),
        (True, "`outscale` must be a positive number, got True"),
        (1e308, "`outscale` 1e\\+308 makes a result too large"),
        (1000, r"p\.png: output scale 1000 makes a 16000x16000 result, larger than this demo makes"),
    ],
)
def test_bad_output_scales_give_clear_errors(pipe_x2, tmp_path, value, message):
    """target_size's own messages (and a cost bound: no more pixels than the model makes from the largest input)."""
    demo = build_demo(pipe_x2, max_pixels=MAX_PIXELS)
    (upscale,) = [f.fn for f in demo.fns.values() if f.api_name == "upscale"]
    path = tmp_path / "p.png"
    picture(16).save(path)
    quiet = lambda *args, **kwargs: None  # noqa: E731 - no Gradio progress outside a request
    with pytest.raises(gr.Error, match=message):
        upscale(str(path), 1, 0, 16, progress=quiet, outscale=value)
    assert list(tmp_path.iterdir()) == [path]


def test_bad_output_scale_through_the_api(client, tmp_path):
    path = tmp_path / "neg.png"
    picture(16).save(path)
    with pytest.raises(gradio_client.exceptions.AppError, match="`outscale` must be a positive number, got -2"):
        client.predict(gradio_client.handle_file(str(path)), 1, 0, 16, outscale=-2, api_name="/upscale")


def test_output_scale_keeps_16_bit_results(pipe_x2, tmp_path):
    """A 16-bit input gives a 16-bit PNG at the output scale, resized in float (antialiased bicubic), not in 8 bits."""
    demo = build_demo(pipe_x2)
    (upscale,) = [f.fn for f in demo.fns.values() if f.api_name == "upscale"]
    ramp = (np.linspace(0, 65535, 14 * 10).reshape(10, 14)).astype(np.uint16)
    path = tmp_path / "deep.png"
    PIL.Image.fromarray(ramp).save(path)
    _, result, _ = upscale(str(path), 1, 0, 16, progress=lambda *args, **kwargs: None, outscale=1.5)
    out = PIL.Image.open(result)
    assert out.mode in ("I;16", "I") and out.size == (21, 15)
    sr = pipe_x2(PIL.Image.open(path), num_inference_steps=1, output_type="pt").images[0].float()
    expected = torch.nn.functional.interpolate(sr[None], size=(15, 21), mode="bicubic", antialias=True)[0]
    expected = (expected.clamp(0, 1).mean(0).numpy() * 65535).round()
    assert np.abs(np.asarray(out).astype(np.float64) - expected).max() <= 1
    assert len(np.unique(np.asarray(out))) > 256  # more levels than 8 bits hold


def test_progress_tracks_the_reverse_steps(pipe, tmp_path):
    """The upscale event reports `(step, steps)` to `gr.Progress` after every reverse step."""
    demo = build_demo(pipe)
    (upscale,) = [f.fn for f in demo.fns.values() if f.api_name == "upscale"]
    path = tmp_path / "p.png"
    picture(16).save(path)
    calls = []
    upscale(str(path), 3, 0, 16, progress=lambda value, desc=None, **kwargs: calls.append((value, desc)))
    assert [value for value, desc in calls if desc == "reverse steps"] == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_bad_uploads_give_clear_errors(client, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture at all\n")
    with pytest.raises(gradio_client.exceptions.AppError, match=r"notes\.png: not an image"):
        client.predict(gradio_client.handle_file(str(text)), 4, 128, 16, api_name="/upscale")

    truncated = tmp_path / "cut.png"
    picture(24).save(tmp_path / "whole.png")
    truncated.write_bytes((tmp_path / "whole.png").read_bytes()[:200])
    with pytest.raises(gradio_client.exceptions.AppError, match=r"cut\.png: unreadable image"):
        client.predict(gradio_client.handle_file(str(truncated)), 4, 128, 16, api_name="/upscale")

    large = tmp_path / "large.png"
    picture(80).save(large)  # 6400 pixels > MAX_PIXELS
    with pytest.raises(gradio_client.exceptions.AppError, match=r"large\.png: image too large for this demo"):
        client.predict(gradio_client.handle_file(str(large)), 4, 128, 16, api_name="/upscale")


def test_thin_strips_are_bounded_by_their_cost(client, tmp_path):
    """A 1-pixel strip within the pixel limit still costs many times a square of that many pixels: refused."""
    strip = tmp_path / "strip.png"
    PIL.Image.new("RGB", (MAX_PIXELS - 1, 1), (90, 120, 150)).save(strip)
    with pytest.raises(gradio_client.exceptions.AppError, match=r"strip\.png: a \d+x1 image costs as much as"):
        client.predict(gradio_client.handle_file(str(strip)), 4, 128, 16, api_name="/upscale")


def test_main_bad_model_is_one_line(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "missing")]) == 2
    assert "model folder not found" in capsys.readouterr().err


def test_deltadiff_demo_command(tmp_path, capsys):
    """`deltadiff demo ...` hands its flags to the demo's parser: help, flag errors and a bad model, as exit codes."""
    from diffusers_deltadiff.cli import main as deltadiff

    assert deltadiff(["demo", "--model", str(tmp_path / "missing")]) == 2
    assert "model folder not found" in capsys.readouterr().err
    assert deltadiff(["demo", "--help"]) == 0
    assert "usage: deltadiff demo" in capsys.readouterr().out
    assert deltadiff(["demo", "--port", "0"]) == 2


def test_demo_imports_no_training_code():
    code = (
        "import sys, diffusers_deltadiff.demo; "
        "bad = [m for m in sys.modules if 'training' in m or m.split('.')[0] in ('datasets', 'albumentations')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_space_requirements_follow_pyproject():
    """The Space installs what the package needs: every runtime dependency (and Gradio) is in its requirements.txt."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(specs):
        return {re.split(r"[<>=!~\[ ;@]", spec, maxsplit=1)[0].lower() for spec in specs}

    lines = (REPO / "examples" / "space" / "requirements.txt").read_text().splitlines()
    required = names(line for line in lines if line.strip() and not line.startswith(("#", "-")))
    demo_extra = [spec for spec in project["optional-dependencies"]["demo"] if spec.startswith("gradio")]
    assert names(project["dependencies"] + demo_extra) <= required
    front = (REPO / "examples" / "space" / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front
    factors = sorted(shipped_scales(), key=lambda scale: (scale != 4, scale))  # the app's title (below)
    assert f"title: DeltaDiff {' / '.join(f'x{scale}' for scale in factors)} super-resolution" in front


def test_space_app_serves(tmp_path):
    """`python examples/space/app.py` starts the demo (port from $GRADIO_SERVER_PORT) and serves the page."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        app = subprocess.Popen(
            [sys.executable, str(REPO / "examples" / "space" / "app.py")], env=env, stdout=out, stderr=out
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                        config = json.loads(response.read())
                    break
                except OSError:
                    assert app.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.5)
        finally:
            app.terminate()
            app.wait(30)
    # every shipped model by name, the default x4 one first
    assert config["title"] == f"DeltaDiff {' / '.join(shipped_models())} super-resolution"


@pytest.mark.browser
@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()), reason="needs Debian's chromium and chromium-driver"
)
def test_browser_upload_and_run(served, tmp_path, capsys, monkeypatch):
    """A real headless Chromium: upload through the file input, click Upscale, wait for the slider, screenshot."""
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.selenium_manager import SeleniumManager
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    def no_download(*args, **kwargs):
        raise AssertionError("selenium-manager was asked for a browser or driver")

    monkeypatch.setattr(SeleniumManager, "binary_paths", no_download)

    image_path = tmp_path / "picture.png"
    picture(64).save(image_path)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.get(served)
        wait = WebDriverWait(driver, 60)
        upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
        upload.send_keys(str(image_path))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#input-preview img")))
        wait.until(EC.element_to_be_clickable((By.ID, "run"))).click()
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#result a")))

        def slider_loaded(driver):
            images = driver.find_elements(By.CSS_SELECTOR, "#comparison img")
            loaded = [im for im in images if driver.execute_script("return arguments[0].complete", im)]
            sizes = [driver.execute_script("return arguments[0].naturalWidth", im) for im in loaded]
            return len(loaded) >= 2 and all(size == 256 for size in sizes) and sizes

        assert wait.until(slider_loaded)
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#steps-strip img")))
        link = driver.find_element(By.CSS_SELECTOR, "#result a").get_attribute("href")
        assert link.endswith("/picture_x4.png")
        with urllib.request.urlopen(link) as response:  # the download the link offers
            assert PIL.Image.open(io.BytesIO(response.read())).size == (256, 256)
        time.sleep(0.5)  # let the images paint
        shot = tmp_path / "demo_screenshot.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)
    with capsys.disabled():
        print(f"\ndemo screenshot: {SCREENSHOT} (and {shot})")
