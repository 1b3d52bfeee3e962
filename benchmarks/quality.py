"""The quality table: DeltaDiff vs ResShift vs bicubic on SR benchmarks, with the autoencoder's own ceiling.

Colours: the Cb/Cr PSNR column (the colour channels of YCbCr against HR, same crop) says whether a model keeps
colours true; it should be no worse than bicubic's.

    python benchmarks/quality.py --benchmarks ../shared/data/benchmarks/Set14 ../shared/data/benchmarks/BSD68 \
        --model DeltaDiff=outputs/deltadiff-x4 --model ResShift=outputs/resshift-x4 --seeds 0,1,2 --output quality

For each benchmark folder: the `deltadiff evaluate` protocol (x`--scale`, default 4: PIL bicubic LR, Y channel, crop border = scale) for
bicubic and every model, plus the round-trip ceiling: the first model's autoencoder encoding and decoding the HR
image itself (through the same quantisation as the pipeline). No super-resolution through that autoencoder can
score above it (the lossless space-to-depth latent has no ceiling: its round trip is exact). Writes `<output>/<benchmark>/` (CSV, summary, grid) and `<output>/quality.md`.
"""

import argparse
import statistics
from pathlib import Path

import torch
from tqdm.auto import tqdm

from diffusers_deltadiff.baselines import BASELINES, load_baseline
from diffusers_deltadiff.evaluation import LPIPSMetric, evaluate, load_pairs
from diffusers_deltadiff.image_utils import pad_to_multiple
from diffusers_deltadiff.metrics import psnr_y, ssim_y
from diffusers_deltadiff.pretrained import from_pretrained
from diffusers_deltadiff.upscaler import PipelineUpscaler


@torch.no_grad()
def vq_ceiling(pipe, pairs, scale: int) -> tuple[float, float]:
    """Mean Y-PSNR / SSIM of the autoencoder's round trip (encode, quantise, decode) of the HR images."""
    psnrs, ssims = [], []
    multiple = pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
    for _, hr, _ in tqdm(pairs, desc="autoencoder round trip", unit="image"):
        height, width = hr.shape[-2:]
        x = pad_to_multiple(hr[None] * 2 - 1, multiple)
        recon = pipe.decode_latents(pipe.vqvae.encode(x).latents)[0, :, :height, :width]
        recon = (recon + 1) / 2
        psnrs.append(psnr_y(recon, hr, scale).item())
        ssims.append(ssim_y(recon, hr, scale).item())
    return statistics.fmean(psnrs), statistics.fmean(ssims)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", nargs="+", required=True, help="HR folders")
    parser.add_argument(
        "--model", action="append", default=[], help="label=folder[@steps] (default: the model's T), repeatable"
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        help=f"[label=]name[:folder], a registered baseline ({', '.join(BASELINES)}) and its weights, repeatable",
    )
    parser.add_argument("--fsrcnn", action="append", default=[], help="label=folder: --baseline label=fsrcnn:folder")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--output", default="quality")
    args = parser.parse_args()

    seeds = tuple(int(s) for s in args.seeds.split(","))
    specs = [spec.split("=", 1) if "=" in spec else (Path(spec).name, spec) for spec in args.model]
    pipes, upscalers = {}, {}
    for label, path in specs:
        path, _, steps = path.partition("@")
        pipes[label] = from_pretrained(path)
        pipes[label].set_progress_bar_config(disable=True)
        upscalers[label] = PipelineUpscaler(pipes[label], **({"num_inference_steps": int(steps)} if steps else {}))
    for spec in args.fsrcnn:
        label, folder = spec.split("=", 1) if "=" in spec else ("FSRCNN", spec)
        args.baseline.append(f"{label}=fsrcnn:{folder}")
    for spec in args.baseline:
        label, method = spec.split("=", 1) if "=" in spec else ("", spec)
        name, _, folder = method.partition(":")
        try:
            upscalers[label or name] = load_baseline(name, folder or None, args.scale)
        except (OSError, ValueError) as err:
            parser.error(f"--baseline {spec}: {str(err).splitlines()[0]}")
    lpips_metric = LPIPSMetric()
    lines = [f"# Quality (x{args.scale}, bicubic LR, Y channel, crop border {args.scale})", ""]
    for folder in args.benchmarks:
        name = Path(folder).name
        pairs, errors = load_pairs(folder, args.scale, None, None, "bicubic", 0)
        for message in errors:
            print(f"error: {message}")
        result = evaluate(pairs, upscalers, scale=args.scale, seeds=seeds, lpips_metric=lpips_metric)
        result.write(str(Path(args.output) / name), title=name)
        extra_rows = []
        if args.model:  # the first DeltaDiff model's autoencoder
            first_label = next(iter(pipes))
            ceiling = vq_ceiling(pipes[first_label], pairs, args.scale)
            ceiling_psnr = "exact (lossless)" if ceiling[0] >= 99 else f"{ceiling[0]:.2f}"
            extra_rows.append(
                f"| round-trip ceiling ({first_label}'s autoencoder on HR) | {len(pairs)} | {ceiling_psnr} | "
                f"{ceiling[1]:.4f} | n/a | n/a | n/a | - | - |"
            )
        lines.append(result.markdown(title=f"{name} ({len(pairs)} images)", extra_rows=extra_rows))
    text = "\n".join(lines) + "\n"
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "quality.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
