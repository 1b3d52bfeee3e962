"""`upscale --backend`: which engine runs the UNet (torch, or ONNX Runtime on the CPU), chosen before the model loads."""

from ..console import DTYPES, CLIError, one_line, warning
from ..onnx_backend import BACKENDS


def add_backend_option(parser):
    parser.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default="auto",
        help="what runs the UNet: auto (default) is ONNX Runtime for fp32 on the CPU when the onnx extra is "
        "installed (measured faster), torch otherwise",
    )


def check_backend(args, device: str) -> str:
    """`torch` or `onnxruntime` for `--backend` on `device`; a flag error (exit 2) when it cannot be served."""
    from ..onnx_backend import resolve_backend

    backend = getattr(args, "backend", "auto")
    try:
        return resolve_backend(backend, device, DTYPES[args.dtype])
    except ValueError as err:
        raise CLIError(f"--backend {backend}: {err}") from err


def apply_backend(pipe, backend: str, requested: str = "onnxruntime"):
    """
    `pipe` with its UNet on `backend` ([`~onnx_backend.use_onnxruntime`] for ONNX Runtime). Where ONNX Runtime cannot
    run the model (it does not export, or its session fails), `--backend auto` ([`requested`]) runs it with torch,
    with a warning; an explicit `--backend onnxruntime` is a flag error.
    """
    if backend != "onnxruntime":
        return pipe
    from ..onnx_backend import use_onnxruntime

    try:
        return use_onnxruntime(pipe)
    except Exception as err:  # noqa: BLE001 - an export or session failure is one line
        if requested == "auto":
            warning(f"--backend auto: ONNX Runtime cannot run this model ({one_line(err)}): torch runs it")
            return pipe
        raise CLIError(
            f"--backend onnxruntime: cannot run the model there ({one_line(err)}); pass --backend torch"
        ) from err
