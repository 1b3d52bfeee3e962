"""`deltadiff evaluate`: PSNR / SSIM / LPIPS of models and bicubic with the paper's protocol."""

import os
from pathlib import Path

from ..arguments import int_at_least
from ..console import CLIError, check_steps, load_pipeline, resolve_device, warn_dtype
from .options import add_eval_data_options, add_model_options, load_eval_pairs, path_text, seed_list
from .paths import check_output_folder


def add_parser(sub):
    ev = sub.add_parser("evaluate", help="PSNR / SSIM / LPIPS with the paper's protocol")
    add_eval_data_options(ev)
    ev.add_argument("--model", action="append", help="pipeline folder, or label=folder; repeat to compare")
    ev.add_argument("--baseline", default="bicubic", choices=["bicubic", "none"])
    ev.add_argument("--seeds", type=seed_list, default=[0], help="inference seeds for stochastic models, e.g. 0,1,2")
    ev.add_argument("--steps", type=int_at_least(1), default=None)
    ev.add_argument("--no-lpips", dest="lpips", action="store_false", help="skip LPIPS")
    ev.add_argument("--grid-images", type=int_at_least(0), default=4)
    ev.add_argument(
        "--output", default="deltadiff-eval", type=path_text, help="folder for per_image.csv, summary.md, grid.png"
    )
    add_model_options(ev)
    ev.set_defaults(func=cmd_evaluate)


def parse_models(specs: list[str] | None) -> list[tuple[str, str | None]]:
    """`--model label=path` or `--model path` (label: the folder name); none = the shipped default model."""
    if not specs:
        return [("DeltaDiff (default)", None)]
    models = []
    for spec in specs:
        label, _, path = spec.partition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
        if not path:
            raise CLIError(f"--model {spec!r}: no model folder given (--model FOLDER or LABEL=FOLDER)")
        label = label or Path(path).name or path
        if "|" in label or not label.isprintable():
            raise CLIError(
                f"--model {spec!r}: its label {label!r} holds '|' or a control character, which would break the "
                "results table: name it with --model LABEL=FOLDER"
            )
        models.append((label, path))
    return models


def check_labels(models: list[tuple[str, str | None]], baseline: bool):
    """
    Every method's label names one method: two models under one label (`runA/best` and `runB/best` are both `best`)
    would be scored as one, or one dropped; a model labelled `bicubic` would be averaged into the baseline's row.
    """
    seen = {"bicubic": "the bicubic baseline"} if baseline else {}
    for label, path in models:
        if label in seen:
            raise CLIError(
                f"--model {path}: its label {label!r} is also {seen[label]}'s: name them apart with "
                f"--model LABEL={path}"
            )
        seen[label] = path


def cmd_evaluate(args) -> int:
    from ..evaluation import RESULT_FILES, LPIPSMetric, evaluate

    models = parse_models(args.model)
    check_labels(models, args.baseline == "bicubic")
    pairs, errors = load_eval_pairs(args)
    check_output_folder(Path(args.output))  # before the models run, not after
    for name in RESULT_FILES:
        if os.path.isdir(Path(args.output, name)):
            raise CLIError(
                f"{Path(args.output, name)}: a folder where the results file goes: move it, or choose another --output"
            )
    device = resolve_device(args.device)
    warn_dtype(device, args.dtype)
    pipelines = {}
    for label, path in models:
        pipelines[label] = load_pipeline(path, device, args.dtype, scale=args.scale)
        check_steps(pipelines[label], [args.steps], path or "the default model")
    lpips_metric = LPIPSMetric() if args.lpips else None
    result = evaluate(
        pairs,
        pipelines,
        scale=args.scale,
        baseline=args.baseline == "bicubic",
        seeds=tuple(args.seeds),
        lpips_metric=lpips_metric,
        grid_images=args.grid_images,
        pipeline_kwargs={"num_inference_steps": args.steps, "tile_size": args.tile_size},
    )
    crop = f", centre {args.crop}x{args.crop}" if args.crop else ""
    title = (
        f"{Path(args.hr).resolve().name}{crop}, x{args.scale}, {lr_source(args)}, Y channel, crop border {args.scale}"
    )
    if lpips_metric is None:
        result.lpips_reason = "disabled (--no-lpips)"
    try:
        result.write(args.output, title)
    except OSError as err:
        raise CLIError(f"{args.output}: cannot write the results ({err.strerror})") from err
    print(result.markdown(title))
    print(f"per-image CSV, summary and grid in {args.output}")
    return 1 if errors else 0


def lr_source(args) -> str:
    """Where the LR images came from, for the results' title: the `--lr` folder, or the degradation that made them."""
    if args.lr:
        return f"LR images from {args.lr}"
    return f"{args.degradation} LR" + (f" (seed {args.seed})" if args.degradation != "bicubic" else "")
