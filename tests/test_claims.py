"""The paper's claims tested as it states them (issue 29): non-inferiority at a margin, better,
worse, or undetermined with the minimal detectable effect, each checked against scipy and a
closed-form power calculation on synthetic per-seed differences."""
import math

import pytest
from scipy import stats

from ghost_ablate.report.stats import (ALPHA, Comparison, claim_verdicts, mde_paired, noninferiority_p, paired_stats,
                                       seeds_for_gap, trend)


def paired(ref, row):
    got = paired_stats(ref, row)
    return Comparison("paired t", got.p, got.n, got.mean, got.ci95, tuple(b - a for a, b in zip(ref, row)))


def test_noninferiority_p_is_scipys_one_sided_test():
    diffs = [-0.3, 0.2, -0.1, 0.4, -0.2, 0.1]
    want = stats.ttest_1samp(diffs, -1.0, alternative="greater").pvalue
    assert noninferiority_p(diffs, 1.0) == pytest.approx(want, rel=1e-12)
    # by hand: t = (mean + m) / (sd / sqrt(n)), p = P(T_{n-1} > t)
    mean, sd = sum(diffs) / 6, stats.tstd(diffs)
    assert noninferiority_p(diffs, 1.0) == pytest.approx(stats.t.sf((mean + 1.0) / (sd / math.sqrt(6)), 5), rel=1e-9)
    assert noninferiority_p([0.5], 1.0) is None


def test_verdict_no_worse():
    ref = [90.0, 91.0, 89.5, 90.5, 90.2, 89.8]
    row = [r + d for r, d in zip(ref, [-0.3, 0.2, -0.1, 0.4, -0.2, 0.1])]
    (v,) = claim_verdicts([paired(ref, row)], margin=1.0)
    assert v.kind == "no worse" and v.text.startswith("no worse than baseline by more than 1")
    assert v.p_noninferior == pytest.approx(stats.ttest_1samp([b - a for a, b in zip(ref, row)], -1.0,
                                                              alternative="greater").pvalue)


def test_verdict_worse_and_better():
    ref = [90.0, 91.0, 89.5, 90.5, 90.2]
    worse = [r - d for r, d in zip(ref, [3.1, 2.9, 3.0, 3.2, 2.8])]
    better = [r + d for r, d in zip(ref, [3.1, 2.9, 3.0, 3.2, 2.8])]
    v_worse, v_better = claim_verdicts([paired(ref, worse), paired(ref, better)])
    # both two-sided paired p-values are far below alpha even after Holm's x2
    assert stats.ttest_rel(worse, ref).pvalue * 2 < ALPHA
    assert v_worse.kind == "worse" and "within the margin" not in v_worse.text
    assert v_better.kind == "better"


def test_verdict_undetermined_names_its_mde():
    # the case: a +14.4-point paired gap on 2 seeds is not "within noise", it is undetermined
    ref, row = [50.0, 55.0], [70.0, 63.8]
    (v,) = claim_verdicts([paired(ref, row)])
    assert v.kind == "undetermined"
    sd = stats.tstd([20.0, 8.8])
    assert v.mde == pytest.approx(mde_paired(sd, 2, ALPHA), rel=1e-9)
    assert f">= {v.mde:.1f} points" in v.text and "n=2" in v.text


def test_mde_matches_power_definition_and_closed_form():
    sd = 3.4
    for n in (4, 10, 40):
        mde = mde_paired(sd, n, ALPHA)
        df = n - 1
        power = stats.nct.sf(stats.t.ppf(1 - ALPHA, df), df, mde / (sd / math.sqrt(n)))
        assert power == pytest.approx(0.8, abs=1e-5)
        # the normal closed form is a lower bound that the t form approaches as n grows
        closed = (stats.norm.ppf(1 - ALPHA) + stats.norm.ppf(0.8)) * sd / math.sqrt(n)
        assert closed < mde < closed * (1 + 3.0 / n)
    assert mde_paired(sd, 1) is None and mde_paired(None, 5) is None


def test_seeds_for_gap_against_closed_form():
    for sd, gap, alpha in ((3.4, 2.0, ALPHA / 4), (1.0, 0.5, ALPHA), (2.0, 1.0, ALPHA / 8)):
        n = seeds_for_gap(sd, gap, alpha)
        closed = ((stats.norm.ppf(1 - alpha) + stats.norm.ppf(0.8)) * sd / gap) ** 2
        assert math.ceil(closed) <= n <= math.ceil(closed) + 3  # t's heavier tails cost a seed or two
        # n is the first that reaches the power
        assert mde_paired(sd, n, alpha) <= gap < mde_paired(sd, n - 1, alpha)


def test_trend_is_a_one_sample_t_of_per_seed_slopes():
    levels = [2, 3, 4, 5]
    by_seed = {0: [90.0, 89.0, 88.2, 87.1], 1: [91.0, 89.8, 89.0, 88.0], 2: [89.5, 88.9, 87.5, 86.9]}
    got = trend(levels, by_seed)
    slopes = [stats.linregress(levels, v).slope for v in by_seed.values()]
    assert got.slope == pytest.approx(sum(slopes) / 3) and got.n == 3
    assert got.p == pytest.approx(stats.ttest_1samp(slopes, 0.0).pvalue)
