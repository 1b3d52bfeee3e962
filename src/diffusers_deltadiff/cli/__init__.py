"""`deltadiff`: upscale images, and evaluate models with the paper's protocol.

    deltadiff upscale photo.jpg holiday/ 'scans/**/*.png' -o upscaled/
    deltadiff evaluate --hr Set14/ --model path/to/model --scale 4
    deltadiff export x4 -o deltadiff-x4.onnx
    deltadiff ablate --hr Set14/ --model path/to/model --eta-start 0.01,0.04 --eta-end 0.9,0.99 --steps 1,2,4
    accelerate launch --num_processes 8 -m diffusers_deltadiff.cli upscale frames/ -o out/

Errors are one line each, naming the file and the problem; other files are still processed and the exit code is
non-zero at the end (1: some files failed, 2: nothing could be done, e.g. a bad flag, or the model or output cannot
be used). Flags are checked before the model loads. Existing files are never replaced without `--overwrite`, and an
input is never replaced at all; `--skip-existing` skips them instead of reporting them.

`upscale` started by `accelerate launch` or `torchrun` on several processes splits the inputs between them, one
device each; there, existing outputs are skipped by default, so that relaunching an interrupted run resumes it.
"""

import argparse
import signal
import sys
import threading

from ..console import CLIError, error, quiet_diffusers
from . import ablate, demo, evaluate, export, upscale
from .options import ArgumentParser


COMMANDS = (demo, upscale, evaluate, ablate, export)  # each module adds its subcommand: `add_parser(subparsers)`


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="deltadiff", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def terminate_like_interrupt():
    """SIGTERM (a batch system's stop, `kill`) unwinds like Ctrl-C: temporary files are removed, the exit is 143."""

    def handler(signum, frame):
        raise Terminated()

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, handler)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process was, so that every `finally` runs."""


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:
        return demo.run_demo(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # a flag error (2) or --help (0)
        return exit.code
    problem = args.flag_problem(args) if hasattr(args, "flag_problem") else None
    if problem:
        error(f"{problem} (see `deltadiff {args.command} --help`)")
        return 2
    if args.command != "upscale":  # upscale imports diffusers only where it loads a pipeline (and quiets it there)
        quiet_diffusers()
    terminate_like_interrupt()
    try:
        return args.func(args)
    except CLIError as err:
        error(str(err))
        return err.code
    except Terminated:
        error("terminated")
        return 143
    except KeyboardInterrupt:
        error("interrupted")
        return 130
