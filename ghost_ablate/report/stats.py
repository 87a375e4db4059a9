"""Statistics over seeds for an ablation table: mean, std, a Student-t confidence interval,
Welch's t-test of each row against its table's reference row, and how many seeds would
resolve a difference of a given size."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05  # two-sided test level, and 95% intervals
POWER = 0.8  # for the seeds-needed estimate


@dataclass(frozen=True)
class SeedStats:
    n: int
    mean: float | None
    std: float | None  # sample standard deviation (n - 1); None for n < 2
    ci95: float | None  # half-width of the 95% Student-t interval of the mean; None for n < 2


def seed_stats(values: Sequence[float]) -> SeedStats:
    n = len(values)
    if n == 0:
        return SeedStats(0, None, None, None)
    mean = sum(values) / n
    if n < 2:
        return SeedStats(n, mean, None, None)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return SeedStats(n, mean, std, float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * std / math.sqrt(n))


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances); None without 2 values each.

    Two groups with no spread at all give 1.0 if their means are equal, else 0.0.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    if max(a) == min(a) and max(b) == min(b):
        return 1.0 if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def noise_verdict(p: float | None) -> str:
    """The p-value in plain words."""
    if p is None:
        return ""
    return "within noise" if p >= ALPHA else "differs (p < 0.05)"


def seeds_needed(std: float, difference: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Seeds per row for a two-sided two-sample t-test to detect `difference` with `power`,
    given a per-seed standard deviation `std` (smallest n whose noncentral-t power reaches it)."""
    if std <= 0 or difference <= 0:
        return None
    for n in range(2, 100_000):
        df = 2 * n - 2
        crit = stats.t.ppf(1 - alpha / 2, df)
        noncentrality = difference / (std * math.sqrt(2 / n))
        if 1 - stats.nct.cdf(crit, df, noncentrality) + stats.nct.cdf(-crit, df, noncentrality) >= power:
            return n
    return None


def pooled_std(groups: Sequence[Sequence[float]]) -> float | None:
    """The standard deviation pooled over groups of seeds (each weighted by n - 1)."""
    dof = sum(len(g) - 1 for g in groups if len(g) > 1)
    if dof == 0:
        return None
    ss = sum(sum((v - sum(g) / len(g)) ** 2 for v in g) for g in groups if len(g) > 1)
    return math.sqrt(ss / dof)
