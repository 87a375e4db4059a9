"""The GPU path's faults found by reading it (issue 41), each shown on a CPU: the machine, SLURM or
torch state that triggers it is set or mocked, and each test fails on the code before the fix."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ghost_ablate import precision, training
from ghost_ablate.config import ConfigError, RunConfig
from ghost_ablate.data import imagenet
from ghost_ablate.data.imagenet import PackedBlobs, collate, default_workers


# 1. under srun each device is its own task: cpus-per-task is that task's share already
def test_loader_workers_under_srun_are_the_task_s_cores(monkeypatch):
    monkeypatch.setattr(imagenet, "allocated_cpus", lambda: 12)  # what SLURM_CPUS_PER_TASK=12 gives a task
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "12")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "8")
    monkeypatch.delenv("GHOST_ABLATE_WORKERS", raising=False)
    assert default_workers(8) == 11  # not 12 // 8 - 1 = 1
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE")
    monkeypatch.setenv("SLURM_TASKS_PER_NODE", "8(x2)")
    assert default_workers(8) == 11
    # one process driving 8 devices (one task per node): its cores are shared by the 8
    monkeypatch.setenv("SLURM_TASKS_PER_NODE", "1")
    assert default_workers(8) == 1
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.delenv("SLURM_TASKS_PER_NODE")
    assert default_workers(4) == 2  # 12 cores of a plain machine, 4 devices


# 2. encoded images cross the worker queue as two tensors, whatever the batch
def test_collated_bytes_are_one_buffer_with_offsets():
    blobs = [torch.randint(0, 255, (n,), dtype=torch.uint8) for n in (5, 0, 7, 3)]
    images, labels, paths, bad = collate([(b, i, f"p{i}") for i, b in enumerate(blobs)] + [(None, 9, "bad")])
    assert isinstance(images, PackedBlobs) and images.data.shape == (15,) and len(images) == 4
    assert [torch.equal(a, b) for a, b in zip(images.unpack(), blobs)] == [True] * 4
    assert labels.tolist() == [0, 1, 2, 3] and bad == ["bad"]


def test_a_batch_of_512_encoded_images_loads_under_ulimit_1024():
    """The loader, with workers, at batch 512 under `ulimit -n 1024` (in a child process, so the
    limit binds only there): the old list of 512 byte tensors took one descriptor each and hung."""
    from ghost_ablate.gpu_check import descriptor_probe

    assert "all arrived" in descriptor_probe(batch=512, limit=1024)


def test_a_stuck_loader_is_an_error_naming_its_causes():
    err = training.loader_timeout_error(RuntimeError("DataLoader timed out after 600 seconds"))
    assert err is not None and "ulimit -n" in str(err) and "/dev/shm" in str(err)
    assert training.loader_timeout_error(RuntimeError("something else")) is None


# 3. bf16 that is emulated is not native
def test_auto_precision_does_not_pick_emulated_bf16_on_a_t4(monkeypatch):
    """The real detection (conftest fixes it for every other test), with torch's answers mocked."""
    monkeypatch.undo()  # conftest's stand-in for the detection goes: this test is of the detection
    real = precision.cuda_has_bf16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what torch says on a T4
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    assert not real()
    assert precision.resolve_precision("auto", "cuda", gpu_bf16=real).resolved == "32"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))  # A100
    assert real() and precision.resolve_precision("auto", "cuda", gpu_bf16=real).resolved == "bf16"


# 4. a GPU run that cannot have its GPU is an error, never a quiet CPU run
def test_a_gpu_request_without_a_usable_gpu_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    with pytest.raises(ConfigError, match=r"CUDA 13\.0, which needs NVIDIA driver >= 580") as err:
        training.resolve_device("cuda", available=False, driver_present=True)
    assert "STACK=" in str(err.value) and "--accelerator cpu" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="driver is loaded but torch cannot use it"):
        training.resolve_device("auto", available=False, driver_present=True)
    assert training.resolve_device("auto", available=False, driver_present=False) == "cpu"
    assert training.resolve_device("cpu", available=True, driver_present=True) == "cpu"
    assert training.resolve_device("auto", available=True, driver_present=True) == "cuda"


# 6. calibration on the micro-batch the run holds, under the run's kernel settings
def test_calibration_times_the_accumulated_micro_batch(monkeypatch):
    from ghost_ablate import estimate

    shapes, settings = [], []
    monkeypatch.setattr(estimate, "backend_settings", lambda device, det=False: settings.append((device, det)))
    monkeypatch.setattr(estimate, "seconds", lambda fn, n, warmup=0, sync=None: [0.1] * n)

    def fake_step(model, x, y, opt, autocast=None):
        shapes.append(x.shape[0])
        return lambda: None

    monkeypatch.setattr(estimate, "sgd_step", fake_step)
    rc = RunConfig.create("resnet56", profile="smoke", batch_size=64)
    precision = estimate.resolve_precision(rc.recipe.precision, "cpu")
    cal = estimate.measure_calibration(rc, "cpu", precision, world=1, accumulate=4)
    assert shapes == [16]  # 64 / 4 images per forward-backward
    assert cal.step_s == pytest.approx(0.1 * 4)  # four micro-steps per optimizer step
    assert settings == [("cpu", False)]
    assert estimate.calibration_key(rc, "cpu", precision, 1, 4) != estimate.calibration_key(rc, "cpu", precision, 1, 1)


# 8. DALI's extra augmentation draws on each rank's own stream
def test_extra_augmentation_differs_between_ranks_and_leaves_the_global_stream():
    from ghost_ablate.data.common import RankDraws

    torch.manual_seed(0)
    before = torch.get_rng_state()
    a, b, again = RankDraws(3, 0), RankDraws(3, 1), RankDraws(3, 0)
    draw = lambda: torch.rand(4)  # noqa: E731
    x, y, z = a.run(draw), b.run(draw), again.run(draw)
    assert not torch.equal(x, y) and torch.equal(x, z)
    assert not torch.equal(a.run(draw), x)  # the stream goes on
    assert torch.equal(torch.get_rng_state(), before)


def test_dali_batches_use_their_rank_s_draws():
    pytest.importorskip("nvidia.dali", reason="DALI is the optional `dali` extra; `make install` installs it")
    from ghost_ablate.data.dali import DaliBatches
    from ghost_ablate.data.decode import Crops

    crops = Crops(32, True)
    first, second = (DaliBatches([], crops, 1, rank, 2, 0, torch.device("cpu")) for rank in (0, 1))
    assert not torch.equal(first.draws.run(lambda: torch.rand(3)), second.draws.run(lambda: torch.rand(3)))


# 9. evaluation with more ranks than validation shards: every rank has data, every image once
def test_evaluation_shards_fewer_than_ranks_still_feed_every_rank(tmp_path):
    import io
    import tarfile

    from ghost_ablate.data.shards import ShardImages

    paths = []
    for s in range(2):
        path = tmp_path / f"shard-{s:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(5):
                for ext, data in (("jpeg", b"x"), ("cls", str(i).encode()), ("txt", f"{s}/{i}".encode())):
                    info = tarfile.TarInfo(f"{s}{i:07d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(str(path))
    images = ShardImages(paths, lambda b: b, train=False)
    for world in (1, 2, 3, 5):
        seen = [[name for *_, name in
                 (( s["image"], s["cls"], s["txt"]) for s in images._evaluation(rank, world, 0, 1))]
                for rank in range(world)]
        assert all(seen), (world, seen)  # no rank left without data
        flat = [n for part in seen for n in part]
        assert sorted(flat) == sorted(f"{s}/{i}" for s in range(2) for i in range(5))  # each image once


# 10. the record names the device the run trained on
def test_a_cpu_run_on_a_gpu_host_is_recorded_as_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training.environment("cpu")["device"].startswith("cpu: ")


# 12. a batch with no readable image still joins the step's all-reduce under DDP
def test_an_empty_batch_under_ddp_gives_a_zero_loss_reaching_every_parameter():
    module = training.ImageClassifier("resnet56", num_classes=10, recipe={"epochs": 1})
    module._trainer = SimpleNamespace(world_size=2)
    module._nonfinite = torch.zeros((), dtype=torch.bool)  # inside an epoch
    loss = module.training_step((torch.empty(0, 3, 32, 32), torch.empty(0, dtype=torch.long)), 0)
    assert loss is not None and float(loss) == 0.0
    loss.backward()
    params = [p for p in module.model.parameters() if p.requires_grad]
    assert all(p.grad is not None and not p.grad.any() for p in params)
    module._trainer = SimpleNamespace(world_size=1)
    assert module.training_step((torch.empty(0, 3, 32, 32), torch.empty(0, dtype=torch.long)), 0) is None


# make gpu-check on a machine without CUDA
def test_gpu_check_without_cuda_runs_the_cpu_parts_and_says_so(tmp_path, capsys):
    from ghost_ablate.cli import main

    assert main(["gpu-check", "--out", str(tmp_path / "gpu-check.md")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("no CUDA device:")
    report = (tmp_path / "gpu-check.md").read_text()
    assert report.count("passed in") == 2 and report.count("Skipped: no CUDA device.") == 6
    assert "`--precision auto` on cpu: 32" in report and "all arrived" in report
    assert "cpu: " in report  # every figure beside the machine it came from
