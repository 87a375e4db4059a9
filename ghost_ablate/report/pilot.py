"""The pilot's learning curves (issue 29): per model and schedule length, how much the last epochs
still gain and how far seeds spread, so the demo's schedule is chosen from data, not guessed.
`make pilot` trains it; `ghost-ablate pilot-table` writes reports/pilot.md and pilot_curves.csv."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..labels import full_label
from ..records import row_key, write_atomic
from .markdown import escape, fmt_number, md_table
from .stats import seed_stats
from .tables import ReportError, load_runs

LAST = 3  # "the last epochs": how much test top-1 rose over the final LAST epochs


def learning_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run and epoch: model label, schedule length, seed, machine, test top-1 (%)."""

    rows = []
    for _, r in runs[runs["status"] == "finished"].iterrows():
        for h in r["history"]:
            if h.get("test_acc") is not None:
                rows.append({"model": full_label(*row_key(r)), "schedule": int(r["epochs"]), "seed": int(r["seed"]),
                             "stack": r["stack"], "epoch": int(h["epoch"]) + 1, "test_top1": 100 * h["test_acc"]})
    return pd.DataFrame(rows, columns=["model", "schedule", "seed", "stack", "epoch", "test_top1"])


def pilot_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Per model and schedule: seeds, final top-1 mean ± std, its rise over the last LAST epochs (mean
    over seeds) and the top-1 at the shorter schedules' lengths within the longer run."""
    rows = []
    for (model, schedule), part in curves.groupby(["model", "schedule"], sort=True):
        finals, gains = [], []
        for _, seed_curve in part.groupby("seed"):
            by_epoch = dict(zip(seed_curve["epoch"], seed_curve["test_top1"]))
            finals.append(by_epoch[schedule])
            if schedule - LAST in by_epoch:
                gains.append(by_epoch[schedule] - by_epoch[schedule - LAST])
        final, gain = seed_stats(finals), seed_stats(gains)
        rows.append({"model": model, "schedule (epochs)": schedule, "seeds": final.n,
                     "final top-1 mean": final.mean, "final top-1 std": final.std,
                     f"gain over last {LAST} epochs": gain.mean, "machines": "; ".join(sorted(set(part["stack"])))})
    return pd.DataFrame(rows)


def write_pilot_report(results_dir: str | Path, out: str | Path) -> list[Path]:
    runs = load_runs(results_dir, mixed_epochs=True)  # the pilot compares schedule lengths
    curves = learning_curves(runs)
    if curves.empty:
        raise ReportError(f"no finished pilot runs under {Path(results_dir) / 'runs'}; run `make pilot` first")
    table = pilot_table(curves)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "pilot_curves.csv", curves.to_csv(index=False))
    shown = table.copy()
    shown["final top-1 (%)"] = [f"{fmt_number(m, 2)}" + (f" ± {s:.2f}" if pd.notna(s) else "")
                                for m, s in zip(table["final top-1 mean"], table["final top-1 std"])]
    shown[f"gain over last {LAST} epochs (pp)"] = table[f"gain over last {LAST} epochs"].map(lambda v: fmt_number(v, 2))
    shown["machines"] = table["machines"].map(escape)
    shown = shown[["model", "schedule (epochs)", "seeds", "final top-1 (%)", f"gain over last {LAST} epochs (pp)",
                   "machines"]]
    wide = curves.pivot_table(index=["model", "schedule"], columns="epoch", values="test_top1", aggfunc="mean")
    every = [e for e in wide.columns if e % 3 == 0 or e == wide.columns.max()]
    curve_md = wide[every].round(1).reset_index().astype(object)
    text = "\n".join([
        "# Pilot: how long to train on the subset, and how far seeds spread", "",
        "Table 2's pair (VGG-16 and Ghost-VGG-16, s=2, d=3) on the 5,085-image CIFAR-10 subset under the subset "
        "recipe (batch 32, lr 0.02, cosine), trained for each schedule length (`make pilot`). A cosine schedule "
        "ends at lr 0, so a longer schedule is a different run, not a continuation.", "",
        md_table(shown), "", "Mean test top-1 (%) over seeds at every third epoch:", "",
        md_table(curve_md.where(curve_md.notna(), "")), "",
        "CSV of every epoch of every run: [pilot_curves.csv](pilot_curves.csv).", ""])
    write_atomic(out / "pilot.md", text)
    return [out / "pilot_curves.csv", out / "pilot.md"]
