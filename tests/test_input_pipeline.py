"""The ImageNet input pipeline (issue 31): one crop rule for every decoder, reduced-size decoding
only where the crop allows, crops on the batch on the device path, tar shards, and DALI's CPU
mode, each reading the same images with the same labels and the same unreadable-image count."""
from __future__ import annotations

import functools
import io
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_jpeg
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ghost_ablate.cli import main
from ghost_ablate.data import decode, imagenet, imagenet_sample, shards
from ghost_ablate.data.decode import Crops
from ghost_ablate.data.imagenet import ImageFiles, ImageNetDataModule, collate, crop_one


@pytest.fixture(scope="module")
def folder(imagenet_folder) -> Path:
    return imagenet_folder


@pytest.fixture(scope="module")
def sharded(folder, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("shards") / "ilsvrc-shards"
    assert main(["imagenet", "shard", str(folder), str(dest), "--per-shard", "25"]) == 0
    return dest


def photo(width: int = 500, height: int = 375, seed: int = 0) -> bytes:
    image = imagenet_sample.natural_image(height, width, torch.Generator().manual_seed(seed))
    return encode_jpeg(image, quality=90).numpy().tobytes()


# ---- the crop rule -------------------------------------------------------------------

def test_random_resized_boxes_are_torchvision_s_for_the_same_draws():
    g = torch.Generator().manual_seed(0)
    sizes = [(500, 375), (375, 500), (1200, 900), (64, 640), (1000, 10)] + [
        tuple(torch.randint(16, 1500, (2,), generator=g).tolist()) for _ in range(200)]
    for w, h in sizes:
        torch.manual_seed(w * 7919 + h)
        top, left, bh, bw = v2.RandomResizedCrop.get_params(torch.empty(3, h, w), [0.08, 1.0], [3 / 4, 4 / 3])
        torch.manual_seed(w * 7919 + h)
        assert decode.random_resized_box(w, h) == (left, top, bw, bh)
    # the fallback: nothing fits a 1000x10 strip, so the centred box at the widest aspect allowed
    assert decode.random_resized_box(1000, 10) == (493, 0, 13, 10)
    # a batch (the device path) draws image by image as a loader worker does: the same crops per seed
    torch.manual_seed(0)
    boxes, flips = Crops(224, True).boxes(torch.tensor([500, 1200]), torch.tensor([375, 900]))
    torch.manual_seed(0)
    one = [Crops(224, True).box(500, 375), Crops(224, True).box(1200, 900)]
    assert [tuple(b) for b in boxes.tolist()] == [b for b, _ in one] and flips.tolist() == [f for _, f in one]


@pytest.fixture(params=["region", "whole"])
def decoder(request, monkeypatch) -> str:
    """Both CPU decoders: box only (the `_jpeg_region` extension) and the whole-image fallback."""
    if request.param == "region":
        assert decode.region_decoding(), "the _jpeg_region extension was not built: make install needs libjpeg's headers"
    else:
        monkeypatch.setattr(decode, "_decode_region", None)
    return request.param


@pytest.mark.parametrize("width,height", [(500, 375), (1400, 1050)])
def test_training_crops_are_torchvision_s_random_resized_crop_and_flip(width, height, decoder):
    """Seeded alike, the worker path and torchvision's RandomResizedCrop + RandomHorizontalFlip on
    the whole decoded image draw the same boxes and flips; the pixels are the same resample of the
    same decode (identical), except where the box allowed libjpeg's reduced-size decoding (2x the
    output and more on both sides, likely on the larger photo): then the DCT-domain scaling is
    another low-pass filter than torchvision's antialiased bilinear. On this texture-rich photo the
    mean gap is 2-7 of 255 levels where the scaled box is about twice the output, and up to 10
    where it is barely the output's size (the region decoder takes 1/4 for a 930 px box, whose
    1/4 is 232 px; PIL's draft mode, the fallback, took 1/2 there); the bound below is 11."""
    data = photo(width, height, seed=3)
    whole = decode._full(data)
    peer = v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip()])
    crops, diffs = Crops(224, True), []
    for seed in range(24):
        torch.manual_seed(seed)
        theirs = peer(whole)
        torch.manual_seed(seed)
        ours = crop_one(data, crops)
        assert ours.shape == theirs.shape == (3, 224, 224) and ours.dtype == torch.uint8
        torch.manual_seed(seed)
        (left, top, bw, bh), flip = crops.box(width, height)
        diffs.append(((ours.float() - theirs.float()).abs().mean().item(), min(bw, bh) >= 2 * 224))
    assert all(d == 0.0 for d, scaled in diffs if not scaled)  # one decode's pixels, one resample: identical
    assert all(d < 11.0 for d, scaled in diffs if scaled)
    assert any(scaled for _, scaled in diffs) == (width > 1000)


def test_the_region_decoder_gives_a_whole_decode_s_pixels_inside_the_box():
    """`_jpeg_region` at 1/1 against torchvision's whole-image decode, and at 1/2-1/8 against its
    own whole image at that scale: inside the box, not one pixel differs (its one-pixel margin
    gives libjpeg's upsampling the neighbours the crop would cut off), for 4:2:0, 4:4:4, 4:2:2, gray,
    progressive and restart-marked files."""
    assert decode.region_decoding()
    from PIL import Image

    colour = photo(500, 375, seed=5)
    rgb = Image.open(io.BytesIO(colour))
    encoded = {"4:2:0": colour}
    for name, options in (("4:4:4", {"subsampling": 0}), ("4:2:2", {"subsampling": 1}), ("gray", {}),
                          ("progressive", {"progressive": True}), ("restart markers", {"restart_marker_blocks": 4})):
        out = io.BytesIO()
        (rgb.convert("L") if name == "gray" else rgb).save(out, "JPEG", quality=90, **options)
        encoded[name] = out.getvalue()
    g = torch.Generator().manual_seed(0)
    for name, data in encoded.items():
        for k in (1, 2, 4, 8):
            pixels, w, h, x, y = decode._decode_region(data, 0, 0, 500, 375, k)
            assert (x, y, w, h) == (0, 0, math.ceil(500 / k), math.ceil(375 / k))  # libjpeg's scaled size
            whole = torch.frombuffer(pixels, dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1)
            if k == 1:
                assert torch.equal(whole, decode._full(data))
            for _ in range(12):
                bw, bh = (int(v) for v in torch.randint(8, 300, (2,), generator=g))
                left, top = int(torch.randint(0, 500 - bw, (1,), generator=g)), int(torch.randint(0, 375 - bh, (1,), generator=g))
                pixels, w, h, x, y = decode._decode_region(data, left, top, bw, bh, k)
                part = torch.frombuffer(pixels, dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1)
                l0, t0, r0, b0 = left // k, top // k, math.ceil((left + bw) / k), math.ceil((top + bh) / k)
                assert x <= l0 and y <= top // k and x + w >= r0 and y + h >= b0, (name, k)
                assert torch.equal(part[:, t0 - y:b0 - y, l0 - x:r0 - x], whole[:, t0:b0, l0:r0]), (name, k)
    with pytest.raises(ValueError, match="denom"):
        decode._decode_region(colour, 0, 0, 10, 10, 3)
    # the header: libjpeg's reading is PIL's, and a file cut inside its header is no image
    for data in (*encoded.values(), photo(1400, 1050, seed=1)):
        assert decode._jpeg_size(data) == Image.open(io.BytesIO(data)).size
    assert decode.header(colour[:300]) is None


def test_the_evaluation_box_keeps_what_resize_and_centre_crop_keep():
    box = decode.center_boxes(torch.tensor([500]), torch.tensor([375]), 224, 0.875)[0]
    assert box.tolist() == [86, 24, 328, 328]  # 375 * 224/256 = 328 px of the short side, centred
    # torchvision's region, in the original's pixels: resize to 256 x 341, crop 224 at (16, 58)
    assert abs(58 * 500 / 341 - 86) < 1 and abs(16 * 375 / 256 - 24) < 1 and abs(224 * 375 / 256 - 328) < 1
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=torch.Generator().manual_seed(0)),
                                             size=(375, 500), mode="bicubic")[0].clamp(0, 1).mul(255).byte()
    data = encode_jpeg(smooth, quality=95).numpy().tobytes()
    ours = decode.decode_crop(data, tuple(box.tolist()), 224)
    peer = TF.center_crop(TF.resize(decode._full(data), 256, antialias=True), [224, 224])
    assert ours.shape == peer.shape == (3, 224, 224)
    assert (ours.float() - peer.float()).abs().mean() < 2.0  # one resample instead of two: the same picture


def test_reduced_size_decoding_only_where_the_box_allows(monkeypatch, decoder):
    calls = []
    if decoder == "region":
        real = decode._decode_region
        monkeypatch.setattr(decode, "_decode_region", lambda data, *box: calls.append(box[-1]) or real(data, *box))
    else:
        real = decode._draft
        monkeypatch.setattr(decode, "_draft", lambda data, shrink: calls.append(shrink) or real(data, shrink))
    data = photo(1200, 900, seed=1)
    small = decode.decode_crop(data, (100, 100, 300, 300), 224)
    assert calls == ([1] if decoder == "region" else [])  # 300 px < 2 x 224: decoded at full scale
    big = decode.decode_crop(data, (100, 50, 800, 700), 224)
    # 700 // 224 = 3: libjpeg decodes at 1/2, the largest power of two <= 3 (PIL's draft is asked for 3)
    assert calls[-1] == (2 if decoder == "region" else 3)
    monkeypatch.setattr(decode, "_decode_region", None)
    monkeypatch.setattr(decode, "_draft", lambda data, shrink: (decode._full(data), 1.0))
    whole = decode.decode_crop(data, (100, 50, 800, 700), 224)
    assert small.shape == big.shape == (3, 224, 224)
    assert (big.float() - whole.float()).abs().mean() < 3.0


def test_the_device_path_crops_and_flips_the_batch_at_once():
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in ((40, 60), (64, 48), (32, 32))]
    boxes = torch.tensor([[10, 5, 30, 30], [0, 0, 48, 64], [0, 0, 32, 32]])
    flips = torch.tensor([False, True, False])
    out = decode.crop_batch(images, boxes, 32, flips)
    assert out.dtype == torch.uint8 and out.shape == (3, 3, 32, 32)
    assert torch.equal(out[2], images[2])  # a box the output's size samples each pixel at its centre
    for i, (l, t, w, h) in enumerate(boxes.tolist()):
        one = TF.resized_crop(images[i].float(), t, l, h, w, [32, 32], antialias=True)
        one = one.flip(-1) if flips[i] else one
        assert (out[i].float() - one).abs().mean() < 12  # roi_align's box averages vs antialiased bilinear
    assert torch.equal(decode.crop_batch(images, boxes, 32, flips), out)  # no randomness inside


def test_a_batch_of_crops_is_stacked_as_the_crops_lie():
    """The worker path's crops come out of the resampler channels-last; the batch keeps that layout
    (no transposing copy per crop) and holds the same values as a plain stack, whatever the layouts."""
    data, crops = photo(), Crops(64, True)
    torch.manual_seed(0)
    made = [crop_one(data, crops) for _ in range(3)]
    assert all(x.permute(1, 2, 0).is_contiguous() for x in made)
    mixed = [*made, made[0].contiguous()]  # a crop from another path, laid out CHW
    batch = imagenet.stack_crops(mixed)
    assert batch.shape == (4, 3, 64, 64) and batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, torch.stack([x.contiguous() for x in mixed]))


def test_an_image_that_cannot_be_decoded_is_none_on_every_path():
    cut = photo()[:300]
    assert decode.header(b"not an image") is None and decode.intact(cut) is False and decode.intact(photo())
    crops = Crops(32, True)
    assert crop_one(cut, crops) is None and crop_one(b"\x00" * 100, crops) is None
    # cut short after 60%: unreadable whatever its crop, though a box in its first rows is all there
    most = photo()[:int(0.6 * len(photo()))]
    assert decode.decode_crop(most, (0, 0, 100, 50), 32) is None and decode.decode_crop(most, (0, 300, 100, 50), 32) is None
    blobs = [torch.frombuffer(bytearray(x), dtype=torch.uint8) for x in (photo(), cut)]
    decoded = imagenet.decode_blobs(blobs, torch.device("cpu"))
    assert decoded[0].shape == (3, 375, 500) and decoded[1] is None


# ---- shards and DALI read what the folder holds --------------------------------------

def read_once(data_dir: Path, decoder: str) -> tuple[Counter, int, list[str]]:
    """Every training image once, with evaluation crops: (labels, images read, unreadable names)."""
    dm = ImageNetDataModule(data_dir, image_size=32, workers=0, decode=decoder).load()
    crops = dm.crops[False]
    load = functools.partial(crop_one, crops=crops)
    if decoder == "dali":
        from ghost_ablate.data.dali import DaliBatches

        source = shards.shard_paths(data_dir, "train") if dm.counts else dm.train_set
        loader = DaliBatches(source, crops, 8, 0, 1, 0, torch.device("cpu"))
    elif dm.counts:
        loader = torch.utils.data.DataLoader(shards.ShardImages(shards.shard_paths(data_dir, "train"), load, False),
                                             batch_size=8, collate_fn=collate)
    else:
        loader = torch.utils.data.DataLoader(ImageFiles(dm.train_set, load), batch_size=8, collate_fn=collate)
    labels, bad = Counter(), []
    for images, y, _, unreadable in loader:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
        labels.update(y.tolist())
        bad += unreadable
    return labels, sum(labels.values()), [Path(p).name for p in bad]


def test_shards_and_dali_read_the_folder_s_images_labels_and_unreadable_count(folder, sharded):
    pytest.importorskip("nvidia.dali", reason="DALI is the optional `dali` extra; `make install` installs it")
    reference = read_once(folder, "workers")
    assert reference[1] == 119 and reference[2] == ["n01440764_0.JPEG"]  # 120 files, one cut short
    assert reference[0] == Counter({i: 12 for i in range(10)}) - Counter({0: 1})
    for data_dir, decoder in ((sharded, "workers"), (folder, "dali"), (sharded, "dali")):
        assert read_once(data_dir, decoder) == reference, (data_dir.name, decoder)
    # the same images: the same fingerprint and sizes, so a run planned on one layout resumes on the other
    assert imagenet.inventory(sharded) == imagenet.inventory(folder)
    manifest = json.loads((sharded / "shards.json").read_text())
    assert [len(v["shards"]) for v in manifest["splits"].values()] == [5, 2]


def test_training_on_shards_and_through_dali_records_the_unreadable_image(folder, sharded, tmp_path, monkeypatch):
    pytest.importorskip("nvidia.dali", reason="DALI is the optional `dali` extra; `make install` installs it")
    # An epoch from shards is drawn with replacement (WebDataset's resampled shards and a shuffle
    # buffer), so whether it meets the one unreadable image depends on the draws: seed 4's epoch
    # does (seeds 0-3 and 5 leave it out); the folder's epoch meets every image.
    runs = []
    for data_dir, decoder in ((sharded, "workers"), (folder, "dali")):
        monkeypatch.setenv("GHOST_ABLATE_DECODE", decoder)
        results = tmp_path / decoder
        assert main(["train", "--model", "ghostnet", "--dataset", "imagenet", "--data-dir", str(data_dir),
                     "--profile", "imagenet_smoke", "--results-dir", str(results), "--seed", "4"]) == 0
        (record,) = [json.loads(p.read_text()) for p in results.glob("runs/*/result.json")]
        assert record["status"] == "finished" and record["unreadable_images"]["count"] == 1
        assert record["optimizer_steps"] == 7 and record["final_test_acc"] is not None  # 119 // 16 batches
        runs.append(record["run_id"])
    assert runs[0] == runs[1]  # the same data set, whichever layout or decoder read it


def test_the_shards_inventory_is_read_once_then_cached(sharded, monkeypatch):
    first = shards.inventory(sharded)

    def no_tar(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("the shards were read again")

    monkeypatch.setattr(shards, "members", no_tar)
    assert shards.inventory(sharded) == first  # same shard files, same sizes and times: from the cache


def test_a_training_epoch_from_shards_is_whole_batches_on_every_rank(sharded):
    load = functools.partial(crop_one, crops=Crops(32, True))
    paths = shards.shard_paths(sharded, "train")
    images = shards.ShardImages(paths, load, True, per_rank=119 // 2, batch=8, workers=2, seed=1)
    assert len(images) == 48  # 59 images per rank: 3 batches of 8 for each of 2 workers
    loader = torch.utils.data.DataLoader(images, batch_size=8, num_workers=2, collate_fn=collate, drop_last=True)
    batches = [len(y) + len(bad) for _, y, _, bad in loader]
    assert batches == [8] * 6

    def names(seed: int) -> list[str]:
        again = shards.ShardImages(paths, load, True, 119 // 2, 8, 2, seed=seed)
        return [n for *_, good, bad in torch.utils.data.DataLoader(again, batch_size=8, num_workers=2,
                                                                  collate_fn=collate, drop_last=True)
                for n in good + bad]

    assert names(1) == names(1) != names(2)  # the order is the seed's


def test_shard_command_errors_are_one_line(folder, sharded, tmp_path, capsys):
    assert main(["imagenet", "shard", str(folder), str(sharded)]) == 2
    err = capsys.readouterr().err
    assert "exists and is not an empty folder" in err and err.count("\n") == 1
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "shards.json").write_text('{"format": "something else"}')
    (tmp_path / "bad" / "train").mkdir()
    assert main(["train", "--model", "ghostnet", "--dataset", "imagenet", "--data-dir", str(tmp_path / "bad"),
                 "--profile", "imagenet_smoke", "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "not a shard manifest" in err and "Traceback" not in err
    manifest = json.loads((sharded / "shards.json").read_text())
    manifest["splits"]["train"]["unreadable"] = [["train/x.JPEG", "big"]]
    (tmp_path / "odd").mkdir()
    for split in ("train", "val"):
        (tmp_path / "odd" / split).symlink_to(sharded / split)
    (tmp_path / "odd" / "shards.json").write_text(json.dumps(manifest))
    with pytest.raises(shards.DataError, match=r"an unreadable entry .* is not \[name, size\]"):
        shards.read_manifest(tmp_path / "odd")


# ---- the dry-run prices the input side too -------------------------------------------

def test_input_side_names_the_hungriest_run_and_its_factor():
    from ghost_ablate.estimate import RunEstimate, input_side

    runs = [RunEstimate("slow", 100.0, 5, devices=2, step_s=1.0, batch_size=64),  # 32 images/s per device
            RunEstimate("fast", 100.0, 5, devices=2, step_s=0.1, batch_size=64),  # 320
            RunEstimate("done", 100.0, 0, devices=2, step_s=0.01, batch_size=64)]  # nothing left: ignored
    assert input_side(runs, rate_per_core=40.0, workers=4) == ("fast", 2.0)
    assert input_side(runs[:1], rate_per_core=40.0, workers=4) == ("slow", 0.2)
    assert input_side(runs[2:], 40.0, 4) == ("", 0.0)


@pytest.mark.parametrize("rate, verdict", [(100.0, "keep up with every run"), (5.0, "2.1x too slowly")])
def test_the_imagenet_dry_run_says_whether_the_input_side_keeps_up(rate, verdict, tmp_path, capsys, monkeypatch):
    import dataclasses

    from ghost_ablate.data import DATASETS

    monkeypatch.setitem(DATASETS, "imagenet", dataclasses.replace(DATASETS["imagenet"],
                                                                  input_rate=lambda d, s: (rate, "mocked images")))
    monkeypatch.setenv("GHOST_ABLATE_WORKERS", "3")
    assert main(["sweep", "experiments/imagenet_resnet50.yaml", "--dry-run", "--step-time", "0.5",
                 "--data-dir", str(tmp_path / "absent"), "--results-dir", str(tmp_path), "--devices", "8",
                 "--nodes", "2"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("input side"))
    # 256 images per 0.5 s step over 16 devices: 32 images/s per device; 3 workers feed 3 x rate
    assert f"{rate:,.0f} images/s per core" in line and verdict in line


def test_throughput_puts_the_peer_and_each_of_ours_side_by_side(tmp_path, capsys):
    pytest.importorskip("nvidia.dali", reason="DALI is the optional `dali` extra; `make install` installs it")
    root = tmp_path / "natural"
    truth = imagenet_sample.write_sample(root, classes=2, per_class=12, val_per_class=1, natural=True)
    assert main(["imagenet", "sort-val", str(root / "val"), "--ground-truth", str(truth)]) == 0
    jpegs = list((root / "train").rglob("*.JPEG"))
    assert 60_000 < sum(p.stat().st_size for p in jpegs) / len(jpegs) < 160_000  # ImageNet-sized files
    assert main(["imagenet", "throughput", str(root), "--image-size", "64", "--batch-size", "4", "--images", "8",
                 "--repeats", "1", "--models"]) == 0
    out = capsys.readouterr().out
    rows = [ln.split("|")[1].strip() for ln in out.splitlines() if ln.startswith("| ") and "reader" not in ln]
    assert rows == ["torchvision ImageFolder + PIL (peer)", "ours: folder, libjpeg-turbo box-only crops",
                    "ours: WebDataset shards, same crops", "ours: folder, DALI CPU mode"]
    from ghost_ablate.machine import cpu_model

    assert "1.00x" in out and cpu_model() in out  # every figure names the CPU it was measured on
    # and what it read: the sample's sizes and JPEG quality
    assert "median 500x375 px" in out and f"JPEG quality ~{imagenet_sample.NATURAL_QUALITY}" in out
    assert main(["imagenet", "throughput", str(root), "--images", "2", "--batch-size", "4"]) == 2


def test_each_pass_of_the_throughput_gives_every_reader_of_ours_the_same_crop_boxes(folder, sharded, monkeypatch):
    """Common random numbers: the decode's cost grows with the crop box, so the folder and the shards
    must decode the same boxes in a pass for their ratio to measure the reading alone."""
    from ghost_ablate.data import throughput

    drawn: list[list] = []
    real_box, real_rate = Crops.box, throughput.images_per_second

    def box(self, width, height):
        drawn[-1].append(real_box(self, width, height))
        return drawn[-1][-1]

    def rate(make, images):
        drawn.append([])
        return real_rate(make, images)

    monkeypatch.setattr(Crops, "box", box)
    monkeypatch.setattr(throughput, "images_per_second", rate)
    throughput.compare(folder, size=32, batch=4, images=8, repeats=2, shards_dir=sharded, dali=False)
    _, folder0, shards0, _, folder1, shards1 = drawn  # per pass: the peer (torchvision's own draws), folder, shards
    assert len(folder0) >= 12 and folder0 == shards0 and folder1 == shards1
    assert folder0 != folder1  # and each pass draws afresh


@pytest.mark.parametrize("quality", [30, 60, 75, 95])
def test_the_sample_s_jpeg_quality_is_read_back_from_its_tables(quality, tmp_path):
    from PIL import Image

    from ghost_ablate.data.throughput import describe_sample, jpeg_quality

    image = Image.fromarray(imagenet_sample.natural_image(120, 160, torch.Generator().manual_seed(0))
                            .permute(1, 2, 0).numpy())
    (tmp_path / "train" / "n0").mkdir(parents=True)
    image.save(tmp_path / "train" / "n0" / "a.JPEG", quality=quality)
    with Image.open(tmp_path / "train" / "n0" / "a.JPEG") as img:
        assert abs(jpeg_quality(img.quantization[0]) - quality) <= 2
    assert "median 160x120 px" in describe_sample(tmp_path) and f"JPEG quality ~{quality}," in describe_sample(tmp_path)


def test_shards_are_plain_ustar_and_older_pax_shards_read_the_same(sharded, tmp_path):
    """`write_shards` writes no pax header (a whole-second mtime needs none), which `members` parses
    without tarfile; a shard with pax headers (what the writer made before) is handed to tarfile
    and gives the same samples."""
    import io
    import tarfile

    path = shards.shard_paths(sharded, "train")[0]
    with tarfile.open(path) as tar:
        infos = tar.getmembers()
    assert infos and all(not m.pax_headers for m in infos)
    ours = list(shards.read_shard(path, 10))
    old = tmp_path / "old.tar"
    with tarfile.open(path) as src, tarfile.open(old, "w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            m.mtime = 1.5e9 + 0.25  # fractional: a pax header per member, as WebDataset wrote them
            dst.addfile(m, io.BytesIO(src.extractfile(m).read()))
    with tarfile.open(old) as tar:
        assert all("mtime" in m.pax_headers for m in tar.getmembers())
    assert list(shards.read_shard(str(old), 10)) == ours and len(ours) == 25


def test_a_training_buffer_holds_places_and_reads_the_same_bytes_as_they_leave(sharded, tmp_path):
    """Training shuffles where each image lies (`Place`), not its bytes: read as a sample leaves the
    buffer, they are the bytes the shard holds; a shard cut short after its headers were walked is
    a DataError naming the member, and at most `most` shards stay open."""
    import shutil

    paths = shards.shard_paths(sharded, "train")
    eager = [s for p in paths for s in shards.read_shard(p, 10)]
    lazy = [s for p in paths for s in shards.read_shard(p, 10, lazy=True)]
    assert all(isinstance(s["image"], shards.Place) for s in lazy)
    files = shards.ShardFiles(most=2)
    try:
        assert [files.read(s["image"]) for s in lazy] == [s["image"] for s in eager]
        assert list(files.open) == paths[-2:]  # the two last used, oldest first
    finally:
        files.close()
    assert not files.open
    cut = tmp_path / "cut.tar"
    shutil.copy(paths[0], cut)
    places = [s["image"] for s in shards.read_shard(str(cut), 10, lazy=True)]
    with open(cut, "r+b") as f:
        f.truncate(places[-1].offset + 10)
    with pytest.raises(shards.DataError, match=r"cut short inside member '.*\.(jpeg|jpg|JPEG)'"):
        shards.ShardFiles().read(places[-1])
    # an epoch through ShardImages hands `load` the bytes, never a Place
    seen = list(shards.ShardImages(paths, lambda b: type(b).__name__, True, per_rank=16, batch=8, seed=0))
    assert [t for t, *_ in seen] == ["bytes"] * 16


def test_a_header_checksum_is_checked_as_tarfile_computes_it(sharded, tmp_path):
    """`checksum_matches` (a byte sum taken from Adler-32) agrees with tarfile's own unsigned sum on
    every header of a shard and refuses it one off; a shard with one byte of a header changed is
    a DataError naming where."""
    import random
    import tarfile

    path = shards.shard_paths(sharded, "train")[0]
    raw = Path(path).read_bytes()
    with tarfile.open(path) as tar:
        starts = [m.offset for m in tar.getmembers()]
    rng = random.Random(0)
    for at in starts:
        block = raw[at:at + 512]
        unsigned, _ = tarfile.calc_chksums(block)
        assert shards.checksum_matches(block, unsigned)
        assert not shards.checksum_matches(block, unsigned + rng.choice([-1, 1, 255, 65520]))
    bad = tmp_path / "bad.tar"
    second = starts[1]
    bad.write_bytes(raw[:second] + b"Z" + raw[second + 1:])  # the second header's name, checksum unchanged
    with pytest.raises(shards.DataError, match=f"bad header checksum at byte {second:,}"):
        list(shards.read_shard(str(bad), 10, lazy=True))
