"""Side-by-side crops for looking at outputs by eye: bicubic | each model | the original, one row per crop.

    python benchmarks/compare_crops.py --model v0.2=outputs/v0.2 --model new=outputs/onepass/candidate \
        --crop ../shared/data/benchmarks/Set5/butterfly.png:96,96,64 --crop ...:x,y,size --output outputs/crops.png
    python benchmarks/compare_crops.py --sharp ...     # the main job: the original itself as the input, no original
    python benchmarks/compare_crops.py --model clean=x4 --model real=x4-real --degradation jpeg40 --crop ...
    python benchmarks/compare_crops.py --model clean=x4 --model real=x4-real \
        --lr ../shared/data/benchmarks/RealSR/test_LR --crop ../shared/data/benchmarks/RealSR/test_HR/Canon_003_LR4.png:...

Each `--crop FILE:X,Y,SIZE` names an output-size square (top-left X, Y). The input is the file downscaled x`scale`
by PIL bicubic (the benchmark protocol), or by a registered `--degradation` (seed 0), or the file of the same name in
`--lr` (real LR / HR pairs such as RealSR), or with `--sharp` the file itself (what `deltadiff upscale` gets in the
README's main job: already sharp photos). Crops are enlarged `--zoom` times with nearest neighbour, so pixels stay
pixels. Writes one PNG.
"""

import argparse
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from diffusers_deltadiff.degradations import DEGRADATIONS, Degradation
from diffusers_deltadiff.image_utils import to_pil, to_unit_tensor
from diffusers_deltadiff.pretrained import SHIPPED_MODELS, from_pretrained, shipped_model_path


def parse_crop(spec: str) -> tuple[Path, int, int, int]:
    path, _, box = spec.rpartition(":")
    x, y, size = (int(v) for v in box.split(","))
    return Path(path), x, y, size


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", action="append", required=True, help="label=pipeline folder or shipped name (x4-real)[@steps]"
    )
    parser.add_argument("--degradation", default="bicubic", choices=list(DEGRADATIONS), help="how LR is made")
    parser.add_argument("--lr", default=None, help="folder of real LR images, paired with the crops' files by name")
    parser.add_argument("--crop", action="append", required=True, help="FILE:X,Y,SIZE (output pixels)")
    parser.add_argument("--sharp", action="store_true", help="upscale the file itself (the main job), no original")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--zoom", type=int, default=3)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    models = []
    for spec in args.model:
        label, _, rest = spec.partition("=")
        folder, at, steps = rest.rpartition("@")
        folder, steps = (folder, int(steps)) if at else (rest, None)
        pipe = from_pretrained(shipped_model_path(folder) if folder in SHIPPED_MODELS else folder)
        pipe.set_progress_bar_config(disable=True)
        models.append((label, pipe, steps))

    rows, labels = [], ["bicubic", *(label for label, _, _ in models)] + ([] if args.sharp else ["original"])
    for path, x, y, size in map(parse_crop, args.crop):
        image = PIL.Image.open(path).convert("RGB")
        if args.sharp:
            lr, hr = image, None
        elif args.lr:
            hr, lr = image, PIL.Image.open(Path(args.lr) / path.name).convert("RGB")
        else:
            hr = image.crop((0, 0, image.width - image.width % args.scale, image.height - image.height % args.scale))
            lr = to_pil(Degradation(args.degradation, args.scale)(to_unit_tensor(hr), 0))
        out_size = (lr.width * args.scale, lr.height * args.scale)
        tiles = [lr.resize(out_size, PIL.Image.BICUBIC)]
        tiles += [pipe(lr, num_inference_steps=steps).images[0] for _, pipe, steps in models]
        tiles += [] if hr is None else [hr]
        box = (x, y, x + size, y + size)
        zoomed = [t.crop(box).resize((size * args.zoom,) * 2, PIL.Image.NEAREST) for t in tiles]
        rows.append(np.concatenate([np.asarray(z) for z in zoomed], axis=1))
    grid = PIL.Image.fromarray(np.concatenate(rows, axis=0))
    header = PIL.Image.new("RGB", (grid.width, 16), "white")
    draw = PIL.ImageDraw.Draw(header)
    cell = grid.width // len(labels)
    for k, label in enumerate(labels):
        draw.text((k * cell + 4, 2), label, fill="black")
    figure = PIL.Image.new("RGB", (grid.width, grid.height + 16))
    figure.paste(header, (0, 0))
    figure.paste(grid, (0, 16))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.output)
    print(f"wrote {args.output}: {len(rows)} crops x {len(labels)} columns ({', '.join(labels)})")


if __name__ == "__main__":
    main()
