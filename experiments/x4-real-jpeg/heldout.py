"""Held-out gains over bicubic, per degradation, of pipeline folders: how the x4-real-jpeg stage is selected.

    python experiments/x4-real-jpeg/heldout.py outputs/data/heldout40 \
        --model start=training/starts/deltadiff-x4-real-v0.1 --model best=outputs/x4-real-jpeg/main/best

The 40 held-out bsds400 photos (every 10th, never trained on; `training/prepare_train_data.py`), centre crops of 320
pixels as the trainer's validation takes them, LR made with each degradation at fixed seeds (the image's index).
Per model: Y-PSNR (crop 4) gain over PIL's bicubic on each degradation, and the worst of them: the default-choice
rule of issue 27, applied to held-out photos instead of benchmarks. Never a benchmark: nothing here reads one.
"""

import argparse
import statistics

import torch

from diffusers_deltadiff.baselines import Bicubic
from diffusers_deltadiff.degradations import Degradation
from diffusers_deltadiff.metrics import block_edge_energy, psnr_y
from diffusers_deltadiff.pretrained import from_pretrained
from diffusers_deltadiff.training_utils import load_center_crops


DEGRADATIONS = ["bicubic", "jpeg30", "jpeg40", "jpeg70", "mild", "realesrgan", "noise15", "blur"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("heldout", help="the held-out photos (outputs/data/heldout40)")
    parser.add_argument("--model", action="append", required=True, help="label=pipeline folder")
    parser.add_argument("--degradations", default=",".join(DEGRADATIONS))
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--resolution", type=int, default=320)
    parser.add_argument("--seed-offset", type=int, default=0, help="LR seeds index + 1000 x this (another draw)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    crops = load_center_crops(args.heldout, args.images, args.resolution, multiple=4)
    models = dict(spec.split("=", 1) for spec in args.model)
    pipes = {label: from_pretrained(folder) for label, folder in models.items()}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    bicubic = Bicubic(4)
    names = args.degradations.split(",")
    gains = {label: {} for label in pipes}
    blocks = dict.fromkeys(["bicubic", *pipes])
    for name in names:
        degrade = Degradation(name, 4)
        pairs = [(hr, degrade(hr, seed=index + 1000 * args.seed_offset)) for index, hr in enumerate(crops)]
        base = statistics.mean(psnr_y(bicubic(lr)[None], hr[None], 4).item() for hr, lr in pairs)
        if name == "jpeg40":
            blocks["bicubic"] = statistics.mean(block_edge_energy(bicubic(lr), 32) for _, lr in pairs)
        for label, pipe in pipes.items():
            outputs = [pipe(lr, output_type="pt").images[0].float() for _, lr in pairs]
            psnr = statistics.mean(psnr_y(sr[None], hr[None], 4).item() for sr, (hr, _) in zip(outputs, pairs))
            gains[label][name] = psnr - base
            if name == "jpeg40":
                blocks[label] = statistics.mean(block_edge_energy(sr, 32) for sr in outputs)
        print(
            f"{name}: bicubic {base:.2f} dB, " + ", ".join(f"{k} {v[name]:+.2f}" for k, v in gains.items()), flush=True
        )
    bicubic_blocks = f"{blocks['bicubic']:.2f}" if blocks["bicubic"] is not None else "not run"
    print(f"\n| model | {' | '.join(names)} | worst | JPEG-40 blocks (bicubic {bicubic_blocks}) |")
    print("|---|" + "---|" * (len(names) + 2))
    for label, row in gains.items():
        cells = " | ".join(f"{row[name]:+.2f}" for name in names)
        block = f"{blocks[label]:.2f}" if blocks[label] is not None else "-"
        print(f"| {label} | {cells} | {min(row.values()):+.2f} | {block} |")


if __name__ == "__main__":
    main()
