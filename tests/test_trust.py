"""Results you can trust: a run is only ever done for the data and precision it was trained
in, nothing the project reads runs code, no path from a user or a record leaves the results
folder, and Ctrl-C anywhere ends in one line of ours."""
import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch

from ghost_ablate import precision, training
from ghost_ablate.cli import main
from ghost_ablate.config import ConfigError, RunConfig, load_profile
from ghost_ablate.data.cifar import fingerprint
from ghost_ablate.doctor import assign_data, run_lock
from ghost_ablate.models import build_model
from ghost_ablate.record_schema import read_records
from ghost_ablate.experiment import load_experiment, plan_runs
from ghost_ablate.record_schema import run_state

from conftest import SUBSET_DATA, add_trainer_callback, make_cifar_folder

REPO = Path(__file__).resolve().parents[1]
FAST = ["--batch-size", "8", "--eval-batch-size", "16", "--limit-train-batches", "2", "--limit-test-batches", "1"]


class Payload:
    """Unpickling this runs `touch marker`: what a crafted file would do to a researcher's account."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def experiment(tmp_path: Path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text("profile: smoke\nruns:\n  - {model: resnet56}\n")
    return path


def sweep(tmp_path: Path, data: Path, *extra: str) -> int:
    return main(["sweep", str(experiment(tmp_path)), "--data-dir", str(data), "--results-dir",
                 str(tmp_path / "results"), "--no-estimate", *FAST, *extra])


# ---- data identity ------------------------------------------------------------------------------

def test_the_same_profile_on_other_data_is_a_new_run(tmp_path, capsys):
    first, second = make_cifar_folder(tmp_path / "a").parent, make_cifar_folder(tmp_path / "b", seed=1).parent
    assert fingerprint(first) != fingerprint(second)
    assert sweep(tmp_path, first) == 0
    capsys.readouterr()
    assert sweep(tmp_path, second, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "1 runs (shard 0/1): 1 new" in out and "done" not in out.split("\n")[1]
    assert sweep(tmp_path, second) == 0
    assert "1 done, 0 skipped" in capsys.readouterr().out  # trained, not answered from the first data's record
    records = read_records(tmp_path / "results" / "runs")
    assert len(records) == 2 and len({r["run_id"] for r in records}) == 2
    assert {r["data"]["fingerprint"] for r in records} == {fingerprint(first), fingerprint(second)}
    assert all(r["config"]["data"] == r["data"]["fingerprint"] for r in records)
    # a run folder of one data set is never trained on (or resumed with) another
    (on_first,) = [r["run_id"] for r in records if r["data"]["fingerprint"] == fingerprint(first)]
    code = main(["train", "--model", "resnet56", "--profile", "smoke", "--data-dir", str(second), "--out",
                 str(tmp_path / "results" / "runs" / on_first), *FAST])
    assert code == 2 and "of another data" in capsys.readouterr().err


def test_committed_demo_ids_name_the_subset_and_are_all_done():
    demo = REPO / "results" / "demo" / "runs"
    runs = plan_runs(load_experiment(REPO / "experiments" / "cifar10_ablation.yaml"), [0, 1], "subset",
                     data=SUBSET_DATA)
    more = plan_runs(load_experiment(REPO / "experiments" / "cifar10_more_seeds.yaml"), [2, 3], data=SUBSET_DATA)
    states = {rc.run_id: run_state(demo / rc.run_id) for rc in runs + more}
    committed = {r["run_id"] for r in read_records(demo) if r["status"] == "finished"}
    assert len(committed) >= 22 and committed <= set(states)  # every committed run is one the demo plans
    assert {states[run_id] for run_id in committed} == {"done"}
    # seeds 0-1 of the pruned rows (added after those seeds ran; their sources' checkpoints are gone) are new,
    # not taken for done; seeds 2-3 of the extra-seeds file, pruned rows included, are all committed
    pruned = {"l1_vgg16", "l1_resnet56", "budget_vgg16", "budget_resnet56"}
    controls = {rc.run_id for rc in runs if rc.recipe.epochs == 24}  # equal-epochs controls: 12 + 12 epochs
    assert {rc.model for rc in runs if rc.run_id not in committed | controls} <= pruned
    assert {rc.run_id for rc in more} <= committed and pruned <= {rc.model for rc in more}
    for record in read_records(demo):
        assert record["config"]["data"] == record["data"]["fingerprint"] == SUBSET_DATA
        assert RunConfig.from_dict(record["config"]).run_id == record["run_id"]  # ids follow from their configs


def test_the_shared_subset_has_the_fingerprint_the_demo_records_name(real_subset):
    assert fingerprint(real_subset) == SUBSET_DATA


def test_records_from_before_data_identity_migrate_once(tmp_path, capsys):
    data = make_cifar_folder(tmp_path / "data").parent
    committed = REPO / "results" / "demo" / "runs" / "resnet56-subset-seed0-4d11d83880" / "result.json"
    legacy = json.loads(committed.read_text())
    del legacy["config"]["data"], legacy["data"]["fingerprint"]
    legacy["run_id"] = RunConfig.from_dict(legacy["config"]).run_id  # the id it had before
    assert legacy["run_id"] == "resnet56-subset-seed0-026cfbf0e6"  # its folder before the migration
    legacy["data"].update(train_size=40, test_size=10)  # trained on this folder's 40 / 10 images
    other = dict(legacy, config=dict(legacy["config"], seed=9))
    other["run_id"] = RunConfig.from_dict(other["config"]).run_id
    other["data"] = dict(legacy["data"], train_size=5085)
    other["history"] = [dict(h, test_acc=0.5) for h in legacy["history"]]  # another seed's outcome
    for rec in (legacy, other):
        (tmp_path / "results" / "runs" / rec["run_id"]).mkdir(parents=True)
        (tmp_path / "results" / "runs" / rec["run_id"] / "result.json").write_text(json.dumps(rec))
    assert main(["doctor", str(tmp_path / "results")]) == 0
    assert capsys.readouterr().out.count("no data") == 2
    changes = {old: (new, what) for old, new, what in assign_data(tmp_path / "results", data)}
    new_id = RunConfig.from_dict({**legacy["config"], "data": fingerprint(data)}).run_id
    assert changes[legacy["run_id"]] == (new_id, "renamed")
    assert changes[other["run_id"]][0] is None and "5085" in changes[other["run_id"]][1]
    assert run_state(tmp_path / "results" / "runs" / new_id) == "done"
    assert assign_data(tmp_path / "results", data) == [(other["run_id"], None, changes[other["run_id"]][1])]


# ---- nothing read runs code ---------------------------------------------------------------------

def test_a_crafted_weights_file_runs_nothing(tiny_cifar, tmp_path, capsys):
    marker = tmp_path / "pwned"
    weights = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1), "x": Payload(marker)}, weights)
    code = main(["features", "--weights", str(weights), "--model", "resnet56", "--data-dir", str(tiny_cifar),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot be loaded safely" in err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_a_crafted_data_batch_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    data = make_cifar_folder(tmp_path / "data")
    with open(data / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Payload(marker), b"labels": [0]}, f, protocol=2)
    code = main(["train", "--model", "resnet56", "--profile", "smoke", "--data-dir", str(data.parent),
                 "--results-dir", str(tmp_path / "results"), "--no-download"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "data_batch_1: holds objects that are not CIFAR-10 data (posix.system)" in err
    assert not marker.exists()


def test_a_crafted_checkpoint_is_set_aside_and_the_run_finishes(tiny_cifar, tmp_path, caplog):
    marker = tmp_path / "pwned"
    assert sweep(tmp_path, tiny_cifar) == 0
    (run,) = (tmp_path / "results" / "runs").iterdir()
    rec = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps({**rec, "status": "running"}))
    ckpt = torch.load(run / "last.ckpt", weights_only=True)
    ckpt["payload"] = Payload(marker)
    torch.save(ckpt, run / "last.ckpt")
    (run / "previous.ckpt").unlink(missing_ok=True)
    assert sweep(tmp_path, tiny_cifar) == 0
    assert not marker.exists()
    rec = json.loads((run / "result.json").read_text())
    assert rec["status"] == "finished" and rec["attempts"] == 2
    assert any("cannot be loaded safely" in note for note in rec["checkpoint_notes"])
    (warning,) = [r.getMessage() for r in caplog.records if "cannot be loaded safely" in r.getMessage()]
    assert "\n" not in warning and "moved to last.ckpt.damaged-" in warning


def test_doctor_names_unsafe_checkpoints_and_fixes_only_under_the_run_lock(tiny_cifar, tmp_path, capsys):
    marker = tmp_path / "pwned"
    assert sweep(tmp_path, tiny_cifar) == 0
    (run,) = (tmp_path / "results" / "runs").iterdir()
    torch.save({"state_dict": {}, "x": Payload(marker)}, run / "previous.ckpt")
    (run / ".last.ckpt.tmp").write_bytes(b"a checkpoint being written")
    results = str(tmp_path / "results")
    assert main(["doctor", results]) == 1
    out = capsys.readouterr().out
    assert "unsafe     " in out and "previous.ckpt" in out and "orphaned" in out and not marker.exists()
    with run_lock(run) as free:  # as a live sweep holds it: nothing of the run is touched
        assert free
        assert main(["doctor", results, "--fix"]) == 1
    assert (run / ".last.ckpt.tmp").exists() and (run / "previous.ckpt").exists()
    assert capsys.readouterr().out.count("in use") == 2
    assert main(["doctor", results, "--fix"]) == 0
    assert not (run / ".last.ckpt.tmp").exists() and any(p.name.startswith("previous.ckpt.unsafe-")
                                                        for p in run.iterdir())


def test_an_environment_error_stops_the_run_and_moves_nothing(tiny_cifar, tmp_path, monkeypatch, capsys):
    from ghost_ablate import checkpoints

    assert sweep(tmp_path, tiny_cifar) == 0
    (run,) = (tmp_path / "results" / "runs").iterdir()
    rec = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps({**rec, "status": "running"}))
    before = sorted(p.name for p in run.iterdir())

    def io_error(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpoints.torch, "load", io_error)
    capsys.readouterr()
    assert sweep(tmp_path, tiny_cifar) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not be read (OSError" in err and "nothing was moved" in err
    assert sorted(p.name for p in run.iterdir()) == before


# ---- no path leaves the results folder ----------------------------------------------------------

def test_a_profile_path_enters_the_id_by_its_file_name(tmp_path, capsys):
    profile = tmp_path / "mine.yaml"
    profile.write_text("epochs: 1\nbatch_size: 8\n")
    rc = RunConfig.create("resnet56", profile=str(profile))
    assert rc.profile == "mine" and "/" not in rc.run_id and rc.run_id.startswith("resnet56-mine-seed0-")
    for bad in ("../../../../tmp/x", "a/b", ".."):
        with pytest.raises(ConfigError, match="bad profile"):
            load_profile(bad)
    code = main(["train", "--model", "resnet56", "--profile", "../../../../tmp/x", "--data-dir", str(tmp_path)])
    assert code == 2 and "bad profile" in capsys.readouterr().err
    exp = tmp_path / "exp.yaml"
    exp.write_text("profile: ../../etc/passwd\nruns:\n  - {model: resnet56}\n")
    with pytest.raises(ConfigError, match="profile: bad profile"):
        load_experiment(exp)
    strange = tmp_path / "a b$.yaml"
    strange.write_text("epochs: 1\n")
    with pytest.raises(ConfigError, match="rename the file"):
        RunConfig.create("resnet56", profile=str(strange))


def test_a_record_whose_run_id_is_a_path_is_damaged(tmp_path):
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"run_id": "../../elsewhere", "config": {}, "status": "finished"}))
    damaged = []
    assert read_records(tmp_path / "runs", damaged) == []
    assert "run_id" in str(damaged[0]) and "is not a plain name" in str(damaged[0])


# ---- precision identity -------------------------------------------------------------------------

def test_a_resumed_run_keeps_the_precision_it_started_in(tiny_cifar, tmp_path, monkeypatch):
    rc = RunConfig.create("resnet56", profile="smoke", batch_size=8, eval_batch_size=16, limit_train_batches=1,
                          limit_test_batches=1, data=fingerprint(tiny_cifar))
    assert rc.recipe.precision == "auto"
    out = tmp_path / "run"
    out.mkdir()
    started = {"run_id": rc.run_id, "config": rc.to_dict(), "status": "running", "attempts": 1,
               "device": "cpu: AMD EPYC (2 threads)",
               "precision": {"requested": "auto", "resolved": "bf16", "reason": "auto: measured faster",
                             "memory_format": "channels_last"}}
    (out / "result.json").write_text(json.dumps(started))
    # here `auto` resolves to fp32 (the suite's fixed probe), yet the run goes on in bf16
    assert precision.resolve_precision("auto", "cpu").resolved == "32"
    rec = training.train_run(rc, training.RunContext.resolve(tiny_cifar), out, progress=False)
    assert rec["status"] == "finished" and rec["precision"]["resolved"] == "bf16"
    assert rec["precision"]["memory_format"] == "channels_last"
    assert "kept bf16, which the run started in (on cpu: AMD EPYC" in rec["precision"]["reason"]


# ---- interrupts ---------------------------------------------------------------------------------

def test_ctrl_c_in_count_is_one_line_and_exit_130(monkeypatch, capsys):
    from ghost_ablate import costs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(costs, "cost_record", interrupted)
    assert main(["count"]) == 130
    assert capsys.readouterr().err == "ghost-ablate count: interrupted; nothing was left half-written\n"


def test_ctrl_c_in_training_is_one_line_and_exit_130(tiny_cifar, tmp_path, monkeypatch, capsys):
    class CtrlC(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            raise KeyboardInterrupt

    real = add_trainer_callback(monkeypatch, CtrlC())
    assert sweep(tmp_path, tiny_cifar) == 130
    err = capsys.readouterr().err.strip().splitlines()
    ours = [line for line in err if line.startswith("ghost-ablate")]
    assert ours == [err[-1]] and "interrupted; finished runs are recorded" in ours[0]
    assert not any("Detected KeyboardInterrupt" in line for line in err)
    (rec,) = read_records(tmp_path / "results" / "runs")
    assert rec["status"] == "interrupted"
    monkeypatch.setattr(training, "make_trainer", real)
    assert sweep(tmp_path, tiny_cifar) == 0  # and it resumes


def test_ctrl_c_in_report_leaves_the_previous_report(tiny_cifar, tmp_path, monkeypatch, capsys):
    import ghost_ablate.report as report
    import ghost_ablate.report.sections  # noqa: F401 - patched below

    assert sweep(tmp_path, tiny_cifar) == 0
    out = tmp_path / "reports"
    assert main(["report", "--results-dir", str(tmp_path / "results"), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report.sections, "plot_curves", interrupted)  # half-way through the plots
    capsys.readouterr()
    assert main(["report", "--results-dir", str(tmp_path / "results"), "--out", str(out)]) == 130
    assert capsys.readouterr().err == ("ghost-ablate report: interrupted; the report folder holds the previous "
                                       "report, untouched\n")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []


def test_the_eta_line_of_a_finished_run_says_how_long_it_took():
    from ghost_ablate.estimate import RunEstimate
    from ghost_ablate.sweep import EtaLogger

    eta = EtaLogger("[1/2] r", RunEstimate("r", 10.0, 2), [RunEstimate("a", 10.0, 2)])
    eta.clock, eta.epochs_at_start = 100.0, 0
    assert eta.line(2, 2, 150.0) == "[1/2] r: epoch 2/2 (25 s/epoch); run finished in 50 s, sweep in 50 s"


def test_a_noisy_or_outlying_calibration_is_measured_again(monkeypatch):
    from ghost_ablate import estimate
    from ghost_ablate.estimate import Calibration, outliers, steady
    from ghost_ablate.estimate import estimate_runs

    assert steady([1.0, 1.1, 1.2, 1.3]) and not steady([1.0, 1.0, 1.0, 9.0])
    rcs = [RunConfig.create("ghost_vgg16", s, 3, profile="smoke") for s in (2, 3, 4, 5)]
    flops = {2: 158, 3: 107, 4: 80, 5: 66}
    seconds = {2: 1.58, 3: 1.07, 4: 8.0, 5: 0.66}  # s=4 ten times its neighbours per FLOP
    found = outliers([(rc, Calibration(seconds[rc.ratio], 1.0), flops[rc.ratio]) for rc in rcs])
    assert found == [rcs[2]]
    calls = []

    def fake(rc, device, cache=None, *, force=False, measure=True, world=1, accumulate=1):
        calls.append((rc.ratio, force))
        if not measure:
            return None, False
        return Calibration(0.80 if force else seconds[rc.ratio], 100.0), False

    monkeypatch.setattr(estimate, "calibrate", fake)
    got = estimate_runs(rcs, Path("/nonexistent"), "cpu", (320, 64), progress=False)
    assert calls.count((4, True)) == 1 and [c for c in calls if c[1]] == [(4, True)]
    assert got[2].epoch_s == pytest.approx(3 * 0.80 + 64 / 100.0)  # the second measurement (smoke: 3 batches)
    calls.clear()
    estimate_runs(rcs, Path("/nonexistent"), "cpu", (320, 64), progress=False, recalibrate=True)
    assert sorted(c for c in calls if c[1]) == [(2, True), (3, True), (4, True), (5, True)]


def test_model_weights_load_with_weights_only(tmp_path):
    from ghost_ablate.features import load_trained

    weights = tmp_path / "plain.pt"
    torch.save(build_model("resnet56").state_dict(), weights)
    assert load_trained(weights=weights, model="resnet56").name == "resnet56"
    shutil.copy(weights, tmp_path / "copy.pt")
    (tmp_path / "copy.pt").write_bytes((tmp_path / "copy.pt").read_bytes()[:100])
    with pytest.raises(Exception, match="cannot be loaded"):
        load_trained(weights=tmp_path / "copy.pt", model="resnet56")


def test_a_report_row_whose_seeds_mix_precisions_says_so(tmp_path):
    from ghost_ablate.report import build_report

    for seed, resolved in ((0, "32"), (1, "bf16")):
        run_id = [p.name for p in (REPO / "results" / "demo" / "runs").iterdir() if p.name.startswith(f"vgg16-subset-seed{seed}")][0]
        rec = json.loads((REPO / "results" / "demo" / "runs" / run_id / "result.json").read_text())
        rec["precision"]["resolved"] = resolved
        (tmp_path / "runs" / run_id).mkdir(parents=True)
        (tmp_path / "runs" / run_id / "result.json").write_text(json.dumps(rec))
    build_report(tmp_path, tmp_path / "out", evidence=False)
    md = (tmp_path / "out" / "README.md").read_text()
    assert "VGG-16 (seeds mix precisions (32, bf16)" in md  # in the table's footnote
    table3 = (tmp_path / "out" / "table3_cifar10.csv").read_text()
    assert "seeds mix precisions (32, bf16)" in table3


def test_your_runs_are_ignored_and_the_demo_records_are_not():
    """What `git status` shows after the README's quick start: nothing under results/ but the
    committed demo's and precision check's records and summaries (checkpoints never)."""
    import subprocess

    paths = {"results/runs/x-quick-seed0-abc/result.json": True, "results/runs/x/last.ckpt": True,
             "results/summary.csv": True, "data/cifar10/cifar-10-batches-py/data_batch_1": True,
             "results/demo/runs/x-subset-seed0-abc/result.json": False, "results/demo/summary.csv": False,
             "results/demo/runs/x-subset-seed0-abc/last.ckpt": True, "results/demo/runs/x/logs/metrics.csv": True,
             "results/precision/runs/y/result.json": False, "results/precision/runs/y/last.ckpt": True}
    out = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], input="\n".join(paths), cwd=REPO,
                         capture_output=True, text=True).stdout.split()
    assert {p: p in out for p in paths} == paths
