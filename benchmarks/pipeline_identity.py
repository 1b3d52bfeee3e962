"""Bit-identity of the pipeline's outputs across a refactor: every execution path, dumped and compared.

    PYTHONPATH=<old checkout>/src python benchmarks/pipeline_identity.py --dump outputs/identity-old
    python benchmarks/pipeline_identity.py --dump outputs/identity-new --compare outputs/identity-old

Cases: the shipped model on Set5-sized crops of synthetic photos and on `--images` (whole; tiled by hand and
automatically; streamed and canvas tiling, forced by a callback; several tile sizes and contexts; batches of mixed
sizes; every output type; intermediates), a tiny ResShift pipeline with a seeded generator (whole and tiled), and
1, 2 and 4 steps. `--compare` prints each case and whether its arrays are equal bit for bit; exit status 1 if any
differ.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from diffusers_deltadiff.data import list_images
from diffusers_deltadiff.pretrained import load_default_pipeline
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline


def synthetic(width: int, height: int, seed: int) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    image = np.stack([0.5 + 0.4 * np.sin(9 * x + c) * np.cos(7 * y - c) for c in (0.0, 1.0, 2.0)], axis=-1)
    image += 0.08 * rng.standard_normal(image.shape)
    return PIL.Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))


def arrays(output) -> list[np.ndarray]:
    """The images (and intermediates) of a pipeline output as arrays."""

    def one(image):
        if isinstance(image, PIL.Image.Image):
            return np.asarray(image)
        if isinstance(image, torch.Tensor):
            return image.numpy()
        return np.asarray(image)

    items = output.images if isinstance(output.images, list) else [output.images]
    result = [one(im) for im in items]
    for step in output.intermediate_images or []:
        result += [one(im) for im in (step if isinstance(step, list) else [step])]
    return result


def cases(images: list[PIL.Image.Image]):
    pipe = load_default_pipeline()
    tiny_resshift = tiny_lossless_pipeline(kappa=2.0)
    for p in (pipe, tiny_resshift):
        p.set_progress_bar_config(disable=True)
    photos = [synthetic(80, 60, 0), synthetic(96, 72, 1), synthetic(300, 70, 2)]  # the last one auto-tiles

    def callback(pipeline, step, timestep, kwargs):  # needs every step: forces the canvas path when tiled
        return {}

    for k, image in enumerate(photos + images):
        yield f"shipped/image{k}/auto", lambda im=image: pipe(im, output_type="np")
        yield f"shipped/image{k}/whole", lambda im=image: pipe(im, output_type="np", tile_size=0)
        for tile, context in ((16, 8), (24, 16), (40, None)):
            kw = {"tile_size": tile, "tile_overlap": context}
            yield f"shipped/image{k}/tile{tile}-{context}/streamed", lambda im=image, kw=kw: pipe(im, **kw)
            yield (
                f"shipped/image{k}/tile{tile}-{context}/canvas",
                lambda im=image, kw=kw: pipe(im, output_type="np", callback_on_step_end=callback, **kw),
            )
    small = photos[0]
    for steps in (1, 2):
        yield f"shipped/steps{steps}", lambda s=steps: pipe(small, num_inference_steps=s, output_type="np")
        yield f"shipped/steps{steps}/tiled", lambda s=steps: pipe(small, num_inference_steps=s, tile_size=16)
    for output_type in ("pil", "pt", "latent"):
        yield f"shipped/{output_type}", lambda o=output_type: pipe(small, output_type=o)
        yield f"shipped/{output_type}/tiled", lambda o=output_type: pipe(small, output_type=o, tile_size=16)
    yield "shipped/intermediates", lambda: pipe(small, output_type="np", return_intermediates=True)
    yield "shipped/intermediates/tiled", lambda: pipe(small, return_intermediates=True, tile_size=16)
    mixed = [photos[0], photos[1], photos[0].transpose(PIL.Image.FLIP_LEFT_RIGHT), photos[1].convert("L")]
    for batch in (1, 2, 4):
        yield f"shipped/mixed/batch{batch}", lambda b=batch: pipe(mixed, output_type="np", tile_batch_size=b)
        yield f"shipped/mixed/batch{batch}/tiled", lambda b=batch: pipe(mixed, tile_size=16, tile_batch_size=b)
    lr = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(3))
    for tile in (0, 8):
        yield (
            f"resshift/tile{tile}",
            lambda t=tile: tiny_resshift(
                lr, output_type="np", tile_size=t, generator=torch.Generator().manual_seed(7)
            ),
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dump", required=True, help="folder for this code's outputs (one .npz per case)")
    parser.add_argument("--compare", default=None, help="a folder dumped by another version of the code")
    parser.add_argument("--images", default=None, help="a folder of extra inputs (e.g. Set5 at LR size)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the same kernels in both runs
    extra = [PIL.Image.open(p).convert("RGB") for p in list_images(args.images)] if args.images else []
    dump = Path(args.dump)
    dump.mkdir(parents=True, exist_ok=True)
    differ = 0
    for name, run in cases(extra):
        result = arrays(run())
        path = dump / (name.replace("/", "__") + ".npz")
        np.savez(path, *result)
        if args.compare:
            other = np.load(Path(args.compare) / path.name)
            same = len(other.files) == len(result) and all(
                np.array_equal(other[f"arr_{i}"], a) for i, a in enumerate(result)
            )
            differ += not same
            print(f"{'same' if same else 'DIFFERENT'}  {name}", flush=True)
        else:
            print(f"dumped {name}", flush=True)
    if args.compare:
        print(f"{differ} case(s) differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
