"""Commands that train or look after runs: train, sweep, doctor."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import UserError
from .args import check_scale, model_knobs, recipe_overrides


def cmd_train(args: argparse.Namespace) -> int:
    from .. import distributed  # lazy: the command line answers --help without torch
    from ..config import RunConfig, check_processes  # lazy: the command line answers --help without torch
    from ..data import get_dataset  # lazy: the command line answers --help without torch
    from ..training import Diverged, resolve_device, train_run  # lazy: the command line answers --help without torch

    check_scale(args)
    dataset = get_dataset(args.dataset)
    args.data_dir = str(dataset.folder(args.data_dir))
    config = RunConfig.create(args.model, args.ratio, args.dw_size, args.width, args.profile, args.seed,
                              knobs=model_knobs(args), dataset=dataset.name, **recipe_overrides(args))
    device = resolve_device(args.accelerator)
    check_processes(config.recipe, args.devices * args.nodes, args.accumulate, device)  # before any launch
    ranks = distributed.start(args.devices, args.nodes, device)
    ranks.decide(lambda: dataset.prepare(args.data_dir, not args.no_download))  # rank 0 downloads
    # the data is part of the run's identity: one fingerprint for every rank
    config = config.with_data(ranks.decide(lambda: dataset.fingerprint(args.data_dir)))
    out = args.out or f"{args.results_dir}/runs/{config.run_id}"
    try:
        record = train_run(config, args.data_dir, out, devices=args.devices, accelerator=args.accelerator,
                           download=not args.no_download, nodes=args.nodes, logger=args.logger,
                           accumulate=args.accumulate)
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
    """Parse, build the plan once, then print it (--dry-run), submit it (--slurm) or run it."""
    from .. import distributed  # lazy: the command line answers --help without torch
    from ..plan import Plan  # lazy: the command line answers --help without torch
    from ..sweep import parse_shard, run_sweep  # lazy: the command line answers --help without torch

    experiment, dataset, recipe, device, scale = _sweep_setting(args)
    seeds = _seeds(args, experiment, dataset, recipe, device, scale)
    if args.slurm is not None:
        return submit_sweep(args, experiment, seeds)
    # Every rank of a multi-device sweep joins here; from now on rank 0 decides and the others follow.
    ranks = distributed.current() if args.dry_run else distributed.start(scale.devices, scale.nodes, device)
    if not args.dry_run:  # a missing data set is a one-line error before any calibration
        ranks.decide(lambda: dataset.prepare(args.data_dir, not args.no_download))
    plan = Plan.resolve(experiment, profile=args.profile, overrides=recipe_overrides(args), seeds=seeds,
                        shard=parse_shard(args.shard), results=Path(args.results_dir), dataset=dataset,
                        data_dir=args.data_dir, device=device, scale=scale, ranks=ranks,
                        sequential_write=not args.dry_run and ranks.is_zero)
    if not args.no_estimate and ranks.is_zero:
        plan.estimate(args.recalibrate, args.step_time)
    if args.dry_run:
        print(plan.dry_run())
        return 0
    for note in plan.notes if ranks.is_zero else ():
        print(note)
    ranks.decide(lambda: plan.guard(args.max_hours, args.yes))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        outcome = run_sweep(plan.runs, plan.data_dir, plan.results, devices=scale.devices, accelerator=args.accelerator,
                            download=not args.no_download, retry_failed=args.retry_failed, estimates=plan.estimates,
                            nodes=scale.nodes, logger=args.logger, accumulate=scale.accumulate)
    finally:
        distributed.finish()
    if not ranks.is_zero:  # a DDP helper process re-launched by Lightning
        return 0
    return _report_outcome(args, outcome, plan.results)


def _sweep_setting(args: argparse.Namespace):  # noqa: ANN202 - (Experiment, DataSet, Recipe, str, Scale)
    """What the sweep's options resolve to before any process starts; a bad one is a one-line error."""
    from ..config import check_processes, load_profile, make_recipe  # lazy: the command line answers --help without torch
    from ..data import get_dataset  # lazy: the command line answers --help without torch
    from ..plan import Scale  # lazy: the command line answers --help without torch
    from ..sweep import load_experiment, parse_shard  # lazy: the command line answers --help without torch
    from ..training import resolve_device  # lazy: the command line answers --help without torch

    check_scale(args)
    if knobs := model_knobs(args):
        raise UserError(f"sweep --set {next(iter(knobs))}=...: a model's knobs are declared per run in the experiment "
                        f"file; the sweep's --set takes recipe.KEY=VALUE")
    if Path(args.results_dir).exists() and not Path(args.results_dir).is_dir():
        raise UserError(f"--results-dir {args.results_dir}: not a folder (runs go into its runs/ folder)")
    experiment = load_experiment(args.experiment)
    dataset = get_dataset(experiment.dataset)
    args.data_dir = str(dataset.folder(args.data_dir))  # default: the data set's declared folder
    parse_shard(args.shard)
    if args.step_time is not None and (args.step_time <= 0 or not args.dry_run):
        raise UserError(f"--step-time prices a --dry-run and must be > 0 seconds, got {args.step_time}")
    recipe = make_recipe(load_profile(args.profile or experiment.profile), **recipe_overrides(args))
    scale = Scale(args.devices, args.nodes, args.accumulate)
    # a submission runs on the cluster's nodes: this machine (a login node) needs no GPU of its own
    device = ("cuda" if args.accelerator != "cpu" else "cpu") if args.slurm is not None else resolve_device(args.accelerator)
    check_processes(recipe, scale.world, scale.accumulate, device)
    return experiment, dataset, recipe, device, scale


def _seeds(args: argparse.Namespace, experiment, dataset, recipe, device: str, scale) -> list[int]:  # noqa: ANN001
    """The seeds to run: as given, or (`auto`) as many as the pilot's spread says each comparison
    needs; a --dry-run prints the seed plan's table and what a seed costs here."""
    from .. import distributed  # lazy: the command line answers --help without torch
    from ..plan import Plan, SeedRequest, seed_cost, seed_plan, seed_table  # lazy: as above
    from ..sweep import parse_seeds  # lazy: the command line answers --help without torch
    from ..training import is_rank_zero  # lazy: the command line answers --help without torch

    if args.seeds != "auto":
        return parse_seeds(args.seeds)
    request = SeedRequest(args.pilot, args.detect, args.max_seeds, args.max_hours, tuple(args.priced_from))
    profile = args.profile or experiment.profile
    if not args.dry_run:
        plan = seed_plan(experiment, recipe, profile, request)
        print(plan.summary())
        if is_rank_zero():
            from ..seeds import write_plan  # lazy: the command line answers --help without torch

            write_plan(plan, Path(args.results_dir), args.pilot)
        return plan.seeds()
    one_seed = Plan.resolve(experiment, profile=args.profile, overrides=recipe_overrides(args), seeds=[0],
                            shard=(0, 1), results=Path(args.results_dir), dataset=dataset, data_dir=args.data_dir,
                            device=device, scale=scale, ranks=distributed.current(), sequential_write=False)
    seed_plan(experiment, recipe, profile, request)  # a pilot that cannot plan fails before any calibration
    hours, priced = seed_cost(one_seed, request)
    plan = seed_plan(experiment, recipe, profile, request, hours)
    print(seed_table(plan))
    print(plan.summary())
    print(f"{priced}; {plan.n} seeds = {plan.n * hours:.1f} h; the uncapped plan needs {plan.wanted} seeds = "
          f"{plan.wanted * hours:.0f} h")
    return plan.seeds()


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


def submit_sweep(args: argparse.Namespace, experiment, seeds: list[int]) -> int:  # noqa: ANN001 - sweep.Experiment
    """`sweep --slurm`: check the plan here, then submit it as a job array and return."""
    from ..slurm import parse_params, submit, sweep_argv  # lazy: the command line answers --help without torch
    from ..sweep import plan_runs  # lazy: the command line answers --help without torch

    if args.shard != "0/1" or args.dry_run:
        raise UserError("--slurm submits every shard itself (see --shards) and trains; drop --shard and --dry-run")
    params, overrides = parse_params(args.slurm), recipe_overrides(args)
    runs = plan_runs(experiment, seeds, args.profile, overrides)  # bad overrides fail here, not in a job
    folder = Path(args.results_dir) / "slurm"
    jobs = submit(sweep_argv(args, seeds), args.entry, args.shards, params, folder, args.nodes, args.devices,
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
    from ..training import train_run  # lazy: the command line answers --help without torch

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
        probe = train_run(config, args.data_dir, Path(tmp) / config.run_id, accelerator=device, download=False,
                          progress=False)
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
    from ..sweep import write_summary  # lazy: the command line answers --help without torch

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
