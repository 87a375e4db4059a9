"""The sequential design of the evidence (issue 39): error rates under repeated looks, and the
fixed-n case against statsmodels."""
import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from ghost_ablate.report.sequential import DECISIONS, Design, decide, holm_array, sequential_p, simulate
from ghost_ablate.report.stats import holm

DESIGN = Design(margin=1.0, cap=9)
REPLICATIONS = 4000


def test_spending_adds_up_to_alpha_and_spends_little_early():
    weights = [DESIGN.weight(n) for n in DESIGN.looks]
    assert sum(weights) == pytest.approx(1.0)
    assert weights[0] == pytest.approx((3 / 9) ** 2)  # the first look spends what n=1..3 would
    assert weights[1:] == sorted(weights[1:])  # later looks, more seeds, more alpha
    assert DESIGN.weight(2) == 0 and DESIGN.weight(10) == 0


@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("sd", [0.7, 2.5])
def test_false_no_worse_stays_at_alpha_with_the_true_gap_on_the_margin(rows, sd):
    """Every row's true gap is exactly -m: any "no worse" is a false decision. Family-wise over the
    rows and all looks it stays under alpha (Monte Carlo bound: 3 standard errors)."""
    rates = simulate(-DESIGN.margin, sd, DESIGN, rows, REPLICATIONS, seed=rows)
    bound = DESIGN.alpha + 3 * np.sqrt(DESIGN.alpha * (1 - DESIGN.alpha) / REPLICATIONS)
    assert rates["no worse"] <= bound
    assert rates["worse by more than the margin"] <= bound  # the other side's null holds at -m too


def test_true_gap_zero_is_rarely_called_worse_and_often_no_worse():
    rates = simulate(0.0, 0.7, DESIGN, 5, REPLICATIONS)
    assert rates["worse by more than the margin"] <= DESIGN.alpha
    assert rates["no worse"] > 0.5  # the procedure has power where the spread allows it


def test_repeated_looks_without_spending_would_break_the_level():
    """The control: testing every look at the full alpha (no spending) exceeds alpha at the margin,
    so the test above could fail."""
    naive = Design(margin=1.0, cap=9, rho=1e-9)  # nearly all alpha at the first look...
    rng = np.random.default_rng(1)
    data = rng.normal(-1.0, 2.0, size=(REPLICATIONS, 9))
    from scipy import stats
    hits = np.zeros(REPLICATIONS, dtype=bool)
    for n in naive.looks:  # ...then every look at the full alpha
        part = data[:, :n]
        t = (part.mean(1) + 1.0) / (part.std(1, ddof=1) / np.sqrt(n))
        hits |= stats.t.sf(t, n - 1) <= naive.alpha
    assert hits.mean() > 1.5 * naive.alpha


def test_fixed_n_verdict_equals_statsmodels_ttost_paired_and_holm():
    rng = np.random.default_rng(7)
    fixed = Design(margin=1.0, cap=6, first=6)  # one look: the fixed-n test
    for _ in range(15):
        base = rng.normal(70, 2, 6)
        rows = {f"s={k}": list(base + rng.normal(rng.uniform(-2, 1), 1.2, 6) - base) for k in range(2, 6)}
        ours = [sequential_p(d, fixed, lower=True) for d in rows.values()]
        theirs = []
        for d in rows.values():
            x2 = np.zeros(6)
            _, lower, _ = ttost_paired(np.asarray(d), x2, -fixed.margin, fixed.margin)
            theirs.append(lower[1])
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
        adjusted = multipletests(theirs, alpha=fixed.alpha, method="holm")
        assert holm(ours) == pytest.approx(list(adjusted[1]), rel=1e-9, abs=1e-12)
        verdicts = [d.decision == "no worse" for d in decide(rows, fixed)]
        assert verdicts == list(adjusted[0])


def test_holm_array_matches_holm():
    p = np.random.default_rng(3).uniform(size=(20, 5))
    for row, adjusted in zip(p, holm_array(p)):
        assert list(adjusted) == pytest.approx(holm(list(row)))


def test_rows_stop_when_decided_and_say_what_remains():
    rows = {"clear": [0.1, 0.2, 0.0, 0.15, 0.05], "noisy": [3.0, -5.0, 2.0, -4.0, 1.0]}
    out = {d.row: d for d in decide(rows, Design(margin=1.0, cap=9))}
    assert out["clear"].decision == DECISIONS[0]
    assert out["noisy"].decision == "open" and out["noisy"].more_seeds and out["noisy"].more_seeds > 0
    capped = {d.row: d for d in decide({"noisy": rows["noisy"]}, Design(margin=1.0, cap=5))}
    assert capped["noisy"].decision == "undetermined at n = 5"


def _table2_records(root, gaps_by_ratio, seeds, correct=True):
    """Finished subset records of Table 2: VGG-16 and Ghost-VGG-16 s=2..5, with each Ghost row's
    per-seed gap (points) given, and per-image outcomes whose counts give exactly those accuracies."""
    import json

    from ghost_ablate.config import RunConfig
    from ghost_ablate.records import pack_outcomes

    images = 1000
    for seed in seeds:
        base = 60.0 + seed
        rows = [("vgg16", None, None, base)] + [("ghost_vgg16", s, 3, base + g[seed]) for s, g in gaps_by_ratio.items()
                                                  if seed < len(g)]
        for model, ratio, dw, acc in rows:
            rc = RunConfig.create(model, ratio, dw, profile="subset", seed=seed, data="abc", epochs=12)
            folder = root / "runs" / rc.run_id
            folder.mkdir(parents=True)
            hits = round(acc * images / 100)
            record = {"run_id": rc.run_id, "config": rc.to_dict(), "status": "finished",
                      "final_test_acc": hits / images, "best_test_acc": hits / images, "device": "cpu: A",
                      "versions": {"torch": "2.14"}, "wall_time_s": 1800.0,
                      "data": {"train_size": 5085, "test_size": images, "fingerprint": "abc"}}
            if correct:
                record["test_correct"] = pack_outcomes([i < hits for i in range(images)])
            (folder / "result.json").write_text(json.dumps(record))


def test_sweep_trains_only_the_open_rows_and_stops_at_the_cap(tmp_path, capsys):
    from ghost_ablate.cli import main

    rng = np.random.default_rng(0)
    gaps = {2: list(0.2 + rng.normal(0, 0.1, 4)),  # clearly within 1 point: decided "no worse"
            3: list(-6 + rng.normal(0, 0.1, 4)),  # clearly worse by more than 1 point
            4: [3.0, -5.0, 2.0, -4.0], 5: [1.0, -3.0, 4.0, -6.0]}  # too noisy: open
    _table2_records(tmp_path / "res", gaps, range(4))
    (tmp_path / "exp.yaml").write_text("profile: subset\npaper_tables: [table2_ratio]\nmargins: {table2_ratio: 1.0}\n"
                                       "sequential: {first: 3, cap: 6}\n")
    args = ["sweep", str(tmp_path / "exp.yaml"), "--epochs", "12", "--no-estimate", "--dry-run",
            "--data-dir", str(tmp_path / "nodata"), "--results-dir", str(tmp_path / "res")]
    assert main([*args, "--seeds", "4"]) == 0
    out = capsys.readouterr().out
    assert "s=2 decided at n=4: no worse" in out and "s=3 decided at n=4: worse by more than the margin" in out
    planned = [line for line in out.splitlines() if "subset-seed4" in line]
    assert len(planned) == 3  # VGG-16 (the open rows' reference), s=4 and s=5
    assert not any("-s2-" in line or "-s3-" in line for line in planned)
    assert main([*args, "--seeds", "6,7"]) == 0
    out = capsys.readouterr().out
    assert "seed(s) 6, 7 past the cap of 6 seeds" in out and "0 runs" in out


def test_report_states_decisions_hours_and_the_decidable_margin(tmp_path):
    from ghost_ablate.report.sequential import read_designs, sequential_markdown
    from ghost_ablate.report.tables import load_runs

    gaps = {2: [0.1, 0.3, 0.2, 0.2], 3: [-6.0, -6.2, -5.9, -6.1], 4: [3.0, -5.0, 2.0, -3.0], 5: [1.0, -3.0, 4.0, -6.0]}
    _table2_records(tmp_path, gaps, range(4))
    (tmp_path / "sequential_design.json").write_text('{"first": 3, "cap": 6, "margins": {"table2_ratio": 1.0}}')
    designs = read_designs(tmp_path)
    text = sequential_markdown(load_runs(tmp_path), ["table2_ratio"], designs)
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| s=")}
    assert "no worse" in lines["s=2"] and "4 seeds, 2.0 h" in lines["s=2"]
    assert "open" in lines["s=4"] and "more (" in lines["s=4"]
    assert "conditional on these 1000 test images" in text
    # s=2: the same 2 points' worth of images flip every seed; resampling the images still keeps it within 1
    cells = [c.strip() for c in lines["s=2"].split("|")]
    assert 0 <= float(cells[-2]) < 1.0
