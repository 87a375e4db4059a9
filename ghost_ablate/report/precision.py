"""Does bf16 change the answers? fp32 against bf16 for each model configuration, paired by
seed: runs with the same seed see the same batches in the same order, so the per-seed
difference removes the seed-to-seed spread that an unpaired test would have to beat.

The table behind `make precision-check` (and the evidence `auto` precision rests on): per
configuration, the top-1 of each precision over the seeds both have, the mean paired
difference (bf16 - fp32) with its 95% interval and paired t-test p (Holm-corrected across
the table's configurations), and bf16's training speed-up measured in the same records.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from ..labels import full_label
from ..records import row_key, write_atomic
from ..timing import steady_rate
from .markdown import fmt_number, header_markdown, md_table, provenance
from .stats import ALPHA, holm, paired_stats, seed_stats
from .tables import ReportError, load_runs

PRECISIONS = ("32", "bf16")


def run_rate(run: Any) -> float:
    """A run's training images/s: the steady rate over its epochs where the record has them (one
    epoch slowed by another process, or a paused machine, does not move it), else the record's
    overall rate. Every epoch counts (warmup=0): the committed precision table was computed so,
    and both precisions pay the same first epoch."""
    history = run.get("history")
    rates = [h["train_images"] / h["train_time_s"] for h in history or [] if h.get("train_time_s")]
    return steady_rate(rates, warmup=0) if rates else float(run["train_images_per_s"])


def precision_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per model configuration finished in both precisions (see the module's docstring)."""
    done = runs[(runs["status"] == "finished") & runs["precision"].isin(PRECISIONS)]
    rows = []
    for key, part in done.groupby(done.apply(row_key, axis=1), sort=False):
        by = {p: part[part["precision"] == p].set_index("seed") for p in PRECISIONS}
        shared = sorted(set(by["32"].index) & set(by["bf16"].index))
        # a pair is one measurement only on one machine and torch: the precision is all that differs
        seeds = [s for s in shared if by["32"].loc[s, "stack"] == by["bf16"].loc[s, "stack"]]
        if not seeds:
            continue
        top1 = {p: [100 * float(by[p].loc[s, "final_test_acc"]) for s in seeds] for p in PRECISIONS}
        speed = [run_rate(by["bf16"].loc[s]) / run_rate(by["32"].loc[s]) for s in seeds]
        diff = paired_stats(top1["32"], top1["bf16"])
        fp32, bf16 = seed_stats(top1["32"]), seed_stats(top1["bf16"])
        rows.append({"model": full_label(*key), "pairs": len(seeds), "seeds": ",".join(map(str, seeds)),
                     "pairs_across_machines_left_out": len(shared) - len(seeds),
                     "fp32_top1_mean": fp32.mean, "fp32_top1_std": fp32.std,
                     "bf16_top1_mean": bf16.mean, "bf16_top1_std": bf16.std,
                     "diff_mean": diff.mean, "diff_ci95": diff.ci95, "p_paired": diff.p,
                     "bf16_lower_in": sum(b < a for a, b in zip(top1["32"], top1["bf16"])),
                     "bf16_speedup_median": statistics.median(speed)})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["p_holm"] = holm(list(frame["p_paired"].where(frame["p_paired"].notna(), None)))
    return frame


def verdict(row: Any) -> str:
    """The row in words: whether bf16 changed top-1 beyond the paired noise."""
    if row["p_holm"] is None or pd.isna(row["p_holm"]):
        return "too few pairs to test"
    if row["p_holm"] < ALPHA:
        return f"bf16 {'lower' if row['diff_mean'] < 0 else 'higher'} (Holm p < {ALPHA:g})"
    return "no difference shown at this n"


def precision_markdown(frame: pd.DataFrame) -> str:
    shown = pd.DataFrame([{
        "Model": r["model"], "pairs (seeds)": f"{r['pairs']} ({r['seeds']})",
        "fp32 top-1 (%)": f"{fmt_number(r['fp32_top1_mean'])} ± {fmt_number(r['fp32_top1_std'])}",
        "bf16 top-1 (%)": f"{fmt_number(r['bf16_top1_mean'])} ± {fmt_number(r['bf16_top1_std'])}",
        "bf16 − fp32 (pp), paired": fmt_number(r["diff_mean"], sign=True),
        "95% CI": "" if r["diff_ci95"] is None or pd.isna(r["diff_ci95"]) else
        f"{r['diff_mean'] - r['diff_ci95']:+.2f} to {r['diff_mean'] + r['diff_ci95']:+.2f}",
        "paired t p": fmt_number(r["p_paired"], 3), "Holm p": fmt_number(r["p_holm"], 3),
        "bf16 lower in": f"{r['bf16_lower_in']} of {r['pairs']}",
        "bf16 training speed-up": f"{r['bf16_speedup_median']:.2f}x", "verdict": verdict(r)}
        for _, r in frame.iterrows()])
    return md_table(shown)


def cross_machine_note(frame: pd.DataFrame) -> list[str]:
    """A line naming the seeds whose fp32 and bf16 runs ran on different machines or torch versions."""
    left = [f"{r['model']}: {int(r['pairs_across_machines_left_out'])}" for _, r in frame.iterrows()
            if r.get("pairs_across_machines_left_out")]
    return [f"Pairs left out because their two runs ran on different machines or torch versions: "
            f"{'; '.join(left)}.", ""] if left else []


def write_precision_report(results_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """precision.csv and precision.md (with the report's provenance header) into `out_dir`."""
    runs = load_runs(results_dir)
    frame = precision_table(runs)
    if frame.empty:
        raise ReportError(f"no configuration under {Path(results_dir) / 'runs'} has finished in both fp32 and "
                          f"bf16 with the same seed; run `make precision-check`")
    out = Path(out_dir)
    write_atomic(out / "precision.csv", frame.to_csv(index=False, float_format="%.4f"))
    text = "\n".join([
        header_markdown(provenance(runs)).replace("# ghost-ablate report", "# fp32 against bf16 on the CPU named below", 1),
        "Each pair is one seed trained twice, in fp32 and in bf16 mixed precision (same batches in the same "
        "order). The difference is bf16 − fp32 in final test top-1, in percentage points; its interval and "
        "p-value come from the paired t-test over seeds, Holm-corrected across the models. The speed-up is "
        "the median over pairs of bf16's training images/s over fp32's (each run's median epoch), from the same "
        "runs; other work on the machine while they trained moves it, so `bench --pipeline` is the cleaner "
        "measure of speed.", "",
        precision_markdown(frame), "", *cross_machine_note(frame), "CSV: [precision.csv](precision.csv)", ""])
    write_atomic(out / "precision.md", text)
    return [out / "precision.csv", out / "precision.md"]
