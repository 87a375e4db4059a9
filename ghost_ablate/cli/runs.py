"""Commands that train or look after runs: train, sweep, doctor."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import UserError
from .args import check_scale, model_knobs, recipe_overrides, sweep_request


def cmd_train(args: argparse.Namespace) -> int:
    from .. import distributed  # lazy: the command line answers --help without torch
    from ..config import RunConfig, check_processes  # lazy: the command line answers --help without torch
    from ..data import get_dataset  # lazy: the command line answers --help without torch
    from ..plan import run_cost_line  # lazy: the command line answers --help without torch
    from ..training import Diverged, RunContext, resolve_device, train_run  # lazy: the command line answers --help without torch

    check_scale(args)
    dataset = get_dataset(args.dataset)
    config = RunConfig.create(args.model, args.ratio, args.dw_size, args.width, args.profile, args.seed,
                              knobs=model_knobs(args), dataset=dataset.name, **recipe_overrides(args))
    where = RunContext(dataset, str(dataset.folder(args.data_dir)), resolve_device(args.accelerator), args.devices,
                       args.nodes, args.accumulate, not args.no_download, args.logger)
    check_processes(config.recipe, where.world, where.accumulate, where.device)  # before any launch
    ranks = distributed.start(where.devices, where.nodes, where.device)
    ranks.decide(lambda: dataset.prepare(where.data_dir, where.download))  # rank 0 downloads
    # the data is part of the run's identity: one fingerprint for every rank
    config = config.with_data(ranks.decide(lambda: dataset.fingerprint(where.data_dir)))
    out = args.out or f"{args.results_dir}/runs/{config.run_id}"
    if ranks.is_zero and (cost := run_cost_line(config, where, Path(out))):  # a run of hours says so first
        print(cost, flush=True)
    try:
        record = train_run(config, where, out)
    except Diverged as err:
        print(f"ghost-ablate train: diverged: {err}; record kept in {out}", file=sys.stderr)
        return 1
    finally:
        distributed.finish()
    acc = record.get("final_test_acc")
    if not ranks.is_zero:
        return 0 if record["status"] == "finished" else 1
    print(f"{config.run_id}: {record['status']}, {record['epochs_done']} epochs, "
          f"final test acc {acc if acc is None else f'{100 * acc:.2f}%'} -> {out}")
    return 0 if record["status"] == "finished" else 1


# ---- sweep -------------------------------------------------------------------------

def cmd_sweep(args: argparse.Namespace) -> int:
    """Read the flags once, resolve the plan once, then print it (--dry-run), submit it (--slurm)
    or train it."""
    from .. import distributed  # lazy: the command line answers --help without torch
    from ..plan import Plan, Setting  # lazy: the command line answers --help without torch
    from ..sweep import run_sweep  # lazy: the command line answers --help without torch

    request = sweep_request(args)
    setting = Setting.of(request)  # the experiment, its data set, the recipe and the device: no process yet
    if request.cluster:
        return submit_sweep(args, setting)
    # Every rank of a multi-device sweep joins here; from now on rank 0 decides and the others follow.
    scale = request.scale
    ranks = distributed.current() if request.dry_run else distributed.start(scale.devices, scale.nodes, setting.device)
    plan = Plan.resolve(setting, ranks)
    if request.estimate and ranks.is_zero:
        plan.estimate()
    if request.dry_run:
        print(plan.dry_run())
        return 0
    for note in plan.notes if ranks.is_zero else ():
        print(note)
    ranks.decide(plan.guard)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        outcome = run_sweep(plan.runs, plan.context(args.logger), plan.results, retry_failed=args.retry_failed,
                            estimates=plan.estimates)
    finally:
        distributed.finish()
    if not ranks.is_zero:  # a DDP helper process re-launched by Lightning
        return 0
    return _report_outcome(args, outcome, plan.results)


def _report_outcome(args: argparse.Namespace, outcome, results: Path) -> int:  # noqa: ANN001 - sweep.SweepOutcome
    """The sweep's last lines, and its exit status: a lost run (1) is told from a diverged one that
    is recorded (EXIT_DIVERGED), as sacct shows it."""
    from ..preemption import EXIT_DIVERGED  # lazy: the command line answers --help without torch

    print(f"sweep {args.experiment} shard {args.shard}: {len(outcome.done)} done, {len(outcome.skipped)} skipped "
          f"(already done), {len(outcome.failed)} failed, "
          f"{f'{len(outcome.diverged)} diverged (recorded), ' if outcome.diverged else ''}"
          f"{len(outcome.busy)} held by another process"
          f"{f', {len(outcome.waiting)} waiting for their source run' if outcome.waiting else ''}; "
          f"summary in {results / 'summary.csv'}")
    for run_id in outcome.failed:
        print(f"  failed: {run_id} (see {results / 'runs' / run_id / 'result.json'})")
    for run_id in outcome.diverged:
        print(f"  diverged: {run_id} (recorded; --retry-failed trains it again)")
    return 1 if outcome.failed else EXIT_DIVERGED if outcome.diverged else 0


def submit_sweep(args: argparse.Namespace, setting) -> int:  # noqa: ANN001 - plan.Setting
    """`sweep --slurm`: check the plan here, then submit it as a job array and return."""
    from .. import distributed  # lazy: the command line answers --help without torch
    from ..plan import choose_seeds  # lazy: the command line answers --help without torch
    from ..slurm import parse_params, submit, sweep_argv  # lazy: the command line answers --help without torch

    seeds, said = choose_seeds(setting, distributed.current())
    for line in said:
        print(line)
    params = parse_params(args.slurm)
    runs = setting.runs(seeds)  # bad overrides fail here, not in a job
    folder = setting.request.results / "slurm"
    tasks = argparse.Namespace(**{**vars(args), "data_dir": setting.data_dir})  # each task reads the same folder
    jobs = submit(sweep_argv(tasks, seeds), args.entry, args.shards, params, folder, args.nodes, args.devices,
                  gpus=args.accelerator != "cpu")
    how = (f"as {len(jobs)} array tasks" if len(jobs) > 1 else "as one job (one shard: submitit makes no array of "
           "one task)")
    print(f"submitted {len(runs)} runs {how}: job {jobs[0].job_id.split('_')[0]}; logs in "
          f"{folder}/<job id>/; run the same command again to resume after a cancel (finished runs are skipped)")
    return 0


def cmd_stack_probe(args: argparse.Namespace) -> int:
    """Retrain a recorded run here and join the two machines' stacks into one comparison group where
    the outcomes match bit for bit (`stacks.py`)."""
    import dataclasses
    import tempfile

    from ..config import RunConfig  # lazy: the command line answers --help without torch
    from ..record_schema import read_record  # lazy: the command line answers --help without torch
    from ..records import stack_label  # lazy: the command line answers --help without torch
    from ..stacks import STACK_GROUPS, first_difference, record_equivalence  # lazy: as above
    from ..training import RunContext, train_run  # lazy: the command line answers --help without torch

    run = Path(args.run)
    reference = read_record(run)
    if reference is None or reference.get("status") != "finished":
        raise UserError(f"{run}: no finished run here; the probe retrains a finished run that a record holds")
    config = RunConfig.from_dict(reference["config"])
    resolved = (reference.get("precision") or {}).get("resolved")
    if resolved and config.recipe.precision == "auto":  # train in what the reference resolved to, not this CPU's pick
        config = dataclasses.replace(config, recipe=dataclasses.replace(config.recipe, precision=resolved))
    device = "cuda" if str(reference.get("device", "")).startswith("cuda") else "cpu"
    with tempfile.TemporaryDirectory(prefix="stack-probe-") as tmp:
        where = RunContext.resolve(args.data_dir, dataset=config.dataset, accelerator=device, download=False)
        probe = train_run(config, where, Path(tmp) / config.run_id, progress=False)
    here, there = stack_label(probe), stack_label(reference)
    difference = first_difference(reference, probe)
    if difference is not None:
        print(f"not the same runs: {difference}; {here} and {there} stay separate comparison groups")
        return 1
    if here == there:
        print(f"the same outcome on the same stack ({here}): nothing to join")
        return 0
    path = record_equivalence(reference, probe, Path(args.groups) if args.groups else STACK_GROUPS)
    print(f"the same outcome, bit for bit, over {len(probe.get('history') or [])} epochs: {here} and {there} now "
          f"pair as one comparison group ({path})")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..doctor import assign_data, examine, fix, retrain  # lazy: the command line answers --help without torch
    from ..record_schema import write_summary  # lazy: the command line answers --help without torch

    results = Path(args.results or args.results_dir)
    if not (results / "runs").is_dir():
        raise UserError(f"{results}: no runs/ folder here; name a results folder (the sweep's --results-dir)")
    if args.assign_data:
        changes = assign_data(results, Path(args.assign_data))
        for old, new, what in changes:
            print(f"{old}: {what}" + (f" -> {new}" if new else ""))
        renamed = sum(new is not None for _, new, _ in changes)
        if renamed:
            write_summary(results)
        print(f"{renamed} run(s) now name the data set in {args.assign_data}")
        return 0
    if args.retrain:
        outcome = retrain(results, args.retrain)
        for run_id, moved, what in outcome:
            print(f"{run_id}: {what}" + "".join(f"\n  {p.name}" for p in moved))
        write_summary(results)
        return 0 if all(moved for _, moved, _ in outcome) else 1
    findings = examine(results)
    for f in findings:
        print(f"{f.kind:10s} {f.path}: {f.reason}")
    moved, busy = fix(findings) if args.fix else ([], [])
    for f, new in moved:
        print(f"moved      {f.path} -> {new.name}")
    for f in busy:
        print(f"in use     {f.path}: a live process holds this run; left as it is")
    left = [f for f in findings if f.movable] if not args.fix else busy
    print(f"{len(findings)} finding(s) in {results}" + (f", {len(moved)} file(s) moved aside" if args.fix else "")
          + ("; run with --fix to move the damaged, unsafe and orphaned files aside" if left and not args.fix
             else ""))
    return 1 if left else 0
