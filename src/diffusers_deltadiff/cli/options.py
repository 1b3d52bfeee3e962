"""Flags and inputs that several commands share: model and device options, the evaluation data, argparse types."""

import argparse
import os
from pathlib import Path

from ..arguments import float_list, int_at_least, int_list
from ..console import DTYPES, CLIError, error, warning
from ..degradations import DEGRADATIONS
from .paths import is_inside


def distinct(values: list) -> list:
    """`values` when none is repeated (a repeated setting would run twice and count twice in a mean)."""
    for index, value in enumerate(values):
        if value in values[:index]:
            raise argparse.ArgumentTypeError(f"{value:g} is given twice")
    return values


def eta_list(text: str) -> list[float]:
    values = float_list(text)
    for value in values:
        if not 0 < value <= 1:  # also NaN
            raise argparse.ArgumentTypeError(f"every eta must be in (0, 1], got {value:g}")
    return distinct(values)


def seed_list(text: str) -> list[int]:
    return distinct(int_list(text, minimum=0))


def step_list(text: str) -> list[int]:
    return distinct(int_list(text))


def path_text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty (pass a path; '.' for the current folder)")
    return text


def add_model_options(parser):
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument(
        "--tile-size", type=int_at_least(0), default=None, help="latent pixels; 0 never tiles (default: auto)"
    )


class DeprecatedFlag(argparse.Action):
    """The old spelling of a flag: stores into the new flag's `dest`, with a warning naming the new spelling."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new_flag = new_flag

    def __call__(self, parser, namespace, values, option_string=None):
        warning(f"{option_string} is deprecated and will be removed in version 1.0.0: use {self.new_flag}")
        setattr(namespace, self.dest, values)


def add_deprecated_flag(parser, old: str, new: str, **kwargs):
    """`old` as a hidden, deprecated spelling of the flag `new` (its `dest`; `kwargs` as for `new`: `type`...)."""
    hidden = {"default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
    parser.add_argument(
        old, dest=new.lstrip("-").replace("-", "_"), action=DeprecatedFlag, new_flag=new, **hidden, **kwargs
    )


def add_eval_data_options(parser):
    parser.add_argument("--hr", required=True, type=path_text, help="folder of HR images")
    parser.add_argument(
        "--lr", default=None, type=path_text, help="folder of LR images paired by name (default: made from HR)"
    )
    parser.add_argument("--scale", type=int_at_least(1), default=4)
    parser.add_argument("--crop", type=int_at_least(1), default=None, help="centre-crop HR to this size first")
    parser.add_argument(
        "--degradation", default="bicubic", choices=list(DEGRADATIONS), help="how LR is made from HR (without --lr)"
    )
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of a random degradation")


class ArgumentParser(argparse.ArgumentParser):
    """Flag errors as one line like every other error (exit status 2), naming the flag."""

    def error(self, message):
        # launched on several processes (`torchrun`, `accelerate launch`), each parses the same flags: the error is
        # printed by the first process of each machine only, every process exits with 2
        local_main = os.environ.get("LOCAL_RANK", "0") == "0"
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n" if local_main else None)


def load_eval_pairs(args):
    from ..evaluation import load_pairs

    for flag, folder in (("--hr", args.hr), ("--lr", args.lr)):
        if folder and not os.path.isdir(folder):  # os.path's: False, not an OSError, for a name too long to exist
            kind = flag.lstrip("-").upper()
            if os.path.exists(folder):
                raise CLIError(f"{folder}: not a folder ({flag} takes the folder of {kind} images)")
            raise CLIError(f"{folder}: {kind} folder not found")
    if args.lr and args.degradation != "bicubic":
        raise CLIError(f"--degradation {args.degradation} makes LR images from HR, --lr reads them: pass one of them")
    check_eval_output(args)
    pairs, errors = load_pairs(args.hr, args.scale, args.crop, args.lr, args.degradation, args.seed)
    for message in errors:
        error(message)
    if not pairs:
        raise CLIError(f"{args.hr}: no usable HR images")
    return pairs, errors


def check_eval_output(args):
    """
    `--output` not at or inside `--hr` or `--lr`: its files would be read as benchmark images by the next run (the
    grid scored as one more image), or replace one of them.
    """
    if not getattr(args, "output", None):
        return
    output = Path(args.output).resolve()
    for flag, folder in (("--hr", args.hr), ("--lr", args.lr)):
        if folder and is_inside(output, Path(folder).resolve()):
            raise CLIError(
                f"--output {args.output}: inside the {flag} folder {folder}, whose images are scored: write the "
                "results elsewhere"
            )
