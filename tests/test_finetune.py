"""Prune-then-fine-tune as a sweep step: a pruned row trains its source first, starts from its
final weights by the l1 criterion, records the source's run id, waits in a shard until the
source is finished, and survives a kill half-way with every run finished exactly once."""
import os
import signal
from pathlib import Path

import lightning as L
import pytest

from ghost_ablate.cli import main
from ghost_ablate.config import ConfigError
from ghost_ablate.record_schema import read_records
from ghost_ablate.experiment import load_experiment, plan_runs

from conftest import add_trainer_callback

FAST = ["--batch-size", "8", "--eval-batch-size", "16", "--limit-train-batches", "3", "--limit-test-batches", "1",
        "--no-estimate", "--precision", "32"]


class TermInFineTune(L.Callback):
    """SIGTERM once, in the second epoch of `model`'s training (a pruned run's fine-tune)."""

    def __init__(self, model: str) -> None:
        self.model, self.sent = model, False

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if module.hparams.model == self.model and trainer.current_epoch == 1 and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def experiment(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_a_pruned_row_depends_on_its_baseline_planned_first(tmp_path):
    exp = load_experiment(experiment(tmp_path, "profile: smoke\nfinetune_profile: quick\nruns:\n"
                                               "  - {model: l1_resnet56, from: resnet56}\n"
                                               "  - {model: l1_vgg16, init: scratch}\n"))
    runs = plan_runs(exp, [0, 1], data="abc")
    by_id = {rc.run_id: rc for rc in runs}
    pruned = [rc for rc in runs if rc.model == "l1_resnet56"]
    assert [rc.model for rc in runs[:4]] == ["resnet56", "resnet56", "l1_vgg16", "l1_vgg16"]  # sources first
    for rc in pruned:
        source = by_id[rc.source]
        assert (source.model, source.seed, source.profile, source.data) == ("resnet56", rc.seed, "smoke", "abc")
        assert rc.profile == "quick" and rc.to_dict()["source"] == source.run_id
    assert all(rc.source is None for rc in runs if rc.model != "l1_resnet56")
    # the paper's l1 rows start from their baseline by default, and plan it (it is Table 3's own row too)
    paper = load_experiment(experiment(tmp_path, "profile: smoke\npaper_tables: [table3_cifar10]\n"))
    l1 = {c["model"]: c for c in paper.configs if c["model"].startswith("l1_")}
    assert l1["l1_vgg16"]["source"]["model"] == "vgg16" and l1["l1_resnet56"]["source"]["model"] == "resnet56"


@pytest.mark.parametrize("row, message", [
    ("{model: resnet56, from: vgg16}", "resnet56 starts from a run of 'resnet56' (fine-tuned), not of 'vgg16'"),
    ("{model: l1_vgg16, init: scratch, from: vgg16}", "init: scratch"),
    ("{model: l1_vgg16, from: resnet56}",
     "l1_vgg16 starts from a run of 'l1_vgg16' or 'vgg16' (fine-tuned, or pruned), not of 'resnet56'"),
    ("{model: l1_vgg16, from: {model: l1_vgg16, from: resnet56}}", "not of 'resnet56'"),  # a chain: every link
])
def test_bad_from_is_one_line_naming_the_field(tmp_path, row, message):
    with pytest.raises(ConfigError, match="runs\\[0\\].from") as err:
        load_experiment(experiment(tmp_path, f"profile: smoke\nruns:\n  - {row}\n"))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_pruned_run_without_its_source_says_what_to_run(tiny_cifar, tmp_path, capsys):
    code = main(["train", "--model", "l1_vgg16", "--data-dir", str(tiny_cifar), "--out", str(tmp_path / "run"), "--profile",
                 "smoke", *FAST[:-3]])
    err = capsys.readouterr().err
    assert code == 2 and "init=pruned starts from a trained vgg16" in err and "init=scratch" in err


def test_a_shard_skips_a_pruned_run_until_its_source_is_finished(tiny_cifar, tmp_path, capsys):
    exp = experiment(tmp_path, "profile: smoke\nruns:\n  - {model: l1_resnet56}\n")
    args = ["sweep", str(exp), "--data-dir", str(tiny_cifar), "--results-dir", str(tmp_path / "results"), *FAST]
    assert main([*args, "--shard", "1/2"]) == 0  # shard 1 of 2 holds the pruned run, shard 0 its source
    assert "1 waiting for their source run" in capsys.readouterr().out
    assert read_records(tmp_path / "results" / "runs") == []
    assert main([*args, "--shard", "0/2"]) == 0 and main([*args, "--shard", "1/2"]) == 0
    records = {r["config"]["model"]: r for r in read_records(tmp_path / "results" / "runs")}
    assert records["l1_resnet56"]["source"]["run_id"] == records["resnet56"]["run_id"]
    assert records["l1_resnet56"]["config"]["source"] == records["resnet56"]["run_id"]


def test_killed_half_way_through_the_fine_tune_every_run_finishes_once(tiny_cifar, tmp_path, monkeypatch):
    from ghost_ablate import training
    from ghost_ablate.models import pruned

    pruned_from = []
    real_prune = pruned.prune_l1
    monkeypatch.setattr(pruned, "prune_l1", lambda trained, net: pruned_from.append(trained) or real_prune(trained, net))

    exp = experiment(tmp_path, "profile: smoke\nruns:\n  - {model: l1_resnet56, from: resnet56}\n")
    args = ["sweep", str(exp), "--data-dir", str(tiny_cifar), "--results-dir", str(tmp_path / "results"),
            "--epochs", "2", *FAST]
    real = add_trainer_callback(monkeypatch, TermInFineTune("l1_resnet56"))
    with pytest.raises(SystemExit):
        main(args)
    states = {r["config"]["model"]: r["status"] for r in read_records(tmp_path / "results" / "runs")}
    assert states == {"resnet56": "finished", "l1_resnet56": "interrupted"}
    monkeypatch.setattr(training, "make_trainer", real)
    assert main(args) == 0
    records = {r["config"]["model"]: r for r in read_records(tmp_path / "results" / "runs")}
    assert records["resnet56"]["attempts"] == 1 and records["l1_resnet56"]["attempts"] == 2
    assert all([h["epoch"] for h in r["history"]] == [0, 1] for r in records.values())  # every epoch once
    assert len(pruned_from) == 1  # pruned once, at the start; the resume took its own checkpoint
    assert records["l1_resnet56"]["source"]["final_test_acc"] == records["resnet56"]["final_test_acc"]
    assert records["l1_resnet56"]["config"]["source"] == records["resnet56"]["run_id"]
    assert main(args) == 0 and len(pruned_from) == 1  # a third sweep finds everything done


def test_a_chain_of_runs_from_runs_trains_in_order_and_each_run_once_across_a_kill(tiny_cifar, tmp_path,
                                                                                     monkeypatch):
    """A -> pruned B -> fine-tuned C, declared as nested `from:` in one experiment file: the plan
    puts each source first; killed while B trains and run again, A is not trained again, B resumes
    from its checkpoint, and C starts from B's final network."""
    import lightning as L

    from ghost_ablate import training
    from ghost_ablate.cli import main
    from ghost_ablate.record_schema import read_records

    experiment = tmp_path / "chain.yaml"
    experiment.write_text("profile: smoke\nruns:\n  - {model: l1_resnet56, from: {model: l1_resnet56, from: resnet56}}\n")
    results = tmp_path / "results"
    argv = ["sweep", str(experiment), "--data-dir", str(tiny_cifar), "--results-dir", str(results), "--no-estimate",
            "--epochs", "2", "--batch-size", "8", "--limit-train-batches", "2", "--limit-test-batches", "1"]

    class Kill(L.Callback):
        def on_train_epoch_start(self, trainer, module):  # after the first epoch's checkpoint
            if trainer.current_epoch == 1:
                raise KeyboardInterrupt

    real, made = training.make_trainer, []

    def second_run_killed(*args, **kwargs):  # the second run trained is B
        trainer = real(*args, **kwargs)
        made.append(trainer)
        if len(made) == 2:
            trainer.callbacks.append(Kill())
        return trainer

    monkeypatch.setattr(training, "make_trainer", second_run_killed)
    assert main(argv) == 130
    first = {r["config"]["model"] + ("<-" + r["source"]["criterion"] if r.get("source") else ""): r
             for r in read_records(results / "runs")}
    assert {k: r["status"] for k, r in first.items()} == {"resnet56": "finished", "l1_resnet56<-l1": "interrupted"}
    a_written = (results / "runs" / first["resnet56"]["run_id"] / "result.json").stat().st_mtime_ns

    assert main(argv) == 0
    runs = {r["run_id"]: r for r in read_records(results / "runs")}
    assert len(runs) == 3 and all(r["status"] == "finished" for r in runs.values())
    a = first["resnet56"]["run_id"]
    (b,) = [k for k, r in runs.items() if (r.get("source") or {}).get("run_id") == a]
    (c,) = [k for k, r in runs.items() if (r.get("source") or {}).get("run_id") == b]
    assert (results / "runs" / a / "result.json").stat().st_mtime_ns == a_written  # A: trained once
    assert [runs[k]["attempts"] for k in (a, b, c)] == [1, 2, 1]  # B resumed once; C trained once
    assert (runs[b]["source"]["criterion"], runs[c]["source"]["criterion"]) == ("l1", "fine-tuned")
    assert runs[c]["params"] == runs[b]["params"] < runs[a]["params"]  # C is B's pruned network, trained on
    assert len(made) == 4  # A, B (killed), B resumed, C: no run trained twice
