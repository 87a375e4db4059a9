import csv
import json

import lightning as L
import pytest
import torch

from ghost_ablate.cli import main
from ghost_ablate.config import ConfigError, RunConfig
from ghost_ablate.classifier import Diverged, ImageClassifier
from ghost_ablate.training import RunContext, train_run

FAST = dict(batch_size=16, eval_batch_size=16, limit_train_batches=2, limit_test_batches=1)


def tiny_config(model="ghost_resnet56", epochs=1, **kw):
    return RunConfig.create(model, profile="smoke", seed=kw.pop("seed", 0), epochs=epochs, **{**FAST, **kw})


def test_run_writes_checkpoint_metrics_and_record(tiny_cifar, tmp_path):
    out = tmp_path / "run"
    rec = train_run(tiny_config(epochs=2), RunContext.resolve(tiny_cifar), out, progress=False)
    assert (out / "last.ckpt").exists()
    rows = list(csv.DictReader(open(out / "logs" / "attempt-1" / "metrics.csv")))
    assert {r["epoch"] for r in rows if r.get("test_acc")} == {"0", "1"}
    saved = json.loads((out / "result.json").read_text())
    assert saved == json.loads(json.dumps(rec))
    assert saved["status"] == "finished" and saved["epochs_done"] == 2
    for key in ("params", "flops", "final_test_acc", "best_test_acc", "wall_time_s", "train_images_per_s",
                "device", "versions", "config", "run_id"):
        assert saved[key] is not None, key
    assert saved["config"]["recipe"]["epochs"] == 2 and saved["config"]["model"] == "ghost_resnet56"
    assert saved["params"] == 438_154


def test_finished_run_returns_at_once(tiny_cifar, tmp_path):
    out = tmp_path / "run"
    config = tiny_config()
    first = train_run(config, RunContext.resolve(tiny_cifar), out, progress=False)
    stamp = (out / "last.ckpt").stat().st_mtime_ns
    again = train_run(config, RunContext.resolve(tiny_cifar), out, progress=False)
    assert again == json.loads(json.dumps(first))
    assert (out / "last.ckpt").stat().st_mtime_ns == stamp


def test_folder_of_another_config_is_refused(tiny_cifar, tmp_path):
    train_run(tiny_config(seed=0), RunContext.resolve(tiny_cifar), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="another configuration"):
        train_run(tiny_config(seed=1), RunContext.resolve(tiny_cifar), tmp_path / "run", progress=False)


class StopAtEpoch(L.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def test_interrupted_run_resumes_to_the_same_epochs(tiny_cifar, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(epochs=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(config, RunContext.resolve(tiny_cifar), out, progress=False, callbacks=[StopAtEpoch(1)])
    crashed = json.loads((out / "result.json").read_text())
    assert crashed["status"] == "failed" and crashed["epochs_done"] == 1
    assert torch.load(out / "last.ckpt", weights_only=False)["epoch"] == 0
    rec = train_run(config, RunContext.resolve(tiny_cifar), out, progress=False)
    assert rec["status"] == "finished" and rec["epochs_done"] == 3 and rec["attempts"] == 2
    assert [h["epoch"] for h in rec["history"]] == [0, 1, 2]
    epochs_logged = [{r["epoch"] for r in csv.DictReader(open(out / "logs" / f"attempt-{a}" / "metrics.csv"))
                      if r.get("test_acc")} for a in (1, 2)]
    assert epochs_logged == [{"0"}, {"1", "2"}]  # epoch 0 not retrained; no attempt's log deleted
    # the uninterrupted run reaches the same weights: resume restores model, optimizer and data order
    straight = train_run(config, RunContext.resolve(tiny_cifar), tmp_path / "straight", progress=False)
    assert straight["final_test_acc"] == pytest.approx(rec["final_test_acc"])
    a = torch.load(out / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "straight" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_checkpoint_reloads_to_identical_outputs(tiny_cifar, tmp_path):
    out = tmp_path / "run"
    train_run(tiny_config("ghost_vgg16"), RunContext.resolve(tiny_cifar), out, progress=False)
    first = ImageClassifier.load_from_checkpoint(out / "last.ckpt", map_location="cpu").eval()
    second = ImageClassifier.load_from_checkpoint(out / "last.ckpt", map_location="cpu").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))
    assert first.history and first.history[-1]["epoch"] == 0
    fresh = ImageClassifier("ghost_vgg16", 2, 3).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), first(x))


class PoisonWeights(L.Callback):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1:
            with torch.no_grad():
                next(module.parameters()).fill_(float("nan"))


def test_divergence_is_recorded_and_nothing_deleted(tiny_cifar, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Diverged):
        train_run(tiny_config(epochs=3), RunContext.resolve(tiny_cifar), out, progress=False, callbacks=[PoisonWeights()])
    rec = json.loads((out / "result.json").read_text())
    assert rec["status"] == "diverged" and rec["diverged_epoch"] == 1 and rec["epochs_done"] == 1
    assert (out / "last.ckpt").exists() and (out / "logs" / "attempt-1" / "metrics.csv").exists()


def test_cli_train_and_bad_input(tiny_cifar, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["train", "--model", "resnet56", "--profile", "smoke", "--data-dir", str(tiny_cifar),
            "--out", str(out), "--batch-size", "16", "--limit-train-batches", "1"]
    assert main(argv) == 0
    assert json.loads((out / "result.json").read_text())["config"]["recipe"]["batch_size"] == 16
    for bad, msg in ((["--profile", "nope"], "valid: imagenet_ghostnet, imagenet_ghostnet_dli14, imagenet_ghostnet_mindcv, imagenet_resnet50, imagenet_smoke, l1_finetune, paper, quick, smoke, standard, subset, subset_fast or a .yaml path"),
                     (["--epochs", "x"], "epochs"), (["--set", "recipe.schedule=linear"], "schedule"),
                     (["--schedule", "step"], "--schedule is now --set recipe.schedule=VALUE"),
                     (["--set", "recipe.lr_refernce_batch=256"], "valid: epochs, batch_size, lr,"),
                     (["--data-dir", str(tmp_path / "none"), "--no-download"], "cifar-10-python.tar.gz")):
        capsys.readouterr()
        assert main(argv[:-2] + ["--out", str(tmp_path / "other")] + bad) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1


@pytest.mark.slow
def test_resnet56_learns_on_real_cifar(real_subset, tmp_path):
    """3 epochs on the 5,085 real training images: well above chance (10%).

    Scrambled labels cannot exceed chance on the test set, and a broken image layout
    leaves nothing to learn, so either bug fails this threshold.
    """
    config = RunConfig.create("resnet56", profile="quick", epochs=3, lr=0.02, warmup_epochs=0, batch_size=128,
                              eval_batch_size=256)
    rec = train_run(config, RunContext.resolve(real_subset), tmp_path / "real", progress=False)
    assert rec["best_test_acc"] > 0.25, rec["history"]
    assert rec["history"][-1]["train_loss"] < rec["history"][0]["train_loss"]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_record(tmp_path):
    """--devices 2 (Lightning DDP, gloo on CPU): ranks split each epoch, rank 0 alone writes the record."""
    import subprocess
    import sys

    from conftest import make_cifar_folder

    data = make_cifar_folder(tmp_path / "data", per_batch=32, n_test=32).parent
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "ghost_ablate.cli", "train", "--model", "resnet56", "--profile", "smoke",
           "--devices", "2", "--accelerator", "cpu", "--data-dir", str(data), "--out", str(out),
           "--epochs", "2", "--batch-size", "16", "--limit-train-batches", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rec = json.loads((out / "result.json").read_text())
    assert (rec["status"], rec["devices"], rec["effective_batch_size"], rec["epochs_done"]) == ("finished", 2, 16, 2)
    # per epoch: 2 batches of 8 on each of the 2 ranks
    assert [h["train_images"] for h in rec["history"]] == [32, 32]
    assert done.stdout.count("finished, 2 epochs") == 1
