"""Several processes on one run (issue 28), on the CPU with gloo: the ranks agree on every
decision, stop together, count each validation image once, draw their own crops, and train
the batch the recipe names."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from conftest import make_cifar_folder
from ghost_ablate.cli import main
from ghost_ablate.config import ConfigError, RunConfig, device_batch
from ghost_ablate.data.cifar import TensorBatches

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "ghost_ablate.cli"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """120 training and 31 test images: 31 divides by none of 2, 3, 4."""
    root = tmp_path_factory.mktemp("ddp") / "data"
    make_cifar_folder(root, per_batch=24, n_test=31)
    return root


def run_cli(args: list[str], cwd: Path, timeout: float = 240, script: list[str] = CLI) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE",
                                                                     "MASTER_"))}
    return subprocess.run([*script, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def test_both_ranks_skip_a_held_run_together_and_train_the_next_seed(data, tmp_path):
    """Two seeds of one model: another process holds seed 0's run. Rank 0 alone could have
    moved on while rank 1 joined the held run (and averaged two seeds' gradients in silence)."""
    (tmp_path / "exp.yaml").write_text("profile: smoke\nruns:\n  - {model: resnet56}\n")
    results = tmp_path / "results"
    args = ["sweep", "exp.yaml", "--data-dir", str(data), "--results-dir", str(results), "--no-download",
            "--accelerator", "cpu", "--devices", "2", "--no-estimate"]
    ids = [line.split()[0] for line in run_cli([*args, "--seeds", "0,1", "--dry-run"], tmp_path).stdout.splitlines()
           if line.startswith("resnet56-")]
    assert len(ids) == 2
    (results / "runs" / ids[0]).mkdir(parents=True)
    with FileLock(str(results / "runs" / ids[0] / ".lock")):
        out = run_cli([*args, "--seeds", "0,1"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(line.split(": run ")[1] for line in out.stderr.splitlines() if ": run " in line) == [ids[1]] * 2
    assert "rank 0 of 2: run" in out.stderr and "rank 1 of 2: run" in out.stderr
    assert "1 done, 0 skipped (already done), 0 failed, 1 held by another process" in out.stdout
    assert not (results / "runs" / ids[0] / "result.json").exists()
    assert json.loads((results / "runs" / ids[1] / "result.json").read_text())["status"] == "finished"


def test_a_nan_on_rank_1_alone_stops_both_ranks_and_the_record_says_diverged(data, tmp_path):
    out = run_cli(["train", "--model", "resnet56", "--profile", "smoke", "--epochs", "2", "--limit-train-batches",
                   "none", "--data-dir", str(data), "--results-dir", str(tmp_path), "--no-download",
                   "--accelerator", "cpu", "--devices", "2"], tmp_path, timeout=180,
                  script=[sys.executable, str(ROOT / "tests" / "nan_on_rank1.py")])
    assert out.returncode == 1, out.stderr[-3000:]  # returned: nothing hung
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("runs/*/result.json")]
    assert record["status"] == "diverged" and record["diverged_epoch"] == 0
    assert "diverged" in out.stderr


def test_validation_on_3_processes_counts_every_test_image_exactly_once(data, tmp_path):
    out = run_cli(["train", "--model", "resnet56", "--profile", "smoke", "--batch-size", "6",
                   "--limit-test-batches", "none", "--eval-batch-size", "4",
                   "--data-dir", str(data), "--results-dir", str(tmp_path), "--no-download", "--accelerator", "cpu",
                   "--devices", "3"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("runs/*/result.json")]
    confusion = torch.tensor(record["test_confusion"])
    assert confusion.sum() == 31  # not 33: no padding repeats over 3 ranks
    assert record["final_test_acc"] == pytest.approx(confusion.trace().item() / 31)
    assert record["effective_batch_size"] == 6 and record["devices"] == 3


def test_a_batch_that_does_not_split_is_refused_in_one_line_naming_the_counts_that_do(data, tmp_path, capsys):
    assert device_batch(1024, 8) == 128 and device_batch(1024, 2, accumulate=4) == 128
    with pytest.raises(ConfigError, match=r"global batch 1024 does not split over 24 process\(es\) x 1 accumulation "
                                          r"step\(s\); with --accumulate 1 valid devices x nodes are 1, 2, 4, 8, 16, 32"):
        device_batch(1024, 24)
    code = main(["train", "--model", "resnet56", "--profile", "smoke", "--devices", "3", "--data-dir", str(data),
                 "--results-dir", str(tmp_path), "--no-download", "--accelerator", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "batch 32 does not split over 3" in err
    assert not (tmp_path / "runs").exists()


def test_sync_batchnorm_is_a_recipe_option_that_keeps_every_run_id(data, tmp_path, capsys):
    plain = RunConfig.create("resnet56", None, None, None, "smoke", 0)
    assert RunConfig.create("resnet56", None, None, None, "smoke", 0, sync_batchnorm=False).run_id == plain.run_id
    synced = RunConfig.create("resnet56", None, None, None, "smoke", 0, sync_batchnorm=True)
    assert synced.run_id != plain.run_id and synced.recipe.sync_batchnorm
    code = main(["train", "--model", "resnet56", "--profile", "smoke", "--devices", "2", "--set", "recipe.sync_batchnorm=true",
                 "--data-dir", str(data), "--results-dir", str(tmp_path), "--no-download", "--accelerator", "cpu"])
    assert code == 2 and "sync_batchnorm needs CUDA devices" in capsys.readouterr().err


def same_images(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """n copies of one image, so two ranks' batches differ only by their crops and flips."""
    image = torch.arange(3 * 32 * 32, dtype=torch.int64).remainder(251).to(torch.uint8).view(1, 3, 32, 32)
    return image.repeat(n, 1, 1, 1), torch.zeros(n, dtype=torch.long)


def test_two_ranks_draw_different_crops_for_the_same_step():
    images, labels = same_images()
    first = [next(iter(TensorBatches(images, labels, 4, shuffle=True, augment=True, seed=7, rank=r, world_size=2,
                                     drop_last=True)))[0] for r in (0, 1)]
    again = next(iter(TensorBatches(images, labels, 4, shuffle=True, augment=True, seed=7, rank=1, world_size=2,
                                    drop_last=True)))[0]
    assert not torch.equal(first[0], first[1])
    assert torch.equal(first[1], again)  # each rank's draws are still fixed by the seed
    single = next(iter(TensorBatches(images, labels, 4, shuffle=True, augment=True, seed=7)))[0]
    old = torch.Generator().manual_seed(7 * 1_000_003)
    torch.randperm(16, generator=old)
    from ghost_ablate.data.cifar import random_crop_flip

    assert torch.equal(single, random_crop_flip(images[:4], old))  # one device: the stream it always drew


def test_the_gpu_decode_path_draws_its_own_crops_on_each_rank(tmp_path):
    from types import SimpleNamespace

    from torchvision.io import encode_jpeg

    from ghost_ablate.data.imagenet import ImageNetDataModule, PackedBlobs

    blob = encode_jpeg(same_images(1)[0][0].repeat(1, 4, 4)).numpy().tobytes()
    outs = []
    for rank in (0, 1, 1):
        dm = ImageNetDataModule(tmp_path, image_size=32, seed=3, decode="device")
        dm.trainer = SimpleNamespace(training=True, global_rank=rank, world_size=2,
                                     strategy=SimpleNamespace(root_device=torch.device("cpu")))
        batch = (PackedBlobs.pack([torch.frombuffer(bytearray(blob), dtype=torch.uint8)] * 4),
                 torch.zeros(4, dtype=torch.long),
                 ["a.JPEG"] * 4, [])
        outs.append(dm.on_after_batch_transfer(batch, 0)[0])
    assert not torch.equal(outs[0], outs[1]) and torch.equal(outs[1], outs[2])


def test_workers_and_threads_follow_the_cpus_slurm_allocated(monkeypatch):
    from ghost_ablate.data.imagenet import default_workers
    from ghost_ablate.machine import allocated_cpus

    monkeypatch.delenv("GHOST_ABLATE_WORKERS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "10")
    assert allocated_cpus() == 10 and default_workers(1) == 9
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert allocated_cpus() == 4 and default_workers(2) == 1


def test_the_imagenet_evaluation_sampler_neither_repeats_nor_drops_an_image():
    from types import SimpleNamespace

    from ghost_ablate.data.imagenet import eval_sampler

    files = list(range(50_000))
    seen = [i for rank in range(24) for i in eval_sampler(files, SimpleNamespace(world_size=24, global_rank=rank))]
    assert sorted(seen) == files  # 24 GPUs: 50,000 images, not 50,016
    assert eval_sampler(files, SimpleNamespace(world_size=1, global_rank=0)) is None


def test_gradient_accumulation_meets_the_recipe_batch_on_fewer_devices(data, tmp_path):
    """Batch 8 as 2 steps of 4: the record keeps the real global batch; one optimizer step per 2 batches."""
    from ghost_ablate.training import RunContext, train_run

    config = RunConfig.create("resnet56", profile="smoke", epochs=1, batch_size=8, limit_train_batches=None)
    record = train_run(config, RunContext.resolve(data, accelerator="cpu", download=False, accumulate=2), tmp_path,
                       progress=False)
    assert record["effective_batch_size"] == 8 and record["accumulate"] == 2
    assert record["optimizer_steps"] == 120 // 4 // 2  # 30 batches of 4, a step every 2


def test_sweep_slurm_forwards_every_option_it_was_given_to_its_tasks(tmp_path):
    """The tasks' command line is rebuilt from the sweep parser's own options: parsing it again
    gives the submitted command's values (less the submit's own options), recipe overrides and
    newer options like --accumulate included."""
    from ghost_ablate.cli import build_parser
    from ghost_ablate.slurm import NOT_FORWARDED, sweep_argv

    given = ["sweep", "experiments/imagenet.yaml", "--seeds", "0,1", "--data-dir", "data", "--results-dir",
             str(tmp_path), "--devices", "4", "--nodes", "2", "--accumulate", "2", "--accelerator", "cuda",
             "--no-download", "--retry-failed", "--max-hours", "5", "--epochs", "3", "--set", "recipe.milestones=1,2",
             "--set", "recipe.sync_batchnorm=true", "--profile", "imagenet_smoke", "--slurm", "timeout_min=5", "--shards", "3"]
    parser = build_parser()
    submitted = parser.parse_args(given)
    task = parser.parse_args(["sweep", *sweep_argv(submitted, [0, 1]), "--shard", "2/3"])
    for key, value in vars(submitted).items():
        if key in NOT_FORWARDED:
            continue
        want = str(Path(value).resolve()) if key in ("data_dir", "results_dir") else value
        assert getattr(task, key) == want, key
    assert task.seeds == "0,1" and task.shard == "2/3" and task.slurm is None
