"""The report's plots (PNG + SVG, deterministic so that an unchanged report changes no file)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import paper
from ..data import get_dataset
from ..labels import (
    KIND_NAMES,
    MARKERS,
    color,
    families,
    family,
    full_label,
    marker,
    short_label,
)
from ..models import MODELS
from ..records import missing, row_key
from .layout import Point, scatter_with_labels, y_limits
from .stats import ALPHA
from .tables import BASELINES, PLOT_FORMATS, vs_reference


def headless() -> None:
    """Draw without a display, and make SVG ids repeatable (an unchanged report changes no file)."""
    import matplotlib  # lazy: plotting loads only when a figure is drawn

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "ghost-ablate"


def plain_log_ticks(axis) -> None:  # noqa: ANN001 - a matplotlib Axis
    """Label a log axis 20, 50, 100, 200 rather than 2x10^1, and leave the minor ticks unlabelled
    (their labels ran into each other towards the top of a decade)."""
    from matplotlib.ticker import (  # lazy: plotting loads only when a figure is drawn
        FormatStrFormatter,
        LogLocator,
        NullFormatter,
    )

    if axis.get_scale() != "log":  # an empty panel keeps its linear axis
        return
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


def save_figure(fig, out: Path, stem: str) -> list[Path]:  # noqa: ANN001 - matplotlib Figure
    paths = []
    for fmt in PLOT_FORMATS:
        path = out / f"{stem}.{fmt}"
        # no date and fixed ids in SVGs, so regenerating an unchanged report changes no file
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        paths.append(path)
    import matplotlib.pyplot as plt  # lazy: plotting loads only when a figure is drawn

    plt.close(fig)
    return paths


def _our_points(agg: dict[tuple, dict[str, Any]], panel: str, field: str) -> list[Point]:
    return [Point(e[field] / 1e6, e["top1_mean"], short_label(*key), color(key[0]), marker(key[0]),
                  tuple(e["final"]))
            for key, e in sorted(agg.items(), key=lambda kv: str(kv[0]))
            if e["top1_mean"] is not None and family(key[0]) == panel]


def _paper_points(panel: str, field: str, tables: tuple[str, ...]) -> list[Point]:
    return [Point(getattr(r, field), r.top1, short_label(*r.key), color(r.model), marker(r.model))
            for r in paper.distinct_models(tables)
            if r.top1 is not None and family(r.model) == panel]


def panels(agg: dict[tuple, dict[str, Any]], tables: tuple[str, ...]) -> list[str]:
    """One column per model family with a point to draw (ours, or the paper's in `tables`), in
    registry order: the families come from the model specs, so a new family gets its panel."""
    present = {family(key[0]) for key, e in agg.items() if e["top1_mean"] is not None}
    present |= {family(r.model) for r in paper.distinct_models(tables) if r.top1 is not None}
    return [f for f in [*families(), "other"] if f in present]


def kind_legend(ax, models: list[str], seeds: bool) -> None:  # noqa: ANN001 - Axes
    import matplotlib.pyplot as plt  # lazy: plotting loads only when a figure is drawn

    kinds = sorted({MODELS[m].kind for m in models if m in MODELS}, key=list(MARKERS).index)
    handles = [plt.Line2D([], [], marker=MARKERS[k], ls="", color="0.3", label=KIND_NAMES[k]) for k in kinds]
    if seeds:
        handles.append(plt.Line2D([], [], marker="o", ls="", ms=3, alpha=0.45, color="0.3", label="one seed"))
    ax.legend(handles=handles, fontsize=7, loc="best")


def draw_accuracy_vs_cost(agg: dict[tuple, dict[str, Any]], cost: str,  # noqa: ANN201 - a matplotlib Figure
                          dataset: str = "CIFAR-10", tables: tuple[str, ...] = paper.CIFAR_TABLES):
    """Top-1 against FLOPs (or params), one column per testbed: ours on top (every seed a small
    dot, the mean a large marker; its own y range, so a trend of a few points shows), the
    paper's below on a y range of its own, so 93% does not flatten our 40-60%. The panels and
    the published points are those of `tables`, the data set's own paper tables."""
    import matplotlib.pyplot as plt  # lazy: plotting loads only when a figure is drawn

    field, paper_field = ("flops", "flops_m") if cost == "flops" else ("params", "params_m")
    xlabel = ("FLOPs (M multiply-accumulates per image)" if cost == "flops" else "parameters (M)") + ", log scale"
    columns = panels(agg, tables) or ["no finished runs"]
    fig, axes = plt.subplots(2, len(columns), figsize=(6.5 * len(columns), 9), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    for col, title in enumerate(columns):
        ours, published = _our_points(agg, title, field), _paper_points(title, paper_field, tables)
        for row, (points, who) in enumerate(((ours, "ours"), (published, "paper"))):
            ax = axes[row, col]
            scatter_with_labels(ax, points, empty="no finished runs" if who == "ours" else
                                f"no published row on {dataset}")
            ax.set_title(f"{title}: {who}" + (" (every seed, and the mean)" if who == "ours" else " (published)"),
                         fontsize=10)
            ax.set_xlabel(xlabel, fontsize=9)
            ax.set_ylabel(f"{dataset} top-1 test accuracy (%)", fontsize=9)
            ax.grid(alpha=0.3)
            plain_log_ticks(ax.xaxis)
            models = [k[0] for k in agg if family(k[0]) == title] if who == "ours" else \
                [r.model for r in paper.distinct_models(tables) if family(r.model) == title]
            if points:
                kind_legend(ax, models, seeds=who == "ours")

    fig.suptitle(f"Accuracy vs {'FLOPs' if cost == 'flops' else 'parameters'} on {dataset}")
    fig.tight_layout()
    return fig


def plot_accuracy_vs_cost(agg: dict[tuple, dict[str, Any]], out: Path, cost: str,
                          dataset: str = "CIFAR-10", tables: tuple[str, ...] = paper.CIFAR_TABLES) -> list[Path]:
    return save_figure(draw_accuracy_vs_cost(agg, cost, dataset, tables), out, f"accuracy_vs_{cost}")


def draw_table(table: str, frame: pd.DataFrame, agg: dict[tuple, dict[str, Any]]):  # noqa: ANN201 - a Figure
    """One paper table's rows in three panels sharing the x axis: our top-1 (every seed and the
    mean), each row's difference to its reference row with its 95% interval (paired by seed where
    the rows share seeds; filled where the Holm-corrected p < 0.05), and the paper's top-1."""
    import matplotlib.pyplot as plt  # lazy: plotting loads only when a figure is drawn

    shown = [(row, frame_row) for row, (_, frame_row) in zip(paper.rows(table), frame.iterrows())
             if row.model is not None]
    references = {ref.key for row, _ in shown if (ref := paper.reference_row(row, BASELINES)) is not None}
    xs = range(len(shown))
    per_row = max(0.95, 0.07 * max(len(row.label) for row, _ in shown))  # inches: room for the slanted labels
    fig, axes = plt.subplots(3, 1, figsize=(max(6.0, per_row * len(shown) + 2.5), 8.5), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2.2, 1.6]})
    ours_ax, diff_ax, paper_ax = axes
    values, diffs, published, intervals = [], [0.0], [], []
    for x, (row, frow) in zip(xs, shown):
        colour, mark = color(row.model), marker(row.model)
        e = agg.get(row.run_key)
        if e and e["final"]:
            jitter = [x + 0.12 * (i - (len(e["final"]) - 1) / 2) / max(len(e["final"]) - 1, 1)
                      for i in range(len(e["final"]))]
            ours_ax.plot(jitter, e["final"], mark, color=colour, ms=4, alpha=0.5, mew=0)
            ours_ax.plot([x - 0.22, x + 0.22], [e["top1_mean"]] * 2, "-", color=colour, lw=2)
            values += e["final"]
        ref = paper.reference_row(row, BASELINES)
        ref_e = agg.get(ref.run_key) if ref is not None and ref.key != row.key else None
        tested = vs_reference(e, ref_e)
        if row.key in references:
            diff_ax.plot(x, 0, mark, color=colour, mfc="white", ms=7)
        elif tested.diff is not None:
            significant = not missing(frow["p_holm"]) and frow["p_holm"] < ALPHA
            if tested.diffs:
                diff_ax.plot([x] * len(tested.diffs), tested.diffs, mark, color=colour, ms=3, alpha=0.45, mew=0)
            intervals.append((x, tested.diff, tested.ci95 or 0.0, mark, colour, significant))
            diffs += [tested.diff, *tested.diffs]
        if row.top1 is not None:
            paper_ax.plot(x, row.top1, mark, color=colour, mfc="none", ms=7)
            published.append(row.top1)
    ours_ax.set_ylim(*y_limits(values or [0.0, 100.0]))
    ours_ax.set_ylabel("our top-1 (%)", fontsize=9)
    ours_ax.set_title(f"{paper.TABLES[table]}\nours: every seed (dots) and the mean (bar)", fontsize=10)
    diff_ax.axhline(0, color="0.5", lw=0.8)
    low, high = y_limits(diffs, floor=-100, ceiling=100, min_span=1.0)
    diff_ax.set_ylim(low, high)
    draw_clipped_intervals(diff_ax, intervals, low, high)
    diff_ax.set_ylabel("vs reference (points)", fontsize=9)
    diff_ax.set_title("difference to the reference row (hollow marker at 0): mean and 95% CI, paired by seed "
                      "where seeds are shared; filled = Holm p < 0.05", fontsize=8)
    paper_ax.set_ylim(*y_limits(published or [0.0, 100.0], min_span=1.0))
    paper_ax.set_ylabel("paper top-1 (%)", fontsize=9)
    paper_ax.set_title("the paper's published top-1", fontsize=9)
    paper_ax.set_xticks(list(xs), [row.label for row, _ in shown], rotation=30, ha="right", fontsize=8)
    paper_ax.set_xlim(-0.6, len(shown) - 0.4)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def draw_clipped_intervals(ax, intervals: list[tuple], low: float, high: float) -> None:  # noqa: ANN001 - Axes
    """Each (x, mean, half-width, marker, colour, filled) as a 95% interval, cut at the panel's limits
    (set by the seeds and means, so one wide interval of an undetermined row does not flatten the
    rest), with an arrowhead and its full bound written where an interval is cut."""
    for x, mean, half, mark, colour, filled in intervals:
        lo, hi = mean - half, mean + half
        ax.plot([x, x], [max(lo, low), min(hi, high)], "-", color=colour, lw=1.2)
        ax.plot(x, mean, mark, color=colour, ms=7, mfc=colour if filled else "white")
        for bound, edge, arrow, va in ((hi, high, "^", "top"), (lo, low, "v", "bottom")):
            if (bound > edge) if arrow == "^" else (bound < edge):
                ax.plot(x, edge, arrow, color=colour, ms=6, clip_on=False)
                ax.annotate(f"{bound:+.1f}", (x, edge), xytext=(6, -2 if va == "top" else 2),
                            textcoords="offset points", fontsize=6, color=colour, va=va)


def plot_table(table: str, frame: pd.DataFrame, agg: dict[tuple, dict[str, Any]], out: Path) -> list[Path]:
    return save_figure(draw_table(table, frame, agg), out, table)


def plot_curves(agg: dict[tuple, dict[str, Any]], out: Path, dataset: str = "CIFAR-10") -> list[Path]:
    """Test accuracy and training loss per epoch, one line per configuration (mean over seeds) with
    a band from the lowest to the highest seed; the legend sits beside the panels, off the data."""
    import matplotlib.pyplot as plt  # lazy: plotting loads only when a figure is drawn
    from matplotlib.ticker import MaxNLocator  # lazy: plotting loads only when a figure is drawn

    fig, axes = plt.subplots(1, 2, figsize=(15, 5))
    panels = (("test_acc", 100, f"{dataset} top-1 test accuracy (%)"),
              ("train_loss", 1, "training loss (cross-entropy)"))
    for ax, (field, scale, ylabel) in zip(axes, panels):
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for key, e in sorted(agg.items(), key=lambda kv: str(kv[0])):
            curves = [pd.Series({h["epoch"]: scale * h[field] for h in hist if field in h}) for hist in e["histories"]]
            curves = [c for c in curves if len(c)]
            if not curves:
                continue
            frame = pd.concat(curves, axis=1)
            mean = frame.mean(axis=1)
            line, = ax.plot(mean.index + 1, mean.values, marker="." if len(mean) < 30 else None, label=full_label(*key))
            if frame.shape[1] > 1:
                ax.fill_between(mean.index + 1, frame.min(axis=1), frame.max(axis=1), color=line.get_color(),
                                alpha=0.15, lw=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_title("Test accuracy per epoch (mean over seeds; band: lowest to highest seed)")
    axes[1].set_title("Training loss per epoch (mean over seeds; band: lowest to highest seed)")
    if axes[0].lines:
        fig.tight_layout(rect=(0, 0, 0.86, 1))
        fig.legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="center left", bbox_to_anchor=(0.865, 0.5))
    else:  # records without per-epoch history (interrupted before an epoch ended, or very old)
        axes[0].text(0.5, 0.5, "no per-epoch history recorded", ha="center", transform=axes[0].transAxes)
    return save_figure(fig, out, "test_accuracy_per_epoch")


def plot_confusion(run: pd.Series, family: str, out: Path) -> list[Path]:
    """The test-set confusion matrix of one run, counts with row-normalised colour."""
    import matplotlib.pyplot as plt  # lazy: plotting loads only when a figure is drawn

    classes = get_dataset(run.get("dataset")).classes
    matrix = np.array(run["test_confusion"], dtype=float)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(matrix.shape):
        ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=7,
                color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc = 100 * run["final_test_acc"]
    name = full_label(*row_key(run))
    ax.set_title(f"{name}, seed {int(run['seed'])}: {acc:.2f}% top-1 ({int(matrix.sum())} test images)", fontsize=9)
    fig.colorbar(image, ax=ax, label="share of the true class")
    slug = family.lower().replace("-", "").replace(" ", "_")
    return save_figure(fig, out, f"confusion_{slug}")


def plot_latency(bench: pd.DataFrame, out: Path) -> list[Path]:
    """FLOPs against measured batch-1 latency, one panel per device kind."""
    import matplotlib.pyplot as plt  # lazy: plotting loads only when a figure is drawn
    from adjustText import adjust_text  # lazy: plotting loads only when a figure is drawn

    kinds = sorted(bench["device_kind"].unique())
    fig, axes = plt.subplots(1, len(kinds), figsize=(8 * len(kinds), 6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        part = bench[bench["device_kind"] == kind]
        texts = []
        for _, r in part.iterrows():
            colour = color(r["model"])
            x, y = r["flops"] / 1e6, r["latency_bs1_ms"]
            ax.plot(x, y, "o", color=colour)
            texts.append(ax.text(x, y, full_label(*row_key(r)), fontsize=7, color=colour))
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_log_ticks(ax.xaxis)
        plain_log_ticks(ax.yaxis)
        ax.set_xlabel("FLOPs (millions of multiply-accumulates per image), log scale")
        ax.set_ylabel("measured latency at batch 1 (ms), log scale")
        ax.set_title(f"FLOPs vs latency on {kind}: {part['device'].iloc[0]}")
        ax.grid(alpha=0.3)
        adjust_text(texts, ax=ax, arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
    return save_figure(fig, out, "flops_vs_latency")
