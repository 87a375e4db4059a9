"""Commands that train or look after runs: train, sweep, doctor."""
from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from .args import model_knobs, recipe_overrides


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import RunConfig
    from ..data import fingerprint, prepare
    from ..training import Diverged, is_rank_zero, train_run

    config = RunConfig.create(args.model, args.ratio, args.dw_size, args.width, args.profile, args.seed,
                              knobs=model_knobs(args), **recipe_overrides(args))
    prepare(args.data_dir, download=not args.no_download)
    config = config.with_data(fingerprint(args.data_dir))  # the data is part of the run's identity
    out = args.out or f"{args.results_dir}/runs/{config.run_id}"
    try:
        record = train_run(config, args.data_dir, out, devices=args.devices, accelerator=args.accelerator,
                           download=not args.no_download)
    except Diverged as err:
        print(f"ghost-ablate train: diverged: {err}; record kept in {out}", file=sys.stderr)
        return 1
    acc = record.get("final_test_acc")
    if not is_rank_zero():
        return 0 if record["status"] == "finished" else 1
    print(f"{config.run_id}: {record['status']}, {record['epochs_done']} epochs, "
          f"final test acc {acc if acc is None else f'{100 * acc:.2f}%'} -> {out}")
    return 0 if record["status"] == "finished" else 1


# ---- sweep -------------------------------------------------------------------------

YES_ENV = "GHOST_ABLATE_YES"


def cmd_sweep(args: argparse.Namespace) -> int:
    import logging
    import os
    from pathlib import Path

    from ..data import fingerprint, prepare, split_sizes
    from ..estimate import FULL_CIFAR, format_hours, plan_hours
    from ..sweep import (dry_run_table, estimate_runs, load_experiment, parse_seeds, parse_shard, plan_runs,
                        run_sweep, table_hours)
    from ..training import is_rank_zero, resolve_device

    experiment = load_experiment(args.experiment)
    seeds, shard = parse_seeds(args.seeds), parse_shard(args.shard)
    if not args.dry_run:  # a missing data set is a one-line error before any calibration
        prepare(args.data_dir, download=not args.no_download)
    sizes = split_sizes(args.data_dir)
    data = fingerprint(args.data_dir) if sizes else None  # runs are identified by the data they train on
    runs = plan_runs(experiment, seeds, args.profile, recipe_overrides(args), shard, data)
    results = Path(args.results_dir)
    device = resolve_device(args.accelerator)
    estimate = not args.no_estimate and is_rank_zero()
    estimates = (estimate_runs(runs, results / "runs", device, sizes or FULL_CIFAR, recalibrate=args.recalibrate)
                 if estimate else None)
    if args.dry_run:
        import pandas as pd

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
            all_estimates = estimates if shard == (0, 1) else estimate_runs(everything, results / "runs", device,
                                                                            sizes or FULL_CIFAR)
            where = (f"{sizes[0]:,} / {sizes[1]:,} images in {args.data_dir}" if sizes else
                     f"{args.data_dir} not found: full CIFAR-10 sizes assumed")
            print(f"time left on {device} ({where}): this shard {format_hours(plan_hours(estimates))}; whole plan "
                  f"{format_hours(plan_hours(all_estimates))}, {format_hours(plan_hours(all_estimates, shard[1]))} "
                  f"per shard with {shard[1]} shard(s)")
            for name, hours in table_hours(experiment, everything, all_estimates).items():
                print(f"  {name}: {format_hours(hours)}")
        return 0
    if estimates is not None and device == "cpu" and not (args.yes or os.environ.get(YES_ENV)):
        left = plan_hours(estimates)
        if left > args.max_hours:
            raise UserError(f"this plan needs about {left:.0f} hours on this CPU ({len(runs)} runs, shard "
                            f"{args.shard}), over the {args.max_hours:g} h guard; choose a shorter --profile "
                            f"(e.g. quick or subset), a GPU, --shard I/N over several machines, or --yes "
                            f"({YES_ENV}=1) to go on")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    outcome = run_sweep(runs, args.data_dir, results, devices=args.devices, accelerator=args.accelerator,
                        download=not args.no_download, retry_failed=args.retry_failed, estimates=estimates)
    if not is_rank_zero():  # a DDP helper process re-launched by Lightning
        return 0
    print(f"sweep {args.experiment} shard {args.shard}: {len(outcome.done)} done, {len(outcome.skipped)} skipped "
          f"(already done), {len(outcome.failed)} failed, {len(outcome.busy)} held by another process"
          f"{f', {len(outcome.waiting)} waiting for their source run' if outcome.waiting else ''}; "
          f"summary in {results / 'summary.csv'}")
    for run_id in outcome.failed:
        print(f"  failed: {run_id} (see {results / 'runs' / run_id / 'result.json'})")
    return 1 if outcome.failed else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..doctor import assign_data, examine, fix
    from ..sweep import write_summary

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
