"""Seed statistics of the report, checked against hand computations with known answers."""
import math

import pandas as pd
import pytest

from ghost_ablate import paper
from ghost_ablate.report.markdown import seeds_markdown
from ghost_ablate.report.stats import pooled_std, seed_stats, seeds_needed
from ghost_ablate.report.tables import aggregate, paper_table


def test_ci_half_width_by_hand():
    s = seed_stats([90.0, 92.0, 94.0])
    assert (s.n, s.mean, s.std) == (3, 92.0, 2.0)
    # t(0.975, df=2) = 4.302653 (any t table); half-width = t * std / sqrt(n)
    assert s.ci95 == pytest.approx(4.302653 * 2 / math.sqrt(3), abs=1e-5)
    two = seed_stats([1.0, 3.0])  # t(0.975, 1) = 12.7062
    assert two.ci95 == pytest.approx(12.7062 * math.sqrt(2) / math.sqrt(2), abs=1e-3)
    assert seed_stats([5.0]) == type(s)(1, 5.0, None, None) and seed_stats([]).mean is None


def welch_p(a, b):
    """Welch's two-sided p (scipy): what an unpaired test would say, which the report never uses."""
    from scipy import stats

    return stats.ttest_ind(a, b, equal_var=False).pvalue


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
    # no seeds recorded: nothing pairs, so nothing is tested (Welch would have called d=1 worse, p < 0.05)
    assert welch_p([80.0, 81.0, 79.0], [90.0, 92.0]) < 0.05
    assert pd.isna(t1.loc["d=1", "p_vs_reference"]) and t1.loc["d=1", "test"] == ""
    assert t1.loc["d=1", "vs_reference"] == "undetermined: not tested, no seeds recorded, so nothing pairs"
    assert pd.isna(t1.loc["d=3", "reference"]) and pd.isna(t1.loc["d=3", "p_vs_reference"])
    t3 = paper_table("table3_cifar10", agg).set_index("label")
    assert t3.loc["Ghost-VGG-16 (s=2)", "reference"] == "VGG-16"  # Table 3: against the plain network
    # unpaired and not different: never "the same", and no detectable gap without pairs
    assert t3.loc["Ghost-VGG-16 (s=2)", "vs_reference"].startswith("undetermined")
    assert t3.loc["Ghost-VGG-16 (s=2)", "top1_ci95"] == pytest.approx(12.7062 * math.sqrt(2) / math.sqrt(2), abs=0.01)
    t2 = paper_table("table2_ratio", agg).set_index("label")
    assert t2.loc["s=2", "reference"] == "Vanilla VGG-16" and t2.loc["s=3", "n_seeds"] == 0
    text = seeds_markdown(agg)
    assert f"{paper.TYPICAL_GAP_PP:g} points:" in text and "pooled over 3 rows" in text


def test_paired_t_test_against_scipy_and_by_hand():
    from scipy import stats

    from ghost_ablate.report.stats import paired_stats

    fp32, bf16 = [52.70, 54.67, 50.84, 55.06], [52.21, 50.74, 47.98, 53.29]
    got = paired_stats(fp32, bf16)
    # differences -0.49, -3.93, -2.86, -1.77: mean -2.2625, sd 1.47444, t = mean / (sd / 2) = -3.0690, df 3
    assert got.n == 4 and got.mean == pytest.approx(-2.2625)
    assert got.p == pytest.approx(stats.ttest_rel(bf16, fp32).pvalue, rel=1e-12)
    assert got.p == pytest.approx(2 * stats.t.cdf(-2.2625 / (1.47444 / 2), 3), rel=1e-4)
    assert got.ci95 == pytest.approx(3.182446 * 1.47444 / 2, rel=1e-4)  # t(0.975, 3) = 3.182446
    # pairing removes the seed-to-seed spread: the same numbers unpaired are far from significant
    assert welch_p(fp32, bf16) > 0.15 > 0.06 > got.p
    assert paired_stats([1.0, 2.0], [2.0, 3.0]).p == 0.0 and paired_stats([1.0], [2.0]).p is None
    with pytest.raises(ValueError, match="equal lengths"):
        paired_stats([1.0, 2.0], [1.0])


def test_holm_by_hand():
    from ghost_ablate.report.stats import holm

    # m = 4 p-values, sorted 0.01, 0.02, 0.03, 0.5 -> x4, x3, x2, x1 -> 0.04, 0.06, 0.06 (monotone), 0.5
    assert holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm([0.9, None, 0.6]) == [pytest.approx(1.0), None, pytest.approx(1.0)]  # 0.6 x 2 capped at 1
    assert holm([]) == []


def test_precision_table_pairs_seeds_across_precisions(tmp_path):
    import json

    from ghost_ablate.config import RunConfig
    from ghost_ablate.report.precision import precision_table, write_precision_report
    from ghost_ablate.report.tables import load_runs

    fp32, bf16 = [52.70, 54.67, 50.84, 55.06], [52.21, 50.74, 47.98, 53.29]
    for precision, accs, rate in (("32", fp32, 100.0), ("bf16", bf16, 180.0)):
        for seed, acc in enumerate(accs):
            rc = RunConfig.create("resnet56", profile="subset", seed=seed, precision=precision, data="abc")
            (tmp_path / "runs" / rc.run_id).mkdir(parents=True)
            (tmp_path / "runs" / rc.run_id / "result.json").write_text(json.dumps({
                "run_id": rc.run_id, "config": rc.to_dict(), "status": "finished", "final_test_acc": acc / 100,
                "best_test_acc": acc / 100, "train_images_per_s": rate + seed, "precision": {"resolved": precision},
                "data": {"train_size": 5085, "test_size": 1017, "fingerprint": "abc"}}))
    row = precision_table(load_runs(tmp_path)).iloc[0]
    assert (row["model"], row["pairs"], row["seeds"], row["bf16_lower_in"]) == ("ResNet-56", 4, "0,1,2,3", 4)
    assert row["diff_mean"] == pytest.approx(-2.2625) and row["p_paired"] == pytest.approx(0.0546, abs=1e-4)
    assert row["p_holm"] == pytest.approx(row["p_paired"])  # one comparison: nothing to correct
    # per-seed rates 100+seed and 180+seed: the median of 180/100, 181/101, 182/102, 183/103
    assert row["bf16_speedup_median"] == pytest.approx((181 / 101 + 182 / 102) / 2)
    write_precision_report(tmp_path, tmp_path / "out")
    md = (tmp_path / "out" / "precision.md").read_text()
    assert "ResNet-56" in md and "4 (0,1,2,3)" in md and "-2.26 " in md and "4 of 4" in md
    assert "no difference shown at this n" in md  # p = 0.055: four lower seeds are not yet evidence


def test_rows_that_share_seeds_are_paired_and_corrected_across_the_table():
    from ghost_ablate.report.stats import holm, paired_stats

    def seeded(model, s, d, accs):
        return [{"model": model, "ratio": s, "dw_size": d, "width": None, "status": "finished", "seed": seed,
                 "final_test_acc": acc, "best_test_acc": acc, "params": 1, "flops": 1, "history": []}
                for seed, acc in enumerate(accs)]

    vgg = [0.470, 0.490, 0.455]
    rows = (seeded("vgg16", None, None, vgg) + seeded("ghost_vgg16", 2, 3, [0.460, 0.481, 0.444])
            + seeded("ghost_vgg16", 5, 3, [0.370, 0.392, 0.351]) + seeded("ghost_vgg16", 3, 3, [0.45, 0.44]))
    t2 = paper_table("table2_ratio", aggregate(pd.DataFrame(rows))).set_index("label")
    vgg_pct = [100 * v for v in vgg]
    p2 = paired_stats(vgg_pct, [46.0, 48.1, 44.4]).p
    p5 = paired_stats(vgg_pct, [37.0, 39.2, 35.1]).p
    p3 = paired_stats(vgg_pct[:2], [45.0, 44.0]).p  # only seeds 0 and 1 shared
    assert list(t2.loc[["s=2", "s=3", "s=5"], "test"]) == ["paired t"] * 3
    assert t2.loc["s=2", "p_vs_reference"] == pytest.approx(p2, abs=1e-4)
    assert t2.loc["s=3", "p_vs_reference"] == pytest.approx(p3, abs=1e-4)
    assert list(t2.loc[["s=2", "s=3", "s=5"], "p_holm"]) == pytest.approx(holm([p2, p3, p5]), abs=1e-4)
    # the unpaired test on the same numbers could not tell s=5 from VGG-16 this clearly
    assert welch_p(vgg_pct, [37.0, 39.2, 35.1]) > p5


def test_compare_gives_the_difference_and_its_interval_for_the_plots():
    from ghost_ablate.report.stats import compare

    ref, row = [52.70, 54.67, 50.84, 55.06], [52.21, 50.74, 47.98, 53.29]
    paired = compare(row, ref, [0, 1, 2, 3], [0, 1, 2, 3])
    assert paired.test == "paired t" and paired.diff == pytest.approx(-2.2625)
    assert paired.ci95 == pytest.approx(3.182446 * 1.47444 / 2, rel=1e-4)
    assert paired.diffs == pytest.approx((-0.49, -3.93, -2.86, -1.77))
    unpaired = compare(row, ref, [4, 5, 6, 7], [0, 1, 2, 3])  # no shared seed: not tested, no gap claimed
    assert (unpaired.test, unpaired.p, unpaired.diff, unpaired.ci95, unpaired.diffs) == ("", None, None, None, ())
    assert unpaired.untested == "0 seed pair(s) on one machine and torch; a paired test needs 2"
    one = compare(row, ref, [0, 1, 2, 3], [0, 1, 2, 3], ["A", "B", "B", "B"], ["A", "A", "A", "C"])
    assert one.test == "" and one.cross_stack == 3 and one.untested.startswith("1 seed pair(s)")
    assert "3 more across machines" in one.untested
    assert compare([1.0], [2.0, 3.0]).untested == ""  # one run: nothing any test could say
