"""A candidate for export: a trained pipeline folder (a run's `best`) copied with the measured inference settings.

    python training/make_candidate.py outputs/x2/main/best outputs/x2/candidate --border_padding 2 [--default_inference_steps 1]

Made whole in `<candidate>.tmp` and then moved, so a candidate folder is never half-configured; an existing candidate
is left as it is (the eval scripts rerun it freely); an existing folder that is not one is an error, never replaced.
"""

import argparse
import shutil
from pathlib import Path

from diffusers_deltadiff.arguments import int_at_least
from diffusers_deltadiff.pretrained import from_pretrained


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="trained pipeline folder")
    parser.add_argument("candidate", type=Path, help="the folder to make")
    parser.add_argument("--border_padding", type=int_at_least(0, 256), required=True)
    parser.add_argument(
        "--default_inference_steps", type=int_at_least(1), default=None, help="default: keep the scheduler's"
    )
    args = parser.parse_args()
    if (args.candidate / "model_index.json").is_file():
        return
    if args.candidate.exists() or args.candidate.is_symlink():
        raise SystemExit(
            f"error: {args.candidate}: exists and is not a candidate (no model_index.json): choose another folder"
        )
    if not (args.source / "model_index.json").is_file():
        raise SystemExit(f"error: {args.source}: not a pipeline folder (no model_index.json)")
    tmp = args.candidate.with_name(args.candidate.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(args.source, tmp)
    pipe = from_pretrained(str(tmp))
    pipe.register_to_config(border_padding=args.border_padding)
    if args.default_inference_steps is not None:
        config = pipe.scheduler.config
        pipe.scheduler = type(pipe.scheduler).from_config(config, default_inference_steps=args.default_inference_steps)
    pipe.save_pretrained(str(tmp))
    tmp.rename(args.candidate)


if __name__ == "__main__":
    main()
