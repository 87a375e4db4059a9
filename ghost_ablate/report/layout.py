"""Where a plot's labels go: beside their points in a column of their own, spaced so that no
two overlap and none leaves the axes, whatever the points' spread (adjustText's iterative
repulsion left labels on top of each other at ~158 MFLOPs and clipped at the axes' edge)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

LABEL_COLUMN = 0.64  # labels start at this fraction of the axes' width; points keep the left part
POINTS_SPAN = (0.05, 0.58)  # where on the x axis (fractions) the points' range is put
BEND = 0.035  # leader lines turn towards their label this far (axes fraction) before the label column
RUN_GAP = 0.008  # level runs of points at one height start this far apart (axes fraction), inside the markers


@dataclass(frozen=True)
class Point:
    """One configuration on a scatter plot: its x, its per-seed values and their mean."""
    x: float
    mean: float
    label: str
    color: str
    marker: str = "o"
    seeds: Sequence[float] = field(default_factory=tuple)


def spread(targets: Sequence[float], gap: float, low: float = 0.0, high: float = 1.0) -> list[float]:
    """Positions as near `targets` as possible, at least `gap` apart and within [low, high]
    (fractions of the axes); the order of the targets is kept. If they cannot all fit, the
    gap shrinks to what fits."""
    order = sorted(range(len(targets)), key=lambda i: (targets[i], i))
    n = len(order)
    if n == 0:
        return []
    gap = min(gap, (high - low) / max(n - 1, 1))
    placed = [0.0] * n
    previous = low - gap
    for i in order:  # upwards: no closer than `gap` to the one below
        previous = placed[i] = max(min(max(targets[i], low), high), previous + gap)
    ceiling = high + gap
    for i in reversed(order):  # downwards: back under the top, no closer than `gap` to the one above
        ceiling = placed[i] = min(placed[i], ceiling - gap)
    return placed


def y_limits(values: Sequence[float], pad: float = 0.08, floor: float = 0.0, ceiling: float = 100.0,
             min_span: float = 2.0) -> tuple[float, float]:
    """Limits that show every value with a margin, never beyond [floor, ceiling] (accuracy in %)."""
    low, high = min(values), max(values)
    span = max(high - low, min_span)
    middle = (low + high) / 2
    low, high = middle - span / 2 - pad * span, middle + span / 2 + pad * span
    return max(low, floor), min(high, ceiling)


def log_x_limits(xs: Sequence[float]) -> tuple[float, float]:
    """Log-axis limits that put the points' range at POINTS_SPAN, leaving the right part for labels."""
    lo, hi = math.log10(min(xs)), math.log10(max(xs))
    if hi - lo < 0.1:
        lo, hi = lo - 0.05, hi + 0.05
    unit = (hi - lo) / (POINTS_SPAN[1] - POINTS_SPAN[0])
    return 10 ** (lo - POINTS_SPAN[0] * unit), 10 ** (lo + (1 - POINTS_SPAN[0]) * unit)


def scatter_with_labels(ax, points: Sequence[Point], fontsize: float = 7.0,  # noqa: ANN001 - Axes
                        empty: str = "no finished runs") -> None:
    """Each point's seeds as small dots and its mean as a large marker, on a log x axis, with
    its label in the right-hand column joined to it by a thin line that crosses no other
    (`leader`); `empty` written in the middle where there is no point."""
    if not points:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="0.4")
        return
    values = [v for p in points for v in (*p.seeds, p.mean)]
    ax.set_xscale("log")
    ax.set_xlim(*log_x_limits([p.x for p in points]))
    ax.set_ylim(*y_limits(values))
    for p in points:
        if p.seeds:
            ax.plot([p.x] * len(p.seeds), p.seeds, p.marker, color=p.color, ms=3, alpha=0.45, mew=0, zorder=2)
        ax.plot(p.x, p.mean, p.marker, color=p.color, ms=8, mec="white", mew=0.8, zorder=3)
    low, high = ax.get_ylim()
    height_in = ax.figure.get_size_inches()[1] * ax.get_position().height
    gap = 1.35 * fontsize / 72 / height_in  # one line of text, in axes fractions
    to_axes = ax.transData + ax.transAxes.inverted()
    anchors = [tuple(to_axes.transform((p.x, p.mean))) for p in points]
    heights = [a[1] for a in anchors]
    # Points level with one another would share one level run; each run starts a little apart
    # inside its marker instead, in the labels' order, so every line can be followed.
    runs = spread(heights, RUN_GAP, 0.0, 1.0)
    for p, (x, _), run_y, label_y in zip(points, anchors, runs, spread(heights, gap, gap / 2 + 0.01,
                                                                       1 - gap / 2 - 0.01)):
        ax.plot(*leader(x, run_y, label_y), transform=ax.transAxes, color="0.75", lw=0.5, zorder=1)
        ax.text(LABEL_COLUMN, label_y, p.label, transform=ax.transAxes, va="center", ha="left", fontsize=fontsize,
                color=p.color)


def leader(x: float, y: float, label_y: float) -> tuple[list[float], list[float]]:
    """A label's leader line, in axes fractions: level from its point to just short of the label
    column, then a short slant to the label. Level runs never cross one another, and the slants
    all span the same narrow strip in the labels' order (`spread` keeps it), so no two leaders
    cross."""
    bend, end = LABEL_COLUMN - BEND, LABEL_COLUMN - 0.006
    return [x, bend, end], [y, y, label_y]
