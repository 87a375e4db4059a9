import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ghost_ablate import paper
from ghost_ablate.cli import main
from ghost_ablate.cli.args import parse_seeds, parse_shard
from ghost_ablate.config import ConfigError
from ghost_ablate.errors import UserError
from ghost_ablate.record_schema import read_records
from ghost_ablate.experiment import load_experiment, plan_runs

from conftest import add_trainer_callback

ROOT = Path(__file__).resolve().parents[1]
ABLATION = ROOT / "experiments" / "cifar10_ablation.yaml"
CROSS = ROOT / "experiments" / "cifar10_cross.yaml"
FAST = ["--batch-size", "8", "--eval-batch-size", "16", "--limit-train-batches", "2", "--limit-test-batches", "1"]


def test_ablation_expands_to_the_papers_distinct_runs():
    exp = load_experiment(ABLATION)
    keys = [(c["model"], c["ratio"], c["dw_size"], c["width"]) for c in exp.configs if "epochs_of" not in c]
    paper_keys = [r.key for r in paper.distinct_models(paper.CIFAR_TABLES)]
    # 4 (T1) + 4 (T2: VGG-16, s=3,4,5) + 4 (T3: l1-VGG-16, ResNet-56, l1-ResNet-56, Ghost-ResNet-56)
    # + the same-budget table's budget-VGG-16 and budget-ResNet-56, each by l1 and by BN scale
    budget = [("budget_vgg16", None, None, None)] * 2 + [("budget_resnet56", None, None, None)] * 2
    assert keys[:-1] == [*paper_keys[:12], *budget] and set(paper_keys[12:]) == set(budget)
    assert len(paper_keys) == 14 and keys[-1] == ("cifar_ghostnet", 2, 3, 1.0)
    criteria = [c["knobs"].get("criterion") for c in exp.configs if c["model"].startswith("budget_")]
    assert criteria == [None, "bn_scale", None, "bn_scale"]
    controls = {c["model"]: c["epochs_of"]["model"] for c in exp.configs if "epochs_of" in c}
    assert controls == {"ghost_vgg16": "l1_vgg16", "ghost_resnet56": "l1_resnet56"}
    runs = plan_runs(exp, [0, 1, 2])
    assert len(runs) == 57 and len({r.run_id for r in runs}) == 57


def test_an_equal_epochs_control_trains_as_many_epochs_as_its_rivals_chain(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("profile: subset\nfinetune_profile: l1_finetune\nruns:\n  - {model: l1_vgg16, from: vgg16}\n"
                   "  - {model: ghost_vgg16, ratio: 2, dw_size: 3}\n"
                   "  - {model: ghost_vgg16, ratio: 2, dw_size: 3, epochs_of: l1_vgg16}\n")
    for overrides, source, own in ((None, 12, 40), ({"epochs": 5}, 5, 5)):
        runs = {(rc.model, rc.recipe.epochs): rc for rc in plan_runs(load_experiment(exp), [0], overrides=overrides)}
        pruned = runs[("l1_vgg16", own)]
        assert runs[("vgg16", source)].run_id == pruned.source  # the rival: its source's epochs, then its own
        assert ("ghost_vgg16", source) in runs and runs[("ghost_vgg16", source + own)].source is None
    for entry, said in (("{model: ghost_vgg16, epochs_of: vgg16}", "'vgg16' is not made from another run"),
                        ("{model: l1_vgg16, from: vgg16, epochs_of: l1_vgg16}", "trains from random weights"),
                        ("{model: vgg16, epochs_of: {model: l1_vgg16}}", "must name a model made from")):
        exp.write_text(f"profile: subset\nruns:\n  - {entry}\n")
        with pytest.raises(ConfigError, match=said):
            load_experiment(exp)


def test_cross_product_is_32_plus_baselines():
    runs = plan_runs(load_experiment(CROSS), [0])
    ghost = [r for r in runs if r.model.startswith("ghost_")]
    assert len(ghost) == 32 and {r.ratio for r in ghost} == {2, 3, 4, 5} and {r.dw_size for r in ghost} == {1, 3, 5, 7}
    assert sorted(r.model for r in runs if r not in ghost) == ["resnet56", "vgg16"]


def test_shards_partition_the_grid():
    exp = load_experiment(CROSS)
    full = [r.run_id for r in plan_runs(exp, [0, 1])]
    parts = [[r.run_id for r in plan_runs(exp, [0, 1], shard=(i, 3))] for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(full) and len(set(sum(parts, []))) == len(full)


def test_run_id_depends_on_the_resolved_config():
    exp = load_experiment(ABLATION)
    a = plan_runs(exp, [0], "smoke")[0]
    assert a.run_id == plan_runs(exp, [0], "smoke")[0].run_id
    assert a.run_id != plan_runs(exp, [0], "smoke", {"lr": 0.01})[0].run_id
    assert a.run_id != plan_runs(exp, [1], "smoke")[0].run_id


@pytest.mark.parametrize("text,match", [
    ("profile: smoke\nruns:\n  - {model: resnet99}\n", r"runs\[0\].*unknown model 'resnet99'; valid: .*resnet56"),
    ("profile: smoke\nruns:\n  - {model: ghost_vgg16, ratio: 2.5}\n", r"runs\[0\].*ratio must be an integer 1..64, got 2.5"),
    ("profile: smoke\nruns:\n  - {model: ghost_vgg16, dw_size: 4}\n", r"runs\[0\].*dw_size must be an odd integer"),
    ("profile: smoke\nruns:\n  - {model: ghost_vgg16, kernel: 3}\n", r"runs\[0\]\.kernel: unknown field; valid: model"),
    ("profile: fast\nruns:\n  - {model: vgg16}\n", r"profile: unknown profile 'fast'; valid: imagenet_ghostnet, imagenet_ghostnet_dli14, imagenet_ghostnet_mindcv, imagenet_resnet50, imagenet_smoke, l1_finetune, paper, quick, smoke, standard, subset, subset_fast or a .yaml path"),
    ("profile: smoke\nseeds: [1]\nruns:\n  - {model: vgg16}\n", r"seeds: unknown field; valid: description"),
    ("profile: smoke\nruns: [ {model: vgg16\n", r"malformed YAML"),
    ("profile: smoke\npaper_tables: [table9]\n", r"paper_tables: unknown table 'table9'"),
    ("runs:\n  - {model: vgg16}\n", r"profile: missing"),
])
def test_bad_experiment_files_name_file_and_field(tmp_path, text, match):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_experiment(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("spec", ["2/2", "a/b", "1", "-1/2", "0/0"])
def test_bad_shard(spec):
    with pytest.raises(UserError, match="I/N"):
        parse_shard(spec)


def test_seeds_parse():
    assert parse_seeds("0,1,2,1") == [0, 1, 2]
    with pytest.raises(UserError, match="seeds"):
        parse_seeds("0,x")


def test_cli_bad_input_exits_2_and_starts_nothing(tmp_path, capsys):
    results = tmp_path / "results"
    for argv in (["sweep", str(ABLATION), "--shard", "3/2"], ["sweep", str(ABLATION), "--profile", "nope"],
                 ["sweep", str(ABLATION), "--epochs", "0"], ["sweep", str(tmp_path / "missing.yaml")],
                 ["sweep", str(ABLATION), "--data-dir", str(tmp_path / "none"), "--no-download"]):
        capsys.readouterr()
        assert main(argv + ["--results-dir", str(results)]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert not (results / "runs").exists() or not any((results / "runs").iterdir())


def test_dry_run_lists_costs_and_status(tmp_path, capsys):
    assert main(["sweep", str(ABLATION), "--dry-run", "--no-estimate", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "19 runs (shard 0/1): 19 new" in out and "157.004" in out


# ---- end to end, in subprocesses ---------------------------------------------------------

def write_small_experiment(path: Path) -> Path:
    path.write_text("profile: smoke\nruns:\n  - {model: ghost_resnet56, ratio: [2, 3], dw_size: [1, 3]}\n"
                    "  - {model: resnet56}\n")
    return path


def sweep_cmd(exp: Path, data: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ghost_ablate.cli", "sweep", str(exp), "--data-dir", str(data),
            "--results-dir", str(results), "--seeds", "0", "--no-estimate", "--precision", "32", *FAST, *extra]


def _finished(results: Path) -> list[dict]:
    return [r for r in read_records(results / "runs") if r["status"] == "finished"]


def test_sigkill_mid_sweep_then_restart_runs_everything_once(tiny_cifar, tmp_path):
    exp = write_small_experiment(tmp_path / "exp.yaml")
    results = tmp_path / "results"
    proc = subprocess.Popen(sweep_cmd(exp, tiny_cifar, results, "--epochs", "2"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while len(_finished(results)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["run_id"]: r for r in _finished(results)}
    assert 2 <= len(before) < 5, "the sweep should be killed part-way"

    done = subprocess.run(sweep_cmd(exp, tiny_cifar, results, "--epochs", "2"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    records = read_records(results / "runs")
    assert len(records) == 5 and all(r["status"] == "finished" and r["epochs_done"] == 2 for r in records)
    for r in records:
        if r["run_id"] in before:  # finished before the kill: not retrained
            assert r["attempts"] == 1 and r["finished_at"] == before[r["run_id"]]["finished_at"]
    assert f"{len(before)} skipped" in done.stdout
    summary = pd.read_csv(results / "summary.csv")
    assert len(summary) == 5 and set(summary["status"]) == {"finished"}


def test_two_concurrent_shards_equal_one_process(tiny_cifar, tmp_path):
    exp = write_small_experiment(tmp_path / "exp.yaml")
    shared, single = tmp_path / "shared", tmp_path / "single"
    procs = [subprocess.Popen(sweep_cmd(exp, tiny_cifar, shared, "--shard", f"{i}/2"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    one = subprocess.run(sweep_cmd(exp, tiny_cifar, single), capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]

    def essence(results):
        return {r["run_id"]: (r["status"], r["epochs_done"], r["params"], r["flops"], r["final_test_acc"])
                for r in read_records(results / "runs")}

    assert essence(shared) == essence(single) and len(essence(single)) == 5
    assert len(pd.read_csv(shared / "summary.csv")) == 5


def test_failed_run_is_recorded_and_sweep_goes_on(tiny_cifar, tmp_path, monkeypatch, capsys):
    import lightning as L

    class OutOfMemory(L.Callback):  # fails resnet56 in its second training step, after its record exists
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if module.hparams["model"] == "resnet56" and batch_idx == 1:
                raise RuntimeError("out of memory (simulated)")

    add_trainer_callback(monkeypatch, OutOfMemory())
    exp = write_small_experiment(tmp_path / "exp.yaml")
    results = tmp_path / "r"
    code = main(["sweep", str(exp), "--data-dir", str(tiny_cifar), "--results-dir", str(results), *FAST])
    assert code == 1
    out = capsys.readouterr().out
    assert "4 done" in out and "1 failed" in out and "resnet56" in out
    records = read_records(results / "runs")
    (failed,) = [r for r in records if r["config"]["model"] == "resnet56"]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: out of memory (simulated)"
    assert failed["epochs_done"] == 0 and failed["attempts"] == 1 and "finished_at" in failed
    assert sum(r["status"] == "finished" for r in records) == 4
    summary = pd.read_csv(results / "summary.csv")
    assert summary.set_index("run_id").loc[failed["run_id"], "status"] == "failed"


def test_the_readme_experiment_example_parses_and_plans(tmp_path):
    """The README's inline experiment file is a working one: Table 2 plus two extra rows."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```yaml\n# my_table2.yaml\n(.*?)```", readme, re.S).group(1)
    path = tmp_path / "my_table2.yaml"
    path.write_text(block)
    exp = load_experiment(path)
    assert exp.tables == ("table2_ratio",) and exp.profile == "paper"
    keys = {(c["model"], c["ratio"], c["dw_size"]) for c in exp.configs}
    assert keys == {("vgg16", None, None), *(("ghost_vgg16", s, 3) for s in (2, 3, 4, 5)),
                    ("ghost_vgg16", 2, 5), ("ghost_vgg16", 3, 5)}
    assert len(plan_runs(exp, [0, 1, 2])) == 21


def test_a_record_without_its_checkpoint_says_it_starts_over_not_that_it_resumes(tmp_path):
    from ghost_ablate.sweep import start_words

    assert start_words("start", tmp_path) == "starting"
    assert start_words("resume", tmp_path).startswith("starting over from epoch 1")  # a clone: record, no checkpoint
    (tmp_path / "previous.ckpt").write_bytes(b"")
    assert start_words("resume", tmp_path) == "resuming from its checkpoint"
