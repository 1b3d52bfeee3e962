"""A candidate for export: a trained pipeline folder (a run's `best`) copied with the measured inference settings.

    python training/make_candidate.py outputs/x2/main/best outputs/x2/candidate --border_padding 2 [--default_inference_steps 1]

Made whole in `<candidate>.tmp` and then moved, so a candidate folder is never half-configured; an existing candidate
is left as it is (the eval scripts rerun it freely).
"""

import argparse
import shutil
from pathlib import Path

from diffusers_deltadiff.pretrained import from_pretrained


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="trained pipeline folder")
    parser.add_argument("candidate", type=Path, help="the folder to make")
    parser.add_argument("--border_padding", type=int, required=True)
    parser.add_argument("--default_inference_steps", type=int, default=None, help="default: keep the scheduler's")
    args = parser.parse_args()
    if (args.candidate / "model_index.json").is_file():
        return
    tmp = args.candidate.with_name(args.candidate.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(args.source, tmp)
    pipe = from_pretrained(str(tmp))
    pipe.register_to_config(border_padding=args.border_padding)
    if args.default_inference_steps is not None:
        config = pipe.scheduler.config
        pipe.scheduler = type(pipe.scheduler).from_config(config, default_inference_steps=args.default_inference_steps)
    pipe.save_pretrained(str(tmp))
    shutil.rmtree(args.candidate, ignore_errors=True)
    tmp.rename(args.candidate)


if __name__ == "__main__":
    main()
