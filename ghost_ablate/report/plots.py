"""The report's plots (PNG + SVG, deterministic so that an unchanged report changes no file)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .. import paper
from ..records import row_key
from .labels import COLORS, _family, full_label, short_label
from .tables import PLOT_FORMATS


def headless() -> None:
    """Draw without a display, and make SVG ids repeatable (an unchanged report changes no file)."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "ghost-ablate"


def _plain_log_ticks(axis) -> None:  # noqa: ANN001 - a matplotlib Axis
    """Label a log axis 20, 50, 100 rather than 2x10^1; minor labels only on short ranges."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    low, high = axis.get_view_interval()
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(FormatStrFormatter("%g") if high / max(low, 1e-12) < 20 else NullFormatter())


def _save(fig, out: Path, stem: str) -> list[Path]:  # noqa: ANN001 - matplotlib Figure
    paths = []
    for fmt in PLOT_FORMATS:
        path = out / f"{stem}.{fmt}"
        # no date and fixed ids in SVGs, so regenerating an unchanged report changes no file
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        paths.append(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def plot_accuracy_vs_cost(agg: dict[tuple, dict[str, Any]], out: Path, cost: str) -> list[Path]:
    """Top-1 vs FLOPs (or params), one panel per testbed: ours with error bars over seeds,
    the paper's as hollow markers, every point labelled with its s/d."""
    import matplotlib.pyplot as plt
    from adjustText import adjust_text

    field, paper_field = ("flops", "flops_m") if cost == "flops" else ("params", "params_m")
    xlabel = ("FLOPs (M multiply-accumulates per image)" if cost == "flops" else "parameters (M)") + ", log scale"
    panels = {"VGG-16": ("VGG-16",), "ResNet-56 and GhostNet": ("ResNet-56", "GhostNet")}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, (title, families) in zip(axes, panels.items()):
        texts = []
        for key, e in sorted(agg.items(), key=lambda kv: str(kv[0])):
            if e["top1_mean"] is None or _family(key[0]) not in families:
                continue
            color, x = COLORS[_family(key[0])], e[field] / 1e6
            ax.errorbar(x, e["top1_mean"], yerr=e["top1_ci95"] or 0, fmt="o", color=color, capsize=3)
            texts.append(ax.text(x, e["top1_mean"], short_label(*key), fontsize=7, color=color))
        for row in paper.distinct_models(paper.CIFAR_TABLES):
            if row.top1 is None or _family(row.model) not in families:
                continue
            color, x = COLORS[_family(row.model)], getattr(row, paper_field)
            ax.plot(x, row.top1, "o", mfc="none", mec=color, ms=9)
            texts.append(ax.text(x, row.top1, "paper " + short_label(*row.key), fontsize=7, color=color, alpha=0.75))
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("CIFAR-10 top-1 test accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(handles=[plt.Line2D([], [], marker="o", ls="", color="k", label="ours (mean, 95% CI over seeds)"),
                           plt.Line2D([], [], marker="o", ls="", mfc="none", mec="k", ms=9, label="paper")],
                  fontsize=8, loc="best")
        _plain_log_ticks(ax.xaxis)
        if texts:
            adjust_text(texts, ax=ax, arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
    fig.suptitle(f"Accuracy vs {'FLOPs' if cost == 'flops' else 'parameters'} on CIFAR-10")
    return _save(fig, out, f"accuracy_vs_{cost}")


def plot_ablations(agg: dict[tuple, dict[str, Any]], out: Path) -> list[Path]:
    """Table 1 (d at s=2) and Table 2 (s at d=3) as curves, ours beside the paper's."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, table, axis, name in ((axes[0], "table1_dw_size", "dw_size", "kernel size d of the cheap op (s=2)"),
                                  (axes[1], "table2_ratio", "ratio", "ratio s (d=3)")):
        rows = [r for r in paper.rows(table, buildable=True) if getattr(r, axis) is not None]
        xs = [getattr(r, axis) for r in rows]
        ax.plot(xs, [r.top1 for r in rows], "o--", mfc="none", color="tab:gray", label="paper")
        ours = [(getattr(r, axis), agg.get(r.run_key)) for r in rows]
        ours = [(x, e) for x, e in ours if e and e["top1_mean"] is not None]
        if ours:
            ax.errorbar([x for x, _ in ours], [e["top1_mean"] for _, e in ours],
                        yerr=[e["top1_ci95"] or 0 for _, e in ours], fmt="o-", color="tab:blue", capsize=3,
                        label="ours")
        ax.set_xticks(xs)
        ax.set_xlabel(name)
        ax.set_ylabel("CIFAR-10 top-1 test accuracy (%)")
        ax.set_title(paper.TABLES[table].split(":")[0] + ": Ghost-VGG-16")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out, "ablation_s_d")


def plot_curves(agg: dict[tuple, dict[str, Any]], out: Path) -> list[Path]:
    """Test accuracy and training loss per epoch, one line per configuration (mean over seeds)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    panels = (("test_acc", 100, "CIFAR-10 top-1 test accuracy (%)"), ("train_loss", 1, "training loss (cross-entropy)"))
    for ax, (field, scale, ylabel) in zip(axes, panels):
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for key, e in sorted(agg.items(), key=lambda kv: str(kv[0])):
            curves = [pd.Series({h["epoch"]: scale * h[field] for h in hist if field in h}) for hist in e["histories"]]
            curves = [c for c in curves if len(c)]
            if not curves:
                continue
            mean = pd.concat(curves, axis=1).mean(axis=1)
            ax.plot(mean.index + 1, mean.values, marker="." if len(mean) < 30 else None, label=full_label(*key))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_title("Test accuracy per epoch (mean over seeds)")
    axes[1].set_title("Training loss per epoch (mean over seeds)")
    if axes[0].lines:
        axes[0].legend(fontsize=7, ncol=2)
    else:  # records without per-epoch history (interrupted before an epoch ended, or very old)
        axes[0].text(0.5, 0.5, "no per-epoch history recorded", ha="center", transform=axes[0].transAxes)
    return _save(fig, out, "test_accuracy_per_epoch")


def plot_confusion(run: pd.Series, family: str, out: Path) -> list[Path]:
    """The test-set confusion matrix of one run, counts with row-normalised colour."""
    import matplotlib.pyplot as plt
    import numpy as np

    from ..data import CLASSES

    matrix = np.array(run["test_confusion"], dtype=float)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(matrix.shape):
        ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=7,
                color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc = 100 * run["final_test_acc"]
    name = full_label(*row_key(run))
    ax.set_title(f"{name}, seed {int(run['seed'])}: {acc:.2f}% top-1 ({int(matrix.sum())} test images)", fontsize=9)
    fig.colorbar(image, ax=ax, label="share of the true class")
    slug = family.lower().replace("-", "").replace(" ", "_")
    return _save(fig, out, f"confusion_{slug}")


def plot_latency(bench: pd.DataFrame, out: Path) -> list[Path]:
    """FLOPs against measured batch-1 latency, one panel per device kind."""
    import matplotlib.pyplot as plt

    from adjustText import adjust_text

    kinds = sorted(bench["device_kind"].unique())
    fig, axes = plt.subplots(1, len(kinds), figsize=(8 * len(kinds), 6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        part = bench[bench["device_kind"] == kind]
        texts = []
        for _, r in part.iterrows():
            color = COLORS[_family(r["model"])]
            x, y = r["flops"] / 1e6, r["latency_bs1_ms"]
            ax.plot(x, y, "o", color=color)
            texts.append(ax.text(x, y, full_label(*row_key(r)), fontsize=7, color=color))
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_ticks(ax.xaxis)
        _plain_log_ticks(ax.yaxis)
        ax.set_xlabel("FLOPs (millions of multiply-accumulates per image), log scale")
        ax.set_ylabel("measured latency at batch 1 (ms), log scale")
        ax.set_title(f"FLOPs vs latency on {kind}: {part['device'].iloc[0]}")
        ax.grid(alpha=0.3)
        adjust_text(texts, ax=ax, arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
    return _save(fig, out, "flops_vs_latency")
