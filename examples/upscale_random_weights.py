"""Smoke run of the whole integration without any trained weights.

Builds the tiny seeded random-weight DeltaDiff pipeline, saves it as a diffusers folder, loads it back the way users
load any pipeline, and upscales an image x4. The output is noise-like (random weights): this checks plumbing and
sizes, not quality.

    python examples/upscale_random_weights.py --input low_res.png --output upscaled.png
    python examples/upscale_random_weights.py --width 64 --height 48 --output upscaled.png   # synthetic input
"""

import argparse
import sys
import tempfile
import time

import numpy as np
import PIL.Image

from diffusers_deltadiff import DeltaDiffPipeline
from diffusers_deltadiff.testing_utils import tiny_pipeline


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="low-resolution image; a random RGB image when omitted")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--output", required=True)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)

    if args.input:
        try:
            image = PIL.Image.open(args.input)
            image.load()
        except (OSError, ValueError) as err:
            sys.exit(f"error: {args.input}: cannot read image ({err})")
    else:
        rng = np.random.RandomState(0)
        image = PIL.Image.fromarray((rng.rand(args.height, args.width, 3) * 255).astype(np.uint8))

    with tempfile.TemporaryDirectory() as model_dir:
        tiny_pipeline(seed=0).save_pretrained(model_dir)
        pipe = DeltaDiffPipeline.from_pretrained(model_dir)
    start = time.perf_counter()
    upscaled = pipe(image, num_inference_steps=args.steps).images[0]
    elapsed = time.perf_counter() - start
    upscaled.save(args.output)
    print(f"{image.size[0]}x{image.size[1]} -> {upscaled.size[0]}x{upscaled.size[1]} in {elapsed:.2f}s: {args.output}")


if __name__ == "__main__":
    main()
