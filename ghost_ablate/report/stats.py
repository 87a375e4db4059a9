"""Statistics over seeds for an ablation table: mean, std, a Student-t confidence interval,
Welch's t-test of each row against its table's reference row, the paired t-test where two
rows share seeds (same seed, same batches in the same order), Holm-Bonferroni across a
table's comparisons, and how many seeds would resolve a difference of a given size."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class PairedStats:
    n: int  # pairs
    mean: float | None  # mean of the per-pair differences b - a
    ci95: float | None  # half-width of its 95% Student-t interval; None for n < 2
    p: float | None  # two-sided paired t-test; None for n < 2


def paired_stats(a: Sequence[float], b: Sequence[float]) -> PairedStats:
    """The paired comparison of `b` against `a` (equal lengths, pair i = the same seed):
    mean difference, its interval and the paired t-test's p (scipy's `ttest_rel`). Pairs
    that all differ by the same amount give p = 0.0 (or 1.0 when that amount is 0)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    diffs = [y - x for x, y in zip(a, b)]
    d = seed_stats(diffs)
    if d.n < 2:
        return PairedStats(d.n, d.mean, None, None)
    if d.std == 0:
        return PairedStats(d.n, d.mean, 0.0, 1.0 if d.mean == 0 else 0.0)
    return PairedStats(d.n, d.mean, d.ci95, float(stats.ttest_rel(b, a).pvalue))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None entries are left out and stay None): the k-th
    smallest of m p-values is multiplied by m - k + 1, made monotone and capped at 1, so
    comparing each adjusted p with ALPHA controls the family-wise error rate."""
    ranked = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(ranked)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (m - k) * p))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Comparison:
    test: str  # "paired t" (over the seeds both rows have) or "Welch"; "" when there is nothing to test
    p: float | None
    n: int  # pairs for the paired test, else the smaller group
    diff: float | None = None  # row - reference: mean per-seed difference (paired) or difference of means
    ci95: float | None = None  # half-width of the 95% interval of `diff` (paired t or Welch-Satterthwaite)
    diffs: tuple[float, ...] = ()  # the per-seed differences of a paired comparison, by seed


def welch_interval(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Half-width of the 95% interval of mean(a) - mean(b) with Welch-Satterthwaite degrees of
    freedom; None without 2 values each."""
    sa, sb = seed_stats(a), seed_stats(b)
    if sa.n < 2 or sb.n < 2:
        return None
    va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
    if va + vb == 0:
        return 0.0
    df = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))
    return float(stats.t.ppf(1 - ALPHA / 2, df)) * math.sqrt(va + vb)


def compare(row: Sequence[float], ref: Sequence[float], row_seeds: Sequence[Any] | None = None,
            ref_seeds: Sequence[Any] | None = None) -> Comparison:
    """A row's final top-1 values against its reference row's. Runs with the same seed see the
    same batches in the same order, so where the two share at least two seeds the test is the
    paired t-test over those seeds; otherwise (or without seeds) Welch's t-test over all values."""
    if row_seeds is not None and ref_seeds is not None and None not in row_seeds and None not in ref_seeds:
        mine, theirs = dict(zip(row_seeds, row)), dict(zip(ref_seeds, ref))
        shared = sorted(set(mine) & set(theirs))
        if len(shared) >= 2:
            paired = paired_stats([theirs[s] for s in shared], [mine[s] for s in shared])
            return Comparison("paired t", paired.p, len(shared), paired.mean, paired.ci95,
                              tuple(mine[s] - theirs[s] for s in shared))
    p = welch_p(row, ref)
    diff = sum(row) / len(row) - sum(ref) / len(ref) if row and ref else None
    return Comparison("Welch" if p is not None else "", p, min(len(row), len(ref)), diff, welch_interval(row, ref))


def corrected_verdicts(comparisons: Sequence[Comparison]) -> tuple[list[float | None], list[str]]:
    """Holm-corrected p-values of one table's comparisons and the verdict of each, in words that
    name the test: "within noise (paired t, Holm)" or "differs (Welch, Holm p < 0.05)"."""
    adjusted = holm([c.p for c in comparisons])
    verdicts = []
    for c, p in zip(comparisons, adjusted):
        if p is None:
            verdicts.append("")
        elif p < ALPHA:
            verdicts.append(f"differs ({c.test}, Holm p < {ALPHA:g})")
        else:
            verdicts.append(f"within noise ({c.test}, Holm)")
    return adjusted, verdicts


def seeds_needed_paired(std_diff: float, difference: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Seeds per row for a two-sided paired t-test to detect `difference` with `power`, given the
    standard deviation `std_diff` of per-seed differences (noncentral t with n - 1 degrees of freedom)."""
    if std_diff <= 0 or difference <= 0:
        return None
    for n in range(2, 100_000):
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        noncentrality = difference / (std_diff / math.sqrt(n))
        if 1 - stats.nct.cdf(crit, n - 1, noncentrality) + stats.nct.cdf(-crit, n - 1, noncentrality) >= power:
            return n
    return None
