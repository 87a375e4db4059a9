"""Shared fixtures: a tiny CIFAR-10 folder in the exact official pickle format."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ghost_ablate.data.cifar import FOLDER, TEST_FILES, TRAIN_FILES

# The real 5,085-image subset the committed records trained on: a copy beside the repository (CI has one),
# or wherever GHOST_ABLATE_SUBSET points (`make demo-data` makes one from the official CIFAR-10)
REAL_SUBSET = Path(os.environ.get("GHOST_ABLATE_SUBSET",
                                  Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset"))
SUBSET_DATA = "0ed6d2672e412419"  # data.fingerprint of REAL_SUBSET, named by every committed demo record


def write_batch(path: Path, data: np.ndarray, labels: list[int], label: bytes) -> None:
    """Pickle like the official Python-2 files: bytes keys, list labels, N x 3072 uint8 rows."""
    batch = {
        b"batch_label": label,
        b"labels": list(labels),
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def make_cifar_folder(root: Path, per_batch: int = 8, n_test: int = 10, seed: int = 0) -> Path:
    """root/cifar-10-batches-py with 5 training batches and a test batch of random images."""
    rng = np.random.default_rng(seed)
    folder = root / FOLDER
    folder.mkdir(parents=True)
    for i, name in enumerate(TRAIN_FILES + TEST_FILES):
        n = n_test if name in TEST_FILES else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        write_batch(folder / name, data, labels, f"batch {i}".encode())
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog",
                                      b"frog", b"horse", b"ship", b"truck"], b"num_cases_per_batch": per_batch,
                     b"num_vis": 3072}, f, protocol=2)
    return folder


def randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so folding has something to fold."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.fixture
def tiny_cifar(tmp_path: Path) -> Path:
    """The data dir (parent of cifar-10-batches-py) of a 40-image train / 10-image test set."""
    make_cifar_folder(tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture(scope="module")
def imagenet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ILSVRC-2012 layout: 10 classes x 12 training JPEGs of 64x64 (one cut short), 30 val images
    sorted from the flat folder as users sort theirs."""
    from ghost_ablate.cli import main
    from ghost_ablate.data.imagenet_sample import write_sample

    root = tmp_path_factory.mktemp("imagenet") / "ilsvrc"
    truth = write_sample(root, classes=10, per_class=12, val_per_class=3, size=64, corrupt=1)
    assert main(["imagenet", "sort-val", str(root / "val"), "--ground-truth", str(truth)]) == 0
    return root


@pytest.fixture
def real_subset() -> Path:
    if not (REAL_SUBSET / FOLDER / TRAIN_FILES[0]).exists():
        pytest.skip(f"real CIFAR-10 subset not found at {REAL_SUBSET} (present in CI)")
    return REAL_SUBSET


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory: pytest.TempPathFactory):
    """The whole test session uses a cache folder of its own, never the user's."""
    import os

    from ghost_ablate.cache import ENV

    old = os.environ.get(ENV)
    os.environ[ENV] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = old


@pytest.fixture(autouse=True)
def fixed_precision_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """`auto` precision resolves the same on every machine the suite runs on: as on a CPU without
    native bf16 (fp32). Which precision a real probe picks differs between CPUs (a Xeon without
    AMX: fp32; an AMD EPYC with fast bf16: bf16), so no test may depend on it; tests of the
    probe itself pass their own detections to `resolve_precision`."""
    from ghost_ablate import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(precision, "cuda_has_bf16", lambda: False)


def add_trainer_callback(monkeypatch: pytest.MonkeyPatch, callback) -> object:  # noqa: ANN001
    """Every trainer `train_run` makes from now on also runs `callback` (to inject a fault mid-run);
    returns the real `make_trainer`, to set back."""
    from ghost_ablate import training

    real = training.make_trainer

    def with_callback(*args, **kwargs):
        trainer = real(*args, **kwargs)
        trainer.callbacks.append(callback)
        return trainer

    monkeypatch.setattr(training, "make_trainer", with_callback)
    return real
