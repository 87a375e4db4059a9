"""Statistics over seeds for an ablation table: mean, std, a Student-t confidence interval,
the paired t-test of each row against its table's reference row over the seeds both have on
one machine and torch (same seed, same batches in the same order), Holm-Bonferroni across a
table's comparisons, and how many seeds would resolve a difference of a given size. A row with
fewer than two such pairs is not tested: an unpaired test across machines would mix the
machine's effect with the row's, so it stays "undetermined" and says how many pairs it has.

The paper claims comparable accuracy at fewer FLOPs, so a row against its baseline is tested
as the paper states it: non-inferiority at a margin m (one-sided paired t of H0: gap <= -m),
beside the two-sided paired t that says "better" or "worse". Where neither is shown, the
verdict is "undetermined" with the smallest gap this n could detect (`mde_paired`), never
"the same"."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scipy import optimize, stats

ALPHA = 0.05  # two-sided test level, and 95% intervals
POWER = 0.8  # for the seeds-needed estimate and the minimal detectable effect
MARGIN_PP = 1.0  # default non-inferiority margin (top-1 points); an experiment file sets one per table


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
    test: str  # "paired t" (over the seeds both rows have on one stack); "" when nothing was tested
    p: float | None
    n: int  # the pairs of the paired test (or, untested, the pairs there are)
    diff: float | None = None  # row - reference: the mean per-seed difference
    ci95: float | None = None  # half-width of the 95% interval of `diff` (paired t)
    diffs: tuple[float, ...] = ()  # the per-seed differences, by seed
    cross_stack: int = 0  # shared seeds not paired because the two runs ran on different machines or torch
    untested: str = ""  # why two rows that both ran were not tested ("" where they were, or one is missing)


def compare(row: Sequence[float], ref: Sequence[float], row_seeds: Sequence[Any] | None = None,
            ref_seeds: Sequence[Any] | None = None, row_stacks: Sequence[str] | None = None,
            ref_stacks: Sequence[str] | None = None) -> Comparison:
    """A row's final top-1 values against its reference row's: the paired t-test over the seeds
    both have (runs with the same seed see the same batches in the same order). With `*_stacks`
    (`records.stack_label` per value), a seed pairs only where both runs ran on the same machine
    and torch; the pairs left out are counted in `cross_stack`. Two runs or more on each side but
    fewer than two pairs: not tested (`untested` says why), never an unpaired test across seeds or
    machines."""
    if len(row) < 2 or len(ref) < 2:  # too few runs to test by any method: nothing to say
        return Comparison("", None, 0)
    if row_seeds is None or ref_seeds is None or None in row_seeds or None in ref_seeds:
        return Comparison("", None, 0, untested="no seeds recorded, so nothing pairs")
    mine, theirs = dict(zip(row_seeds, row)), dict(zip(ref_seeds, ref))
    shared = sorted(set(mine) & set(theirs))
    left_out = 0
    if row_stacks is not None and ref_stacks is not None:
        my_stack, their_stack = dict(zip(row_seeds, row_stacks)), dict(zip(ref_seeds, ref_stacks))
        same = [s for s in shared if my_stack[s] == their_stack[s]]
        left_out, shared = len(shared) - len(same), same
    if len(shared) < 2:
        across = f", {left_out} more across machines or torch versions" if left_out else ""
        return Comparison("", None, len(shared), cross_stack=left_out,
                          untested=f"{len(shared)} seed pair(s) on one machine and torch{across}; "
                                   f"a paired test needs 2")
    paired = paired_stats([theirs[s] for s in shared], [mine[s] for s in shared])
    return Comparison("paired t", paired.p, len(shared), paired.mean, paired.ci95,
                      tuple(mine[s] - theirs[s] for s in shared), left_out)


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


def _one_sided_power(delta: float, std_diff: float, n: int, alpha: float) -> float:
    """Power of the one-sided paired t-test at level `alpha` to see a true gap `delta` (noncentral t)."""
    df = n - 1
    return float(stats.nct.sf(stats.t.ppf(1 - alpha, df), df, delta / (std_diff / math.sqrt(n))))


def mde_paired(std_diff: float | None, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The minimal detectable effect: the smallest true gap a one-sided paired t-test at level
    `alpha` over `n` pairs detects with `power`, given the spread `std_diff` of per-seed
    differences (exact, from the noncentral t). None for n < 2 or an unknown spread."""
    if std_diff is None or n < 2 or not math.isfinite(std_diff):
        return None
    if std_diff == 0:
        return 0.0
    hi = std_diff
    while _one_sided_power(hi, std_diff, n, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda d: _one_sided_power(d, std_diff, n, alpha) - power, 0.0, hi, xtol=1e-6))


def seeds_for_gap(std_diff: float, gap: float, alpha: float = ALPHA, power: float = POWER,
                  max_seeds: int = 10_000) -> int | None:
    """Pairs (seeds) a one-sided paired t-test at level `alpha` needs to detect `gap` with `power`
    (noncentral t); None if more than `max_seeds`."""
    if gap <= 0:
        raise ValueError(f"gap must be > 0, got {gap}")
    if std_diff <= 0:
        return 2
    for n in range(2, max_seeds + 1):
        if _one_sided_power(gap, std_diff, n, alpha) >= power:
            return n
    return None


def noninferiority_p(diffs: Sequence[float], margin: float) -> float | None:
    """One-sided paired t-test of H0: mean gap <= -margin against H1: > -margin (scipy's
    `ttest_1samp`); None for fewer than 2 pairs. Pairs that all differ by the same amount give
    0.0 when that amount is above -margin, else 1.0."""
    if len(diffs) < 2:
        return None
    if max(diffs) == min(diffs):
        return 0.0 if diffs[0] > -margin else 1.0
    return float(stats.ttest_1samp(diffs, -margin, alternative="greater").pvalue)


VERDICT_KINDS = ("better", "no worse", "worse", "undetermined")


@dataclass(frozen=True)
class Verdict:
    kind: str  # one of VERDICT_KINDS, or "" when there is nothing to test
    text: str
    p_noninferior: float | None = None  # Holm-adjusted one-sided p of non-inferiority at the margin
    mde: float | None = None  # the gap this n detects with POWER after Holm (worst case: alpha / m)


def claim_verdicts(comparisons: Sequence[Comparison], margin: float = MARGIN_PP,
                   against: str = "baseline") -> list[Verdict]:
    """A table's comparisons tested as the paper's claim: each row is "better" or "worse" where the
    two-sided paired test says so after Holm, "no worse than baseline by more than m"
    where the one-sided non-inferiority test at margin m does after Holm, and otherwise
    "undetermined", with the minimal detectable effect at this n (alpha / m of Holm's first step)."""
    two_sided = holm([c.p for c in comparisons])
    one_sided = holm([noninferiority_p(c.diffs, margin) if c.test == "paired t" else None for c in comparisons])
    family = sum(p is not None for p in two_sided) or 1
    out = []
    for c, p2, p1 in zip(comparisons, two_sided, one_sided):
        if p2 is None:
            out.append(Verdict("undetermined", f"undetermined: not tested, {c.untested}") if c.untested
                       else Verdict("", ""))
            continue
        std = seed_stats(list(c.diffs)).std if c.test == "paired t" else None
        mde = mde_paired(std, c.n, ALPHA / family) if std is not None else None
        test = f"{c.test}, Holm"
        if p2 < ALPHA and (c.diff or 0) > 0:
            out.append(Verdict("better", f"better ({test} p < {ALPHA:g})", p1, mde))
        elif p2 < ALPHA:
            within = "; within the margin" if p1 is not None and p1 < ALPHA else ""
            out.append(Verdict("worse", f"worse ({test} p < {ALPHA:g}{within})", p1, mde))
        elif p1 is not None and p1 < ALPHA:
            out.append(Verdict("no worse", f"no worse than {against} by more than {margin:g} "
                                           f"(one-sided paired t, Holm p = {p1:.3f})", p1, mde))
        elif mde is not None:
            out.append(Verdict("undetermined", f"undetermined: n={c.n} detects only gaps >= {mde:.1f} points", p1, mde))
        else:
            out.append(Verdict("undetermined", f"undetermined: n={c.n}, no detectable gap computed", p1))
    return out


@dataclass(frozen=True)
class Trend:
    n: int  # seeds that have every level
    slope: float | None  # mean per-seed least-squares slope, top-1 points per unit of the level
    ci95: float | None
    p: float | None  # two-sided one-sample t of the slopes against 0


def trend(levels: Sequence[float], by_seed: dict[Any, Sequence[float]]) -> Trend:
    """One trend test across a table's levels (s or d): a least-squares slope of top-1 over the
    levels per seed (each seed's values in `levels` order), then a one-sample t of the slopes."""
    x_mean = sum(levels) / len(levels)
    sxx = sum((x - x_mean) ** 2 for x in levels)
    slopes = []
    for values in by_seed.values():
        y_mean = sum(values) / len(values)
        slopes.append(sum((x - x_mean) * (y - y_mean) for x, y in zip(levels, values)) / sxx)
    s = seed_stats(slopes)
    if s.n < 2:
        return Trend(s.n, s.mean, None, None)
    p = 1.0 if s.std == 0 and s.mean == 0 else 0.0 if s.std == 0 else float(stats.ttest_1samp(slopes, 0.0).pvalue)
    return Trend(s.n, s.mean, s.ci95, p)
