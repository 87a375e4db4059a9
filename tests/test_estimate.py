"""Time estimates before a sweep: calibration, plan arithmetic, the CPU guard and the ETA."""
import pytest

from ghost_ablate import cache, estimate
from ghost_ablate.cli import main
from ghost_ablate.config import RunConfig
from ghost_ablate.estimate import Calibration, RunEstimate, calibrate, estimate_runs, plan_hours
from ghost_ablate.experiment import load_experiment, plan_runs
from ghost_ablate.precision import resolve_precision
from ghost_ablate.records import write_record
from ghost_ablate.sweep import EtaLogger

FAST = ["--batch-size", "8", "--eval-batch-size", "16", "--limit-train-batches", "2", "--limit-test-batches", "1"]
HAND = Calibration(step_s=0.5, eval_img_s=100.0)


def small_experiment(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("profile: smoke\nruns:\n  - {model: ghost_resnet56, ratio: [2, 3]}\n  - {model: resnet56}\n")
    return exp


def test_plan_estimate_is_epochs_times_calibrated_epoch_minus_done_over_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(estimate, "calibrate", lambda rc, device, **kw: (HAND, True))
    runs = plan_runs(load_experiment(small_experiment(tmp_path)), [0, 1], "smoke",
                     {"epochs": 3, "batch_size": 100, "limit_train_batches": None, "limit_test_batches": None})
    assert len(runs) == 6
    runs_dir = tmp_path / "runs"
    # 1000 training images at batch 100: 10 steps x 0.5 s, plus 200 test images at 100/s: 7 s an epoch
    write_record(runs_dir / runs[0].run_id, {"run_id": runs[0].run_id, "config": runs[0].to_dict(),
                                             "status": "finished", "epochs_done": 3})
    write_record(runs_dir / runs[1].run_id, {"run_id": runs[1].run_id, "config": runs[1].to_dict(),
                                             "status": "running", "epochs_done": 1})
    estimates = estimate_runs(runs, runs_dir, "cpu", (1000, 200), progress=False)
    assert [e.epoch_s for e in estimates] == [7.0] * 6
    assert [e.epochs_left for e in estimates] == [0, 2, 3, 3, 3, 3]
    seconds_left = 7.0 * (6 * 3 - 3 - 1)
    assert plan_hours(estimates) == pytest.approx(seconds_left / 3600)
    assert plan_hours(estimates, shards=4) == pytest.approx(seconds_left / 3600 / 4)


def test_recipe_limits_enter_the_epoch_time():
    rc = RunConfig.create("resnet56", profile="smoke")  # 3 train batches, 2 test batches of 64
    est = estimate.estimate_run(rc, HAND, 0, (50_000, 10_000))
    assert est.epoch_s == pytest.approx(3 * 0.5 + 128 / 100.0) and est.epochs_left == 1


def test_calibration_is_cached_and_measured_again_for_a_new_version(tmp_path, monkeypatch):
    calls = []

    def fake(rc, device, precision, world=1, accumulate=1):
        calls.append(rc.model)
        return Calibration(0.25, 400.0)

    monkeypatch.setattr(estimate, "measure_calibration", fake)
    store = tmp_path / "cache"
    rc = RunConfig.create("resnet56", profile="smoke")
    assert calibrate(rc, "cpu", cache.JsonCache("calibration", store)) == (Calibration(0.25, 400.0), False)
    assert calibrate(rc, "cpu", cache.JsonCache("calibration", store)) == (Calibration(0.25, 400.0), True)
    assert calls == ["resnet56"]
    other = RunConfig.create("resnet56", profile="smoke", batch_size=16)  # another batch size: its own entry
    calibrate(other, "cpu", cache.JsonCache("calibration", store))
    monkeypatch.setattr(cache, "code_fingerprint", lambda: "9.9.9+new")
    assert calibrate(rc, "cpu", cache.JsonCache("calibration", store))[1] is False
    assert calls == ["resnet56"] * 3


def test_real_calibration_measures_something():
    rc = RunConfig.create("resnet56", profile="smoke", batch_size=4, eval_batch_size=8)
    cal = estimate.measure_calibration(rc, "cpu", resolve_precision(rc.recipe.precision, "cpu"))
    assert cal.step_s > 0 and cal.eval_img_s > 0


def test_guard_stops_a_long_cpu_plan_before_anything_runs(tiny_cifar, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(estimate, "calibrate", lambda rc, device, **kw: (Calibration(36_000.0, 1.0), True))
    monkeypatch.delenv("GHOST_ABLATE_YES", raising=False)
    results = tmp_path / "results"
    argv = ["sweep", str(small_experiment(tmp_path)), "--data-dir", str(tiny_cifar), "--results-dir", str(results),
            "--accelerator", "cpu", *FAST]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "24 h guard" in err and "--yes" in err and "--shard" in err
    assert not results.exists()  # nothing started
    assert main(argv + ["--max-hours", "1e9"]) == 0
    monkeypatch.setenv("GHOST_ABLATE_YES", "1")
    assert main(argv + ["--seeds", "1"]) == 0


def test_yes_flag_goes_past_the_guard(tiny_cifar, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(estimate, "calibrate", lambda rc, device, **kw: (Calibration(36_000.0, 1.0), True))
    monkeypatch.delenv("GHOST_ABLATE_YES", raising=False)
    assert main(["sweep", str(small_experiment(tmp_path)), "--data-dir", str(tiny_cifar), "--results-dir",
                 str(tmp_path / "r"), "--accelerator", "cpu", "--yes", *FAST]) == 0
    assert "3 done" in capsys.readouterr().out


def test_dry_run_prints_times_per_run_table_and_shard(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(estimate, "calibrate", lambda rc, device, **kw: (HAND, True))
    exp = tmp_path / "paper.yaml"
    exp.write_text("profile: smoke\npaper_tables: [table1_dw_size, table2_ratio]\n")
    assert main(["sweep", str(exp), "--dry-run", "--results-dir", str(tmp_path), "--shard", "0/2",
                 "--data-dir", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    # smoke: 3 train batches x 0.5 s + 128 test images / 100/s = 2.78 s per epoch, 1 epoch
    assert "epoch (s)" in out and "2.780" in out and "full CIFAR-10 sizes assumed" in out
    assert "whole plan 22 s" in out and "11 s per shard with 2 shard(s)" in out  # 8 distinct runs
    assert "table1_dw_size: 11 s" in out and "table2_ratio: 14 s" in out


def test_eta_line_refines_later_runs_by_measured_speed():
    eta = EtaLogger("[1/3] r", RunEstimate("r", 10.0, 6), [RunEstimate("a", 10.0, 6), RunEstimate("b", 10.0, 0)])
    eta.clock, eta.epochs_at_start = 100.0, 0
    # 2 epochs took 40 s: 20 s each, twice the calibration; 4 epochs left here (80 s), the later run 2 x 60 s
    line = eta.line(2, 6, 140.0)
    assert line == "[1/3] r: epoch 2/6 (20 s/epoch); run done in 1 min, sweep in 3 min"


def test_eta_line_reads_the_last_epochs_so_a_pause_does_not_inflate_it():
    eta = EtaLogger("[1/1] r", RunEstimate("r", 26.0, 128), [])
    eta.clock, eta.epochs_at_start = 0.0, 0
    now = 0.0
    for epoch in range(1, 31):  # 26 s per epoch, but epoch 28 spans a 30-minute SIGSTOP
        now += 26.0 + (1800.0 if epoch == 28 else 0.0)
        line = eta.line(epoch, 128, now)
    # the mean since the start says 86 s/epoch (2.3 h left); the last 5 epochs' median says 26 s
    assert line == "[1/1] r: epoch 30/128 (26 s/epoch); run done in 42 min, sweep in 42 min"


def test_one_timing_primitive_times_each_call_after_its_warmup(monkeypatch):
    """`timing.seconds` (what calibration, bench, the precision probe and the throughput command
    time with) runs the warm-up untimed and synchronises around each timed call; the clock is mocked."""
    from ghost_ablate import timing

    clock = iter([0.0, 1.0, 10.0, 12.5])
    monkeypatch.setattr(timing, "perf_counter", lambda: next(clock))
    calls, syncs = [], []
    assert timing.seconds(lambda: calls.append(len(syncs)), 2, warmup=3, sync=lambda: syncs.append(1)) == [1.0, 2.5]
    assert calls == [0, 0, 0, 1, 3]  # three untimed calls, then each timed one after a sync
    assert len(syncs) == 4
    # the steady rate: the median after the warm-up epochs; all of them where there are no more
    assert timing.steady_rate([1.0, 10.0, 12.0, 11.0]) == 11.0
    assert timing.steady_rate([1.0, 10.0, 12.0], warmup=0) == 10.0 and timing.steady_rate([4.0]) == 4.0


def test_recorded_epoch_seconds_price_a_run_from_its_configurations_finished_runs_on_this_device(tmp_path):
    from ghost_ablate.estimate import recorded_epoch_seconds

    runs = plan_runs(load_experiment(small_experiment(tmp_path)), [5], "smoke", {"epochs": 4})
    ghost2, ghost3, base = runs  # seed 5 is planned; seeds 0-2 of ghost s=2 and seed 0 of the baseline ran
    here, there = "cpu: Test CPU (2 threads)", "cpu: Other CPU (2 threads)"

    def rec(rc, wall, device=here, status="finished", epochs=4):
        return {"run_id": rc.run_id, "config": rc.to_dict(), "status": status, "epochs_done": epochs,
                "wall_time_s": wall, "device": device}

    ran = [plan_runs(load_experiment(small_experiment(tmp_path)), [s], "smoke", {"epochs": 4}) for s in (0, 1, 2)]
    records = [rec(ran[0][0], 40.0), rec(ran[1][0], 48.0), rec(ran[2][0], 400.0),  # median 48 / 4 epochs = 12 s
               rec(ran[0][2], 20.0, device=there),  # another machine: no price
               rec(ran[1][2], 8.0, status="diverged"),  # not finished: no price
               rec(ran[0][1], 30.0, epochs=3),  # s=3 at another batch size: no price
               rec(ran[1][1], 80.0, epochs=8),  # s=3 at 8 epochs of the same recipe: 10 s an epoch
               {"run_id": "junk", "config": {}, "status": "finished", "device": here}]
    records[5]["config"] = {**records[5]["config"], "recipe": {**records[5]["config"]["recipe"], "batch_size": 3}}
    records[6]["config"] = {**records[6]["config"], "recipe": {**records[6]["config"]["recipe"], "epochs": 8}}
    priced = recorded_epoch_seconds(runs, records, here)
    assert priced == {ghost2.run_id: 12.0, ghost3.run_id: 10.0}  # other recipes, machines, unfinished: nothing
    assert base.run_id not in priced


def test_train_prices_a_long_run_before_it_starts_and_a_short_one_not_at_all(tmp_path, monkeypatch):
    from ghost_ablate.data import get_dataset
    from ghost_ablate.plan import run_cost_line
    from ghost_ablate.training import RunContext

    calls = []

    def fake(rc, device, **kw):
        calls.append(rc.model)
        return Calibration(0.5, 100.0), True

    monkeypatch.setattr(estimate, "calibrate", fake)
    where = RunContext(get_dataset("cifar10"), str(tmp_path / "absent"), "cpu")  # no data: full CIFAR-10 sizes
    assert run_cost_line(RunConfig.create("resnet56", profile="smoke"), where, tmp_path / "run") is None
    assert calls == []  # 1 epoch of 3 steps: no calibration
    quick = RunConfig.create("resnet56", profile="quick")  # 30 epochs x 391 steps of 128
    line = run_cost_line(quick, where, tmp_path / "run")
    hours = 30 * (391 * 0.5 + 10_000 / 100.0) / 3600
    assert calls == ["resnet56"] and line.startswith(f"{quick.run_id}: 30 epoch(s) of 50,000 images left")
    assert f"about {estimate.format_hours(hours)} on cpu" in line


def test_a_plan_prices_a_configuration_from_its_finished_runs_here_and_calibrates_the_rest(tmp_path, monkeypatch):
    from ghost_ablate.machine import describe_device

    runs = plan_runs(load_experiment(small_experiment(tmp_path)), [5], "smoke", {"epochs": 4})
    ran = plan_runs(load_experiment(small_experiment(tmp_path)), [0], "smoke", {"epochs": 4})
    write_record(tmp_path / "pilot" / "runs" / ran[0].run_id, {  # seed 0 of the first configuration, on this device
        "run_id": ran[0].run_id, "config": ran[0].to_dict(), "status": "finished", "epochs_done": 4,
        "wall_time_s": 48.0, "device": describe_device("cpu")})
    write_record(tmp_path / "runs" / runs[0].run_id, {  # the planned seed 5 of it has trained 1 epoch here
        "run_id": runs[0].run_id, "config": runs[0].to_dict(), "status": "running", "epochs_done": 1})
    monkeypatch.setattr(estimate, "calibrate", lambda rc, device, **kw: (HAND, True))
    got = estimate_runs(runs, tmp_path / "runs", "cpu", (1000, 200), progress=False, priced_from=(tmp_path / "pilot",))
    assert got[0].recorded and got[0].epoch_s == pytest.approx(12.0) and got[0].epochs_left == 3
    calibrated = estimate.estimate_run(runs[1], HAND, 0, (1000, 200))
    assert [e.recorded for e in got[1:]] == [False, False] and got[1].epoch_s == pytest.approx(calibrated.epoch_s)
    fresh = estimate_runs(runs, None, "cpu", (1000, 200), progress=False, priced_from=(tmp_path / "pilot",))
    assert [e.epochs_left for e in fresh] == [4, 4, 4]  # no results folder: every epoch still to pay
    assert [e.recorded for e in estimate_runs(runs, None, "cpu", (1000, 200), progress=False)] == [False] * 3
    given = estimate_runs(runs, None, "cpu", (1000, 200), progress=False, step_time=0.5,
                          priced_from=(tmp_path / "pilot",))  # the user's step time prices every run
    user = estimate.estimate_run(runs[0], Calibration.given(0.5, runs[0].recipe.batch_size), 0, (1000, 200))
    assert not any(e.recorded for e in given) and given[0].epoch_s == pytest.approx(user.epoch_s)
