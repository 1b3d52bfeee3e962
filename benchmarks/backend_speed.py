"""One row per backend of the DeltaDiff pipeline, side by side in one process, with the peers: issue 30's table.

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/backend_speed.py [--model x4] [--size 96] [--repeats 3] \
        [--compile] [--hr ../shared/data/benchmarks/Set5]

Rows: torch eager (the reference), torch channels_last, `torch.compile` (with `--compile`), ONNX Runtime
(`onnx_backend.use_onnxruntime`: the UNet alone), ONNX Runtime running the whole exported graph (what `deltadiff
upscale` runs, `onnx_upscaler`), OpenVINO f32 and bf16 (where `openvino` is installed: not a dependency), torch with
its 3x3 convolutions run by NNPACK (Winograd: fewer multiplications than a direct convolution; where torch has
NNPACK), torch bf16 weights and activations; then the peers FSRCNN (d56 s12 m4, random weights: its speed does not depend on them) and
PIL bicubic. Each row: seconds per output megapixel (median), its ratio to eager per repeat, the achieved GFLOP/s
(the pipeline's FLOPs as torch's FLOP counter counts them in the eager run, over the row's time) next to a measured
FP32 sgemm and the CPU's quoted peak, and the largest difference from eager's output in 8-bit levels. With `--hr`,
every backend also upscales the folder's images (bicubic-downscaled) and its PSNR (Y, the factor's crop) is given
against eager's: bf16's cost in dB. Also imported by `pipeline_speed.py` (its `backends` section).
"""

import argparse
import copy
import functools
import statistics
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from diffusers_deltadiff.baselines.fsrcnn import FSRCNN
from diffusers_deltadiff.onnx_backend import OnnxRuntimeUNet, cpu_session, unet_model, use_onnxruntime


# the CPU's nominal FP32 peak as issue 30 quotes it (both cores); `sgemm_gflops` measures what one matmul reaches
QUOTED_PEAK_GFLOPS = 150


class OpenVINOUNet(OnnxRuntimeUNet):
    """The UNet stand-in of the ONNX Runtime backend, run by OpenVINO instead (same exported file)."""

    def __init__(self, unet, precision: str):
        torch.nn.Module.__init__(self)
        import openvino

        self.config = unet.config
        self.register_buffer("dtype_anchor", torch.zeros(()))
        options = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": precision}
        self.compiled = openvino.Core().compile_model(unet_model(unet), "CPU", options)
        self.session = self

    def run(self, _, feeds):
        return [self.compiled(feeds)[0]]


def nnpack_conv_forward(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)` through torch's NNPACK (Winograd transforms for 3x3 kernels) where it applies, else as usual."""
    if conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1:
        return torch._nnpack_spatial_convolution(x, conv.weight, conv.bias, list(conv.padding))
    return torch.nn.functional.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def use_nnpack_convs(pipe):
    """`pipe` with every stride-1 3x3 convolution of its UNet run by NNPACK (for this benchmark: it does not win)."""
    for module in pipe.unet.modules():
        if isinstance(module, torch.nn.Conv2d) and module.padding_mode == "zeros":
            module.forward = functools.partial(nnpack_conv_forward, module)
    return pipe


def conv_rates(unet, size: int, repeats: int = 3):
    """GFLOP/s of each distinct stride-1 3x3 convolution of `unet` alone on a `size` x `size` input: torch's own
    (oneDNN) against NNPACK's, the same weights, best of `repeats`."""
    shapes = {
        (m.in_channels, m.out_channels): m
        for m in unet.modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) and m.stride == (1, 1)
    }
    print(f"\n3x3 convolutions alone, {size}x{size} input: GFLOP/s, torch (oneDNN) / NNPACK (Winograd)")
    for (cin, cout), conv in sorted(shapes.items()):
        x = torch.randn(1, cin, size, size)
        flops = 2 * cin * cout * 9 * size * size
        rates = []
        for fn in (
            lambda: torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1),
            lambda: nnpack_conv_forward(conv, x),
        ):
            fn()
            rates.append(flops / min(timed(fn) for _ in range(repeats)) / 1e9)
        print(f"- {cin} -> {cout}: {rates[0]:.0f} / {rates[1]:.0f}")


class WholeGraph:
    """The pipeline's exported graph (`onnx_export.export_onnx`, in a temporary folder) in an ONNX Runtime session, as
    `deltadiff upscale` runs it: `__call__(image, output_type)` with the pipeline's `images` (`np` or `pt`)."""

    def __init__(self, pipe):
        import tempfile

        from diffusers_deltadiff.onnx_export import export_onnx

        with tempfile.TemporaryDirectory() as folder:
            path = export_onnx(pipe, Path(folder) / "graph.onnx")
            self.session = cpu_session(path.read_bytes())

    def __call__(self, image, output_type: str = "np"):
        from types import SimpleNamespace

        from diffusers_deltadiff.image_utils import to_unit_tensor

        upscaled = self.session.run(None, {"image": to_unit_tensor(image)[None].numpy()})[0]
        return SimpleNamespace(
            images=torch.from_numpy(upscaled) if output_type == "pt" else upscaled.transpose(0, 2, 3, 1)
        )


def backend_pipelines(pipe, compile: bool) -> dict:
    """The pipeline on every backend this machine has (copies: `pipe` stays eager torch)."""
    pipes = {"torch eager": pipe}
    channels_last = copy.deepcopy(pipe)
    channels_last.unet.to(memory_format=torch.channels_last)
    pipes["torch channels_last"] = channels_last
    if compile:
        compiled = copy.deepcopy(pipe)
        compiled.unet = torch.compile(compiled.unet)
        pipes["torch.compile (inductor)"] = compiled
    pipes["onnxruntime"] = use_onnxruntime(copy.deepcopy(pipe))
    try:
        pipes["onnxruntime, whole graph (the CLI's)"] = WholeGraph(pipe)
    except ImportError:  # the export's metadata needs `onnx`
        pass
    try:
        import openvino  # noqa: F401
    except ImportError:
        pass
    else:
        for precision in ("f32", "bf16"):
            ov = copy.deepcopy(pipe)
            ov.unet = OpenVINOUNet(pipe.unet, precision)
            pipes[f"openvino {precision}"] = ov
    if torch.backends.nnpack.is_available():  # also initialises NNPACK, which its convolution needs first
        pipes["torch, NNPACK 3x3 convs"] = use_nnpack_convs(copy.deepcopy(pipe))
    pipes["torch bf16"] = copy.deepcopy(pipe).to(torch.bfloat16)
    return pipes


def lr_photo(size: int) -> PIL.Image.Image:
    """A real photo as the LR input: the package's example image, centre-cropped to `size` x `size`."""
    image = PIL.Image.open(Path(__file__).resolve().parents[1] / "examples" / "images" / "astronaut.png")
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return image.convert("RGB").crop((left, top, left + size, top + size))


def pipeline_flops(pipe, image) -> float:
    """FLOPs of one pipeline call (convolutions and matmuls, as torch's FLOP counter counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        pipe(image, output_type="np")
    return counter.get_total_flops()


def sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """FP32 GFLOP/s of a large matrix product on torch's threads (best of `repeats`): the practical peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    return 2 * n**3 / min(timed(lambda: torch.mm(a, b)) for _ in range(repeats)) / 1e9


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peer_jobs(scale: int, image: PIL.Image.Image) -> dict:
    fsrcnn = FSRCNN(scale).eval()
    lr = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]

    def run_fsrcnn():
        with torch.no_grad():
            return fsrcnn(lr)

    size = (image.width * scale, image.height * scale)
    return {
        "FSRCNN d56 s12 m4 (peer)": run_fsrcnn,
        "PIL bicubic (peer)": lambda: image.resize(size, PIL.Image.BICUBIC),
    }


def section_backends(pipe, size: int = 96, repeats: int = 3, compile: bool = False, hr: str | None = None):
    """Print issue 30's backend table for `pipe` on an LR photo of `size` x `size`."""
    threads = torch.get_num_threads()
    image = lr_photo(size)
    scale = pipe.upscale_factor
    megapixels = (size * scale) ** 2 / 1e6
    pipes = backend_pipelines(pipe, compile)
    flops = pipeline_flops(pipe, image)
    outputs = {name: p(image, output_type="np").images for name, p in pipes.items()}  # warm-up (and compiles)
    jobs = {name: (lambda p=p: p(image, output_type="np")) for name, p in pipes.items()}
    jobs.update(peer_jobs(scale, image))
    for job in jobs.values():
        job()
    times = {name: [] for name in jobs}
    for repeat in range(repeats):
        names = list(jobs)[repeat % len(jobs) :] + list(jobs)[: repeat % len(jobs)]  # the order rotated
        for name in names:
            times[name].append(timed(jobs[name]))
    print(
        f"\nLR {size}x{size} photo -> {size * scale}x{size * scale}, {threads} thread(s), {repeats} repeats; "
        f"{flops / 2 / (size * scale) ** 2:,.0f} MACs per output pixel; FP32 reference: a 2048^2 sgemm on the same "
        f"threads reaches {sgemm_gflops():.0f} GFLOP/s (the CPU's quoted peak: ~{QUOTED_PEAK_GFLOPS})\n"
    )
    print(
        "| backend | s per output MP | x eager (per repeat: median [min, max]) | GFLOP/s | max diff (8-bit levels) |"
    )
    print("|---|---|---|---|---|")
    reference = times["torch eager"]
    for name, values in times.items():
        ratios = [v / r for v, r in zip(values, reference)]
        seconds = statistics.median(values)
        gflops = f"{flops / seconds / 1e9:.1f}" if name in pipes else "-"
        diff = f"{np.abs(outputs[name] - outputs['torch eager']).max() * 255:.4f}" if name in pipes else "-"
        ratio = f"{statistics.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}]"
        print(f"| {name} | {seconds / megapixels:.3f} | {ratio} | {gflops} | {diff} |")
    if "torch, NNPACK 3x3 convs" in pipes:
        with torch.no_grad():
            conv_rates(pipe.unet, size)
    if hr:
        quality(pipes, hr, scale)


def quality(pipes: dict, folder: str, scale: int):
    """Mean PSNR (Y, `scale` crop) of each backend on the HR images of `folder` (LR by bicubic downscaling)."""
    from diffusers_deltadiff.degradations import Degradation
    from diffusers_deltadiff.image_utils import to_unit_tensor
    from diffusers_deltadiff.metrics import psnr_y

    degrade = Degradation("bicubic", scale)
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".bmp", ".jpg"))
    scores = {name: [] for name in pipes}
    for path in paths:
        hr = to_unit_tensor(PIL.Image.open(path).convert("RGB"))
        hr = hr[:, : hr.shape[1] // scale * scale, : hr.shape[2] // scale * scale]
        lr = degrade(hr, 0)
        for name, p in pipes.items():
            sr = p(lr, output_type="pt").images[0].float()
            scores[name].append(float(psnr_y(sr[None], hr[None], crop_border=scale)))
    print(f"\n{folder}: {len(paths)} images, PSNR-Y against HR")
    print("| backend | PSNR-Y (dB) | vs eager (dB) |\n|---|---|---|")
    eager = statistics.mean(scores["torch eager"])
    for name, values in scores.items():
        print(f"| {name} | {statistics.mean(values):.3f} | {statistics.mean(values) - eager:+.3f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="x4", help="shipped short name or pipeline folder")
    parser.add_argument("--size", type=int, default=96, help="LR side, pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also torch.compile (slow to compile)")
    parser.add_argument("--hr", default=None, help="HR folder for the PSNR of every backend (bf16's cost in dB)")
    args = parser.parse_args()
    from diffusers_deltadiff.console import load_pipeline

    pipe = load_pipeline(args.model)
    print(f"# Backends ({time.strftime('%Y-%m-%d %H:%M')}), model {args.model}, torch {torch.__version__}")
    section_backends(pipe, args.size, args.repeats, args.compile, args.hr)


if __name__ == "__main__":
    main()
