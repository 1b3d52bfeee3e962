"""`deltadiff export`: a model as one ONNX graph (LR image in, upscaled image out) for other tools."""

import importlib.util
from pathlib import Path

from ..arguments import int_at_least
from ..console import CLIError, check_steps, load_pipeline, note, one_line
from .options import path_text


def add_parser(sub):
    ex = sub.add_parser("export", help="write a model as one ONNX file (for ONNX Runtime, chaiNNer, ...)")
    ex.add_argument(
        "model", nargs="?", default=None, help="pipeline folder or shipped name: x4, x2, x4-real (default: x4)"
    )
    ex.add_argument("-o", "--output", required=True, type=path_text, help="the .onnx file to write")
    ex.add_argument(
        "--steps", type=int_at_least(1), default=None, help="reverse steps, unrolled (default: the model's)"
    )
    ex.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    ex.set_defaults(func=cmd_export, flag_problem=flag_problem)


def flag_problem(args) -> str | None:
    """What is wrong with the flags, checked before the model loads."""
    output = Path(args.output)
    try:
        problem = output_problem(output, args.overwrite)
    except OSError as err:  # a name or path too long for the file system
        problem = f"cannot be written ({err.strerror or one_line(err)})"
    return f"-o {args.output}: {problem}" if problem else None


def output_problem(output: Path, overwrite: bool) -> str | None:
    if output.suffix.lower() != ".onnx":
        return "the output must be a .onnx file"
    if output.is_dir():
        return "is a folder (pass a .onnx file name)"
    if output.exists() and not overwrite:
        return "already exists (pass --overwrite to replace it)"
    if not output.parent.is_dir():
        return f"the folder {output.parent} does not exist"
    return None


def cmd_export(args) -> int:
    missing = [name for name in ("onnx", "torch.onnx") if importlib.util.find_spec(name) is None]
    if missing:
        raise CLIError("deltadiff export needs the onnx extra: pip install 'diffusers-deltadiff[onnx]'")
    from ..atomic_files import AlreadyExists, remove_stale_temporaries
    from ..onnx_export import export_onnx

    pipe = load_pipeline(args.model, "cpu", "fp32")
    check_steps(pipe, [args.steps], args.model or f"the default x{pipe.upscale_factor} model")
    remove_stale_temporaries([Path(args.output).parent])  # those of killed exports (their process is gone)
    try:
        path = export_onnx(pipe, args.output, args.steps, overwrite=args.overwrite)
    except ValueError as err:
        raise CLIError(f"{args.model or 'x4'}: cannot export: {err}") from err
    except AlreadyExists as err:  # another run wrote it since the flags were checked
        raise CLIError(f"-o {args.output}: already exists (pass --overwrite to replace it)") from err
    except OSError as err:
        raise CLIError(f"{args.output}: cannot write ({one_line(err)})") from err
    note(f"wrote {path} (x{pipe.upscale_factor}, input 'image' float32 NCHW RGB in [0, 1], any size)")
    return 0
