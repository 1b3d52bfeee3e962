"""A Gradio demo of the shipped models, x4 and any other factor shipped (`pip install -e ".[demo]"`).

    deltadiff demo                      # or: python -m diffusers_deltadiff.demo
    deltadiff demo --host 0.0.0.0 --port 7860 --model path/to/model

Upload an image, upscale it, and compare: bicubic on the left of the slider, DeltaDiff on the right; below, the
paper's Fig. 4 strip (the bicubic start, then the decoded image after every reverse step), and the result as a PNG
to download. An *Output scale* (e.g. 3) resizes the model's result to that factor, as `deltadiff upscale --outscale`
does. It runs offline: the model is the one shipped inside the package and Gradio's analytics are off.
Inputs are opened as `deltadiff upscale` opens them (one-line errors for files that are not images, are unreadable
or have more than `max_pixels` pixels); the result is written as the CLI writes a PNG (grayscale stays grayscale,
alpha is kept, ICC profiles and EXIF too).
"""

import argparse
import atexit
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import PIL.Image
import torch


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before Gradio is imported: no calls home

try:
    import gradio as gr
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError('The demo needs Gradio: pip install -e ".[demo]"') from err

from .arguments import int_at_least
from .blending import blend_pipelines, check_strength
from .console import CLIError, load_pipeline, one_line, resolve_device
from .demo_checks import (
    MAX_TILE_CONTEXT,
    MAX_TILE_SIZE,
    check_cost,
    checked_controls,
    checked_outscale,
    output_size,
    read_upload,
)
from .image_io import needs_float_output, save_atomic, steps_strip, to_output_image
from .image_utils import bicubic_resize, resize_to, to_pil, to_unit_tensor
from .outscale import resize_output
from .pretrained import DENOISE_MODELS, shipped_models, shipped_scales


# inputs with more pixels are refused: 1024 x 1024 LR pixels (a 4096 x 4096 output, about a minute on 2 CPU cores)
DEFAULT_MAX_PIXELS = 1024 * 1024
# each frame of the steps strip is shown at most this large on its longer side (the download is full size)
STRIP_FRAME_SIZE = 512
# results (and Gradio's copies of them) are deleted after this many seconds, and when the demo stops
RESULT_LIFETIME = 3600


def strip_frames(steps: list[torch.Tensor]) -> list[torch.Tensor]:
    """The decoded `(3, H, W)` step images, shrunk to at most `STRIP_FRAME_SIZE` on the longer side for display."""
    height, width = steps[-1].shape[-2:]
    scale = min(1.0, STRIP_FRAME_SIZE / max(height, width))
    if scale == 1.0:
        return steps
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return [resize_to(step[None], size)[0] for step in steps]


class ResultFolder:
    """
    A private temporary folder for the result files: one subfolder per run, old runs pruned, all removed when the
    process ends: at exit, and on SIGTERM (a container stop, `kill`), which skips `atexit` ([`remove_on_sigterm`]).
    """

    def __init__(self, lifetime: float = RESULT_LIFETIME):
        self.root = Path(tempfile.mkdtemp(prefix="deltadiff-demo-"))
        self.lifetime = lifetime
        _result_roots.append(self.root)
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)
        remove_on_sigterm()

    def new_run(self) -> Path:
        now = time.time()
        for old in self.root.iterdir():
            try:
                if now - old.stat().st_mtime > self.lifetime:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        folder = self.root / secrets.token_hex(8)
        folder.mkdir()
        return folder


_result_roots: list[Path] = []
_terminated = threading.Event()


def remove_on_sigterm():
    """
    On SIGTERM, remove every result folder at once, then stop like Ctrl-C: Gradio closes its server, which deletes
    its own copies of the results, and `main` exits with 143. Installed once, from the main thread, where no one
    else handles SIGTERM.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def handler(signum, frame):
        _terminated.set()
        for root in _result_roots:
            shutil.rmtree(root, ignore_errors=True)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def build_demo(pipe=None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> "gr.Blocks":
    """
    The demo as a `gr.Blocks`, on `pipe` (default: the shipped models, with a model choice).

    Args:
        pipe (`DeltaDiffPipeline` or `dict[int | str, DeltaDiffPipeline]`, *optional*):
            The pipeline to run, on the device it is on; or several, offered as a choice: keyed by upscale factor
            (shown as `x2`, `x4`, x4 first) or by name (`x4`, `x4-real`, `x2`, in the order given). Default: every
            model shipped with the package (`pretrained.load_default_pipeline(model=...)` for each of
            `pretrained.shipped_models()`, the default x4 model first). Where both `x4` and `x4-real` are offered,
            a *Denoise* slider blends them (0: `x4`, 1: `x4-real`; [`~blending.blend_pipelines`]).
        max_pixels (`int`, *optional*, defaults to `DEFAULT_MAX_PIXELS`):
            Uploads with more pixels are refused (also against decompression bombs); `0` or `None`: no limit.

    The upscale event is also an API endpoint, `/upscale`: `(image file, steps, tile size, tile context, model,
    denoise, output scale)` to `((bicubic, DeltaDiff), result PNG, steps strip)`. The model is `"x4"`, `"x4-real"`,
    `"x2"`...; denoise (0 to 1) applies to the x4 pair only; the output scale (`None` or 0: the model's factor)
    resizes the model's result as `deltadiff upscale --outscale` does ([`~outscale.resize_output`]: Lanczos for 8-bit
    images, antialiased bicubic for 16-bit ones), the slider's and the PNG's, not the strip's. `gradio_client`
    fills in the page's defaults for left-out values (the first model offered, its denoise end, no output scale)
    and takes the last three by name too (`factor=`, `denoise=`, `outscale=`); Gradio's REST API needs all seven
    values. The event function takes those three as keywords (Gradio's `inputs_kwargs`, 6.28 and later).
    """
    if pipe is None:
        from .pretrained import load_default_pipeline

        pipe = {name: load_default_pipeline(model=name) for name in shipped_models()}
        for each in pipe.values():
            each.set_progress_bar_config(disable=True)
    names = named_pipelines(pipe)
    first_name = next(iter(names))
    first = names[first_name]
    blendable = all(name in names for name in DENOISE_MODELS)
    blends = {}  # the last blend asked for, by strength
    results = ResultFolder()

    def chosen(factor: str | None, denoise=None):
        if factor is None:
            factor = first_name
        if factor not in names:
            raise gr.Error(f"model {factor!r}: this demo offers {', '.join(names)}")
        if not blendable or factor not in DENOISE_MODELS or denoise is None:
            return names[factor]
        try:
            strength = check_strength(denoise)
        except (TypeError, ValueError) as err:
            raise gr.Error(str(err)) from err
        if strength not in blends:  # 0 and 1 are the two models themselves (blend_pipelines returns them)
            blends.clear()
            blends[strength] = blend_pipelines(*(names[name] for name in DENOISE_MODELS), strength)
        return blends[strength]

    def step_counts(pipe) -> tuple[int, int]:
        """The most reverse steps the model runs, and the number it runs by default."""
        return pipe.scheduler.config.num_train_timesteps, pipe.scheduler.default_steps

    def preview(path):
        """Show the upload (and clear the last result), or say at once what is wrong with the file."""
        if not path:
            return None, None, None, None
        return to_pil(to_unit_tensor(read_upload(path, max_pixels))), None, None, None  # any mode, 16-bit too

    def switch(factor):
        """The controls of the chosen model (and the last result cleared: it was another model's)."""
        pipe = chosen(factor)
        most, default = step_counts(pipe)
        in_pair = blendable and factor in DENOISE_MODELS
        label = f"Bicubic (left) | DeltaDiff {factor} (right)"
        return (
            gr.Slider(maximum=most, value=default),
            gr.Slider(value=pipe.config.default_tile_size),
            gr.Slider(value=pipe.config.tile_context),
            gr.Button(value=f"Upscale {factor}"),
            gr.ImageSlider(value=None, label=label),
            None,
            None,
            gr.Slider(value=float(DENOISE_MODELS.index(factor)) if in_pair else 0.0, visible=in_pair),
        )

    def upscale(
        path, steps, tile_size, tile_context, progress=gr.Progress(), *, factor=None, denoise=None, outscale=None
    ):
        pipe = chosen(factor, denoise)
        steps, tile_size, tile_context = checked_controls(pipe, steps, tile_size, tile_context)
        outscale = checked_outscale(outscale)
        scale = pipe.upscale_factor
        progress(0, desc="reading the image")
        image = read_upload(path, max_pixels)
        check_cost(pipe, image, max_pixels, Path(path).name, tile_size, tile_context)
        size = output_size(image, outscale, scale, max_pixels, Path(path).name)
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            gr.Warning(f"{Path(path).name}: {frames} frames, only the first one is upscaled")
        steps = int(steps)

        def on_step(pipeline, i, t, callback_kwargs):
            progress((i + 1, pipeline.num_timesteps), desc="reverse steps", unit="steps")
            return {}

        progress((0, steps), desc="reverse steps", unit="steps")
        try:
            out = pipe(
                image,
                num_inference_steps=steps,
                output_type="pt",
                return_intermediates=True,
                tile_size=int(tile_size),
                tile_context=int(tile_context),
                callback_on_step_end=on_step,
            )
        except (ValueError, TypeError) as err:
            raise gr.Error(str(err).splitlines()[0]) from err
        except RuntimeError as err:  # e.g. out of memory
            raise gr.Error(one_line(err)) from err
        sr = out.images[0].float().cpu()
        source = to_unit_tensor(image)
        strip = steps_strip(source, strip_frames([s[0].float().cpu() for s in out.intermediate_images]))
        if size is not None:  # as `deltadiff upscale --outscale`: 8-bit results resized as PIL images (Lanczos)
            sr = resize_output(sr if needs_float_output(image, "PNG") else to_pil(sr), size)
        shown = sr if isinstance(sr, PIL.Image.Image) else to_pil(sr)
        bicubic = to_pil(bicubic_resize(source, (shown.height, shown.width)))

        dest = results.new_run() / f"{Path(path).stem}_x{outscale if size is not None else scale:g}.png"
        save_atomic(to_output_image(sr, image, "PNG"), dest, "PNG", 100, image)
        return (bicubic, shown), str(dest), strip

    factor_names = " / ".join(names)
    max_steps, default_steps = step_counts(first)
    with gr.Blocks(
        title=f"DeltaDiff {factor_names} super-resolution",
        analytics_enabled=False,
        delete_cache=(RESULT_LIFETIME, RESULT_LIFETIME),
    ) as demo:
        gr.Markdown(
            f"# DeltaDiff {factor_names} super-resolution\n"
            "Residual-guided, noise-free diffusion (Yang et al.), the small model shipped with "
            "`diffusers-deltadiff`, running here on "
            f"`{first.device}`. Upload an image; the slider compares bicubic (left) with DeltaDiff (right)."
        )
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="upload")
                shown = gr.Image(label="Input", format="png", interactive=False, elem_id="input-preview")
                factor = gr.Radio(
                    list(names), value=first_name, label="Model", visible=len(names) > 1, elem_id="factor"
                )
                denoise = gr.Slider(
                    0,
                    1,
                    value=float(DENOISE_MODELS.index(first_name)) if first_name in DENOISE_MODELS else 0.0,
                    step=0.05,
                    label="Denoise (0: x4, for clean inputs; 1: x4-real, for noisy, blurred or JPEG inputs)",
                    visible=blendable and first_name in DENOISE_MODELS,
                    elem_id="denoise",
                )
                steps = gr.Slider(1, max_steps, value=default_steps, step=1, label="Reverse steps", elem_id="steps")
                tile_size = gr.Slider(
                    0,
                    MAX_TILE_SIZE,
                    value=first.config.default_tile_size,
                    step=16,
                    label="Tile size (latent pixels; 0: never tile)",
                    info="Sets memory and speed; with the shipped model the output is the same.",
                    elem_id="tile-size",
                )
                tile_context = gr.Slider(
                    0,
                    MAX_TILE_CONTEXT,
                    value=first.config.tile_context,
                    step=1,
                    label="Tile context (around each tile, latent pixels)",
                    elem_id="tile-context",
                )
                outscale = gr.Number(
                    value=None,
                    label="Output scale (empty or 0: the model's own factor)",
                    info="e.g. 3: the model's result resized to 3x the input (Lanczos, antialiased)",
                    elem_id="outscale",
                )
                run = gr.Button(f"Upscale {first_name}", variant="primary", elem_id="run")
            with gr.Column(scale=2):
                comparison = gr.ImageSlider(
                    label=f"Bicubic (left) | DeltaDiff {first_name} (right)",
                    type="pil",
                    format="png",
                    interactive=False,
                    elem_id="comparison",
                )
                result = gr.File(label="Result (PNG)", interactive=False, elem_id="result")
        strip = gr.Image(
            label="Every reverse step (the paper's Fig. 4): the bicubic start, then the image after each step",
            format="png",
            interactive=False,
            elem_id="steps-strip",
        )
        upload.upload(
            preview, upload, [shown, comparison, result, strip], api_visibility="private", show_progress="hidden"
        )
        upload.clear(
            lambda: (None, None, None, None), None, [shown, comparison, result, strip], api_visibility="private"
        )
        factor.change(
            switch,
            factor,
            [steps, tile_size, tile_context, run, comparison, result, strip, denoise],
            api_visibility="private",
        )
        run.click(
            upscale,
            [upload, steps, tile_size, tile_context],
            [comparison, result, strip],
            inputs_kwargs={"factor": factor, "denoise": denoise, "outscale": outscale},  # the API's 5th to 7th values
            api_name="upscale",
        )
    return demo


def named_pipelines(pipe) -> dict:
    """`pipe` (one pipeline, or a dict keyed by factor or by name) as `{name: pipeline}`, in the order offered."""
    if not isinstance(pipe, dict):
        return {f"x{pipe.upscale_factor}": pipe}
    if not pipe:
        raise ValueError("build_demo needs at least one pipeline")
    names = {}
    for key in sorted(pipe, key=lambda k: (k != 4, k)) if all(isinstance(k, int) for k in pipe) else pipe:
        if isinstance(key, int) and key != pipe[key].upscale_factor:
            raise ValueError(f"build_demo: the pipeline given for x{key} upscales x{pipe[key].upscale_factor}")
        names[f"x{key}" if isinstance(key, int) else str(key)] = pipe[key]
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deltadiff demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--host", default=None, help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int_at_least(1, 65535), default=None, help="port (default: $GRADIO_SERVER_PORT or 7860 up)"
    )
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    parser.add_argument(
        "--scale",
        type=int_at_least(2),
        default=None,
        help="only this factor's shipped model (default: every shipped model, the default x4 one first)",
    )
    parser.add_argument(
        "--model", default=None, help="shipped model (x4, x4-real, x2) or pipeline folder (default: every shipped one)"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument(
        "--max-pixels",
        type=int_at_least(0),
        default=DEFAULT_MAX_PIXELS,
        help="refuse uploads with more pixels (default: %(default)s; 0: no limit)",
    )
    return parser


def main(argv=None) -> int:
    """`deltadiff demo`: serve the demo until interrupted; the exit status."""
    args = build_parser().parse_args(argv)
    try:
        device = resolve_device(args.device)
        if args.model or args.scale or not shipped_scales():  # one model (or the error saying none is shipped)
            pipe = load_pipeline(args.model, device, scale=args.scale)
        else:  # every shipped model, to choose from, the default x4 one first
            pipe = {name: load_pipeline(name, device) for name in shipped_models()}
    except CLIError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    build_demo(pipe, max_pixels=args.max_pixels).launch(server_name=args.host, server_port=args.port, share=args.share)
    return 143 if _terminated.is_set() else 0


if __name__ == "__main__":
    raise SystemExit(main())
