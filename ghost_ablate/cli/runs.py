"""Commands that train or look after runs: train, sweep, doctor."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ..errors import UserError
from ..records import write_atomic
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

YES_ENV = "GHOST_ABLATE_YES"


def seed_plan(args: argparse.Namespace, experiment, hours_per_seed: float | None = None):  # noqa: ANN001, ANN201
    """The `seeds.SeedPlan` for `experiment` from the records in `--pilot` that share the plan's
    profile and epochs."""
    from ..config import load_profile, make_recipe  # lazy: the command line answers --help without torch
    from ..report.tables import aggregate, load_runs  # lazy: the command line answers --help without torch
    from ..seeds import plan_seeds  # lazy: the command line answers --help without torch

    if not args.pilot:
        raise UserError("--seeds auto needs --pilot DIR: the results folder whose seeds give the paired spread "
                        "(e.g. results/pilot from `make pilot`)")
    profile = args.profile or experiment.profile
    recipe = make_recipe(load_profile(profile), **recipe_overrides(args))
    runs = load_runs(args.pilot, Path(profile).stem, mixed_epochs=True)
    runs = runs[runs["epochs"] == recipe.epochs]
    if runs.empty:
        raise UserError(f"{args.pilot} holds no {Path(profile).stem} runs of {recipe.epochs} epochs: the pilot must "
                        f"train the recipe it plans for")
    return plan_seeds(experiment.tables, aggregate(runs), args.detect, args.max_seeds,
                      hours_per_seed=hours_per_seed, max_hours=getattr(args, "max_hours", None))


def cmd_plan_seeds(args: argparse.Namespace) -> int:
    import pandas as pd  # lazy: the command line answers --help without torch

    from ..data import get_dataset  # lazy: the command line answers --help without torch
    from ..estimate import RunEstimate, plan_hours, recorded_epoch_seconds  # lazy: the command line answers --help without torch
    from ..machine import describe_device  # lazy: the command line answers --help without torch
    from ..record_schema import read_records  # lazy: the command line answers --help without torch
    from ..sweep import estimate_runs, load_experiment, plan_runs  # lazy: the command line answers --help without torch
    from ..training import resolve_device  # lazy: the command line answers --help without torch

    experiment = load_experiment(args.experiment)
    dataset = get_dataset(experiment.dataset)
    args.data_dir = str(dataset.folder(args.data_dir))
    sizes = dataset.split_sizes(args.data_dir)
    one_seed = plan_runs(experiment, [0], args.profile, recipe_overrides(args),
                         data=dataset.fingerprint(args.data_dir) if sizes else None)
    device = resolve_device("auto")
    records = [r for folder in (args.priced_from or ([args.pilot] if args.pilot else []))
               for r in read_records(Path(folder) / "runs")]
    recorded = recorded_epoch_seconds(one_seed, records, describe_device(device))
    # the rest priced as if none of them had run: a folder that holds no runs
    calibrated = estimate_runs([rc for rc in one_seed if rc.run_id not in recorded], Path("/nonexistent/runs"),
                               device, sizes or (dataset.train_size, dataset.test_size))
    hours = plan_hours(calibrated + [RunEstimate(rc.run_id, recorded[rc.run_id], rc.recipe.epochs)
                                     for rc in one_seed if rc.run_id in recorded])
    plan = seed_plan(args, experiment, hours)
    table = pd.DataFrame([{"table": c.table, "row": c.row, "vs": c.reference, "pilot pairs": c.pilot_pairs,
                           "sd of diffs": round(c.std_diff, 2), "spread from": c.spread_from,
                           "alpha": round(c.alpha, 4), f"n for {plan.detect:g} pts": c.needed or f"> {10_000}"}
                          for c in plan.comparisons])
    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(table.to_string(index=False))
    print(plan.summary())
    print(f"priced: {len(recorded)} of {len(one_seed)} runs from the median wall time per epoch of finished runs "
          f"of their configuration on this device, {len(calibrated)} calibrated")
    print(f"cost: {len(one_seed)} runs per seed, {hours:.2f} h per seed on {describe_device(device)}; "
          f"{plan.n} seeds = {plan.n * hours:.1f} h; the uncapped plan needs {plan.wanted} seeds = "
          f"{plan.wanted * hours:.0f} h")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .. import distributed  # lazy: the command line answers --help without torch
    from ..config import check_processes, load_profile, make_recipe  # lazy: the command line answers --help without torch
    from ..data import get_dataset  # lazy: the command line answers --help without torch
    from ..estimate import format_hours, plan_hours  # lazy: the command line answers --help without torch
    from ..sweep import (  # lazy: the command line answers --help without torch
        dry_run_table,
        estimate_runs,
        load_experiment,
        parse_seeds,
        parse_shard,
        plan_runs,
        run_sweep,
        table_hours,
    )
    from ..training import is_rank_zero, resolve_device  # lazy: the command line answers --help without torch

    check_scale(args)
    if Path(args.results_dir).exists() and not Path(args.results_dir).is_dir():
        raise UserError(f"--results-dir {args.results_dir}: not a folder (runs go into its runs/ folder)")
    experiment = load_experiment(args.experiment)
    dataset = get_dataset(experiment.dataset)
    args.data_dir = str(dataset.folder(args.data_dir))  # default: the data set's declared folder
    shard = parse_shard(args.shard)
    if args.seeds == "auto":
        plan = seed_plan(args, experiment)
        print(plan.summary())
        seeds = plan.seeds()
        if not args.dry_run and is_rank_zero():
            from ..seeds import write_plan  # lazy: the command line answers --help without torch

            write_plan(plan, Path(args.results_dir), args.pilot)
    else:
        seeds = parse_seeds(args.seeds)
    if args.step_time is not None and (args.step_time <= 0 or not args.dry_run):
        raise UserError(f"--step-time prices a --dry-run and must be > 0 seconds, got {args.step_time}")
    world = args.devices * args.nodes
    # a submission runs on the cluster's nodes: this machine (a login node) needs no GPU of its own
    device = ("cuda" if args.accelerator != "cpu" else "cpu") if args.slurm is not None else resolve_device(args.accelerator)
    check_processes(make_recipe(load_profile(args.profile or experiment.profile), **recipe_overrides(args)),
                    world, args.accumulate, device)
    if args.slurm is not None:
        return submit_sweep(args, experiment, seeds)
    # Every rank of a multi-device sweep joins here; from now on rank 0 decides and the others follow.
    ranks = distributed.current() if args.dry_run else distributed.start(args.devices, args.nodes, device)
    if not args.dry_run:  # a missing data set is a one-line error before any calibration
        ranks.decide(lambda: dataset.prepare(args.data_dir, not args.no_download))
    sizes = dataset.split_sizes(args.data_dir)
    # runs are identified by the data they train on
    data = ranks.decide(lambda: dataset.fingerprint(args.data_dir) if sizes else None)
    runs = plan_runs(experiment, seeds, args.profile, recipe_overrides(args), shard, data)
    results = Path(args.results_dir)
    if experiment.sequential:
        runs = sequential_block(experiment, runs, results, data, write=not args.dry_run and ranks.is_zero)
    estimate = not args.no_estimate and ranks.is_zero
    full = (dataset.train_size, dataset.test_size)
    estimates = (estimate_runs(runs, results / "runs", device, sizes or full, recalibrate=args.recalibrate,
                               world=world, step_time=args.step_time, accumulate=args.accumulate)
                 if estimate else None)
    if args.dry_run:
        import pandas as pd  # lazy: the command line answers --help without torch

        table = dry_run_table(runs, results / "runs", estimates)
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        counts = table["status"].value_counts().to_dict() if len(table) else {}
        print(f"{len(runs)} runs (shard {args.shard}): " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        if data is None:
            print(f"note: no data set in {args.data_dir}; a run's id names its data, so these ids are provisional "
                  f"and none of them counts as done")
        if estimates is not None:
            everything = plan_runs(experiment, seeds, args.profile, recipe_overrides(args), data=data)
            all_estimates = estimates if shard == (0, 1) else estimate_runs(
                everything, results / "runs", device, sizes or full, world=world, step_time=args.step_time,
                accumulate=args.accumulate)
            where = (f"{sizes[0]:,} / {sizes[1]:,} images in {args.data_dir}" if sizes else
                     f"{args.data_dir} not found: full {dataset.title} sizes assumed")
            on = f"{args.step_time:g} s per step (given)" if args.step_time else device
            print(f"time left on {on} ({where}): this shard {format_hours(plan_hours(estimates))}; whole plan "
                  f"{format_hours(plan_hours(all_estimates))}, {format_hours(plan_hours(all_estimates, shard[1]))} "
                  f"per shard with {shard[1]} shard(s)")
            if peaks := [(e.peak_bytes, e.run_id) for e in all_estimates if e.peak_bytes]:
                most, run = max(peaks)
                print(f"GPU memory per device (calibrated, one warm step of the micro-batch): up to {most / 2**30:.2f} GiB "
                      f"({run})")
            if world > 1:
                print(f"each run on {world} devices ({args.nodes} node(s) x {args.devices}): "
                      f"{sum(e.device_hours_left for e in all_estimates):,.1f} device-hours for the whole plan")
            for name, hours in table_hours(experiment, everything, all_estimates).items():
                print(f"  {name}: {format_hours(hours)}")
            if dataset.input_rate is not None:
                print(input_report(dataset, args, everything, all_estimates))
        return 0

    def guard() -> None:
        if estimates is not None and device == "cpu" and not (args.yes or os.environ.get(YES_ENV)):
            left = plan_hours(estimates)
            if left > args.max_hours:
                raise UserError(f"this plan needs about {left:.0f} hours on this CPU ({len(runs)} runs, shard "
                                f"{args.shard}), over the {args.max_hours:g} h guard; choose a shorter --profile "
                                f"(e.g. quick or subset), a GPU, --shard I/N over several machines, or --yes "
                                f"({YES_ENV}=1) to go on")

    ranks.decide(guard)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        outcome = run_sweep(runs, args.data_dir, results, devices=args.devices, accelerator=args.accelerator,
                            download=not args.no_download, retry_failed=args.retry_failed, estimates=estimates,
                            nodes=args.nodes, logger=args.logger, accumulate=args.accumulate)
    finally:
        distributed.finish()
    if not ranks.is_zero:  # a DDP helper process re-launched by Lightning
        return 0
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
    # exit status: a lost run (1) is told from a diverged one that is recorded (EXIT_DIVERGED), as sacct shows it
    from ..preemption import EXIT_DIVERGED  # lazy: the command line answers --help without torch

    return 1 if outcome.failed else EXIT_DIVERGED if outcome.diverged else 0


def sequential_block(experiment, runs: list, results: Path, data: str | None, write: bool) -> list:  # noqa: ANN001
    """The runs of a sequential experiment's next block: none past the cap, none of a row the finished
    records already decide (report/sequential.py); what was decided is printed, and the design is
    written beside the runs for the report."""
    from ..report.sequential import DESIGN_FILE, design_for, keys_to_train, table_decisions  # lazy: pandas, scipy
    from ..report.tables import ReportError, load_runs  # lazy: the command line answers --help without torch

    first, cap = experiment.sequential
    designs = design_for(experiment)
    past = sorted({rc.seed for rc in runs if rc.seed >= cap})
    if past:
        print(f"sequential design: seed(s) {', '.join(map(str, past))} past the cap of {cap} seeds (seeds 0-{cap - 1}) "
              f"are not planned")
    runs = [rc for rc in runs if rc.seed < cap]
    if write:
        write_atomic(results / DESIGN_FILE, json.dumps({"experiment": str(experiment.path), "first": first, "cap": cap,
                                                       "margins": {t: d.margin for t, d in designs.items()}}))
    if not runs:
        return runs
    try:
        done = load_runs(results, profile=runs[0].profile, data=data, epochs=runs[0].recipe.epochs)
    except ReportError:  # nothing finished yet: every row is open
        return runs
    outcomes = table_decisions(done, experiment.tables, designs)
    needed, decided = keys_to_train(outcomes)
    for o in outcomes:
        if o.decision.decided:
            print(f"sequential design: {o.row.label} decided at n={o.decision.n}: {o.decision.decision} "
                  f"(vs {o.reference.label}); no more seeds")
    left = [rc for rc in runs if rc.key not in decided]
    if not needed and len(left) < len(runs):
        print("sequential design: every row is decided")
    return left


def input_report(dataset, args: argparse.Namespace, runs: list, estimates: list) -> str:  # noqa: ANN001
    """One line on whether the CPU input pipeline (its rate per core on this machine's CPU, times
    the loader workers each device gets from the CPUs here or SLURM allocated) can feed the plan's
    hungriest run."""
    from ..data.imagenet import default_workers  # lazy: the command line answers --help without torch
    from ..estimate import input_side  # lazy: the command line answers --help without torch
    from ..machine import cpu_model  # lazy: the command line answers --help without torch

    sizes = {rc.recipe.image_size or dataset.input_size for rc in runs}
    rate, what = dataset.input_rate(args.data_dir, max(sizes))
    workers = default_workers(args.devices)
    run, factor = input_side(estimates, rate, workers)
    if not run:
        return "input side: nothing left to train"
    head = (f"input side: our CPU pipeline crops {rate:,.0f} images/s per core on {cpu_model()} (measured on {what}); "
            f"{workers} loader worker(s) per device")
    if factor > 1:
        return (f"{head} feed {run} {factor:.1f}x too slowly: it is input-bound, each epoch about {factor:.1f}x the "
                f"time priced; decode on the GPU (GHOST_ABLATE_DECODE=device or dali) or give each task more CPUs")
    return f"{head} keep up with every run (the hungriest, {run}, needs {factor:.0%} of what they feed)"


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
