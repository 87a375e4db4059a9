"""The cluster path under a real SLURM scheduler (issue 28): a one-node SLURM 22.05 cluster from
Debian's packages, started for this module by tests/slurm/cluster.sh and stopped after it.

- the sbatch script the docs show, with 2 tasks training one run under DDP;
- `sweep --slurm` (submitit), one array task pre-empted mid-epoch: saved at that step,
  requeued, resumed there, the same steps and accuracy as a run never stopped;
- one plan submitted twice at once: every run trains exactly once.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import make_cifar_folder
from ghost_ablate.cli import main

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"
DOCS = ROOT / "docs" / "imagenet-and-clusters.md"
EPOCHS, BATCH, TRAIN_IMAGES = 3, 8, 120
STEPS_PER_EPOCH = TRAIN_IMAGES // BATCH  # 15 (one process); 2 ranks x batch 4 make the same steps


def _missing() -> str | None:
    needed = [exe for exe in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol") if shutil.which(exe) is None]
    if needed:
        return f"SLURM not installed ({', '.join(needed)} missing: apt-get install slurmctld slurmd slurm-client munge)"
    if os.geteuid() != 0:
        return "the test cluster's slurmd must start as root"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Path:
    """SLURM_CONF of a running one-node cluster, for this module only."""
    if why := _missing():
        if os.environ.get("GHOST_ABLATE_REQUIRE_SLURM"):  # CI installs it: a skip there would hide the tests
            pytest.fail(f"GHOST_ABLATE_REQUIRE_SLURM is set, but {why}")
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("slurm")
    out = subprocess.run([str(CLUSTER), "start", str(folder)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    conf = folder / "slurm.conf"
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PATH")}
    os.environ["SLURM_CONF"] = str(conf)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # ghost-ablate in jobs
    try:
        yield conf
    finally:
        subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True)
        subprocess.run([str(CLUSTER), "stop", str(folder)], capture_output=True, timeout=60)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> dict[str, Path]:
    """A 120/31-image CIFAR folder, a 3-epoch deterministic recipe of 15 steps per epoch, and an
    experiment of one model (seeds come from the command line)."""
    root = tmp_path_factory.mktemp("plan")
    make_cifar_folder(root / "data", per_batch=TRAIN_IMAGES // 5, n_test=31)
    profile = root / "cluster_test.yaml"
    profile.write_text(f"epochs: {EPOCHS}\nbatch_size: {BATCH}\nlr: 0.05\nschedule: cosine\neval_batch_size: 16\n"
                       f"deterministic: true\nprecision: '32'\n")
    experiment = root / "one_model.yaml"
    experiment.write_text(f"profile: {profile}\nruns:\n  - {{model: resnet56}}\n")
    return {"data": root / "data", "experiment": experiment}


def records(results: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(results.glob("runs/*/result.json"))}


def scheduler_logs(lines: int = 60) -> str:
    """The end of the test cluster's own slurmctld and slurmd logs, for a failure's message."""
    folder = Path(os.environ["SLURM_CONF"]).parent
    return "\n".join(f"--- {name} ---\n" + "\n".join((folder / name).read_text(errors="replace").splitlines()[-lines:])
                     for name in ("slurmctld.log", "slurmd.log") if (folder / name).exists())


def wait_for_job(job: str, timeout: float = 240, settled=lambda: True) -> None:  # noqa: ANN001
    """Until the queue of this module's own cluster is empty (the job, every task of its array,
    a requeued task under whatever id SLURM lists it) and `settled()` holds: a requeued task can
    be off the queue for a moment between its requeue and its new start."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True)
        if out.returncode == 0 and not out.stdout.strip() and settled():
            return
        time.sleep(1)
    pytest.fail(f"job {job} still queued after {timeout} s: {out.stdout.strip()}\n{scheduler_logs()}")


def incarnation_gone(task: str) -> bool:
    """No process of the task's previous run is left on the node (its slurmstepd included)."""
    job = subprocess.run(["squeue", "-h", "-j", task, "-o", "%A"], capture_output=True, text=True).stdout.strip()
    return not job or subprocess.run(["pgrep", "-f", f"slurmstepd: \\[{job}\\."], capture_output=True).returncode != 0


RELAUNCH_MARGIN_S = 5.0  # after the last incarnation is gone: slurmd revokes its credential a moment later


def start_requeued_now(task: str, timeout: float = 120) -> None:
    """SLURM holds a requeued job back for about two minutes (its begin time); let it start now, but
    only once the previous incarnation is gone and a margin has passed. Lifted at once, the relaunch
    can reach slurmd 0.3 s after it cancelled the old one, while it still holds that credential as
    revoked: slurmd refuses the launch ("Job credential revoked") and the task leaves the queue."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", task, "-o", "%T %r"], capture_output=True, text=True).stdout
        if "BeginTime" in out and incarnation_gone(task):
            time.sleep(RELAUNCH_MARGIN_S)
            subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], check=True)
            return
        time.sleep(0.2)
    pytest.fail(f"{task} was never requeued\n{scheduler_logs()}")


def rank_lines(text: str) -> list[tuple[int, str]]:
    return [(int(r), run) for r, run in re.findall(r"rank (\d+) of \d+: run (\S+)", text)]


def docs_sbatch_script() -> str:
    """The sweep.sbatch block of the cluster docs, as a user would save it."""
    text = DOCS.read_text()
    block = text[text.index("<!-- sweep.sbatch"):]
    return block[block.index("```bash\n") + 8:block.index("\n```", block.index("```bash\n"))] + "\n"


def test_docs_sbatch_script_trains_one_run_with_ddp_over_two_tasks(cluster, plan, tmp_path):
    script = tmp_path / "sweep.sbatch"
    script.write_text(docs_sbatch_script())
    results, log = tmp_path / "results", tmp_path / "job.log"
    out = subprocess.run(["sbatch", "--parsable", "--wait", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
                          f"--output={log}", str(script), str(plan["experiment"]), str(plan["data"]),
                          "--seeds", "0", "--accelerator", "cpu", "--results-dir", str(results), "--no-download"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    text = log.read_text() if log.exists() else ""
    assert out.returncode == 0, f"{out.stderr}\n{text[-3000:]}"
    (run_id, record), = records(results).items()
    assert record["status"] == "finished" and record["devices"] == 2
    assert record["effective_batch_size"] == BATCH and record["optimizer_steps"] == EPOCHS * STEPS_PER_EPOCH
    assert sorted(rank_lines(text)) == [(0, run_id), (1, run_id)]  # both ranks name the same run
    assert sum(sum(row) for row in record["test_confusion"]) == 31  # every test image once over 2 ranks


def submit(plan: dict[str, Path], results: Path, *extra: str) -> str:
    """`ghost-ablate sweep --slurm`; the job id it printed."""
    from contextlib import redirect_stdout
    from io import StringIO

    printed = StringIO()
    with redirect_stdout(printed):
        code = main(["sweep", str(plan["experiment"]), "--data-dir", str(plan["data"]), "--results-dir",
                     str(results), "--accelerator", "cpu", "--no-download", "--slurm", "timeout_min=10", *extra])
    assert code == 0, printed.getvalue()
    return re.search(r"job (\d+)", printed.getvalue()).group(1)


def test_preempted_array_task_saves_its_step_is_requeued_and_resumes_there(cluster, plan, tmp_path, monkeypatch):
    results = tmp_path / "results"
    job = submit(plan, results, "--seeds", "0,1", "--shards", "2")
    task_log = None
    deadline = time.time() + 180
    while time.time() < deadline:  # task 0's first epoch has ended: it is in epoch 2 now
        logs = list((results / "slurm").glob(f"{job}_0/*_log.err"))
        if logs and "epoch 1/3" in logs[0].read_text():
            task_log = logs[0]
            break
        time.sleep(0.2)
    assert task_log is not None, "task 0 never finished an epoch"
    subprocess.run(["scancel", "--signal=USR2", f"{job}_0"], check=True)
    start_requeued_now(f"{job}_0")
    wait_for_job(job, settled=lambda: [r["status"] for r in records(results).values()] == ["finished"] * 2)

    done = records(results)
    assert len(done) == 2 and all(r["status"] == "finished" for r in done.values())
    stopped = [r for r in done.values() if r.get("resumes")]
    assert len(stopped) == 1, [r.get("resumes") for r in done.values()]
    record = stopped[0]
    step = record["resumes"][0]["from_step"]
    assert STEPS_PER_EPOCH < step < 2 * STEPS_PER_EPOCH  # saved mid-epoch 2, not at an epoch's end
    assert record["attempts"] == 2 and record["optimizer_steps"] == EPOCHS * STEPS_PER_EPOCH

    # the same run, never stopped, in this process on one core like the task: the same weights
    from ghost_ablate.config import RunConfig
    from ghost_ablate.training import RunContext, train_run

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    for key in [k for k in os.environ if k.startswith("SLURM_") and k != "SLURM_CPUS_PER_TASK" and k != "SLURM_CONF"]:
        monkeypatch.delenv(key)
    config = RunConfig.from_dict(record["config"])
    uninterrupted = train_run(config, RunContext.resolve(plan["data"], accelerator="cpu", download=False),
                              tmp_path / "reference", progress=False)
    assert uninterrupted["final_test_acc"] == record["final_test_acc"]
    mine = torch.load(results / "runs" / config.run_id / "last.ckpt", weights_only=True)["state_dict"]
    ref = torch.load(tmp_path / "reference" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(mine[k], ref[k]) for k in ref)


def test_plan_submitted_twice_at_once_trains_each_run_once_with_both_ranks(cluster, plan, tmp_path):
    results = tmp_path / "results"
    jobs = [submit(plan, results, "--seeds", "0,1", "--devices", "2") for _ in range(2)]
    for job in jobs:
        wait_for_job(job)
    done = records(results)
    assert len(done) == 2 and all(r["status"] == "finished" and r["attempts"] == 1 for r in done.values())
    trained: dict[str, list[int]] = {}
    held = 0
    for job in jobs:
        text = "".join(p.read_text() for p in (results / "slurm").glob(f"{job}*/*_log.*"))
        held += text.count("another process holds it, skipped")
        for rank, run in rank_lines(text):
            trained.setdefault(run, []).append(rank)
    assert held >= 1  # the two jobs ran at the same time: one found a run the other held, and went on
    # each run trained by exactly one job, on both of its ranks, and never joined by another
    assert {run: sorted(ranks) for run, ranks in trained.items()} == {run: [0, 1] for run in done}


def wait_for_log(results: Path, job: str, text: str, timeout: float = 180) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        logs = list((results / "slurm").glob(f"{job}*/*_log.err"))
        if logs and text in logs[0].read_text():
            return logs[0]
        time.sleep(0.2)
    pytest.fail(f"{text!r} never appeared in job {job}'s log\n{scheduler_logs()}")


def test_sigterm_mid_epoch_saves_that_step_and_the_same_command_resumes_there(cluster, plan, tmp_path):
    """scancel (SIGTERM, as at a time limit) in epoch 2: the run is saved at the step in progress
    within KillWait, recorded interrupted, not requeued; the same sweep resumes at that step."""
    results = tmp_path / "results"
    job = submit(plan, results, "--seeds", "0")
    log = wait_for_log(results, job, "epoch 1/3")
    subprocess.run(["scancel", job], check=True)
    wait_for_job(job, settled=lambda: [r["status"] for r in records(results).values()] == ["interrupted"])
    (record,) = records(results).values()
    assert "stopped by SIGTERM" in record["error"], record["error"]
    assert "requeued" not in log.read_text()
    # the same command, here (it resumes wherever it is run)
    assert main(["sweep", str(plan["experiment"]), "--seeds", "0", "--data-dir", str(plan["data"]), "--results-dir",
                 str(results), "--accelerator", "cpu", "--no-download", "--no-estimate"]) == 0
    (record,) = records(results).values()
    step = record["resumes"][0]["from_step"]
    assert STEPS_PER_EPOCH < step < 2 * STEPS_PER_EPOCH  # mid-epoch 2: nothing trained twice
    assert record["status"] == "finished" and record["optimizer_steps"] == EPOCHS * STEPS_PER_EPOCH


def test_a_diverged_run_in_an_array_task_is_told_from_a_lost_one(cluster, plan, tmp_path):
    """A task whose run diverged (recorded) ends with exit status 4, not the 1 of a lost run, so
    `sacct`/`scontrol show job` tell them apart."""
    profile = tmp_path / "diverges.yaml"
    profile.write_text("epochs: 1\nbatch_size: 8\nlr: 1.0e+12\nschedule: cosine\neval_batch_size: 16\n"
                       "precision: '32'\n")
    experiment = tmp_path / "diverges_exp.yaml"
    experiment.write_text(f"profile: {profile}\nruns:\n  - {{model: resnet56}}\n")
    results = tmp_path / "results"
    job = submit({**plan, "experiment": experiment}, results, "--seeds", "0")
    wait_for_job(job)
    (record,) = records(results).values()
    assert record["status"] == "diverged"
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "ExitCode=4:0" in shown, shown


def test_a_warning_after_a_run_s_last_step_claims_no_save(cluster, plan, tmp_path):
    """The pre-emption warning arrives once run 1 (seed 0) has trained its last step: nothing of
    run 1 is saved or trained again, and the log claims a save only where a later run was saved."""
    results = tmp_path / "results"
    job = submit(plan, results, "--seeds", "0,1")
    log = wait_for_log(results, job, "epoch 3/3")  # run 1's last epoch (and its validation) is over
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    start_requeued_now(job)
    wait_for_job(job, settled=lambda: [r["status"] for r in records(results).values()] == ["finished"] * 2)
    by_seed = {r["config"]["seed"]: r for r in records(results).values()}
    assert by_seed[0]["attempts"] == 1 and not by_seed[0].get("resumes")  # run 1: never saved, never resumed
    text = "".join(p.read_text() for p in log.parent.glob("*_log.*"))
    if by_seed[1].get("resumes"):  # the warning reached run 2 mid-way: saved there, and said so
        assert by_seed[1]["resumes"][0]["from_step"] > 0 and "resumes from the saved step" in text
    else:  # between the runs: requeued to go on, nothing claimed
        assert "nothing was saved" in text and "resumes from the saved step" not in text
