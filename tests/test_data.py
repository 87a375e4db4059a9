import json
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from conftest import write_batch
from ghost_ablate import data as data_mod
from ghost_ablate.data import DataError
from ghost_ablate.data.cifar import (MEAN, CIFAR10DataModule, TensorBatches, load_split, normalize,
                                     prepare, random_crop_flip, read_batch)


def test_reads_official_format(tiny_cifar):
    folder = prepare(tiny_cifar, download=False)
    x, y = load_split(folder, train=True)
    assert x.shape == (40, 3, 32, 32) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and y.shape == (40,)
    xt, yt = load_split(folder, train=False)
    assert xt.shape == (10, 3, 32, 32)


def test_rows_are_channel_major_rgb(tmp_path):
    row = np.zeros((1, 3072), dtype=np.uint8)
    row[0, :1024] = 200  # first 1024 values: red plane
    row[0, 1024 + 33] = 7  # green plane, pixel (1, 1)
    write_batch(tmp_path / "b", row, [3], b"x")
    x, y = read_batch(tmp_path / "b")
    assert (x[0, 0] == 200).all() and x[0, 1, 1, 1] == 7 and x[0, 2].sum() == 0 and y.tolist() == [3]


def test_data_dir_may_be_the_batches_folder_itself(tiny_cifar):
    assert prepare(tiny_cifar / "cifar-10-batches-py", download=False) == tiny_cifar / "cifar-10-batches-py"


def test_missing_folder_without_network_says_where_to_put_archive(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", offline)
    with pytest.raises(DataError, match="cifar-10-python.tar.gz.*" + str(tmp_path / "nowhere")) as info:
        prepare(tmp_path / "nowhere", download=True)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="not in"):
        prepare(tmp_path / "nowhere", download=False)


def test_truncated_file_is_named(tiny_cifar):
    path = tiny_cifar / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3.*truncated or corrupt"):
        load_split(prepare(tiny_cifar, download=False), train=True)


def test_bad_labels_are_rejected(tmp_path):
    write_batch(tmp_path / "b", np.zeros((2, 3072), dtype=np.uint8), [1, 10], b"x")
    with pytest.raises(DataError, match="labels must lie in 0..9"):
        read_batch(tmp_path / "b")


def test_wrong_shape_is_rejected(tmp_path):
    write_batch(tmp_path / "b", np.zeros((2, 100), dtype=np.uint8), [1, 2], b"x")
    with pytest.raises(DataError, match="N x 3072"):
        read_batch(tmp_path / "b")


def test_crop_and_flip_move_pixels_as_claimed():
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).remainder(251).to(torch.uint8).view(2, 3, 32, 32)
    g = torch.Generator().manual_seed(3)
    out = random_crop_flip(images, g)
    # replay the same draws to know each sample's offset and flip
    g2 = torch.Generator().manual_seed(3)
    dy = torch.randint(0, 9, (2,), generator=g2)
    dx = torch.randint(0, 9, (2,), generator=g2)
    flip = torch.rand(2, generator=g2) < 0.5
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(2):
        window = padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        expected = window.flip(-1) if flip[i] else window
        assert torch.equal(out[i], expected)


def test_crop_offsets_and_flips_cover_all_cases():
    images = torch.ones(4000, 1, 32, 32, dtype=torch.uint8)
    out = random_crop_flip(images, torch.Generator().manual_seed(0))
    zero_rows_top = (out[:, 0, :, 16] == 0).int().argmin(dim=1)  # first non-padded row
    assert set(zero_rows_top.tolist()) == set(range(5))  # shifts 0..4 pixels down, each seen
    assert out.shape == images.shape


def test_augmentation_deterministic_under_seed():
    images = torch.randint(0, 255, (64, 3, 32, 32), dtype=torch.uint8)
    a = random_crop_flip(images, torch.Generator().manual_seed(5))
    b = random_crop_flip(images, torch.Generator().manual_seed(5))
    c = random_crop_flip(images, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def _epoch_batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_same_seed_same_batches_new_epoch_new_order():
    x = torch.randint(0, 255, (50, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(50)
    epoch = {"n": 0}
    make = lambda seed: TensorBatches(x, y, 16, shuffle=True, augment=True, seed=seed, epoch_fn=lambda: epoch["n"])
    first, again = _epoch_batches(make(1)), _epoch_batches(make(1))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert len(first) == 4 and sorted(torch.cat([b[1] for b in first]).tolist()) == list(range(50))
    epoch["n"] = 1
    assert not torch.equal(_epoch_batches(make(1))[0][1], first[0][1])


def test_ranks_partition_the_epoch():
    y = torch.arange(40)
    x = torch.zeros(40, 3, 32, 32, dtype=torch.uint8)
    seen = [torch.cat([b[1] for b in TensorBatches(x, y, 8, shuffle=True, rank=r, world_size=2,
                                                    drop_last=True)]) for r in (0, 1)]
    assert set(seen[0].tolist()).isdisjoint(seen[1].tolist()) and len(seen[0]) == len(seen[1]) == 16


def test_normalize_uses_cifar_stats():
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(images)
    assert out.dtype == torch.float32
    assert torch.allclose(out[0, :, 0, 0], (1 - torch.tensor(MEAN)) / torch.tensor(data_mod.cifar.STD))


def test_datamodule_load_is_cpu_uint8(tiny_cifar):
    dm = CIFAR10DataModule(tiny_cifar, batch_size=16).load()
    assert dm.train_set[0].dtype == torch.uint8 and len(dm.test_set[1]) == 10


def test_real_subset_channel_order_and_layout(real_subset):
    """Channel means of the real images match CIFAR-10's R > G > B statistics; pixels are spatially smooth."""
    x, y = load_split(prepare(real_subset, download=False), train=True)
    means = (x.float() / 255).mean(dim=(0, 2, 3))
    assert torch.allclose(means, torch.tensor(MEAN), atol=0.01), means
    assert means[0] > means[1] > means[2]
    f = x[:500].float()
    neighbours = torch.corrcoef(torch.stack([f[..., :-1].flatten(), f[..., 1:].flatten()]))[0, 1]
    assert neighbours > 0.85  # a wrong reshape (HWC read as CHW) destroys this
    assert torch.bincount(y, minlength=10).min() > 400


def test_data_sets_are_declared_once_and_read_from_there(monkeypatch, tmp_path):
    """Training, estimates and reports take classes, sizes and names from `data.DATASETS`."""
    import dataclasses

    from ghost_ablate import data
    from ghost_ablate.estimate import FULL_CIFAR
    from ghost_ablate.report.markdown import header_markdown

    cifar = data.get_dataset("cifar10")
    assert (cifar.num_classes, cifar.input_size, FULL_CIFAR) == (10, 32, (50_000, 10_000))
    assert data.get_dataset(None) is cifar  # records from before the field
    with pytest.raises(data.DataError, match="unknown data set 'svhn'; valid: cifar10, imagenet"):
        data.get_dataset("svhn")
    imagenet = data.get_dataset("imagenet")
    assert (imagenet.num_classes, imagenet.input_size, imagenet.classes[0]) == (1000, 224, "n01440764")
    renamed = dataclasses.replace(cifar, title="CIFAR-10 (renamed)", train_size=5_085)
    monkeypatch.setitem(data.DATASETS, "cifar10", renamed)
    header = header_markdown({"profiles": ["subset"], "epochs": [12], "train_sizes": [5_085], "test_sizes": [1_017],
                              "data_names": ["x"], "seeds": [0], "devices": ["cpu"], "precisions": ["32"],
                              "runs": 1, "finished": 1, "dataset": data.get_dataset("cifar10")})
    assert "CIFAR-10 (renamed), 5,085 training" in header and "full: 5,085 / 10,000" in header
    assert "a subset of the data" not in header  # the full split, by the declared size


def test_a_run_counts_its_model_at_its_data_sets_input_size(tiny_cifar, tmp_path):
    """An ImageNet model trained on CIFAR-10 computes 32 px images and 10 classes: its record, and the
    dry-run's cost column, count that, not the 224 px / 1000-class network `count` shows."""
    from ghost_ablate.cli import main
    from ghost_ablate.config import RunConfig
    from ghost_ablate.costs import config_cost, cost_record
    from ghost_ablate.flops import measure
    from ghost_ablate.models import build_model
    from ghost_ablate.plan import dry_run_table

    out = tmp_path / "run"
    assert main(["train", "--model", "ghostnet", "--width", "0.5", "--profile", "smoke", "--data-dir", str(tiny_cifar),
                 "--out", str(out), "--batch-size", "8", "--limit-train-batches", "1", "--limit-test-batches", "1",
                 "--precision", "32"]) == 0
    record = json.loads((out / "result.json").read_text())
    on_cifar = measure(build_model("ghostnet", width=0.5, num_classes=10), 32)
    assert (record["params"], record["flops"]) == (on_cifar.params, on_cifar.flops)
    assert on_cifar.flops * 20 < cost_record("ghostnet", 2, 3, 0.5)["flops"]  # the paper's 224 px count: 42M
    rc = RunConfig.create("ghostnet", 2, 3, 0.5, "smoke", 0)
    assert config_cost(*rc.key, dataset=rc.dataset) == on_cifar
    assert dry_run_table([rc], tmp_path)["FLOPs (M)"].iloc[0] == on_cifar.flops / 1e6


def _official_like(subset: Path, root: Path, extra: int = 40) -> Path:
    """A folder laid out as the official CIFAR-10: each batch file the subset's first 1,017 images
    followed by `extra` others, under the official batch label (what the official files hold,
    shortened: the cut only ever reads their first 1,017)."""
    import pickle

    import numpy as np

    from ghost_ablate.data.cifar_subset import SUFFIX

    src, out = subset / "cifar-10-batches-py", root / "cifar-10-batches-py"
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        d = pickle.loads((src / name).read_bytes(), encoding="bytes")
        full = {b"batch_label": d[b"batch_label"].removesuffix(SUFFIX),
                b"labels": d[b"labels"] + rng.integers(0, 10, extra).tolist(),
                b"data": np.concatenate([d[b"data"], rng.integers(0, 256, (extra, 3072), dtype=np.uint8)]),
                b"filenames": d[b"filenames"] + [b"extra.png"] * extra}
        (out / name).write_bytes(pickle.dumps(full, protocol=2))
    (out / "batches.meta").write_bytes((src / "batches.meta").read_bytes())
    return root


def test_demo_data_cut_from_the_official_layout_is_the_committed_subset(real_subset, tmp_path, capsys):
    from ghost_ablate.cli import main
    from ghost_ablate.data.cifar_subset import FINGERPRINT

    official = _official_like(real_subset, tmp_path / "cifar10")
    assert main(["demo-data", "--from", str(official), "--out", str(tmp_path / "subset"), "--no-download"]) == 0
    assert f"data fingerprint {FINGERPRINT}, the same" in capsys.readouterr().out
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        assert (tmp_path / "subset" / "cifar-10-batches-py" / name).read_bytes() == \
            (real_subset / "cifar-10-batches-py" / name).read_bytes()
    # one changed pixel among the first 1,017 images: refused, naming the file
    import pickle

    batch = official / "cifar-10-batches-py" / "data_batch_3"
    d = pickle.loads(batch.read_bytes(), encoding="bytes")
    d[b"data"][5, 0] ^= 1
    batch.write_bytes(pickle.dumps(d, protocol=2))
    assert main(["demo-data", "--from", str(official), "--out", str(tmp_path / "again"), "--no-download"]) == 2
    err = capsys.readouterr().err
    assert "data_batch_3 differ from the demo's subset" in err and err.count("\n") == 1
