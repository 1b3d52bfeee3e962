"""DeltaDiffPipeline speed on this machine: overhead, against diffusers' LDM super-resolution, scaling, batching, levers.

    python benchmarks/pipeline_speed.py [--model DIR] [--repeats 5] [--sections overhead,ldm,scaling,batch,levers,backends]

`backends` is one row per backend (torch eager, channels_last, torch.compile with --compile, ONNX Runtime, OpenVINO
where installed, bf16) with achieved GFLOP/s and the peers FSRCNN and PIL bicubic: `backend_speed.py`'s table.

Every comparison is measured side by side in one run and reported as ratios per repeat (min / median / max), since
absolute times on a shared machine are noisy. Without `--model` the shipped default model is used, or a random
model of the CPU recipe's size (VQModel 32/64/64, UNet 64/128/128) when there is none.
"""

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler

# imported from its module: diffusers' top level hides the latent_diffusion pipelines when transformers is absent
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion_superresolution import LDMSuperResolutionPipeline

from diffusers_deltadiff import DeltaDiffPipeline
from diffusers_deltadiff.baselines.fsrcnn import FSRCNN
from diffusers_deltadiff.image_utils import bicubic_upsample
from diffusers_deltadiff.pretrained import default_model_path
from diffusers_deltadiff.testing_utils import recipe_pipeline


def load(model: str | None) -> tuple[DeltaDiffPipeline, str]:
    path = model or default_model_path()
    if path:
        return DeltaDiffPipeline.from_pretrained(path), path
    return recipe_pipeline(), "random weights, VQModel 32/64/64 + UNet 64/128/128"


def lr_image(size: int, seed: int = 0) -> PIL.Image.Image:
    rng = np.random.RandomState(seed)
    small = PIL.Image.fromarray((rng.rand(size // 8 + 1, size // 8 + 1, 3) * 255).astype(np.uint8))
    return small.resize((size, size), PIL.Image.BICUBIC)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def stats(values) -> str:
    return f"min {min(values):.3f}  median {statistics.median(values):.3f}  max {max(values):.3f}"


def side_by_side(candidates: dict, repeats: int, reference: str) -> dict:
    """Time every candidate once per repeat, interleaved (after one warm-up call each); ratios to `reference`."""
    for fn in candidates.values():
        fn()
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            times[name].append(timed(fn))
    for name, values in times.items():
        ratios = [v / r for v, r in zip(values, times[reference])]
        print(f"  {name:<38} s: {stats(values)}   x{reference}: {stats(ratios)}")
    return times


def raw_components(pipe: DeltaDiffPipeline, image: PIL.Image.Image):
    """The same work as the pipeline, as bare component calls: VQ encode, T UNet forwards, VQ decode."""
    lr = torch.from_numpy(np.asarray(image).astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    upsampled = bicubic_upsample(lr, pipe.upscale_factor)
    timesteps = [torch.tensor([t]) for t in range(pipe.scheduler.config.num_train_timesteps - 1, -1, -1)]

    @torch.no_grad()
    def run():
        latents = pipe.vqvae.encode(upsampled).latents
        for t in timesteps:
            latents = pipe.unet(torch.cat([latents, lr], dim=1), t).sample
        return pipe.vqvae.decode(latents).sample

    return run


def section_overhead(pipe, args):
    print("\n## 1. Overhead: pipeline end to end vs its raw component calls (LR 128x128 -> 512x512)")
    image = lr_image(128)
    side_by_side(
        {
            "raw: encode + T UNet + decode": raw_components(pipe, image),
            "DeltaDiffPipeline (output_type=np)": lambda: pipe(image, output_type="np"),
        },
        args.repeats,
        reference="raw: encode + T UNet + decode",
    )


def ldm_compatible(pipe) -> bool:
    """diffusers' LDM SR pipeline assumes UNet in_channels = 2 x its latent channels (latent + image, both 3 here)."""
    return pipe.unet.config.in_channels == 2 * pipe.unet.config.out_channels


def macs_per_output_pixel(model, lr: torch.Tensor, output_pixels: int) -> float:
    """Multiply-accumulates per output pixel of `model(lr)`, counted by torch's FLOP counter (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(lr)
    return counter.get_total_flops() / 2 / output_pixels


def section_cost(pipe, args):
    """MACs and seconds per output megapixel: the DeltaDiff chain at 1 and T steps, FSRCNN, bicubic."""
    print("\n## 2. Cost per output pixel against the baselines (LR 128x128 -> 512x512)")
    image = lr_image(128)
    scale = pipe.upscale_factor
    output_pixels = (128 * scale) ** 2
    lr = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    fsrcnn = FSRCNN(scale).eval()
    steps = pipe.scheduler.config.num_train_timesteps
    unet_input = torch.zeros(
        1, pipe.unet.config.in_channels, 128 * scale // pipe.vae_scale_factor, 128 * scale // pipe.vae_scale_factor
    )
    unet_macs = macs_per_output_pixel(lambda x: pipe.unet(x, 0), unet_input, output_pixels)
    candidates = {
        f"DeltaDiff, {steps} steps": lambda: pipe(image, num_inference_steps=steps, output_type="np"),
        "DeltaDiff, 1 step": lambda: pipe(image, num_inference_steps=1, output_type="np"),
        "FSRCNN (d56 s12 m4)": lambda: fsrcnn(lr),
        "bicubic": lambda: bicubic_upsample(lr * 2 - 1, scale),
    }
    macs = {
        f"DeltaDiff, {steps} steps": unet_macs * steps,
        "DeltaDiff, 1 step": unet_macs,
        "FSRCNN (d56 s12 m4)": macs_per_output_pixel(fsrcnn, lr, output_pixels),
        "bicubic": float("nan"),
    }
    with torch.no_grad():
        times = side_by_side(candidates, args.repeats, reference=f"DeltaDiff, {steps} steps")
    print("\n| method | MACs per output pixel | s per output MP (median) |\n|---|---|---|")
    for name in candidates:
        seconds = statistics.median(times[name]) / (output_pixels / 1e6)
        print(f"| {name} | {macs[name]:,.0f} | {seconds:.3f} |")


def section_ldm(pipe, args):
    if not ldm_compatible(pipe):
        return section_cost(pipe, args)
    print("\n## 2. Against diffusers' LDMSuperResolutionPipeline on the same vqvae / unet (LR 128x128)")
    ldm = LDMSuperResolutionPipeline(vqvae=pipe.vqvae, unet=pipe.unet, scheduler=DDIMScheduler())
    ldm.set_progress_bar_config(disable=True)
    image = lr_image(128)
    generator = torch.Generator().manual_seed(0)
    side_by_side(
        {
            "DeltaDiff, 4 steps": lambda: pipe(image, output_type="np"),
            "LDM SR, DDIM 4 steps": lambda: ldm(image, num_inference_steps=4, generator=generator, output_type="np"),
            "LDM SR, DDIM 100 steps (its default)": lambda: ldm(
                image, num_inference_steps=100, generator=generator, output_type="np"
            ),
        },
        max(args.repeats // 2, 2),
        reference="DeltaDiff, 4 steps",
    )


def section_scaling(args):
    print("\n## 3. Scaling with size (one fresh process per size; tiling automatic above 256 LR pixels)")
    print("  LR size   output      time (s)   s / output Mpx   peak RSS (MiB)")
    for size in args.sizes:
        command = [sys.executable, __file__, "--child-size", str(size), "--repeats", str(args.repeats)]
        if args.model:
            command += ["--model", args.model]
        result = json.loads(
            subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        )
        megapixels = (4 * size) ** 2 / 1e6
        print(
            f"  {size:>4}^2    {4 * size:>4}^2    {result['median']:8.2f}   {result['median'] / megapixels:10.3f}"
            f"      {result['peak_rss_mib']:8.0f}"
        )


def child_size(args):
    pipe, _ = load(args.model)
    pipe.set_progress_bar_config(disable=True)
    image = lr_image(args.child_size)
    times = [timed(lambda: pipe(image, output_type="np")) for _ in range(max(args.repeats // 2, 1))]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"median": statistics.median(times), "peak_rss_mib": peak}))


def section_batch(pipe, args):
    print("\n## 4. Batch throughput (LR 64x64 images)")
    for batch in (1, 4, 8):
        images = [lr_image(64, seed=i) for i in range(batch)]
        pipe(images, output_type="np")
        times = [timed(lambda: pipe(images, output_type="np")) for _ in range(args.repeats)]
        rates = [batch / t for t in times]
        print(f"  batch {batch}: images/s {stats(rates)}")


def section_levers(pipe, args):
    print("\n## 5. Levers (LR 128x128), each against the plain pipeline in the same run")
    image = lr_image(128)
    plain = lambda: pipe(image, output_type="np")  # noqa: E731

    def with_inference_mode():
        with torch.inference_mode():
            return pipe(image, output_type="np")

    candidates = {"plain (no_grad)": plain, "torch.inference_mode": with_inference_mode}
    channels_last = copy.deepcopy(pipe)
    channels_last.unet.to(memory_format=torch.channels_last)
    channels_last.vqvae.to(memory_format=torch.channels_last)
    candidates["channels_last"] = lambda: channels_last(image, output_type="np")
    bf16 = copy.deepcopy(pipe).to(torch.bfloat16)
    candidates["bf16 weights and activations"] = lambda: bf16(image, output_type="np")
    side_by_side(candidates, args.repeats, reference="plain (no_grad)")

    if args.compile:
        compiled = copy.deepcopy(pipe)
        compiled.unet = torch.compile(compiled.unet)
        compile_time = timed(lambda: compiled(image, output_type="np"))
        print(f"  torch.compile(unet): first call (compiles) {compile_time:.1f} s")
        side_by_side(
            {"plain (no_grad)": plain, "torch.compile(unet)": lambda: compiled(image, output_type="np")},
            args.repeats,
            "plain (no_grad)",
        )

    # caching the LR conditioning: the only per-step work that depends on the LR image alone is its share of
    # the UNet's first convolution; measure how much of a UNet forward that is
    unet = pipe.unet
    latent = torch.randn(1, 6, 128, 128)
    with torch.no_grad():
        full = statistics.median(timed(lambda: unet(latent, torch.tensor([3]))) for _ in range(args.repeats))
        conv_in = statistics.median(timed(lambda: unet.conv_in(latent)) for _ in range(args.repeats * 4))
    print(
        f"  LR-conditioning cache: conv_in is {100 * conv_in / full:.2f}% of a UNet forward (the most it could save)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sections", default="overhead,ldm,scaling,batch,levers,backends")
    parser.add_argument("--backend-size", type=int, default=96, help="LR side of the backends section")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[64, 128, 256, 512])
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    parser.add_argument("--child-size", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_size:
        return child_size(args)

    pipe, name = load(args.model)
    pipe.set_progress_bar_config(disable=True)
    print(f"# DeltaDiff pipeline speed ({time.strftime('%Y-%m-%d %H:%M')})")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    print(f"versions: python {platform.python_version()}, torch {torch.__version__}, ", end="")
    import diffusers

    print(f"diffusers {diffusers.__version__}")
    print(
        f"model: {name}; UNet {sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.2f}M params, "
        f"VQModel {sum(p.numel() for p in pipe.vqvae.parameters()) / 1e6:.2f}M params; repeats {args.repeats}"
    )
    sections = args.sections.split(",")
    if "overhead" in sections:
        section_overhead(pipe, args)
    if "ldm" in sections:
        section_ldm(pipe, args)
    if "scaling" in sections:
        section_scaling(args)
    if "batch" in sections:
        section_batch(pipe, args)
    if "levers" in sections:
        section_levers(pipe, args)
    if "backends" in sections:
        from backend_speed import section_backends

        print("\n## 6. Backends, one row each, and the peers")
        section_backends(pipe, args.backend_size, args.repeats, args.compile)


if __name__ == "__main__":
    main()
