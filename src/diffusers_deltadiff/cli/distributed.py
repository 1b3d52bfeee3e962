"""`upscale` on every process of an `accelerate launch` / `torchrun` group: the main process plans, each process
upscales its share on its own device, the main process reports.
"""

import datetime

import torch

from ..console import CLIError, error, one_line, resolve_device
from .paths import remove_empty
from .upscaling import UpscalePlan, UpscaleReport, launched_processes, plan_upscale, upscale_jobs, upscale_summary


# `--process-timeout`'s largest value, in minutes (about two years): c10d counts its deadlines in int64 nanoseconds,
# and from about 1.5e8 minutes on a group hangs or fails at once; `timedelta` itself overflows beyond 1.4e12
MAX_PROCESS_TIMEOUT = 1e6


def process_state(args):
    """
    Accelerate's `PartialState` of this process. Where accelerate finds no accelerator backend (a CPU-only machine,
    or `--device cpu`), the processes form a gloo group on the CPU.
    """
    try:
        from accelerate import PartialState
    except ImportError as err:
        raise CLIError("upscaling on several processes needs accelerate: pip install accelerate") from err
    # the group's collectives (the plan's broadcast, the reports' gather) wait for the slowest process: NCCL's
    # default of 10 minutes would abort a process with no work, or one done early, during a long run
    timeout = datetime.timedelta(minutes=args.process_timeout)
    try:
        state = PartialState(cpu=args.device == "cpu", timeout=timeout)
        if state.num_processes == 1:  # `torchrun` on a machine without GPU: accelerate wants `cpu=True` for gloo
            PartialState._reset_state()
            state = PartialState(cpu=True, timeout=timeout)
    except (ValueError, RuntimeError) as err:  # WORLD_SIZE set by hand: no MASTER_ADDR, or the others never came
        raise CLIError(
            f"WORLD_SIZE is {launched_processes()} but this process cannot join the group of its processes (start "
            f"them with torchrun or accelerate launch): {one_line(err)}"
        ) from err
    if state.num_processes != launched_processes():
        raise CLIError(f"WORLD_SIZE is {launched_processes()} but accelerate set up {state.num_processes} process(es)")
    return state


def process_device(args, state) -> str:
    """
    This process's device: accelerate's (`cuda:LOCAL_RANK` on GPUs) unless `--device` names another kind. Where the
    group runs on the CPU (gloo) but the machine has an accelerator accelerate cannot group (Apple's MPS), `auto`
    still upscales on it: the group only carries the plan and the reports.
    """
    if args.device == "auto" and state.device.type == "cpu":
        return resolve_device("auto")
    if args.device in ("auto", state.device.type):
        return str(state.device)
    return resolve_device(args.device)


def share_of_jobs(state, jobs: list) -> list:
    """This process's part of `jobs`: consecutive runs of nearly equal length, in process order; every job once."""
    with state.split_between_processes(jobs) as share:
        return list(share)


def cmd_upscale_distributed(args) -> int:
    """
    `upscale` on every process of an `accelerate launch` / `torchrun` group. The main process plans (errors about
    inputs are printed once) and sends the plan to all; each upscales its share on its own device, printing its
    errors; the main process prints one summary. The exit code, the same on every process, is non-zero if any
    process had an error. Existing outputs are skipped unless `--overwrite`, so a relaunch resumes.
    """
    from accelerate.utils import broadcast_object_list, gather_object

    args.skip_existing = not args.overwrite
    state = process_state(args)
    main = state.is_main_process
    plan = None
    if main:
        try:
            plan = plan_upscale(args)
        except CLIError as err:
            error(str(err))
            plan = (str(err), err.code)
    plan = broadcast_object_list([plan])[0]
    if not isinstance(plan, UpscalePlan):
        return plan[1]
    report = UpscaleReport(skipped=plan.skipped, failed=plan.failures) if main else UpscaleReport()
    jobs = share_of_jobs(state, plan.jobs)
    if jobs:
        try:
            device = process_device(args, state)
            upscale_jobs(args, plan, jobs, device, report, main=main, tag=f"[process {state.process_index}] ")
        except CLIError as err:  # the model or the output folder, before the first job: none of them was done
            report.fatal = (str(err), err.code)
            report.failed += len(jobs)
    try:
        reports = gather_object([report])
    except RuntimeError as err:  # gloo's or NCCL's timeout: a process still at work after --process-timeout
        raise CLIError(
            f"[process {state.process_index}] the other processes did not finish within --process-timeout "
            f"{args.process_timeout:g} minute(s): {one_line(err)}"
        ) from err
    if main:
        finish_distributed(plan, reports)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return max(r.code() for r in reports)


def finish_distributed(plan: UpscalePlan, reports: list[UpscaleReport]):
    """On the main process, once all are done: the errors that stopped a process, empty folders removed, summary."""
    for message in dict.fromkeys(r.fatal[0] for r in reports if r.fatal):
        error(message)
    created = {path for r in reports for path in r.created}
    remove_empty(sorted(created, key=lambda path: len(path.parts)))
    written, skipped, failed = (sum(getattr(r, key) for r in reports) for key in ("written", "skipped", "failed"))
    print(upscale_summary(plan.output, written, skipped, failed, [r.written for r in reports]), flush=True)
