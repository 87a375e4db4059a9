"""Seed statistics of the report, checked against hand computations with known answers."""
import math

import pandas as pd
import pytest

from ghost_ablate import paper
from ghost_ablate.report.markdown import seeds_markdown
from ghost_ablate.report.stats import noise_verdict, pooled_std, seed_stats, seeds_needed, welch_p
from ghost_ablate.report.tables import aggregate, paper_table


def test_ci_half_width_by_hand():
    s = seed_stats([90.0, 92.0, 94.0])
    assert (s.n, s.mean, s.std) == (3, 92.0, 2.0)
    # t(0.975, df=2) = 4.302653 (any t table); half-width = t * std / sqrt(n)
    assert s.ci95 == pytest.approx(4.302653 * 2 / math.sqrt(3), abs=1e-5)
    two = seed_stats([1.0, 3.0])  # t(0.975, 1) = 12.7062
    assert two.ci95 == pytest.approx(12.7062 * math.sqrt(2) / math.sqrt(2), abs=1e-3)
    assert seed_stats([5.0]) == type(s)(1, 5.0, None, None) and seed_stats([]).mean is None


def test_welch_p_by_hand():
    a, b = [1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0]
    # means 2.5 and 5; variances 5/3 and 4; se^2 = 5/12 + 4/3 = 1.75; t = -2.5 / sqrt(1.75) = -1.88982
    # Welch df = 1.75^2 / ((5/12)^2 / 3 + (4/3)^2 / 2) = 3.2347; two-sided p = 0.1485 (t distribution)
    from scipy import stats

    t, df = -2.5 / math.sqrt(1.75), 1.75 ** 2 / ((5 / 12) ** 2 / 3 + (4 / 3) ** 2 / 2)
    assert df == pytest.approx(3.2347, abs=1e-4)
    assert welch_p(a, b) == pytest.approx(2 * stats.t.cdf(t, df), rel=1e-9)
    assert welch_p(a, b) == pytest.approx(0.1485, abs=5e-4)
    assert welch_p([1.0], b) is None
    assert welch_p([2.0, 2.0], [2.0, 2.0]) == 1.0 and welch_p([2.0, 2.0], [3.0, 3.0]) == 0.0
    assert noise_verdict(0.3) == "within noise" and noise_verdict(0.01).startswith("differs")


def test_seeds_needed_and_pooled_std():
    # equal groups: pooled std is the root of the mean variance
    assert pooled_std([[1.0, 3.0], [10.0, 14.0]]) == pytest.approx(math.sqrt((2 + 8) / 2))
    assert pooled_std([[1.0]]) is None
    # effect size 1 (difference = std): the textbook answer for 80% power at 0.05 is 17 per group
    assert seeds_needed(1.0, 1.0) == 17
    # a difference twice as large needs about a quarter of the seeds (normal approximation: 2 * 7.85 / 4 + 1)
    assert seeds_needed(1.0, 2.0) in (5, 6)
    assert seeds_needed(0.0, 1.0) is None


def runs(rows):
    return pd.DataFrame([{"model": m, "ratio": s, "dw_size": d, "width": None, "status": "finished",
                          "final_test_acc": acc, "best_test_acc": acc, "params": 1, "flops": 1, "history": []}
                         for m, s, d, acc in rows])


def test_table_p_values_against_reference_row():
    agg = aggregate(runs([("ghost_vgg16", 2, 3, 0.90), ("ghost_vgg16", 2, 3, 0.92),
                          ("ghost_vgg16", 2, 1, 0.80), ("ghost_vgg16", 2, 1, 0.81), ("ghost_vgg16", 2, 1, 0.79),
                          ("vgg16", None, None, 0.91), ("vgg16", None, None, 0.93)]))
    t1 = paper_table("table1_dw_size", agg).set_index("label")
    assert t1.loc["d=1", "reference"] == "d=3"
    assert t1.loc["d=1", "p_vs_reference"] == pytest.approx(welch_p([80.0, 81.0, 79.0], [90.0, 92.0]), abs=1e-4)
    assert t1.loc["d=1", "vs_reference"] == "differs (p < 0.05)"
    assert pd.isna(t1.loc["d=3", "reference"]) and pd.isna(t1.loc["d=3", "p_vs_reference"])
    t3 = paper_table("table3_cifar10", agg).set_index("label")
    assert t3.loc["Ghost-VGG-16 (s=2)", "reference"] == "VGG-16"  # Table 3: against the plain network
    assert t3.loc["Ghost-VGG-16 (s=2)", "vs_reference"] == "within noise"
    assert t3.loc["Ghost-VGG-16 (s=2)", "top1_ci95"] == pytest.approx(12.7062 * math.sqrt(2) / math.sqrt(2), abs=0.01)
    t2 = paper_table("table2_ratio", agg).set_index("label")
    assert t2.loc["s=2", "reference"] == "Vanilla VGG-16" and t2.loc["s=3", "n_seeds"] == 0
    text = seeds_markdown(agg)
    assert f"{paper.TYPICAL_GAP_PP:g} points:" in text and "pooled over 3 rows" in text
