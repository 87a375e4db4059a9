"""Run records -> the paper's tables as DataFrames (pure functions: DataFrames and dicts in,
DataFrames out), so they are tested without any training."""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .. import paper
from ..costs import cost_record
from ..data import get_dataset
from ..errors import UserError
from ..formats import read_bounded
from ..labels import family, full_label
from ..models import MODELS
from ..record_schema import read_records
from ..records import DamagedRecord, flatten_record, missing, row_key
from ..stacks import comparison_group, load_groups
from ..classifier import CONFUSION_CLASSES
from .stats import (
    MARGIN_PP,
    Comparison,
    claim_verdicts,
    compare,
    holm,
    seed_stats,
    trend,
)

KEY = ("model", "ratio", "dw_size", "width")
TOP5_COLUMNS = ["top5_mean", "top5_std", "paper_top5", "top5_diff"]  # ImageNet tables only
TABLE_COLUMNS = ["table", "label", "model", "s", "d", "width", "params_m", "flops_m", "top1_mean", "top1_std",
                 "n_seeds", "top1_best_mean", "paper_params_m", "paper_flops_m", "paper_top1",
                 "params_diff_pct", "flops_diff_pct", "top1_diff", "status",
                 "top1_ci95", "reference", "test", "p_vs_reference", "p_holm", "vs_reference", "mixed",
                 "diff_vs_reference", "diff_ci95", "diff_n", "cross_stack_pairs", "margin", "p_noninferior_holm",
                 "mde", "verdict_kind", "recipe", "input_px"]
PLOT_FORMATS = ("png", "svg")


class ReportError(UserError):
    """Nothing (or nothing usable) to report; the message says what to run."""


def none_if_missing(v: Any) -> Any:
    return None if missing(v) else v


def load_runs(results_dir: str | Path, profile: str | None = None, data: str | None = None,
              prefer: str | None = None, epochs: int | None = None, mixed_epochs: bool = False,
              stack: str | None = None) -> pd.DataFrame:
    """One row per run record of one profile and one data set (`data`: its fingerprint, needed
    when the results hold runs of several, where `prefer` picks one if present); with `stack`,
    only the runs whose machine and torch (`records.stack_label`) contain it; ReportError if
    there are none."""
    runs_dir = Path(results_dir) / "runs"
    damaged: list[DamagedRecord] = []
    records = read_records(runs_dir, damaged)
    left_out = [f"{err.path.parent.name}/{err.path.name} ({err.reason})" for err in damaged]
    if not records:
        raise ReportError(f"no run records under {runs_dir}; run `make sweep-cifar` first")
    runs = pd.DataFrame([flatten_record(r) for r in records])
    for col in ("params", "flops", "final_test_acc", "final_test_acc5", "best_test_acc", "device", "train_size",
                "test_size", "dataset", "data_dir", "data_fingerprint", "precision", "history",
                "test_confusion"):  # older or partial records lack some
        if col not in runs:
            runs[col] = None
    runs["history"] = runs["history"].map(lambda h: h if isinstance(h, list) else [])
    profiles = sorted(runs["profile"].dropna().unique())
    if profile is None and len(profiles) > 1:
        raise ReportError(f"{runs_dir} holds runs of several profiles ({', '.join(profiles)}); "
                          f"choose one with --profile")
    if profile is not None and profile not in profiles:
        raise ReportError(f"no runs of profile {profile!r} under {runs_dir}; found: {', '.join(profiles)}")
    if profile is not None:
        runs = runs[runs["profile"] == profile].reset_index(drop=True)
    runs = one_data_set(runs, runs_dir, data, prefer)
    if stack is not None:
        keep = runs["stack"].str.contains(stack, regex=False)
        if not keep.any():
            raise ReportError(f"no runs whose machine and torch contain {stack!r} under {runs_dir}; found: "
                              f"{'; '.join(sorted(runs['stack'].unique()))}")
        runs = runs[keep].reset_index(drop=True)
    runs, controls = one_schedule(runs, runs_dir, epochs, mixed_epochs)
    runs.attrs["damaged"] = left_out  # unreadable records, named in the report's header
    runs.attrs["controls"] = controls  # the equal-epochs controls of its pruned rows, as records
    return runs


def read_side_csv(results_dir: Path, name: str, columns: Sequence[str], made_by: str) -> pd.DataFrame | None:
    """A CSV that a command writes beside the run records (`made_by` names it), read only where it is
    a regular file of the results folder (`formats.read_bounded`); None if absent, a ReportError
    naming the file if it is not a CSV or lacks one of `columns`."""
    path = Path(results_dir) / name
    data = read_bounded(path, Path(results_dir))
    if data is None:
        return None
    try:
        table = pd.read_csv(io.BytesIO(data), comment="#")
    except (ValueError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: not a CSV ({str(err).splitlines()[0]})") from None
    lacking = [c for c in columns if c not in table]
    if lacking:
        raise ReportError(f"{path}: missing column(s) {', '.join(lacking)}; {made_by} writes it")
    return table


def made_from_a_run(runs: pd.DataFrame) -> pd.Series:
    """Per run, whether it starts from another run's weights (pruned or fine-tuned)."""
    return runs["source"].map(lambda s: isinstance(s, dict)) if "source" in runs else pd.Series(False, runs.index)


def chain_epochs(runs: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per run, the epochs of the run its chain starts from (its schedule; its own for a run from
    random weights) and the epochs it has trained in all (its sources' and its own). A source not
    among `runs`, or a chain past MAX_LINKS links, ends the walk there."""
    epochs = dict(zip(runs["run_id"], runs["epochs"]))
    sources = dict(zip(runs["run_id"], runs["source"] if "source" in runs else [None] * len(runs)))
    roots, totals = [], []
    for run_id in runs["run_id"]:
        own, total, seen = epochs[run_id], epochs[run_id], {run_id}
        source = sources.get(run_id)
        while isinstance(source, dict) and isinstance(source.get("run_id"), str) and source["run_id"] in epochs \
                and source["run_id"] not in seen and len(seen) <= MAX_LINKS:
            seen.add(source["run_id"])
            own = epochs[source["run_id"]]
            total = None if missing(total) or missing(own) else total + own
            source = sources.get(source["run_id"])
        roots.append(own)
        totals.append(total)
    return pd.Series(roots, runs.index, dtype="float64"), pd.Series(totals, runs.index, dtype="float64")


MAX_LINKS = 8  # runs made one from another in a row (the sweep's MAX_CHAIN)


def one_schedule(runs: pd.DataFrame, runs_dir: Path, epochs: int | None,
                 mixed_epochs: bool = False) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The runs of one schedule (`epochs`, or the only one), a run made from another by its
    chain's first run; and the equal-epochs controls of its pruned rows: runs from random weights
    that trained as many epochs as a pruned run did in all, as records. A ReportError where the
    schedule is ambiguous; with `mixed_epochs`, every run and no controls."""
    roots, totals = chain_epochs(runs)
    made = made_from_a_run(runs)
    lengths = sorted(int(e) for e in roots.dropna().unique())
    if mixed_epochs and epochs is None:
        return runs, []
    if epochs is not None and epochs not in lengths:
        raise ReportError(f"no runs of {epochs} epochs under {runs_dir}; found: {', '.join(map(str, lengths))}")
    asked = epochs is not None
    if epochs is None:
        plain = [e for e in lengths if e not in set(totals[made])] or lengths  # a control's length is no schedule
        if len(plain) > 1:
            raise ReportError(f"{runs_dir} holds runs of {', '.join(map(str, lengths))} epochs; a table compares one "
                              f"schedule: choose one with --epochs")
        epochs = plain[0] if plain else None
    if epochs is None:
        return runs, []
    chosen = (roots == epochs) | (roots.isna() & (not asked))  # a record without a length stays unless one is asked
    matched = set(totals[chosen & made].dropna())
    controls = runs[~made & ~chosen & runs["epochs"].isin(matched)]
    return runs[chosen].reset_index(drop=True), controls.to_dict("records")


def one_data_set(runs: pd.DataFrame, runs_dir: Path, data: str | None, prefer: str | None = None) -> pd.DataFrame:
    """The runs trained on data set `data` (a fingerprint); with None, all of them if they share
    one, else those of `prefer` if there are any, else a ReportError naming each data set, so
    no table mixes numbers of two."""
    found = runs["data_fingerprint"].fillna("unrecorded")
    if data is None and found.nunique() > 1 and prefer in set(found):
        data = prefer
    if data is not None:
        if data not in set(found):
            raise ReportError(f"no runs on data {data} under {runs_dir}; found: {', '.join(sorted(set(found)))}")
        return runs[found == data].reset_index(drop=True)
    if found.nunique() > 1:
        sets = [f"{fp} ({len(part)} runs, {part['train_size'].iloc[0]} / {part['test_size'].iloc[0]} images)"
                for fp, part in runs.groupby(found)]
        raise ReportError(f"{runs_dir} holds runs on several data sets: {'; '.join(sets)}; choose one with "
                          f"--data-dir (the folder) or --data FINGERPRINT ('unrecorded': runs from before "
                          f"records named their data, see `ghost-ablate doctor --assign-data`)")
    return runs


def aggregate(runs: pd.DataFrame) -> dict[tuple, dict[str, Any]]:
    """Per configuration: final top-1 (%) per finished seed (`final`, `seeds`), its mean/std/CI, the
    mean best-epoch top-1, costs, failures, and what its seeds do not share (`mixed`)."""
    out: dict[tuple, dict[str, Any]] = {}
    for _, r in runs.iterrows():
        k = row_key(r)
        entry = out.setdefault(k, {"final": [], "final5": [], "seeds": [], "best": [], "failed": 0, "costs": [],
                                   "histories": [], "precisions": set(), "devices": set(), "stacks": [],
                                   "profiles": set(), "input_px": set()})
        entry["costs"].append((r["params"], r["flops"]))
        if none_if_missing(r.get("profile")) is not None:
            entry["profiles"].add(str(r["profile"]))
        size = none_if_missing(r.get("image_size"))  # the size its params/FLOPs were counted at
        entry["input_px"].add(int(size) if size is not None else get_dataset(none_if_missing(r.get("dataset"))).input_size)
        if r["status"] == "finished" and none_if_missing(r["final_test_acc"]) is not None:
            entry["final"].append(100 * r["final_test_acc"])
            if none_if_missing(r.get("final_test_acc5")) is not None:
                entry["final5"].append(100 * r["final_test_acc5"])
            seed = none_if_missing(r.get("seed"))
            entry["seeds"].append(None if seed is None else int(seed))
            entry["best"].append(100 * r["best_test_acc"])
            entry["histories"].append(r["history"])
            entry["precisions"].add(str(none_if_missing(r.get("precision")) or "unrecorded"))
            entry["devices"].add(str(none_if_missing(r.get("device")) or "unrecorded"))
            entry["stacks"].append(str(none_if_missing(r.get("stack")) or "unrecorded"))
        elif r["status"] in ("failed", "diverged"):
            entry["failed"] += 1
    for entry in out.values():
        # one value per configuration, except for networks whose widths come from pruning each seed's source
        params, flops = (pd.Series(c, dtype="float64").mean() for c in zip(*entry.pop("costs")))
        entry.update(params=None if pd.isna(params) else params, flops=None if pd.isna(flops) else flops)
        final, final5 = seed_stats(entry["final"]), seed_stats(entry["final5"])
        entry.update(n=final.n, top1_mean=final.mean, top1_std=final.std, top1_ci95=final.ci95,
                     top5_mean=final5.mean, top5_std=final5.std, top1_best_mean=seed_stats(entry["best"]).mean,
                     mixed=mixed_note(entry))
    return out


def mixed_note(entry: dict[str, Any]) -> str:
    """What a row's seeds do not share, in words ("" when they share precision and device): a mean
    over seeds of fp32 and bf16, or of two kinds of device, is not one measurement."""
    notes = [f"seeds mix {what} ({', '.join(sorted(values))})"
             for what, values in (("precisions", entry["precisions"]), ("devices", entry["devices"]),
                                  ("machines and torch versions", set(entry.get("stacks", ()))))
             if len(values) > 1 and not (what == "devices" and len(set(entry.get("stacks", ()))) > 1)]
    return "; ".join(notes)


def round_or_none(v: Any, digits: int) -> Any:
    v = none_if_missing(v)
    return None if v is None else round(float(v), digits)


def _pct(ours: Any, ref: Any) -> Any:
    ours, ref = none_if_missing(ours), none_if_missing(ref)
    return None if ours is None or ref is None or ref == 0 else round(100 * (ours - ref) / ref, 2)


BASELINES = {name: spec.baseline for name, spec in MODELS.items()}


def vs_reference(ours: dict[str, Any] | None, ref: dict[str, Any] | None) -> Comparison:
    """An aggregated row against its reference row (`aggregate` entries): paired by seed on one
    machine and torch (`stats.compare`); an empty Comparison where either is missing."""
    if not ours or not ref:
        return Comparison("", None, 0)
    groups = load_groups()  # machines a stack probe showed to give the same runs pair as one
    mine, theirs = ([comparison_group(s, groups) for s in e["stacks"]] if e.get("stacks") is not None else None
                    for e in (ours, ref))
    return compare(ours["final"], ref["final"], ours.get("seeds"), ref.get("seeds"), mine, theirs)


def table_trend(table: str, agg: dict[tuple, dict[str, Any]]) -> tuple[str, Any] | None:
    """The one trend test of a table whose rows vary one knob of one model (s in Table 2, d in
    Table 1): ("s" or "d", `stats.Trend`) over the seeds that have every level; None otherwise."""
    rows = [r for r in paper.rows(table) if r.model and r.run_key in agg]
    for axis, field in (("s", "ratio"), ("d", "dw_size")):
        levels: dict[Any, tuple] = {}
        for r in rows:
            others = (r.model, *(getattr(r, f) for f in ("ratio", "dw_size", "width") if f != field))
            levels.setdefault(others, []).append(r)
        best = max(levels.values(), key=len, default=[])
        if len(best) < 3:
            continue
        values = {}
        for r in best:
            entry = agg[r.run_key]
            for seed, v in zip(entry["seeds"], entry["final"]):
                values.setdefault(seed, {})[getattr(r, field)] = v
        xs = sorted(getattr(r, field) for r in best)
        by_seed = {s: [v[x] for x in xs] for s, v in values.items() if s is not None and len(v) == len(xs)}
        return axis, trend(xs, by_seed)
    return None


def _cost_and_status(row: paper.PaperRow, ours: dict[str, Any] | None) -> tuple[int | None, int | None, str]:
    """A row's params and FLOPs (its runs' own, else counted) and whether it was run."""
    if row.model is None:
        return None, None, "paper only"
    if ours and ours["params"] is not None:
        params, flops = ours["params"], ours["flops"]
    else:
        cost = cost_record(*row.key)
        params, flops = cost["params"], cost["flops"]
    status = "run" if ours and ours["n"] else "not run"
    if ours and ours["failed"]:
        status += f" ({ours['failed']} failed)"
    return params, flops, status


def paper_table(table: str, agg: dict[tuple, dict[str, Any]], margin: float = MARGIN_PP) -> pd.DataFrame:
    """The paper's table with our numbers beside its own, one row per paper row; each row tested
    against its reference row (`stats.compare`) as the paper's claim at `margin` points
    (`stats.claim_verdicts`), Holm-corrected across the table. The gap shown is the gap tested:
    `diff_vs_reference` is the mean per-seed difference over the pairs the test used."""
    rows, comparisons = [], []
    for row in paper.rows(table):
        ours = agg.get(row.run_key) if row.model else None
        params_from_runs = bool(ours and ours["params"] is not None)
        params, flops, status = _cost_and_status(row, ours)
        top1 = ours["top1_mean"] if ours else None
        ref = paper.reference_row(row, BASELINES)
        ref_runs = agg.get(ref.run_key) if ref is not None and ref.key != row.key else None
        tested = vs_reference(ours, ref_runs)
        comparisons.append(tested)
        rows.append({
            "table": table, "label": row.label, "model": row.model, "s": row.ratio, "d": row.dw_size,
            "width": row.width,
            "params_m": round_or_none(None if params is None else params / 1e6, 3),
            "flops_m": round_or_none(None if flops is None else flops / 1e6, 2),
            "top1_mean": round_or_none(top1, 2), "top1_std": round_or_none(ours["top1_std"] if ours else None, 2),
            "n_seeds": ours["n"] if ours else 0,
            "top1_best_mean": round_or_none(ours["top1_best_mean"] if ours else None, 2),
            "paper_params_m": row.params_m, "paper_flops_m": row.flops_m, "paper_top1": row.top1,
            "params_diff_pct": _pct(None if params is None else params / 1e6, row.params_m),
            "flops_diff_pct": _pct(None if flops is None else flops / 1e6, row.flops_m),
            "top1_diff": None if none_if_missing(top1) is None or row.top1 is None else round(top1 - row.top1, 2),
            "status": status,
            "top1_ci95": round_or_none(ours["top1_ci95"] if ours else None, 2),
            "reference": ref.label if ref is not None and ref.key != row.key else None,
            "test": tested.test, "p_vs_reference": round_or_none(tested.p, 4),
            "mixed": ours["mixed"] if ours else "",
            "diff_vs_reference": round_or_none(tested.diff, 4), "diff_ci95": round_or_none(tested.ci95, 4),
            "diff_n": tested.n if tested.test else None, "cross_stack_pairs": tested.cross_stack, "margin": margin,
            "recipe": ", ".join(sorted(ours["profiles"])) if ours and ours.get("profiles") else None,
            # the input side the FLOPs are counted at: the runs' own, else the model's declared one
            "input_px": (", ".join(map(str, sorted(ours["input_px"]))) if params_from_runs and ours.get("input_px")
                         else str(MODELS[row.model].input_size) if row.model else None),
        })
        if table in paper.IMAGENET_TABLES:
            top5 = ours["top5_mean"] if ours else None
            rows[-1].update(top5_mean=round_or_none(top5, 2), top5_std=round_or_none(ours["top5_std"] if ours else None, 2),
                            paper_top5=row.top5,
                            top5_diff=None if none_if_missing(top5) is None or row.top5 is None else round(top5 - row.top5, 2))
    adjusted = holm([c.p for c in comparisons])
    for row, p, verdict in zip(rows, adjusted, claim_verdicts(comparisons, margin)):
        row.update(p_holm=round_or_none(p, 4), vs_reference=verdict.text, verdict_kind=verdict.kind,
                   p_noninferior_holm=round_or_none(verdict.p_noninferior, 4), mde=round_or_none(verdict.mde, 3))
    columns = TABLE_COLUMNS + (TOP5_COLUMNS if table in paper.IMAGENET_TABLES else [])
    frame = pd.DataFrame(rows, columns=columns)
    for col in ("s", "d", "n_seeds", "diff_n"):
        frame[col] = frame[col].astype("Int64")
    frame.attrs["trend"] = table_trend(table, agg)
    frame.attrs["keys"] = [row.run_key for row in paper.rows(table)]  # each row's aggregate key, knobs included
    return frame


EQUAL_EPOCHS_COLUMNS = ["pruned", "pruned_epochs", "pruned_top1_mean", "pruned_n", "control", "control_epochs",
                        "control_top1_mean", "control_n", "diff", "diff_ci95", "diff_n", "test", "cross_stack_pairs",
                        "margin", "p_holm", "p_noninferior_holm", "mde", "verdict_kind", "verdict"]


def equal_epochs_table(runs: pd.DataFrame, margin: float = MARGIN_PP) -> pd.DataFrame:
    """Each pruned row against each row of its model family trained from random weights for as
    many epochs as the pruned runs trained in all (`runs.attrs["controls"]`, `one_schedule`):
    control - pruned, paired by seed, tested like a paper row (`claim_verdicts`, Holm within
    this table), so extra epochs are not what sets a pruned row apart."""
    controls = pd.DataFrame(runs.attrs.get("controls") or [])
    made = made_from_a_run(runs)
    if controls.empty or not made.any():
        return pd.DataFrame(columns=EQUAL_EPOCHS_COLUMNS)
    _, totals = chain_epochs(runs)
    rows, comparisons = [], []
    for total, pruned_runs in runs[made].groupby(totals[made]):
        own_epochs = dict(zip(pruned_runs.apply(row_key, axis=1), pruned_runs["epochs"]))
        control_agg = aggregate(controls[controls["epochs"] == total])
        for key, pruned in aggregate(pruned_runs).items():
            own = int(own_epochs[key])
            for ckey, control in control_agg.items():
                if family(ckey[0]) != family(key[0]) or not control["n"] or not pruned["n"]:
                    continue
                tested = vs_reference(control, pruned)
                comparisons.append(tested)
                rows.append({"pruned": full_label(*key), "pruned_epochs": f"{int(total) - own} + {own}",
                             "pruned_top1_mean": round_or_none(pruned["top1_mean"], 2), "pruned_n": pruned["n"],
                             "control": full_label(*ckey), "control_epochs": int(total),
                             "control_top1_mean": round_or_none(control["top1_mean"], 2), "control_n": control["n"],
                             "diff": round_or_none(tested.diff, 4), "diff_ci95": round_or_none(tested.ci95, 4),
                             "diff_n": tested.n if tested.test else None, "test": tested.test,
                             "cross_stack_pairs": tested.cross_stack, "margin": margin})
    adjusted = holm([c.p for c in comparisons])
    for row, p, verdict in zip(rows, adjusted, claim_verdicts(comparisons, margin, "the pruned row")):
        row.update(p_holm=round_or_none(p, 4), p_noninferior_holm=round_or_none(verdict.p_noninferior, 4),
                   mde=round_or_none(verdict.mde, 3), verdict_kind=verdict.kind, verdict=verdict.text)
    return pd.DataFrame(rows, columns=EQUAL_EPOCHS_COLUMNS)


def imagenet_costs() -> pd.DataFrame:
    """Our params/FLOPs of the ImageNet tables' models beside the paper's (no training involved); rows
    nobody builds keep the published numbers and say why (`paper.PUBLISHED_ONLY`), and a gap beyond
    the tolerance says why (`paper.KNOWN_GAPS`)."""
    rows = []
    for row in paper.rows():
        if row.table not in paper.IMAGENET_TABLES:
            continue
        cost = cost_record(*row.key) if row.model else None
        rows.append({"table": row.table, "label": row.label, "model": row.model, "s": row.ratio,
                     "d": row.dw_size, "width": row.width,
                     "params_m": round(cost["params"] / 1e6, 3) if cost else None,
                     "flops_m": round(cost["flops"] / 1e6, 1) if cost else None, "paper_params_m": row.params_m,
                     "paper_flops_m": row.flops_m, "paper_top1": row.top1, "paper_top5": row.top5,
                     "params_diff_pct": _pct(cost["params"] / 1e6, row.params_m) if cost else None,
                     "flops_diff_pct": _pct(cost["flops"] / 1e6, row.flops_m) if cost else None,
                     "note": paper.KNOWN_GAPS.get(row.label, "") if cost else
                     f"published only: {paper.PUBLISHED_ONLY[row.label]}"})
    frame = pd.DataFrame(rows)
    frame["s"], frame["d"] = frame["s"].astype("Int64"), frame["d"].astype("Int64")
    return frame


def speedup_table(bench: pd.DataFrame) -> pd.DataFrame:
    """Per Ghost model: FLOPs ratio to its baseline beside the measured speed-ups and memory ratio."""
    rows = []
    for device, on_device in bench.groupby("device_kind"):
        by_model = {m: g.iloc[0] for m, g in on_device.groupby("model")}
        for _, r in on_device.iterrows():
            base_name = MODELS[r["model"]].baseline if r["model"] in MODELS else None
            if base_name is None or base_name not in by_model:
                continue
            b = by_model[base_name]
            rows.append({
                "device": device, "model": r["model"], "s": r["ratio"], "d": r["dw_size"], "baseline": base_name,
                "flops_ratio": round(b["flops"] / r["flops"], 2),
                "latency_speedup_bs1": round(b["latency_bs1_ms"] / r["latency_bs1_ms"], 2),
                "throughput_speedup": round(r["eval_img_s"] / b["eval_img_s"], 2),
                "train_speedup": round(r["train_img_s"] / b["train_img_s"], 2),
                "peak_memory_ratio": round(r["train_peak_mem_mb"] / b["train_peak_mem_mb"], 2),
            })
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["s"], frame["d"] = frame["s"].astype("Int64"), frame["d"].astype("Int64")
    return frame


def best_runs_by_family(runs: pd.DataFrame) -> dict[str, pd.Series]:
    """Per network family, its finished run with the highest final top-1 that kept a confusion matrix."""

    usable = runs[(runs["status"] == "finished")
                  & runs["test_confusion"].map(lambda c: isinstance(c, list) and 0 < len(c) <= CONFUSION_CLASSES)]
    best: dict[str, pd.Series] = {}
    for _, r in usable.sort_values(["final_test_acc", "run_id"], ascending=[False, True]).iterrows():
        best.setdefault(family(r["model"]), r)
    return dict(sorted(best.items()))


def per_class_accuracy(best: dict[str, pd.Series]) -> pd.DataFrame:
    """Per class of the runs' data set, the accuracy (%) of each family's best run: confusion diagonal / row sum."""
    first = next(iter(best.values()))
    table = pd.DataFrame({"class": list(get_dataset(first.get("dataset")).classes)})
    for r in best.values():
        matrix = r["test_confusion"]
        label = f"{full_label(*row_key(r))} (seed {int(r['seed'])})"
        table[label] = [round(100 * row[i] / sum(row), 1) if sum(row) else None for i, row in enumerate(matrix)]
    return table
