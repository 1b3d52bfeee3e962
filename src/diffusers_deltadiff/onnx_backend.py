"""The ONNX Runtime backend: a pipeline's UNet run by ONNX Runtime on the CPU, everything else unchanged.

    >>> from diffusers_deltadiff import load_default_pipeline
    >>> from diffusers_deltadiff.onnx_backend import use_onnxruntime
    >>> pipe = use_onnxruntime(load_default_pipeline())  # the same calls, outputs within float error

[`OnnxRuntimeUNet`] stands in for the pipeline's `unet`: it has what the pipeline uses of one (`config`, `dtype`,
`device`, `__call__(sample, timestep).sample`), so tiles, streaming, alpha, 16-bit output, callbacks and every check
of the inputs stay the torch path's own code. The UNet is exported once ([`~onnx_export.trace_to_onnx`], dynamic
batch, height and width) and kept in a cache folder under a hash of its weights and config ([`unet_cache_path`]).
"""

import contextlib
import hashlib
import io
import json
import os
import re
from pathlib import Path

import torch

from .atomic_files import remove_stale_temporaries, write_file_atomic


# what `auto` picks from, and what `--backend` takes (this module imports only torch at first: the CLI reads this)
BACKENDS = ("auto", "torch", "onnxruntime")
# the exports the cache keeps, the most recently used (17 MB each for the shipped models; every `--denoise` value
# is a UNet of its own)
CACHE_FILES = 16
CACHE_NAME = re.compile(r"(unet|graph)-[0-9a-f-]+\.onnx")


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: str, dtype: torch.dtype) -> str:
    """
    `torch` or `onnxruntime` for `backend` (one of [`BACKENDS`]) on `device` in `dtype`. `auto` is the fastest one
    installed for them: ONNX Runtime for float32 on the CPU (measured in `benchmarks/pipeline_speed.py`: 0.77x eager
    torch's time on one thread), torch elsewhere. An explicit `onnxruntime` it cannot serve is a `ValueError`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    fits = torch.device(device).type == "cpu" and dtype == torch.float32
    if backend == "auto":
        return "onnxruntime" if fits and onnxruntime_available() else "torch"
    if backend == "onnxruntime":
        if not onnxruntime_available():
            raise ValueError("the onnxruntime backend needs the onnx extra: pip install 'diffusers-deltadiff[onnx]'")
        if not fits:
            raise ValueError(
                f"the onnxruntime backend runs float32 on the CPU, not {str(dtype).removeprefix('torch.')} on {device}"
            )
    return backend


def cache_dir() -> Path:
    """Where exported UNets are kept: `$DELTADIFF_CACHE`, else `$XDG_CACHE_HOME/diffusers-deltadiff/onnx`, else
    `~/.cache/diffusers-deltadiff/onnx`."""
    if os.environ.get("DELTADIFF_CACHE"):
        return Path(os.environ["DELTADIFF_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "diffusers-deltadiff" / "onnx"


def unet_cache_path(unet: torch.nn.Module, folder: Path | None = None) -> Path:
    """The cache file of `unet`'s export: named by a hash of its class, config, weights and the exporter's versions."""
    from .onnx_export import OPSET

    digest = hashlib.sha256()
    digest.update(f"{type(unet).__module__}.{type(unet).__qualname__} {torch.__version__} opset{OPSET}".encode())
    config = {key: value for key, value in unet.config.items() if key != "_name_or_path"}  # not where it was read
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in unet.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return (folder or cache_dir()) / f"unet-{digest.hexdigest()[:32]}.onnx"


def cpu_session(model: str | bytes):
    """An ONNX Runtime CPU session of an exported file (a path or its bytes), on torch's intra-op thread count
    (`torch.get_num_threads()`, so `OMP_NUM_THREADS` sets both)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run_session(session, feeds: dict):
    """
    `session.run(None, feeds)[0]`, with ONNX Runtime's failures raised as Python's own: its exceptions derive from
    `Exception` only, so a caller reporting an image's `RuntimeError` or `MemoryError` in one line (the command line,
    which goes on with the other images) would stop at them with a traceback. A failed allocation (an image too large
    for the memory) is a `MemoryError`, anything else a `RuntimeError`, both with ONNX Runtime's message.
    """
    try:
        return session.run(None, feeds)[0]
    except Exception as err:  # noqa: BLE001 - onnxruntime's Fail, RuntimeException, InvalidArgument...
        if isinstance(err, (RuntimeError, MemoryError)):
            raise
        message = " ".join(str(err).split())
        if "allocate" in message.lower():
            raise MemoryError(f"ONNX Runtime: {message}") from err
        raise RuntimeError(f"ONNX Runtime: {message}") from err


def mark_used(path: Path):
    """A cached export just read: its modification time set to now, so that [`prune_cache`] keeps it the longest."""
    with contextlib.suppress(OSError):
        os.utime(path)


def prune_cache(folder: Path, keep: int = CACHE_FILES) -> list[Path]:
    """
    The cache's exports (this module's UNets, [`~onnx_upscaler`]'s graphs: their names only) beyond the `keep` most
    recently used, removed; the ones removed are returned. Before, the cache only grew: 17 MB for every model, every
    release and every `--denoise` value ever run. A process about to read a removed file exports it again.
    """
    try:
        files = [p for p in folder.iterdir() if CACHE_NAME.fullmatch(p.name)]
    except OSError:
        return []

    def used(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    removed = []
    for path in sorted(files, key=used, reverse=True)[keep:]:
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


class _UNetSample(torch.nn.Module):
    """`unet(sample, timestep).sample`, the traced function."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep).sample


def export_unet(unet: torch.nn.Module, path) -> None:
    """The UNet alone as ONNX (`sample`, `timestep` -> `prediction`, dynamic batch and size), traced in float32 on
    the CPU from a copy (the caller's UNet is left where it is)."""
    import copy

    from .onnx_export import trace_to_onnx

    if unet.device.type != "cpu" or unet.dtype != torch.float32:
        unet = copy.deepcopy(unet).to("cpu", torch.float32)
    channels, multiple = unet.config.in_channels, 2 ** (len(unet.config.block_out_channels) - 1)
    example = (torch.zeros(1, channels, 2 * multiple, 2 * multiple), torch.zeros(1, dtype=torch.long))
    axes = {"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"}}
    axes["prediction"] = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        trace_to_onnx(_UNetSample(unet.eval()), example, path, axes)


def unet_model(unet: torch.nn.Module, folder: Path | None = None, refresh: bool = False) -> str | bytes:
    """
    The exported UNet: a cached file's path (exported and cached first if missing, or with `refresh`), or the model's
    bytes where the cache folder cannot be written. The export is made in memory, then cached whole or not at all
    ([`~atomic_files.write_file_atomic`]: a temporary file of this call's own, with the umask's mode, removed on any
    error or interrupt), so processes and threads starting at once on an empty cache never share or read a partial
    file; the last export written stays (each is the same UNet).
    """
    path = unet_cache_path(unet, folder)
    if path.is_file() and not refresh:
        mark_used(path)
        return str(path)
    buffer = io.BytesIO()
    export_unet(unet, buffer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries([path.parent], busy=True)  # writes killed midway; this process's threads' stay
        write_file_atomic(path, buffer.getbuffer(), replace=True)
    except OSError:
        return buffer.getvalue()
    prune_cache(path.parent)
    return str(path)


class OnnxRuntimeUNet(torch.nn.Module):
    """
    A pipeline's UNet run by an ONNX Runtime session on the CPU, with the interface the pipeline uses: `config` (the
    UNet's), `dtype` and `device` (those of the pipeline's other tensors: `.to()` moves them, the session stays on the
    CPU), and `__call__(sample, timestep)` returning an object with `.sample`. Intra-op threads follow torch's
    (`torch.get_num_threads()`, so `OMP_NUM_THREADS` sets both).
    """

    def __init__(self, unet: torch.nn.Module, cache_folder: Path | None = None):
        super().__init__()
        self.config = unet.config
        self.register_buffer("dtype_anchor", torch.zeros((), dtype=unet.dtype, device=unet.device))
        model = unet_model(unet, cache_folder)
        try:
            self.session = cpu_session(model)
        except Exception:  # noqa: BLE001 - a cached file ONNX Runtime cannot read (cut short, damaged): made again
            if not isinstance(model, str):
                raise
            self.session = cpu_session(unet_model(unet, cache_folder, refresh=True))

    @property
    def dtype(self) -> torch.dtype:
        return self.dtype_anchor.dtype

    @property
    def device(self) -> torch.device:
        return self.dtype_anchor.device

    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True, **kwargs):
        if kwargs:
            raise TypeError(f"OnnxRuntimeUNet takes sample and timestep only, got {', '.join(kwargs)}")
        timesteps = torch.as_tensor(timestep).reshape(-1).to("cpu", torch.int64).expand(sample.shape[0])
        feeds = {
            "sample": sample.detach().to("cpu", torch.float32).contiguous().numpy(),
            "timestep": timesteps.contiguous().numpy(),
        }
        from diffusers.models.unets.unet_2d import UNet2DOutput

        prediction = torch.from_numpy(run_session(self.session, feeds)).to(sample.device, sample.dtype)
        return UNet2DOutput(sample=prediction) if return_dict else (prediction,)


def use_onnxruntime(pipe, cache_folder: Path | None = None):
    """
    `pipe` with its UNet run by ONNX Runtime ([`OnnxRuntimeUNet`]); returned for chaining. The pipeline computes
    what it computed (within float error) with the same calls. Meant for inference: `save_pretrained` it before, not
    after. Calling it again changes nothing.
    """
    if not isinstance(pipe.unet, OnnxRuntimeUNet):
        pipe.unet = OnnxRuntimeUNet(pipe.unet, cache_folder)
    return pipe
