"""`deltadiff ablate`: the sampling schedule swept on one model (the paper's Table II), as a markdown table."""

from pathlib import Path

from ..atomic_files import write_file_atomic
from ..console import CLIError, check_steps, load_pipeline, resolve_device, warn_dtype
from .options import add_eval_data_options, add_model_options, eta_list, load_eval_pairs, path_text, step_list


def add_parser(sub):
    ab = sub.add_parser("ablate", help="sweep the sampling schedule (Table II)")
    add_eval_data_options(ab)
    ab.add_argument("--model", default=None, type=path_text)
    ab.add_argument("--eta-start", type=eta_list, default=[0.01], help="eta_1 values in (0, 1], comma-separated")
    ab.add_argument("--eta-end", type=eta_list, default=[0.99], help="eta_T values in (0, 1], comma-separated")
    ab.add_argument(
        "--steps", type=step_list, default=None, help="step counts, comma-separated (default: the model's own count)"
    )
    ab.add_argument("--output", default=None, type=path_text, help="markdown file for the table")
    add_model_options(ab)
    ab.set_defaults(func=cmd_ablate)
    ab.set_defaults(flag_problem=flag_problem)


def flag_problem(args) -> str | None:
    """Checks that involve several flags, before anything is read, made or loaded; the problem, if any."""
    for eta_start in args.eta_start:
        for eta_end in args.eta_end:
            if eta_start > eta_end:
                return (
                    f"--eta-start {eta_start:g} is larger than --eta-end {eta_end:g} (every combination is run, "
                    "and each needs eta_1 <= eta_T)"
                )
    return None


def cmd_ablate(args) -> int:
    from ..evaluation import ablate

    pairs, errors = load_eval_pairs(args)
    check_table_output(args.output)  # before the sweep, not after it
    device = resolve_device(args.device)
    warn_dtype(device, args.dtype)
    pipe = load_pipeline(args.model, device, args.dtype, scale=args.scale)
    steps = args.steps or [pipe.scheduler.default_steps]
    check_steps(pipe, steps, args.model or "the default model")
    kwargs = {"tile_size": args.tile_size}
    table = ablate(pairs, pipe, args.eta_start, args.eta_end, steps, scale=args.scale, pipeline_kwargs=kwargs)
    header = f"Schedule ablation on {Path(args.hr).name} (x{args.scale}, sampling only, model not retrained)\n\n"
    if args.output:
        try:
            write_file_atomic(Path(args.output), (header + table).encode(), replace=True)
        except OSError as err:
            raise CLIError(f"{args.output}: cannot write the table ({err.strerror})") from err
    print(header + table)
    return 1 if errors else 0


def check_table_output(output: str | None):
    """`--output` names a file that can be written in an existing folder (the table comes at the end of the sweep)."""
    if not output:
        return
    path = Path(output)
    if path.is_dir():
        raise CLIError(f"--output {output}: a folder: name the markdown file to write")
    if not path.parent.is_dir():
        raise CLIError(f"--output {output}: {path.parent} is not a folder")
