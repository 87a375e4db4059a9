"""Fault injection: damaged files, full disks, read-only folders and signals never stop a sweep
for good, never lose a finished result and never delete a file."""
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pandas as pd
import pytest

from ghost_ablate.cli import main
from ghost_ablate.record_schema import read_records

from conftest import add_trainer_callback

FAST = ["--batch-size", "8", "--eval-batch-size", "16", "--limit-train-batches", "3", "--limit-test-batches", "1"]
QUIET = ["--no-estimate"]  # the sweeps here test faults, not time estimates
EXPERIMENT = "profile: smoke\nruns:\n  - {model: resnet56}\n"


def sweep(tmp_path: Path, data: Path, *extra: str, seeds: str = "0") -> int:
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXPERIMENT)
    return main(["sweep", str(exp), "--data-dir", str(data), "--results-dir", str(tmp_path / "results"),
                 "--seeds", seeds, "--epochs", "2", *FAST, *QUIET, *extra])


def run_dir(tmp_path: Path, seed: int = 0) -> Path:
    (d,) = [p for p in (tmp_path / "results" / "runs").iterdir() if f"seed{seed}-" in p.name]
    return d


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def edit_record(folder: Path, **fields) -> None:
    rec = json.loads((folder / "result.json").read_text())
    rec.update(fields)
    (folder / "result.json").write_text(json.dumps(rec))


def finished(folder: Path) -> dict:
    rec = json.loads((folder / "result.json").read_text())
    assert rec["status"] == "finished" and rec["epochs_done"] == 2 and [h["epoch"] for h in rec["history"]] == [0, 1]
    return rec


@pytest.fixture
def done(tiny_cifar, tmp_path):
    """A finished two-epoch run: last.ckpt (end of epoch 1) and previous.ckpt (end of epoch 0)."""
    assert sweep(tmp_path, tiny_cifar) == 0
    folder = run_dir(tmp_path)
    assert {"last.ckpt", "previous.ckpt", "result.json"} <= files(folder)
    return folder


def test_truncated_checkpoint_resumes_from_the_previous_one(done, tiny_cifar, tmp_path, caplog):
    edit_record(done, status="running")
    data = (done / "last.ckpt").read_bytes()
    (done / "last.ckpt").write_bytes(data[: len(data) // 3])
    before = files(done)
    assert sweep(tmp_path, tiny_cifar) == 0
    rec = finished(done)
    assert any("last.ckpt cannot be loaded" in n for n in rec["checkpoint_notes"])
    aside = [n for n in files(done) if n.startswith("last.ckpt.damaged-")]
    assert len(aside) == 1 and (done / aside[0]).stat().st_size == len(data) // 3  # kept, not deleted
    assert before - {"last.ckpt"} <= files(done)
    (warning,) = [r.getMessage() for r in caplog.records if "cannot be loaded" in r.getMessage()]
    assert warning.count("\n") == 0 and "moved to last.ckpt.damaged-" in warning


def test_zero_byte_checkpoints_start_the_run_over_and_say_so(done, tiny_cifar, tmp_path):
    edit_record(done, status="running")
    for name in ("last.ckpt", "previous.ckpt"):
        (done / name).write_bytes(b"")
    assert sweep(tmp_path, tiny_cifar) == 0
    rec = finished(done)
    assert rec["checkpoint_notes"][-1] == "no loadable checkpoint: the run started over"
    assert sum(n.endswith(".ckpt") is False and ".ckpt.damaged-" in n for n in files(done)) == 2


def test_checkpoint_of_another_config_is_refused(done, tiny_cifar, tmp_path):
    assert sweep(tmp_path, tiny_cifar, seeds="1") == 0
    other = run_dir(tmp_path, seed=1)
    edit_record(done, status="running")
    shutil.copy(other / "last.ckpt", done / "last.ckpt")
    shutil.copy(other / "previous.ckpt", done / "previous.ckpt")
    assert sweep(tmp_path, tiny_cifar) == 0
    rec = finished(done)
    assert any("holds another configuration" in n for n in rec["checkpoint_notes"])
    assert rec["checkpoint_notes"][-1].endswith("started over")


@pytest.mark.parametrize("damage", ["truncated", "wrong types"])
def test_damaged_record_is_set_aside_and_the_result_recovered(done, tiny_cifar, tmp_path, capsys, damage):
    good = json.loads((done / "result.json").read_text())
    if damage == "truncated":
        text = (done / "result.json").read_text()
        (done / "result.json").write_text(text[: len(text) // 2])
    else:
        edit_record(done, status=5, config="ghost")
    # every reader carries on: dry-run, summary, report
    assert sweep(tmp_path, tiny_cifar, "--dry-run") == 0
    assert "1 damaged" in capsys.readouterr().out
    from ghost_ablate.record_schema import summary_frame

    summary = summary_frame(tmp_path / "results" / "runs")
    assert list(summary["status"]) == ["damaged"] and "result.json" in summary["error"].iloc[0]
    # train names the file and the choice, in one line
    code = main(["train", "--model", "resnet56", "--profile", "smoke", "--epochs", "2", *FAST,
                 "--data-dir", str(tiny_cifar), "--out", str(done)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "result.json" in err and "doctor" in err
    # the sweep sets it aside and gets the finished result back from the last checkpoint
    assert sweep(tmp_path, tiny_cifar) == 0
    rec = finished(done)
    assert rec["final_test_acc"] == good["final_test_acc"] and rec["test_confusion"] == good["test_confusion"]
    assert len([n for n in files(done) if n.startswith("result.json.damaged-")]) == 1


def test_report_leaves_a_damaged_record_out_and_says_so(done, tiny_cifar, tmp_path):
    from ghost_ablate.report import build_report

    assert sweep(tmp_path, tiny_cifar, seeds="1") == 0
    (run_dir(tmp_path, seed=1) / "result.json").write_text("{")
    build_report(tmp_path / "results", tmp_path / "reports")
    md = (tmp_path / "reports" / "README.md").read_text()
    assert "1 damaged record(s) left out" in md and "seed1" in md and str(tmp_path) not in md


def test_missing_summary_is_rebuilt(done, tiny_cifar, tmp_path):
    (tmp_path / "results" / "summary.csv").unlink()
    assert sweep(tmp_path, tiny_cifar) == 0
    assert list(pd.read_csv(tmp_path / "results" / "summary.csv")["status"]) == ["finished"]


def test_read_only_results_folder_stops_at_once(done, tiny_cifar, tmp_path, monkeypatch, capsys):
    """Simulated: the tests run as root, for whom permissions do not apply."""
    import tempfile

    before = {p: p.read_bytes() for p in done.iterdir() if p.is_file()}

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    assert sweep(tmp_path, tiny_cifar, seeds="0,1") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Permission denied" in err and "writable" in err
    assert {p: p.read_bytes() for p in done.iterdir() if p.is_file()} == before  # the finished run is untouched


def test_disk_full_during_a_checkpoint_write_fails_the_run_and_stops_the_sweep(tiny_cifar, tmp_path, monkeypatch,
                                                                               capsys):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    real = TorchCheckpointIO.save_checkpoint
    calls = []

    def full_on_second(self, checkpoint, path, storage_options=None):
        calls.append(path)
        if len(calls) == 2:
            Path(path).write_bytes(b"partial")  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, checkpoint, path, storage_options)

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", full_on_second)
    assert sweep(tmp_path, tiny_cifar, seeds="0,1") == 2
    assert "No space left on device" in capsys.readouterr().err
    folder = run_dir(tmp_path, seed=0)
    rec = json.loads((folder / "result.json").read_text())
    assert rec["status"] == "failed" and "No space left" in rec["error"]
    assert [p for p in (tmp_path / "results" / "runs").iterdir() if "seed1-" in p.name] == []  # not started
    assert not any(n.endswith(".tmp") for n in files(folder))
    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", real)
    assert sweep(tmp_path, tiny_cifar, seeds="0,1") == 0  # space again: it resumes from epoch 0's checkpoint
    assert finished(folder)["attempts"] == 2


def test_sigterm_mid_epoch_saves_records_interrupted_and_resumes(tiny_cifar, tmp_path, monkeypatch):
    from ghost_ablate import training

    batches_after_signal = []

    class TermAtEpoch1(L.Callback):
        sent = False

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if self.sent:
                batches_after_signal.append(batch_idx)
            if trainer.current_epoch == 1 and batch_idx == 0 and not self.sent:
                self.sent = True
                os.kill(os.getpid(), signal.SIGTERM)

    real = add_trainer_callback(monkeypatch, TermAtEpoch1())
    with pytest.raises(SystemExit) as stop:
        sweep(tmp_path, tiny_cifar)
    assert stop.value.code == 128 + signal.SIGTERM
    assert batches_after_signal == []  # stopped at the next batch boundary
    folder = run_dir(tmp_path)
    rec = json.loads((folder / "result.json").read_text())
    assert rec["status"] == "interrupted" and rec["epochs_done"] == 1
    monkeypatch.setattr(training, "make_trainer", real)
    assert sweep(tmp_path, tiny_cifar) == 0
    assert finished(folder)["attempts"] == 2


def test_doctor_lists_and_moves_aside(done, tmp_path, capsys):
    (done / "result.json").write_text("{")
    (done / ".last.ckpt.tmp").write_bytes(b"junk")
    (done / "previous.ckpt").write_bytes(b"")
    results = tmp_path / "results"
    assert main(["doctor", str(results)]) == 1
    out = capsys.readouterr().out
    kinds = [line.split()[0] for line in out.splitlines()[:-1]]
    assert sorted(kinds) == ["damaged", "damaged", "orphaned"] and "--fix" in out.splitlines()[-1]
    assert main(["doctor", str(results), "--fix"]) == 0
    names = files(done)
    assert "result.json" not in names and "last.ckpt" in names and len([n for n in names if "-2" in n]) == 3
    assert main(["doctor", str(results)]) == 0
    assert main(["doctor", str(tmp_path / "nowhere")]) == 2


def test_doctor_retrain_sets_a_finished_run_aside_and_the_next_sweep_trains_it_again(done, tiny_cifar, tmp_path,
                                                                                    capsys):
    old = finished(done)
    results = tmp_path / "results"
    (results / "runs" / "empty-run").mkdir()
    assert main(["doctor", str(results), "--retrain", done.name, "no-such-run", "empty-run"]) == 1
    out = capsys.readouterr().out
    assert "no run folder 'no-such-run'" in out and "set aside; the next sweep" in out
    assert "empty-run: no record or checkpoint to set aside" in out
    names = files(done)
    assert not {"result.json", "last.ckpt", "previous.ckpt"} & names
    kept = [n for n in names if n.startswith("result.json.retrain-")]
    assert len(kept) == 1 and json.loads((done / kept[0]).read_text())["finished_at"] == old["finished_at"]
    assert sweep(tmp_path, tiny_cifar) == 0  # trained from scratch: a new record, one attempt
    new = finished(done)
    assert new["attempts"] == 1
    assert pd.read_csv(results / "summary.csv")["status"].tolist() == ["finished"]


def test_doctor_finds_stale_runs(done, tmp_path, capsys):
    edit_record(done, status="running")
    assert main(["doctor", str(tmp_path / "results")]) == 0  # stale is listed but needs no fix
    assert "stale" in capsys.readouterr().out


ESSENCE = ["run_id", "model", "ratio", "dw_size", "width", "profile", "seed", "status", "epochs_done", "epochs",
           "params", "flops", "final_test_acc", "best_test_acc", "best_epoch", "device", "precision", "error"]


def test_sigkill_loop_then_finish_equals_an_uninterrupted_sweep(tiny_cifar, tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("profile: smoke\nruns:\n  - {model: ghost_resnet56, ratio: 2, dw_size: [1, 3]}\n"
                   "  - {model: resnet56}\n")

    def cmd(results):  # fp32 named: the subprocesses' `auto` would ask the real probe of this CPU
        return [sys.executable, "-m", "ghost_ablate.cli", "sweep", str(exp), "--data-dir", str(tiny_cifar),
                "--results-dir", str(results), "--epochs", "3", "--precision", "32", *FAST, *QUIET]

    def attempts(results):
        return sum(r.get("attempts", 0) for r in read_records(results / "runs"))

    def checkpoints(results):  # every epoch's end rewrites its run's last.ckpt
        stamps = {}
        for path in (results / "runs").glob("*/last.ckpt"):
            try:
                stamps[path.parent.name] = path.stat().st_mtime_ns
            except FileNotFoundError:  # being replaced right now
                pass
        return stamps

    # Each process is killed at the end of a randomly chosen epoch of its own (1st to 3rd it
    # finishes), however fast this machine: the moment is set by progress, not by the clock.
    rng = random.Random(1234)
    killed = tmp_path / "killed"
    (killed / "runs").mkdir(parents=True)
    kills = 0
    for _ in range(10):
        target, events, seen = rng.randint(1, 3), 0, checkpoints(killed)
        proc = subprocess.Popen(cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 120
        while proc.poll() is None and events < target and time.time() < deadline:
            now = checkpoints(killed)
            events += sum(seen.get(run) != stamp for run, stamp in now.items())
            seen = now
            time.sleep(0.002)
        if proc.poll() is not None:  # it finished every run before its kill came: nothing left to interrupt
            break
        os.killpg(proc.pid, signal.SIGKILL)
        kills += 1
        proc.wait()
    last = subprocess.run(cmd(killed), capture_output=True, text=True)
    assert last.returncode == 0, last.stderr[-2000:]
    clean = subprocess.run(cmd(tmp_path / "clean"), capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr[-2000:]
    records = read_records(killed / "runs")
    assert len(records) == 3 and all(r["status"] == "finished" for r in records)
    assert kills >= 2 and sum(r["attempts"] for r in records) > len(records)  # kills landed inside runs
    assert all([h["epoch"] for h in r["history"]] == [0, 1, 2] for r in records)  # every epoch exactly once
    a = pd.read_csv(killed / "summary.csv")[ESSENCE]
    b = pd.read_csv(tmp_path / "clean" / "summary.csv")[ESSENCE]
    pd.testing.assert_frame_equal(a, b)


def test_sigterm_during_a_validation_under_slurm_saves_at_the_next_step(tiny_cifar, tmp_path, monkeypatch):
    """scancel's SIGTERM lands in epoch 0's validation: Lightning's own SIGTERM handler must not end
    fit there (it would raise its SystemExit before any save, recorded as an interruption by the user).
    The run trains on to the next step, saves there, is recorded as stopped by SIGTERM, and resumes at
    that step. This is the race the real-SLURM test met when scancel came after the "epoch 1" line."""
    from ghost_ablate import preemption

    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setattr(preemption, "_requested", None)

    class TermInFirstValidation(L.Callback):
        def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
            if trainer.current_epoch == 0 and batch_idx == 0 and not preemption.requested():
                os.kill(os.getpid(), signal.SIGTERM)

    real = add_trainer_callback(monkeypatch, TermInFirstValidation())
    try:
        with pytest.raises(SystemExit) as stop:
            sweep(tmp_path, tiny_cifar)
    finally:
        signal.signal(preemption.requeue_signal(), signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert stop.value.code == preemption.EXIT_TERMINATED
    folder = run_dir(tmp_path)
    rec = json.loads((folder / "result.json").read_text())
    assert rec["status"] == "interrupted" and rec["error"].startswith("stopped by SIGTERM"), rec["error"]
    assert rec["epochs_done"] == 1
    steps_per_epoch = rec["optimizer_steps"] - 1  # saved after the first step of epoch 1
    monkeypatch.setattr(preemption, "_requested", None)
    monkeypatch.delenv("SLURM_JOB_ID")
    from ghost_ablate import training
    monkeypatch.setattr(training, "make_trainer", real)
    assert sweep(tmp_path, tiny_cifar) == 0
    rec = finished(folder)
    assert rec["resumes"][0]["from_step"] == steps_per_epoch + 1


@pytest.mark.parametrize("seeds", ["0", "0,1"])
def test_a_requeue_signal_in_the_last_validation_claims_no_save(tiny_cifar, tmp_path, monkeypatch, caplog, seeds):
    """Under SLURM, the pre-emption warning arrives during a run's last validation: the run
    finishes (no training step is left to save at). With another run in the plan the job is
    requeued to go on with it, saying nothing was saved; with none left it is not requeued."""
    from ghost_ablate import preemption

    monkeypatch.setenv("SLURM_JOB_ID", "77")  # inside a job: the handlers are installed
    monkeypatch.setattr(preemption, "_requested", None)
    requeued = []
    monkeypatch.setattr(preemption, "requeue", lambda saved=True: requeued.append(saved))

    class SignalInLastValidation(L.Callback):
        def on_validation_epoch_start(self, trainer, module):
            if trainer.current_epoch == trainer.max_epochs - 1 and not preemption.requested():
                os.kill(os.getpid(), preemption.requeue_signal())

    add_trainer_callback(monkeypatch, SignalInLastValidation())
    caplog.set_level("WARNING")
    try:
        if seeds == "0":
            assert sweep(tmp_path, tiny_cifar, seeds=seeds) == 0
        else:
            with pytest.raises(SystemExit) as stop:
                sweep(tmp_path, tiny_cifar, seeds=seeds)
            assert stop.value.code == preemption.EXIT_REQUEUED
    finally:
        signal.signal(preemption.requeue_signal(), signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    statuses = sorted(r["status"] for r in read_records(tmp_path / "results" / "runs"))
    if seeds == "0":
        assert statuses == ["finished"] and requeued == [] and "nothing to save or requeue" in caplog.text
    else:
        assert statuses == ["finished"] and requeued == [False]  # run 1 goes on after the requeue, nothing saved
