"""The ImageNet path (issue 22) end to end on generated data in the ILSVRC-2012 layout: the folder
checks, sorting the official val/ folder, the smoke sweep to a report with Table 7, DDP over
two CPU processes, SLURM job arrays through submitit's local executor, and the trackers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ghost_ablate import paper
from ghost_ablate.cli import main
from ghost_ablate.data import DataError, imagenet, imagenet_layout, imagenet_sample, imagenet_val

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "ghost_ablate.cli"]


@pytest.fixture(scope="module")
def sample(imagenet_folder) -> Path:
    return imagenet_folder


def records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("runs/*/result.json"))]


def test_layout_errors_name_the_folder_and_what_was_expected(tmp_path):
    root = tmp_path / "inet"
    truth = imagenet_sample.write_sample(root, classes=3, per_class=2, val_per_class=2, size=32)
    with pytest.raises(DataError, match=r"val: no class folders \(6 images lie there unsorted: run `ghost-ablate "
                                        r"imagenet sort-val"):
        imagenet.prepare(root)
    assert imagenet_val.sort_val(root / "val", truth) == (6, 0)
    assert imagenet_val.sort_val(root / "val", truth) == (0, 6)  # once only: nothing moves again
    assert imagenet.prepare(root) == root
    (root / "train" / "n99999999").mkdir()
    with pytest.raises(DataError, match=r"train/n99999999: not an ILSVRC-2012 class folder; expected train/<wnid>"):
        imagenet.prepare(root)
    (root / "train" / "n99999999").rmdir()
    empty = root / "train" / imagenet_layout.wnids()[5]
    empty.mkdir()
    with pytest.raises(DataError, match=rf"{empty.name}: class folder holds no images"):
        imagenet.prepare(root)
    with pytest.raises(DataError, match="no ImageNet here"):
        imagenet.prepare(tmp_path / "nowhere")
    code = main(["train", "--model", "ghostnet", "--dataset", "imagenet", "--data-dir", str(root),
                 "--profile", "imagenet_smoke", "--results-dir", str(tmp_path / "r")])
    assert code == 2  # a user error: one line, no run folder
    assert not (tmp_path / "r").exists()


def test_sort_val_reads_the_devkit_and_checks_before_moving(tmp_path):
    from scipy.io import savemat
    import numpy as np

    root = tmp_path / "inet"
    imagenet_sample.write_sample(root, classes=2, per_class=1, val_per_class=2, size=32)
    names = imagenet_layout.wnids()
    # The devkit numbers classes its own way (ILSVRC2012_ID), not in wnid order.
    synsets = np.zeros(2, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    synsets[0], synsets[1] = (7, names[1]), (9, names[0])
    savemat(tmp_path / "meta.mat", {"synsets": synsets})
    (tmp_path / "gt.txt").write_text("9\n9\n7\n7\n")
    with pytest.raises(DataError, match="give the devkit"):
        imagenet_val.sort_val(root / "val", tmp_path / "gt.txt")
    (tmp_path / "short.txt").write_text(f"ILSVRC2012_val_00000001.JPEG {names[0]}\n")
    with pytest.raises(DataError, match=r"ILSVRC2012_val_00000002.JPEG: not in .*short.txt \(3 such images\); "
                                        r"nothing was moved"):
        imagenet_val.sort_val(root / "val", tmp_path / "short.txt")
    assert len(list((root / "val").glob("*.JPEG"))) == 4
    assert imagenet_val.sort_val(root / "val", tmp_path / "gt.txt", tmp_path / "meta.mat") == (4, 0)
    assert sorted(p.name for p in (root / "val" / names[0]).iterdir()) == ["ILSVRC2012_val_00000001.JPEG",
                                                                           "ILSVRC2012_val_00000002.JPEG"]


def test_make_sweep_imagenet_smoke_to_a_report_with_table_7(sample, tmp_path):
    """The must-show: `make sweep-imagenet` with the smoke profile on the generated folder, then the
    report: Table 7's rows with our top-1/top-5 beside the paper's; the corrupt JPEG skipped and counted."""
    results, reports = tmp_path / "results", tmp_path / "reports"
    env = {**os.environ, "GHOST_ABLATE_WORKERS": "0", "OMP_NUM_THREADS": "2"}
    done = subprocess.run(["make", "sweep-imagenet", f"DATA_DIR={sample}", "PROFILE=imagenet_smoke",
                           f"RESULTS={results}", "NO_ESTIMATE=1", "IMAGENET_EXPERIMENTS=experiments/imagenet.yaml",
                           f"BIN={Path(sys.executable).parent}"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    recs = records(results)
    assert len(recs) == 14 and all(r["status"] == "finished" for r in recs)  # Table 7's buildable rows
    for r in recs:
        assert r["config"]["dataset"] == "imagenet" and r["data"]["train_size"] == 120
        assert r["unreadable_images"] == {"count": 1, "files": ["train/n01440764/n01440764_0.JPEG"]}
        assert 0 <= r["final_test_acc"] <= r["final_test_acc5"] <= 1
        assert r["test_confusion"] is None  # 1000 classes: no confusion matrix in the record
    assert main(["report", "--results-dir", str(results), "--out", str(reports)]) == 0
    table = pd.read_csv(reports / "table7_imagenet.csv")
    ghost = table[table["label"] == "GhostNet 1.0x"].iloc[0]
    assert ghost["n_seeds"] == 1 and ghost["paper_top1"] == 73.9 and ghost["paper_top5"] == 91.4
    assert 0 <= ghost["top1_mean"] <= ghost["top5_mean"] <= 100
    assert (table["status"] == "paper only").sum() == 5  # ShuffleNetV1 x2, FE-Net, FBNet-B, ProxylessNAS
    readme = (reports / "README.md").read_text()
    assert "## Table 7: GhostNet widths on ImageNet" in readme and "Paper top-5 (%)" in readme
    # each row says which recipe made it and at which input size its FLOPs were counted (the smoke's 64 px)
    assert set(table.loc[table["status"] == "run", "recipe"]) == {"imagenet_smoke"}
    assert set(table.loc[table["status"] == "run", "input_px"]) == {64}
    assert "FLOPs (M, 64 px)" in readme
    assert not (reports / "table1_dw_size.csv").exists()  # an ImageNet report has ImageNet's tables, all of them
    assert {p.name for p in reports.glob("*_imagenet.csv")} >= {paper.PAPER_TABLES[t].csv for t in paper.IMAGENET_TABLES}


def test_ddp_over_two_cpu_processes(sample, tmp_path):
    """--devices 2 on the CPU: Lightning's DDP (gloo); one record, the batch split, the unreadable
    image counted once whichever process met it."""
    env = {**os.environ, "GHOST_ABLATE_WORKERS": "0", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*CLI, "train", "--model", "ghostnet", "--width", "0.5", "--dataset", "imagenet",
                           "--data-dir", str(sample), "--profile", "imagenet_smoke", "--devices", "2",
                           "--accelerator", "cpu", "--results-dir", str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (rec,) = records(tmp_path)
    assert rec["distributed"] == {"processes": 2, "backend": "gloo"}
    assert rec["status"] == "finished" and rec["devices"] == 2 and rec["effective_batch_size"] == 16
    assert rec["unreadable_images"]["count"] == 1
    assert rec["history"][0]["train_images"] > 56  # both processes' images: more than one process's 7 x 8


def test_submitit_job_array_killed_and_resubmitted_finishes_every_run_once(sample, tmp_path):
    """`sweep --slurm cluster=local --shards 2`: two array tasks; cancelled once a run has finished,
    submitted again, every run ends finished exactly once (finished records are never rewritten)."""
    import submitit

    from ghost_ablate.config import RunConfig
    from ghost_ablate.slurm import submit

    experiment = tmp_path / "four.yaml"
    experiment.write_text("dataset: imagenet\nprofile: imagenet_smoke\nruns:\n"
                          "  - {model: ghostnet, width: [0.5, 1.0]}\n  - {model: mobilenetv2, width: [0.35, 0.6]}\n")
    results = tmp_path / "results"
    os.environ["GHOST_ABLATE_WORKERS"] = "0"
    # 2 epochs a run: the cancel usually lands inside a task's second run
    argv = [str(experiment), "--seeds", "0", "--data-dir", str(sample), "--results-dir", str(results),
            "--no-estimate", "--accelerator", "cpu", "--epochs", "2"]
    from filelock import FileLock

    from ghost_ablate.data import get_dataset

    # One run is held by this process until the cancel, so runs are left when it lands, however fast
    # the machine trains the others.
    held = RunConfig.create("mobilenetv2", width=0.6, profile="imagenet_smoke", dataset="imagenet", epochs=2,
                            data=get_dataset("imagenet").fingerprint(sample)).run_id
    (results / "runs" / held).mkdir(parents=True)
    lock = FileLock(str(results / "runs" / held / ".lock"))
    lock.acquire()
    jobs = submit(argv, main, 2, {"cluster": "local", "timeout_min": 10}, results / "slurm", gpus=False)
    assert len(jobs) == 2 and all(isinstance(j, submitit.Job) for j in jobs)
    deadline = time.time() + 240
    while not any(r["status"] == "finished" for r in records(results)) and time.time() < deadline:
        time.sleep(0.5)
    for job in jobs:
        job.cancel()
    while not all(job.done() for job in jobs) and time.time() < deadline:  # the killed tasks have let go
        time.sleep(0.2)
    lock.release()
    first = {r["run_id"]: r for r in records(results) if r["status"] == "finished"}
    assert held not in first
    assert 1 <= len(first) < 4, "kill the array while runs are left"
    stamps = {run: (results / "runs" / run / "result.json").stat().st_mtime_ns for run in first}
    jobs = submit(argv, main, 2, {"cluster": "local", "timeout_min": 10}, results / "slurm", gpus=False)
    assert [job.result() for job in jobs] == [0, 0]
    final = records(results)
    assert len(final) == 4 and all(r["status"] == "finished" for r in final)
    for run, stamp in stamps.items():  # finished before the kill: not trained again
        assert (results / "runs" / run / "result.json").stat().st_mtime_ns == stamp
    assert {r["run_id"] for r in final} == {
        RunConfig.create(m, width=w, profile="imagenet_smoke", dataset="imagenet", data=final[0]["config"]["data"],
                         epochs=2).run_id
        for m, w in (("ghostnet", 0.5), ("ghostnet", 1.0), ("mobilenetv2", 0.35), ("mobilenetv2", 0.6))}


def test_sweep_slurm_refuses_bad_parameters_in_one_line(tmp_path, capsys):
    code = main(["sweep", "experiments/imagenet.yaml", "--slurm", "partition", "--results-dir", str(tmp_path)])
    assert code == 2
    assert "--slurm 'partition': expected KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("logger", ["mlflow", "wandb"])
def test_trackers_get_the_metrics(sample, tmp_path, monkeypatch, logger):
    """--logger mlflow (a local file store) and wandb (offline): the run's metrics reach the tracker,
    and the record still comes from the CSV logs."""
    monkeypatch.setenv("GHOST_ABLATE_WORKERS", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the local file store (no database server)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    code = main(["train", "--model", "ghostnet", "--width", "0.5", "--dataset", "imagenet", "--data-dir", str(sample),
                 "--profile", "imagenet_smoke", "--results-dir", str(tmp_path / "r"), "--logger", logger])
    assert code == 0
    (rec,) = records(tmp_path / "r")
    assert rec["status"] == "finished"
    if logger == "mlflow":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"file:{tmp_path / 'mlruns'}")
        (run,) = client.search_runs([client.get_experiment_by_name("ghost-ablate").experiment_id])
        assert run.data.tags["run_id"] == rec["run_id"]
        assert run.data.metrics["test_acc5"] == pytest.approx(rec["final_test_acc5"])
    else:
        runs = list(tmp_path.glob("r/runs/*/wandb/offline-run-*/run-*.wandb"))
        assert runs and runs[0].stat().st_size > 0


def test_dry_run_prices_the_imagenet_plan_from_a_given_step_time(tmp_path, capsys):
    """--step-time S: the formula (steps per epoch x S x epochs) without calibrating; with 8 devices
    per node and 2 nodes, device-hours are the hours x 16."""
    code = main(["sweep", "experiments/imagenet_resnet50.yaml", "--dry-run", "--step-time", "0.5",
                 "--data-dir", str(tmp_path / "absent"), "--results-dir", str(tmp_path), "--devices", "8",
                 "--nodes", "2"])
    out = capsys.readouterr().out
    assert code == 0
    steps = -(-1_281_167 // 256)  # full ILSVRC-2012 at the recipe's global batch
    per_run = 90 * (steps * 0.5 + 50_000 / 16 / (3 * 256 / 0.5)) / 3600
    assert f"whole plan {per_run * 3:.1f} h" in out
    assert f"{per_run * 3 * 16:,.1f} device-hours for the whole plan" in out
    assert main(["sweep", "experiments/imagenet.yaml", "--step-time", "0.5", "--data-dir", str(tmp_path)]) == 2


def test_a_preemption_checkpoint_becomes_last_ckpt(tmp_path):
    """Lightning writes hpc_ckpt_N.ckpt on SLURM's requeue signal; it lands as last.ckpt, the file every
    resume reads, and the checkpoint it replaces becomes previous.ckpt."""
    import torch

    from ghost_ablate.training import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1}, tmp_path / "last.ckpt")
    io.save_checkpoint({"epoch": 2}, tmp_path / "hpc_ckpt_1.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "previous.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == 2


def test_lr_scales_with_the_global_batch():
    from ghost_ablate.config import RunConfig

    rc = RunConfig.create("ghostnet", width=1.0, profile="imagenet_ghostnet", dataset="imagenet")
    assert rc.recipe.scaled_lr == pytest.approx(0.4)
    half = RunConfig.create("ghostnet", width=1.0, profile="imagenet_ghostnet", dataset="imagenet", batch_size=512)
    assert half.recipe.scaled_lr == pytest.approx(0.2)
    cifar = RunConfig.create("resnet56", profile="paper")
    assert "label_smoothing" not in cifar.to_dict()["recipe"]  # new fields at their defaults keep old run ids
