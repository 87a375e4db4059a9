"""Seeds planned from their noise (issue 29): the planner's n on synthetic pilot records of known
paired spread, checked against a closed-form power calculation, and `sweep --seeds auto`."""
import json
import math

import pytest
from scipy import stats

from ghost_ablate.config import RunConfig
from ghost_ablate.errors import UserError
from ghost_ablate.report.stats import ALPHA, mde_paired
from ghost_ablate.report.tables import aggregate, load_runs
from ghost_ablate.seeds import plan_seeds

# per-seed paired differences Ghost-VGG-16 (s=2) - VGG-16 with a known sample sd
DIFFS = [-1.0, 2.0, -3.0, 1.5, 0.5]
SD = stats.tstd(DIFFS)


def pilot(root, diffs=DIFFS, stack=("cpu: A", "2.14"), epochs=12):
    for seed, d in enumerate(diffs):
        base = 50.0 + 3 * seed  # seed-to-seed spread shared by both rows: pairing removes it
        for model, ratio, dw, acc in (("vgg16", None, None, base), ("ghost_vgg16", 2, 3, base + d)):
            rc = RunConfig.create(model, ratio, dw, profile="subset", seed=seed, data="abc", epochs=epochs)
            folder = root / "runs" / rc.run_id
            folder.mkdir(parents=True)
            (folder / "result.json").write_text(json.dumps({
                "run_id": rc.run_id, "config": rc.to_dict(), "status": "finished", "final_test_acc": acc / 100,
                "best_test_acc": acc / 100, "device": stack[0], "versions": {"torch": stack[1]},
                "data": {"train_size": 5085, "test_size": 1017, "fingerprint": "abc"}}))
    return root


def test_plan_from_pilot_matches_closed_form(tmp_path):
    agg = aggregate(load_runs(pilot(tmp_path)))
    plan = plan_seeds(("table2_ratio",), agg, detect=2.0, max_seeds=1000)
    s2 = next(c for c in plan.comparisons if c.row == "s=2")
    assert s2.spread_from == "own pairs" and s2.pilot_pairs == 5 and s2.std_diff == pytest.approx(SD)
    assert s2.alpha == pytest.approx(ALPHA / 4)  # Table 2 tests s=2..5 against VGG-16: Holm's first step
    closed = ((stats.norm.ppf(1 - ALPHA / 4) + stats.norm.ppf(0.8)) * SD / 2.0) ** 2
    assert math.ceil(closed) <= s2.needed <= math.ceil(closed) + 3
    # rows without pilot pairs take the spread pooled over the comparisons that have them
    s3 = next(c for c in plan.comparisons if c.row == "s=3")
    assert s3.spread_from.startswith("pooled") and s3.std_diff == pytest.approx(SD)
    assert plan.n == max(c.needed for c in plan.comparisons) and plan.limited_by == ""
    assert plan.mde_at_n <= 2.0


def test_caps_say_what_the_capped_plan_can_detect(tmp_path):
    agg = aggregate(load_runs(pilot(tmp_path)))
    plan = plan_seeds(("table2_ratio",), agg, detect=0.5, max_seeds=8)
    assert plan.n == 8 and plan.limited_by == "--max-seeds"
    assert plan.mde_at_n == pytest.approx(mde_paired(SD, 8, ALPHA / 4)) and plan.mde_at_n > 0.5
    by_hours = plan_seeds(("table2_ratio",), agg, detect=0.5, max_seeds=100, hours_per_seed=2.0, max_hours=13)
    assert by_hours.n == 6 and by_hours.limited_by == "--max-hours 13"


def test_pairs_across_machines_are_not_pilot_pairs(tmp_path):
    pilot(tmp_path / "a", DIFFS[:2], stack=("cpu: A", "2.14"))
    runs = load_runs(tmp_path / "a")
    # the same seeds' VGG-16 on another machine: no pair survives
    runs.loc[runs["model"] == "vgg16", "stack"] = "cpu: B / torch 2.15"
    with pytest.raises(UserError, match="no comparison with 2 seeds on one machine"):
        plan_seeds(("table2_ratio",), aggregate(runs), detect=2.0, max_seeds=10)


def test_sweep_seeds_auto_runs_the_planned_seeds(tmp_path, capsys):
    from ghost_ablate.cli import main

    pilot(tmp_path / "pilot")
    (tmp_path / "exp.yaml").write_text("profile: subset\npaper_tables: [table2_ratio]\n")
    code = main(["sweep", str(tmp_path / "exp.yaml"), "--seeds", "auto", "--pilot", str(tmp_path / "pilot"),
                 "--detect", "3", "--max-seeds", "6", "--dry-run", "--no-estimate",
                 "--data-dir", str(tmp_path / "nodata"), "--results-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0 and "chosen from pilot variance to detect 3 points" in out
    n = int(out.split("n=")[1].split()[0])
    assert f"{5 * n} runs" in out  # Table 2's five rows, n seeds each
    assert main(["sweep", str(tmp_path / "exp.yaml"), "--seeds", "auto", "--dry-run", "--no-estimate"]) == 2
    assert "--seeds auto needs --pilot DIR" in capsys.readouterr().err


def _pilot_run(root, model, seed, epochs, final, profile="subset", *, epoch_s=30.0, load=1.0, macs=100_000_000,
               device="cpu: A", **knobs):
    """A finished pilot record whose test top-1 climbs linearly to `final` (%), each epoch of the
    5,085 training images taking `epoch_s` seconds with the load average at `load` (2 threads)."""
    rc = RunConfig.create(model, profile=profile, seed=seed, data="abc", epochs=epochs, **knobs)
    folder = root / "runs" / rc.run_id
    folder.mkdir(parents=True)
    accs = [final * (e + 1) / epochs for e in range(epochs)]
    (folder / "result.json").write_text(json.dumps({
        "run_id": rc.run_id, "config": rc.to_dict(), "status": "finished", "final_test_acc": final / 100,
        "best_test_acc": final / 100, "device": device, "versions": {"torch": "2.14"}, "flops": macs,
        "precision": {"requested": "32", "resolved": "32"},
        "history": [{"epoch": e, "test_acc": a / 100, "train_acc": min(1.0, a / 80), "train_loss": 2 - a / 50,
                     "train_images": 5085, "train_time_s": epoch_s, "load_1m": load, "threads": 2}
                    for e, a in enumerate(accs)],
        "data": {"train_size": 5085, "test_size": 1017, "fingerprint": "abc"}}))


def test_pilot_compares_lengths_and_chooses_the_shortest_converged(tmp_path):
    from ghost_ablate.report.pilot import chosen_length, learning_curves, length_table

    finals = {  # (model, length): final top-1 of seeds 0 and 1
        ("vgg16", 8): (60, 62), ("vgg16", 16): (70, 71), ("vgg16", 32): (70.5, 71.3),
        ("ghost_vgg16", 8): (58, 57), ("ghost_vgg16", 16): (66, 68), ("ghost_vgg16", 32): (66.4, 68.0)}
    for (model, length), accs in finals.items():
        knobs = {"ratio": 2, "dw_size": 3} if model == "ghost_vgg16" else {}
        for seed, final in enumerate(accs):
            _pilot_run(tmp_path, model, seed, length, final, **knobs)
    table = length_table(learning_curves(load_runs(tmp_path, mixed_epochs=True)))
    vgg8 = table[(table["model"] == "VGG-16") & (table["schedule"] == 8)].iloc[0]
    assert vgg8["seeds"] == 2 and vgg8["final top-1 mean"] == pytest.approx(61.0)
    assert vgg8["final top-1 sd"] == pytest.approx(stats.tstd([60, 62]))
    assert vgg8["gain to next"] == pytest.approx(9.5) and vgg8["next length"] == 16 and vgg8["gain pairs"] == 2
    assert vgg8["train top-1 mean"] == pytest.approx(61 / 80 * 100)
    # 8 -> 16 gains 9.5 points for VGG-16; 16 -> 32 gains 0.4 (VGG-16) and 0.2 (Ghost): 16 is chosen
    length, why = chosen_length(table, "subset")
    assert length == 16 and "VGG-16 at 16 (32 epochs adds +0.40, 2 paired seeds)" in why
    assert "Ghost-VGG-16 s=2 d=3 at 16 (32 epochs adds +0.20" in why
    # a threshold between the two gains: Ghost has converged at 16, VGG-16 alone needs 64 epochs next
    length, why = chosen_length(table, "subset", gain=0.3)
    assert length is None and "train 64 epochs next (VGG-16)" in why
    assert "VGG-16 has no length" in why and "converged: Ghost-VGG-16 s=2 d=3 at 16" in why


def test_pilot_trains_the_pair_at_the_later_of_its_converged_lengths(tmp_path):
    from ghost_ablate.report.pilot import chosen_length, converged_length, learning_curves, length_table

    finals = {  # VGG-16 flat from 16 epochs on; Ghost gains 2 points into 64, then flat
        ("vgg16", 16): (70, 71), ("vgg16", 32): (70.2, 71.1), ("vgg16", 64): (70.1, 71.3),
        ("ghost_vgg16", 16): (60, 61), ("ghost_vgg16", 32): (65, 66), ("ghost_vgg16", 64): (67, 68),
        ("ghost_vgg16", 128): (67.3, 68.1)}
    for (model, length), accs in finals.items():
        knobs = {"ratio": 2, "dw_size": 3} if model == "ghost_vgg16" else {}
        for seed, final in enumerate(accs):
            _pilot_run(tmp_path, model, seed, length, final, **knobs)
    table = length_table(learning_curves(load_runs(tmp_path, mixed_epochs=True)))
    assert int(converged_length(table[table["model"] == "VGG-16"])["schedule"]) == 16
    assert int(converged_length(table[table["model"] == "Ghost-VGG-16 s=2 d=3"])["schedule"]) == 64
    length, why = chosen_length(table, "subset")
    assert length == 64 and "VGG-16 at 16" in why and "Ghost-VGG-16 s=2 d=3 at 64 (128 epochs adds +0.20" in why
    # a later doubling that gains again undoes the plateau: VGG-16 16 -> 32 flat, 32 -> 64 +3 points
    vgg = table[table["model"] == "VGG-16"].copy()
    vgg.loc[vgg["schedule"] == 32, "gain to next"] = 3.0
    assert converged_length(vgg) is None


def test_pilot_finishes_a_length_before_it_doubles_it(tmp_path):
    from ghost_ablate.report.pilot import chosen_length, learning_curves, length_table

    finals = {("vgg16", 32): (70, 71), ("vgg16", 64): (72, 73), ("ghost_vgg16", 32): (66, 67),
              ("ghost_vgg16", 64): (69, 70), ("vgg16", 128): (72.5,)}  # 128: one VGG-16 seed, no Ghost run
    for (model, length), accs in finals.items():
        knobs = {"ratio": 2, "dw_size": 3} if model == "ghost_vgg16" else {}
        for seed, final in enumerate(accs):
            _pilot_run(tmp_path, model, seed, length, final, **knobs)
    length, why = chosen_length(length_table(learning_curves(load_runs(tmp_path, mixed_epochs=True))), "subset")
    assert length is None and "256" not in why
    assert "128 epochs is not complete yet" in why and "finish it next" in why
    assert "VGG-16 1 of 2" in why and "Ghost-VGG-16 s=2 d=3 0 of 2" in why


def test_pilot_needs_two_paired_seeds_per_length(tmp_path):
    from ghost_ablate.report.pilot import chosen_length, learning_curves, length_table

    for length, final in ((8, 60), (16, 70), (32, 70.1)):
        _pilot_run(tmp_path, "vgg16", 0, length, final)
    table = length_table(learning_curves(load_runs(tmp_path, mixed_epochs=True)))
    assert chosen_length(table, "subset")[0] is None  # one seed per length decides nothing


def test_pilot_compares_each_recipe_option_with_the_declared_recipe_by_seed(tmp_path):
    import pandas as pd

    from ghost_ablate.cli import main

    # the declared subset recipe at 16 epochs, and the same with label smoothing 0.1, seeds 0 and 1
    finals = {("vgg16", False): (70, 72), ("ghost_vgg16", False): (66, 67),
              ("vgg16", True): (71, 72.5), ("ghost_vgg16", True): (68, 68.5)}
    for (model, option), accs in finals.items():
        knobs = {"ratio": 2, "dw_size": 3} if model == "ghost_vgg16" else {}
        for seed, final in enumerate(accs):
            busy = option and model == "vgg16" and seed == 1  # timed beside other work: load 5 on 2 threads
            _pilot_run(tmp_path, model, seed, 16, final, epoch_s=20.0 if model == "vgg16" else 10.0,
                       load=5.0 if busy else 1.0, macs=300_000_000 if model == "vgg16" else 150_000_000,
                       **knobs, **({"label_smoothing": 0.1} if option else {}))
    out = tmp_path / "reports"
    assert main(["report", "--section", "pilot", "--results-dir", str(tmp_path), "--out", str(out)]) == 0
    assert "No option has been trained yet" not in (out / "pilot.md").read_text()
    assert set(pd.read_csv(out / "pilot_lengths.csv")["seeds"]) == {2}  # an option's runs are no extra seeds
    table = pd.read_csv(out / "pilot_options.csv")
    assert list(table["option"].fillna("")) == ["", "label_smoothing=0.1"]
    declared, smoothed = table.iloc[0], table.iloc[1]
    # gap = VGG-16 - Ghost per seed: declared 4 and 5, smoothed 3 and 4; paired change -1 and -1
    assert declared["gap"] == "VGG-16 - Ghost-VGG-16 s=2 d=3"
    assert (declared["gap mean"], smoothed["gap mean"], smoothed["gap change"]) == pytest.approx((4.5, 3.5, -1.0))
    assert smoothed["gap change pairs"] == 2 and declared["gap change pairs"] == 0
    assert smoothed["VGG-16 top-1"] == pytest.approx(71.75) and smoothed["VGG-16 images/s"] == pytest.approx(5085 / 20)
    assert declared["hours per seed"] == pytest.approx(16 * 30 / 3600)
    assert (declared["epochs beside other work"], smoothed["epochs beside other work"]) == ("0 of 64", "16 of 64")
    assert pd.isna(declared["VGG-16 share of peak"])  # no peak measured for these results
    # with the machine's peak measured (`bench --peak`): images/s x 6 x MACs over it, in the runs' precision
    (tmp_path / "peak.csv").write_text("device,precision,gflop_s,torch,measured\ncpu: A,bf16,900,2.14,x\n"
                                       "cpu: A,32,300,2.14,x\n")
    assert main(["report", "--section", "pilot", "--results-dir", str(tmp_path), "--out", str(out)]) == 0
    table = pd.read_csv(out / "pilot_options.csv")
    assert table.loc[1, "Ghost-VGG-16 s=2 d=3 share of peak"] == pytest.approx(5085 / 10 * 6 * 150e6 / 300e9)
    md = (out / "pilot.md").read_text()
    assert "## Recipe options" in md and "| label\\_smoothing=0.1 |" in md and "-1.00 ± " in md
    # seed 1's smoothed VGG-16 retrained on another machine: that seed's gap mixes stacks, so it pairs no more
    for path in (tmp_path / "runs").glob("vgg16-*seed1*/result.json"):
        rec = json.loads(path.read_text())
        if rec["config"]["recipe"].get("label_smoothing"):
            path.write_text(json.dumps({**rec, "device": "cpu: B"}))
    assert main(["report", "--section", "pilot", "--results-dir", str(tmp_path), "--out", str(out)]) == 0
    table = pd.read_csv(out / "pilot_options.csv")
    assert (table.loc[1, "seeds"], table.loc[1, "gap change pairs"], table.loc[1, "gap change"]) == (1, 1, -1.0)
    # seeds 2 and 3 trained on machine B, declared and smoothed: a block of their own, compared within B
    for (model, option), accs in {("vgg16", False): (73.25, 73.5), ("ghost_vgg16", False): (71.25, 72.5),
                                  ("vgg16", True): (74.25, 74.5), ("ghost_vgg16", True): (70.25, 71.5)}.items():
        knobs = {"ratio": 2, "dw_size": 3} if model == "ghost_vgg16" else {}
        for seed, final in zip((2, 3), accs):
            _pilot_run(tmp_path, model, seed, 16, final, device="cpu: B", epoch_s=40.0,
                       **knobs, **({"label_smoothing": 0.1} if option else {}))
    assert main(["report", "--section", "pilot", "--results-dir", str(tmp_path), "--out", str(out)]) == 0
    table = pd.read_csv(out / "pilot_options.csv")
    assert list(table["machine"]) == ["cpu: A / torch 2.14"] * 2 + ["cpu: B / torch 2.14"] * 2
    on_b = table[table["machine"] == "cpu: B / torch 2.14"]
    on_b = on_b.set_index(on_b["option"].fillna(""))
    # gaps on B (no two records alike, or the loader would take one for a copy): declared 2 and 1,
    # smoothed 4 and 3: +2 per seed; images/s are B's alone
    smoothed_on_b = on_b.loc["label_smoothing=0.1"]
    assert (smoothed_on_b["gap change"], smoothed_on_b["gap change pairs"]) == (pytest.approx(2.0), 2)
    assert on_b.loc["", "VGG-16 images/s"] == pytest.approx(5085 / 40)
    assert "| cpu: B / torch 2.14 |" in (out / "pilot.md").read_text()


def test_pilot_without_options_says_how_to_train_them_and_a_bad_peak_file_is_one_line(tmp_path, capsys):
    from ghost_ablate.cli import main

    for seed in (0, 1):
        _pilot_run(tmp_path, "vgg16", seed, 8, 60 + seed)
    out = tmp_path / "reports"
    assert main(["report", "--section", "pilot", "--results-dir", str(tmp_path), "--out", str(out)]) == 0
    assert "No option has been trained yet: `make pilot-options` trains them." in (out / "pilot.md").read_text()
    assert not (out / "pilot_options.csv").exists()
    (tmp_path / "peak.csv").write_text("device,gflop_s\ncpu: A,300\n")
    assert main(["report", "--section", "pilot", "--results-dir", str(tmp_path), "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert "peak.csv: missing column(s) precision; `ghost-ablate bench --peak` writes it" in err and err.count("\n") == 1


def test_pilot_of_options_alone_is_one_line_and_writes_nothing(tmp_path, capsys):
    from ghost_ablate.cli import main

    for seed in (0, 1):
        _pilot_run(tmp_path, "vgg16", seed, 16, 70 + seed, label_smoothing=0.1)
    out = tmp_path / "reports"
    assert main(["report", "--section", "pilot", "--results-dir", str(tmp_path), "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert "no finished pilot runs of a recipe as declared" in err and err.count("\n") == 1
    assert not (out / "pilot_options.csv").exists() and not (out / "pilot.md").exists()


def test_a_seed_plan_prices_its_runs_from_the_pilot_unless_other_folders_are_named():
    from pathlib import Path

    from ghost_ablate.plan import SeedRequest, SweepRequest

    given = dict(experiment=Path("exp.yaml"), profile=None, overrides={}, shard=(0, 1), results=Path("out"),
                 data_dir=None)
    assert SweepRequest(seeds=[0, 1], **given).priced_from == ()  # seeds given: every run calibrated
    assert SweepRequest(seeds=SeedRequest("pilot"), **given).priced_from == ("pilot",)
    named = SeedRequest("pilot", priced_from=("a", "b"))
    assert SweepRequest(seeds=named, **given).priced_from == ("a", "b")
