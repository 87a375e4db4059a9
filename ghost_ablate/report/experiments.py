"""A table and an accuracy-vs-FLOPs plot for any experiment file, with no per-experiment code.

The rows are the experiment's configurations (its grid, as the sweep expands it); the
columns that tell them apart are the knobs the grid varies (`models.varying`). Each
model's first configuration in the file is its reference: the other rows of that model
are tested against it as the paper tables' rows are against theirs (`tables.vs_reference`:
paired by seed on one machine and torch, untested with fewer than two pairs; Holm-corrected
across the table).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .. import paper
from ..costs import config_cost
from ..labels import color, marker, name
from ..models import KNOBS, MODELS, knob_values, varying
from ..records import config_key, missing, write_atomic
from ..experiment import Experiment, load_experiment
from .layout import Point, scatter_with_labels
from .markdown import fmt_number, md_table
from .plots import kind_legend, plain_log_ticks, save_figure
from .stats import MARGIN_PP, claim_verdicts, holm
from .tables import round_or_none, vs_reference

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"


def _key(cfg: dict[str, Any]) -> tuple:
    """An experiment configuration's `RunConfig.key`, as the report's aggregate is keyed."""
    return config_key(cfg["model"], cfg["ratio"], cfg["dw_size"], cfg["width"], cfg["knobs"])


def _knob_columns(frame: pd.DataFrame) -> list[str]:
    """The knob columns of an experiment table."""
    return [c for c in frame.columns if c in KNOBS]


def knob_columns(experiment: Experiment) -> list[str]:
    """The knobs the experiment's grid varies, in declaration order."""
    return varying(knob_values(c["model"], c) for c in experiment.configs)


def experiment_table(experiment: Experiment, agg: dict[tuple, dict[str, Any]],
                     margin: float = MARGIN_PP) -> pd.DataFrame:
    """One row per configuration: model, the varying knobs, costs, top-1 over seeds, and the
    test against the model's reference row."""
    columns = knob_columns(experiment)
    rows, reference, comparisons = [], {}, []
    for cfg in experiment.configs:
        key = _key(cfg)
        ours = agg.get(key)
        reference.setdefault(cfg["model"], key)
        ref_key = reference[cfg["model"]]
        ref = agg.get(ref_key) if ref_key != key else None
        tested = vs_reference(ours, ref)
        comparisons.append(tested)
        cost = config_cost(*key)
        values = knob_values(cfg["model"], cfg)
        rows.append({"model": cfg["model"], **{c: values[c] for c in columns},
                     "params_m": round(cost.params / 1e6, 3), "flops_m": round(cost.flops / 1e6, 2),
                     "top1_mean": round_or_none(ours and ours["top1_mean"], 2),
                     "top1_std": round_or_none(ours and ours["top1_std"], 2),
                     "top1_ci95": round_or_none(ours and ours["top1_ci95"], 2), "n_seeds": ours["n"] if ours else 0,
                     "reference": "yes" if ref_key == key else "", "test": tested.test,
                     "p_vs_reference": round_or_none(tested.p, 4)})
    adjusted = holm([c.p for c in comparisons])
    for row, p, verdict in zip(rows, adjusted, claim_verdicts(comparisons, margin)):
        row.update(p_holm=round_or_none(p, 4), vs_reference=verdict.text, verdict_kind=verdict.kind)
    frame = pd.DataFrame(rows)
    first = {m: i for i, m in reversed(list(enumerate(frame["model"])))}
    order = sorted(range(len(frame)), key=lambda i: (first[frame["model"][i]], i))
    frame = frame.iloc[order]
    for col in columns:
        if KNOBS[col].type is int:
            frame[col] = frame[col].astype("Int64")
    frame = frame.reset_index(drop=True)
    frame.attrs["keys"] = [_key(experiment.configs[i]) for i in order]  # each row's aggregate key
    return frame


def experiment_markdown(frame: pd.DataFrame) -> str:
    shown = frame.copy()
    shown["model"] = shown["model"].map(name)
    top1 = "top1 (%) mean ± 95% CI"
    shown[top1] = [f"{fmt_number(m, 2)} ± {fmt_number(c, 2)}" if n > 1 else fmt_number(m, 2)
                         for m, c, n in zip(frame["top1_mean"], frame["top1_ci95"], frame["n_seeds"])]
    shown["p vs ref"] = frame["p_vs_reference"].map(lambda v: fmt_number(v, 3))
    shown["Holm p"] = frame["p_holm"].map(lambda v: fmt_number(v, 3))
    keep = ["model", *_knob_columns(frame), "params_m", "flops_m", top1, "n_seeds", "test", "p vs ref", "Holm p",
            "vs_reference"]
    shown = shown[keep].rename(columns={"params_m": "Params (M)", "flops_m": "FLOPs (M)", "n_seeds": "n",
                                        "vs_reference": "vs ref"})
    return md_table(shown.astype(object).where(shown.notna(), ""))


def draw_experiment(experiment: Experiment, frame: pd.DataFrame, agg: dict[tuple, dict[str, Any]]):  # noqa: ANN201
    """Top-1 against FLOPs: every seed a small dot, the mean a large marker (one colour per model
    family, one marker per kind), each point named by the knobs that differ from its model's
    reference row."""
    import matplotlib.pyplot as plt  # lazy: plotting loads only when a figure is drawn

    columns = _knob_columns(frame)
    reference = {r["model"]: r for _, r in frame[frame["reference"] == "yes"].iterrows()}
    points = []
    for key, (_, r) in zip(frame.attrs["keys"], frame.iterrows()):
        if not r["n_seeds"]:
            continue
        ref = reference[r["model"]]
        changed = [f"{c}={r[c]}" for c in columns if not missing(r[c]) and (missing(ref[c]) or r[c] != ref[c])]
        label = " ".join(changed) or ("reference" if MODELS[r["model"]].knobs else name(r["model"]))
        if len({m for m in frame["model"]}) > 1 and MODELS[r["model"]].knobs:
            label = f"{name(r['model'])} {label}"
        points.append(Point(r["flops_m"], r["top1_mean"], label, color(r["model"]), marker(r["model"]),
                            tuple(agg.get(key, {}).get("final", ()))))
    fig, ax = plt.subplots(figsize=(8, 5))
    scatter_with_labels(ax, points)
    if points:
        kind_legend(ax, list(frame["model"]), seeds=True)
    ax.set_xlabel("FLOPs (M, multiply-accumulates), log scale")
    ax.set_ylabel("top-1 test accuracy (%)")
    ax.set_title(experiment.description or experiment.path.stem, fontsize=10)
    ax.grid(alpha=0.3)
    plain_log_ticks(ax.xaxis)
    fig.tight_layout()
    return fig


def plot_experiment(experiment: Experiment, frame: pd.DataFrame, agg: dict[tuple, dict[str, Any]], out: Path,
                    stem: str) -> list[Path]:

    return save_figure(draw_experiment(experiment, frame, agg), out, stem)


def default_experiments() -> tuple[list[Experiment], set[tuple]]:
    """The experiment files of `experiments/` that declare no paper tables, and the
    configurations the paper-table files already report (their tables and "runs outside the
    paper's tables" section)."""
    loaded = [load_experiment(p) for p in sorted(EXPERIMENTS_DIR.glob("*.yaml"))]
    covered = {r.run_key for r in paper.rows(buildable=True)}
    covered |= {_key(c) for e in loaded if e.tables for c in e.configs}
    return [e for e in loaded if not e.tables], covered


def experiment_sections(agg: dict[tuple, dict[str, Any]], out: Path,
                        paths: list[Path] | None = None) -> tuple[list[Path], list[str]]:
    """CSV, plot and markdown for every file named in `paths`, or by default for each file of
    `experiments/` (without paper tables) once one of its runs not reported with the paper's
    grid has finished: a file whose only finished runs are the paper grid's is left out."""
    named = paths is not None
    experiments, covered = default_experiments() if not named else ([load_experiment(p) for p in paths], set())
    written, sections = [], []
    for experiment in experiments:
        keys = {_key(c) for c in experiment.configs} - covered
        if not named and not any(agg.get(k, {}).get("n") for k in keys):
            continue
        frame = experiment_table(experiment, agg)
        stem = f"experiment_{experiment.path.stem}"
        write_atomic(out / f"{stem}.csv", frame.to_csv(index=False))
        plot = plot_experiment(experiment, frame, agg, out, f"{stem}_accuracy_vs_flops")
        written += [out / f"{stem}.csv", *plot]
        varied = ", ".join(_knob_columns(frame)) or "the model"
        sections += [f"## Experiment {experiment.path.name}: {experiment.description}", "",
                     f"Columns: the knobs this grid varies ({varied}). Each model's first row is its reference "
                     f"for the p-value: the paired t-test over the seeds both rows have on one machine and torch "
                     f"(a row with fewer than two such pairs is not tested); "
                     f"the verdict uses the Holm-corrected p.", "", experiment_markdown(frame),
                     f"\nCSV: [{stem}.csv]({stem}.csv)", "", f"![{experiment.description}]({plot[0].name})", ""]
    return written, sections

