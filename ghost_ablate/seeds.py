"""Seeds planned from their noise: how many seeds an experiment's comparisons need.

From pilot records, each comparison of the experiment's paper tables (a row against its
reference row) gets the spread of its per-seed paired differences, its own where the pilot
holds at least two pairs of it on one machine and torch, else the spread pooled over the
comparisons that have them. Its n is the smallest that detects a gap of `detect` points with
80% power by the one-sided paired t-test at Holm's strictest level (alpha / comparisons in its
table); the plan runs the largest n any comparison needs, capped by `max_seeds` and, where a
cost per seed is given, by an hours budget. Where a cap binds, the plan says which gap the
capped n can detect instead.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import paper
from .errors import UserError
from .models import MODELS
from .records import PLAN_FILE, write_atomic
from .report.stats import (
    ALPHA,
    POWER,
    mde_paired,
    pooled_std,
    seed_stats,
    seeds_for_gap,
)
from .report.tables import vs_reference


@dataclass(frozen=True)
class PlannedComparison:
    table: str
    row: str
    reference: str
    pilot_pairs: int  # pairs the pilot holds of this comparison on one machine and torch
    std_diff: float | None  # spread of the per-seed paired differences (points)
    spread_from: str  # "own pairs", "pooled over K comparisons" or "none"
    alpha: float  # Holm's strictest level in its table
    needed: int | None  # seeds to detect `detect` points; None if beyond any cap considered


@dataclass(frozen=True)
class SeedPlan:
    detect: float
    power: float
    max_seeds: int
    n: int  # seeds the plan runs
    wanted: int  # seeds the widest comparison needs, before any cap (10,001: more than 10,000)
    limited_by: str  # "" when every comparison gets its n, else what capped it
    mde_at_n: float | None  # the largest MDE among the comparisons at n (what the plan can resolve)
    comparisons: tuple[PlannedComparison, ...]

    def seeds(self) -> list[int]:
        return list(range(self.n))

    def summary(self) -> str:
        """One paragraph for the console and the report."""
        cap = f" (capped by {self.limited_by})" if self.limited_by else ""
        mde = f"; at n={self.n} the widest comparison detects gaps >= {self.mde_at_n:.2f} points" \
            if self.mde_at_n is not None else ""
        return (f"n={self.n} seeds{cap}, chosen from pilot variance to detect {self.detect:g} points with "
                f"{self.power:.0%} power (one-sided paired t at Holm's alpha / m){mde}")


def pilot_differences(agg: dict[tuple, dict[str, Any]], row: paper.PaperRow, ref: paper.PaperRow) -> list[float]:
    """Per-seed differences row - reference over the seeds both ran on the same machine and torch:
    the pairs the report's paired test uses (`tables.vs_reference`); none where fewer than two."""

    return list(vs_reference(agg.get(row.run_key), agg.get(ref.run_key)).diffs)


def comparisons_of(tables: tuple[str, ...]) -> list[tuple[str, paper.PaperRow, paper.PaperRow, int]]:
    """(table, row, reference, comparisons in that table) for every tested row of `tables`."""

    baselines = {name: spec.baseline for name, spec in MODELS.items()}
    out = []
    for table in tables:
        pairs = [(row, ref) for row in paper.rows(table, buildable=True)
                 if (ref := paper.reference_row(row, baselines)) is not None and ref.key != row.key]
        out += [(table, row, ref, len(pairs)) for row, ref in pairs]
    return out


def plan_seeds(tables: tuple[str, ...], agg: dict[tuple, dict[str, Any]], detect: float, max_seeds: int,
               power: float = POWER, hours_per_seed: float | None = None,
               max_hours: float | None = None) -> SeedPlan:
    """The seed count for `tables`' comparisons from the pilot's aggregated records (`tables.aggregate`)."""
    if not detect > 0 or not math.isfinite(detect):
        raise UserError(f"--detect must be a gap in top-1 points > 0, got {detect}")
    if max_seeds < 2:
        raise UserError(f"--max-seeds must be >= 2 (a paired test needs two seeds), got {max_seeds}")
    found = comparisons_of(tables)
    if not found:
        raise UserError(f"no comparisons to plan: the experiment declares no paper table with a reference row "
                        f"(tables: {', '.join(tables) or 'none'})")
    own = {(t, r.label): pilot_differences(agg, r, ref) for t, r, ref, _ in found}
    distinct = {(r.run_key, ref.run_key): own[(t, r.label)] for t, r, ref, _ in found}  # one per pair of rows
    usable = [d for d in distinct.values() if len(d) >= 2]
    pooled = pooled_std(usable)
    if pooled is None:
        raise UserError("the pilot holds no comparison with 2 seeds on one machine and torch; run at least seeds "
                        "0,1 of a row and its reference (e.g. `make pilot`) and pass its results folder with --pilot")
    planned = []
    for table, row, ref, m in found:
        diffs = own[(table, row.label)]
        std, source = ((seed_stats(diffs).std, "own pairs") if len(diffs) >= 3 else
                       (pooled, f"pooled over {len(usable)} comparison(s)"))
        alpha = ALPHA / m
        planned.append(PlannedComparison(table, row.label, ref.label, len(diffs), std, source, alpha,
                                         seeds_for_gap(std, detect, alpha, power, max_seeds=10_000)))
    want = max((c.needed or 10_001) for c in planned)
    n, limited = min(want, max_seeds), "--max-seeds" if want > max_seeds else ""
    if hours_per_seed is not None and max_hours is not None and n * hours_per_seed > max_hours:
        n, limited = max(2, int(max_hours // hours_per_seed)), f"--max-hours {max_hours:g}"
    mde = max((mde_paired(c.std_diff, n, c.alpha, power) or 0.0) for c in planned)
    return SeedPlan(detect, power, max_seeds, n, want, limited, mde, tuple(planned))


def write_plan(plan: SeedPlan, results_dir: Path, pilot: str) -> Path:
    path = Path(results_dir) / PLAN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({**asdict(plan), "pilot": pilot, "summary": plan.summary()}, indent=1))
    return path
