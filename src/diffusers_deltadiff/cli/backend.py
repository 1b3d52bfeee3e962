"""`upscale --backend`: which engine runs the UNet (torch, or ONNX Runtime on the CPU), chosen before the model loads."""

import json
from pathlib import Path

from ..console import DTYPES, CLIError, check_factor, check_step_counts, one_line, warning
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


def graph_config(folder: Path) -> tuple[int, int, int] | None:
    """`(factor, most steps, auto_tile_threshold)` of a pipeline folder from its JSON files, or `None` where the
    graph cannot stand in for its pipeline (a stochastic chain, a value missing): the pipeline then runs alone."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
        scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        values = int(index["upscale_factor"]), int(scheduler["num_train_timesteps"]), int(index["auto_tile_threshold"])
        deterministic = float(scheduler.get("kappa", 0.0)) == 0.0
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return values if deterministic else None


def graph_upscaler(args, model: str, scale: int | None, load_pipeline):
    """
    For `--backend onnxruntime` (or `auto` choosing it): a [`~onnx_upscaler.GraphUpscaler`] running the model's
    exported graph, cached under a hash of the model folder's files; the first run loads the pipeline
    (`load_pipeline()`) and exports the graph into the cache. Where it cannot (a Hub id, a stochastic model, an
    export or a session failing, a cache that cannot be written), the pipeline with its UNet on ONNX Runtime, as
    [`apply_backend`] makes it.
    """
    from ..onnx_backend import mark_used
    from ..onnx_upscaler import GraphConfig, GraphUpscaler, graph_cache_path

    requested = getattr(args, "backend", "auto")
    folder = Path(model)
    config = graph_config(folder) if folder.is_dir() else None
    if config is None:
        return apply_backend(load_pipeline(), "onnxruntime", requested)
    factor, most, threshold = config
    check_factor(model, factor, scale)
    check_step_counts(most, [args.steps], args.model or f"the default x{factor} model")
    try:
        path, pipe = graph_cache_path(folder, args.steps), None
    except OSError:  # a file of the model unreadable: the pipeline says so
        return apply_backend(load_pipeline(), "onnxruntime", requested)
    opened = open_graph(path, factor)  # `None`: not cached, or damaged (exported again below)
    if opened is not None:
        mark_used(path)
    else:
        pipe = load_pipeline()
        try:
            export_graph(pipe, path, args.steps)
        except Exception:  # noqa: BLE001 - no graph: the pipeline runs every image
            return apply_backend(pipe, "onnxruntime", requested)
        opened = open_graph(path, factor)
        if opened is None:
            return apply_backend(pipe, "onnxruntime", requested)
    session, steps = opened
    graph = GraphConfig(factor, steps, threshold)

    def pipeline():
        return apply_backend(pipe or load_pipeline(), "onnxruntime", requested)

    return GraphUpscaler(session, graph, pipeline)


def open_graph(path: Path, factor: int):
    """
    `(session, steps)` of the cached graph `path` (an ONNX Runtime session and the steps it runs), or `None` where it
    cannot stand in for the model of factor `factor`: no such file, a file cut short or damaged, or another file under
    its name (its metadata not that of a graph of this factor).
    """
    from .. import onnx_backend

    try:
        session = onnx_backend.cpu_session(str(path)) if path.is_file() else None
        metadata = session.get_modelmeta().custom_metadata_map if session is not None else {}
    except Exception:  # noqa: BLE001 - ONNX Runtime's errors for a file it cannot read
        return None
    steps = metadata.get("num_inference_steps", "")
    if metadata.get("upscale_factor") != str(factor) or not (steps.isdigit() and int(steps) > 0):
        return None
    return session, int(steps)


def export_graph(pipe, path: Path, steps: int | None):
    """The pipeline's graph exported into the cache file `path` (whole or not at all); the folder's leftovers of
    killed exports and the exports beyond the cache's bound ([`~onnx_backend.prune_cache`]) removed."""
    from ..atomic_files import remove_stale_temporaries
    from ..onnx_backend import prune_cache
    from ..onnx_export import export_onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries([path.parent], busy=True)
    export_onnx(pipe, path, steps)
    prune_cache(path.parent)
