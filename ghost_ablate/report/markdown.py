"""Markdown: the paper's tables laid out like the paper's, and the provenance header."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import PurePath
from typing import Any

import pandas as pd

from .. import paper
from ..config import load_profile
from ..data import get_dataset
from ..labels import full_label
from ..records import row_key
from .stats import ALPHA, POWER, pooled_std, seeds_needed, seeds_needed_paired
from .tables import BASELINES, none_if_missing


def escape(text: Any) -> str:
    """A string from a record, safe inside a markdown table cell: no markup, links, images or HTML."""
    out = " ".join(str(text).split())  # no line breaks: nothing can start a heading or a list
    for ch in "\\`*_[]!|<>":  # emphasis, code, links and images, table cells, HTML
        out = out.replace(ch, "\\" + ch)
    return "\\" + out if out[:1] in "#+-=" and out else out


def md_table(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, missingval="", disable_numparse=True)  # keep our formatting


def fmt_number(v: Any, digits: int = 2, sign: bool = False) -> str:
    """A table cell: `v` to `digits` places (with its sign if asked), or empty where missing."""
    v = none_if_missing(v)
    return "" if v is None else f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def top1_cells(mean: Any, std: Any, ci95: Any, n: int, mixed: str = "") -> dict[str, str]:
    """The top-1 columns every table shares: "mean ± std (n=..)" (and what its seeds do not share,
    `tables.mixed_note`) and the 95% interval."""
    if none_if_missing(mean) is None:
        return {"Top-1 (%) mean ± std": "not run", "95% CI": ""}
    std, ci95 = none_if_missing(std), none_if_missing(ci95)
    note = f"; {mixed}" if none_if_missing(mixed) else ""
    return {"Top-1 (%) mean ± std": f"{mean:.2f}{'' if std is None else f' ± {std:.2f}'} (n={n}{note})",
            "95% CI": "" if ci95 is None else f"{mean - ci95:.2f}–{mean + ci95:.2f}"}


def diff_cell(diff: Any, ci95: Any, n: Any, test: Any) -> str:
    """The gap a row's verdict tested, with its 95% interval from unrounded bounds: "-1.23 (-3.40 to
    +0.94; 4 pairs)"."""
    diff, ci95, n = none_if_missing(diff), none_if_missing(ci95), none_if_missing(n)
    if diff is None or n is None or not test:
        return ""
    what = f"{int(n)} pairs"
    return f"{diff:+.2f}" + (f" ({diff - ci95:+.2f} to {diff + ci95:+.2f}; {what})" if ci95 is not None else f" ({what})")


def cross_stack_note(frame: pd.DataFrame) -> str:
    """How many seed pairs a table's tests left out because their two runs ran on different machines
    or torch versions (`cross_stack_pairs`), and what a row left without pairs is tested with; ""
    where none was."""
    cross = int(frame["cross_stack_pairs"].fillna(0).sum())
    return (f"{cross} seed pair(s) left out of the tests because their two runs ran on different machines or "
            f"torch versions; a row left with fewer than two pairs is not tested (an unpaired test across machines "
            f"would mix the machine's effect with the row's)." if cross else "")


def table_footnote(frame: pd.DataFrame, agg: dict[tuple, dict[str, Any]]) -> str:
    """Which seeds, machines and torch versions made a table's rows (one line), its margin, and its
    trend test where its rows vary one knob."""
    stacks: dict[str, set] = {}
    for key in frame.attrs.get("keys", []):
        entry = agg.get(key)
        for seed, stack in zip(entry["seeds"] if entry else (), entry["stacks"] if entry else ()):
            stacks.setdefault(stack, set()).add(seed)
    made = "; ".join(f"seeds {', '.join(map(str, sorted(s for s in seeds if s is not None)))} on {escape(stack)}"
                     for stack, seeds in sorted(stacks.items()))
    lines = [f"Made by: {made or 'no finished runs'}. Verdicts test non-inferiority at a margin of "
             f"{frame['margin'].iloc[0]:g} point(s) (one-sided paired t) and a difference (two-sided), Holm-corrected "
             f"within the table; a pair is used only where both runs share machine and torch."]
    mixed = [f"{r['label']} ({escape(r['mixed'])})" for _, r in frame.iterrows()  # stacks: in "Made by" above
             if none_if_missing(r["mixed"]) and "precisions" in r["mixed"]]
    if mixed:
        lines.append("Rows whose seeds are not one measurement: " + "; ".join(mixed) + ".")
    if left_out := cross_stack_note(frame):
        lines.append(left_out)
    found = frame.attrs.get("trend")
    if found and found[1].n >= 2:
        axis, t = found
        lines.append(f"Trend across {axis}: {t.slope:+.2f} points per unit of {axis} (95% CI {t.slope - t.ci95:+.2f} to "
                     f"{t.slope + t.ci95:+.2f}; per-seed least-squares slopes, one-sample t over {t.n} seeds, "
                     f"p = {t.p:.3f}).")
    elif found:
        lines.append(f"Trend across {found[0]}: fewer than 2 seeds have every level; not tested.")
    return "\n\n".join(f"*{line}*" for line in lines)


def markdown_table(table: pd.DataFrame, agg: dict[tuple, dict[str, Any]] | None = None) -> str:
    """One paper table at a glance: row, params, FLOPs (with the input size they were counted at),
    top-1 mean ± std (n), the tested gap to its
    reference with its interval, the verdict and the paper's top-1; the rest stays in the CSV.
    With `agg`, a footnote says which seeds, machines and torch versions made the rows."""
    rows = []
    sizes = {str(v) for v in table.get("input_px", pd.Series(dtype=object)).dropna()}
    flops_col = f"FLOPs (M, {next(iter(sizes))} px)" if len(sizes) == 1 else "FLOPs (M)"  # the input counted at
    for _, r in table.iterrows():
        mean, std = none_if_missing(r["top1_mean"]), none_if_missing(r["top1_std"])
        top1 = ("published only" if r["status"] == "paper only" else "not run" if mean is None else
                f"{mean:.2f}{'' if std is None else f' ± {std:.2f}'} (n={r['n_seeds']})")
        ref = none_if_missing(r["reference"])
        gap = diff_cell(r.get("diff_vs_reference"), r.get("diff_ci95"), r.get("diff_n"), r["test"])
        rows.append({"Model": r["label"], "Params (M)": fmt_number(r["params_m"], 3),
                     flops_col: fmt_number(r["flops_m"], 1) + (f" at {r['input_px']} px" if len(sizes) > 1 and
                                                         none_if_missing(r.get("input_px")) and none_if_missing(r["flops_m"]) else ""),
                     "Top-1 (%)": top1,
                     "Δ top-1 vs reference (pp, 95% CI)": f"{gap} vs {ref}" if gap and ref else gap,
                     "Verdict": r["vs_reference"] or "", "Paper top-1 (%)": fmt_number(r["paper_top1"], 1)})
        if "top5_mean" in table:  # the ImageNet tables
            std5 = none_if_missing(r["top5_std"])
            rows[-1].update({"Top-5 (%)": fmt_number(r["top5_mean"], 2) + (f" ± {std5:.2f}" if std5 else ""),
                             "Paper top-5 (%)": fmt_number(r["paper_top5"], 1)})
    published = [f"{r['label']} ({paper.PUBLISHED_ONLY[r['label']]})" for _, r in table.iterrows()
                 if r["status"] == "paper only"]
    out = md_table(pd.DataFrame(rows)) + ("\n\nPublished only: " + "; ".join(published) + "." if published else "")
    return out + ("\n\n" + table_footnote(table, agg) if agg is not None else "")


def provenance(runs: pd.DataFrame) -> dict[str, Any]:
    finished = runs[runs["status"] == "finished"]
    source = finished if len(finished) else runs
    return {
        "profiles": sorted(source["profile"].dropna().unique()),
        "epochs": sorted(int(e) for e in source["epochs"].dropna().unique()),
        "train_sizes": sorted(int(n) for n in source["train_size"].dropna().unique()),
        "test_sizes": sorted(int(n) for n in source["test_size"].dropna().unique()),
        # the folder's name only: a report names no absolute path of the machine that made it
        "data_names": sorted({PurePath(d).name for d in source["data_dir"].dropna().unique()}),
        "data_fingerprints": sorted(source["data_fingerprint"].dropna().unique()),
        "dataset": get_dataset(source["dataset"].dropna().iloc[0] if source["dataset"].notna().any() else None),
        "precisions": sorted(source["precision"].dropna().unique()),
        "seeds": sorted(int(s) for s in source["seed"].dropna().unique()),
        "devices": sorted(source["device"].dropna().unique()),
        "runs": len(runs), "finished": len(finished), "damaged": runs.attrs.get("damaged", []),
    }


def header_markdown(p: dict[str, Any]) -> str:
    paper_epochs = load_profile("paper").epochs
    dataset = p.get("dataset") or get_dataset(None)
    lines = ["# ghost-ablate report", "",
             f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from {p['finished']} finished of "
             f"{p['runs']} recorded runs.", "",
             "| how the numbers were made | |", "|---|---|",
             f"| profile | {', '.join(p['profiles'])} |",
             f"| epochs | {', '.join(map(str, p['epochs']))} (paper: {paper_epochs}) |",
             f"| data set | {dataset.title}, {', '.join(f'{n:,}' for n in p['train_sizes'])} training / "
             f"{', '.join(f'{n:,}' for n in p['test_sizes'])} test images (full: {dataset.train_size:,} / "
             f"{dataset.test_size:,}) |",
             f"| data folder | {', '.join(escape(d) for d in p['data_names'])} "
             f"(fingerprint {', '.join(escape(d) for d in p.get('data_fingerprints', [])) or 'not recorded'}) |",
             f"| seeds | {', '.join(map(str, p['seeds']))} |",
             f"| device | {'; '.join(escape(d) for d in p['devices'])} |",
             f"| precision | {', '.join(escape(x) for x in p['precisions']) or 'not recorded (before precision was a recipe field)'} |",
             ""]
    short = [why for ok, why in ((all(n >= dataset.train_size for n in p["train_sizes"]), "a subset of the data"),
                                 (all(e >= paper_epochs for e in p["epochs"]), "fewer epochs than the paper"))
             if not ok]
    if p.get("damaged"):
        lines += [f"> **{len(p['damaged'])} damaged record(s) left out:** {'; '.join(escape(d) for d in p['damaged'])}. "
                  f"`ghost-ablate doctor` lists them; a sweep sets them aside and trains those runs again.", ""]
    if short:
        lines += [f"> **Not a reproduction.** These runs used {' and '.join(short)}; their accuracies say "
                  f"nothing about the paper's claims. Parameter and FLOP counts do not depend on training.", ""]
    return "\n".join(lines)


def paired_differences(agg: dict[tuple, dict[str, Any]]) -> list[list[float]]:
    """Per paper row with a reference row: its per-seed differences to the reference over the
    seeds both have (the spread a paired test works with), where there are at least two."""
    groups, seen = [], set()
    for row in paper.rows(buildable=True):
        ref = paper.reference_row(row, BASELINES)
        pair = (row.run_key, ref.run_key if ref else None)
        if ref is None or ref.key == row.key or pair in seen or row.run_key not in agg or ref.run_key not in agg:
            continue
        seen.add(pair)
        mine = dict(zip(agg[row.run_key]["seeds"], agg[row.run_key]["final"]))
        theirs = dict(zip(agg[ref.run_key]["seeds"], agg[ref.run_key]["final"]))
        shared = sorted(s for s in set(mine) & set(theirs) if s is not None)
        if len(shared) >= 2:
            groups.append([mine[s] - theirs[s] for s in shared])
    return groups


def seeds_markdown(agg: dict[tuple, dict[str, Any]], gaps: tuple[float, ...] = (paper.TYPICAL_GAP_PP, 1.0)) -> str:
    """What the observed spread can resolve, in words: the spread of paired per-seed differences
    where rows share seeds (what the tables' paired tests use), else the seed-to-seed spread."""
    diffs = paired_differences(agg)
    std = pooled_std(diffs)
    tail = (f"The paper's ablation gaps are about {paper.TYPICAL_GAP_PP} points (Tables 1 and 2). A row whose verdict is "
            f"\"undetermined\" is neither shown to be no worse than its reference nor shown to differ; its verdict "
            f"names the smallest gap its n could detect. `ghost-ablate plan-seeds` turns a pilot's spread into the "
            f"n a chosen gap needs.")
    if std is not None:
        said = "; ".join(f"{gap:g} points: {seeds_needed_paired(std, gap)} seeds per row" for gap in gaps)
        return (f"## How many seeds?\n\nPaired by seed (same seed: same batches in the same order), a row's final "
                f"top-1 differs from its reference row's by a spread of {std:.2f} points (standard deviation of the "
                f"per-seed differences, pooled over {len(diffs)} comparisons). A two-sided paired t-test at level "
                f"{ALPHA} detects a difference with {POWER:.0%} power at about these numbers of seeds: {said} "
                f"(before the Holm correction, which asks for a few more). " + tail)
    groups = [e["final"] for e in agg.values() if len(e["final"]) > 1]
    std = pooled_std(groups)
    if std is None:
        return "## How many seeds?\n\nNo row has two finished seeds yet, so the seed-to-seed spread is unknown."
    said = "; ".join(f"{gap:g} points: {seeds_needed(std, gap)} seeds per row" for gap in gaps)
    return (f"## How many seeds?\n\nThe final top-1 varies between seeds by {std:.2f} points (standard deviation "
            f"pooled over {len(groups)} rows; no two rows share two seeds yet, so nothing is paired). A two-sided "
            f"Welch test at level {ALPHA} detects a difference with {POWER:.0%} power at about these numbers of "
            f"seeds: {said}. " + tail)


def pruned_markdown(runs: pd.DataFrame) -> str:
    """What a pruned row's accuracy includes, in words ("" without finished pruned runs): it starts
    from its source run's final weights, so it has trained for the source's epochs and its own."""

    if "source" not in runs:
        return ""
    pruned = runs[runs["status"].eq("finished") & runs["source"].map(lambda s: isinstance(s, dict))]
    if pruned.empty:
        return ""
    by_id = runs.set_index("run_id")
    lines = []
    for key, group in pruned.groupby(pruned.apply(row_key, axis=1), sort=False):
        sources = [s["run_id"] for s in group["source"]]
        source_epochs = sorted({int(by_id.at[s, "epochs"]) for s in sources if s in by_id.index})
        before = [100 * s["final_test_acc"] for s in group["source"] if s.get("final_test_acc") is not None]
        lines.append(f"- {full_label(*key)}: {len(group)} run(s), {'/'.join(map(str, source_epochs)) or '?'} epochs "
                     f"of its source, then {int(group['epochs'].iloc[0])} of its own; the sources' mean top-1 "
                     f"{sum(before) / len(before):.2f}%, after pruning and retraining "
                     f"{100 * group['final_test_acc'].mean():.2f}%." if before else
                     f"- {full_label(*key)}: {len(group)} run(s).")
    return ("## What the pruned rows include\n\nA pruned row (l1- and budget-) starts from its source run's final "
            "weights, pruned, and then trains with its own recipe, so it has seen the source's epochs and its own: "
            "more training than the rows trained from random weights. On a short schedule that extra training, not "
            "the pruning, can put it ahead of its own unpruned source; compare pruned rows with each other, and each "
            "with its source before pruning:\n\n" + "\n".join(lines))


def equal_epochs_markdown(table: pd.DataFrame) -> str:
    """The equal-epochs controls (`tables.equal_epochs_table`) at a glance; "" without any."""
    if table.empty:
        return ""
    rows = [{"Pruned row (epochs: source + own)": f"{escape(r['pruned'])} ({r['pruned_epochs']})",
             "Top-1 (%)": f"{r['pruned_top1_mean']:.2f} (n={r['pruned_n']})",
             "Control from random weights (epochs)": f"{escape(r['control'])} ({r['control_epochs']})",
             "Control top-1 (%)": f"{r['control_top1_mean']:.2f} (n={r['control_n']})",
             "Δ control − pruned (pp, 95% CI)": diff_cell(r["diff"], r["diff_ci95"], r["diff_n"], r["test"]),
             "Verdict": r["verdict"] or ""} for _, r in table.iterrows()]
    margin = table["margin"].iloc[0]
    note = f"\n\n*{left_out}*" if (left_out := cross_stack_note(table)) else ""
    return ("### Equal-epochs controls\n\nEach pruned row against the rows of its family trained from random "
            "weights for as many epochs as the pruned runs trained in all (`epochs_of:` in the experiment file), "
            "so the extra training is on both sides. The difference is control − pruned, paired by seed where both "
            "runs share machine and torch; verdicts test the control's non-inferiority to the pruned row at "
            f"{margin:g} point(s) and a difference, Holm-corrected within this table.\n\n" + md_table(pd.DataFrame(rows))
            + note)
