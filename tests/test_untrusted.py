"""A results folder from a stranger (issue 27): each finding built the way a hostile folder would
be, from a real record of the committed demo, asserting the one-line error or the skipped record,
that nothing outside the folder was created, moved or read into the output, and that each
command returned within a deadline."""
from __future__ import annotations

import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from ghost_ablate.cli import main
from ghost_ablate.config import RunConfig

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "results" / "demo" / "runs"
REAL = "resnet56-subset-seed0-4d11d83880"


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: SIGALRM interrupts a blocked read."""
    def expired(signum, frame):
        raise TimeoutError(f"did not return within {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def real_record() -> dict:
    return json.loads((DEMO / REAL / "result.json").read_text())


def put(results: Path, record: dict, folder: str | None = None) -> Path:
    run_dir = results / "runs" / (folder or record["run_id"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").write_text(json.dumps(record))
    return run_dir


def relabel(record: dict, **config) -> dict:
    """The record with its config changed and the run id that config really has."""
    out = json.loads(json.dumps(record))
    out["config"].update(config)
    out["run_id"] = RunConfig.from_dict(out["config"]).run_id
    return out


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# 1. doctor --assign-data cannot rename outside the results folder
def test_a_profile_that_is_a_path_is_damaged_and_never_a_folder_name(tmp_path, tiny_cifar, capsys):
    rec = real_record()
    del rec["config"]["data"]
    rec["config"]["profile"] = "x/../../../escaped/y"
    put(tmp_path / "results", rec)
    assert main(["doctor", str(tmp_path / "results")]) == 1
    out = capsys.readouterr().out
    assert "damaged" in out and "config.profile" in out and "not a plain name" in out
    before = tree(tmp_path)
    main(["doctor", str(tmp_path / "results"), "--assign-data", str(tiny_cifar)])
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()
    assert tree(tmp_path) == before


# 2. report never pastes a file it did not write: evidence.md linked to a secret
def test_a_linked_evidence_file_is_not_carried_into_the_report(tmp_path):
    from ghost_ablate.report import build_report

    secret = tmp_path / "environ"
    secret.write_text("## The paper's evidence: ghost feature maps and their redundancy\nAPI_KEY=sk-123\n")
    put(tmp_path / "results", real_record())
    out = tmp_path / "out"
    out.mkdir()
    (out / "evidence.md").symlink_to(secret)
    build_report(tmp_path / "results", out, evidence=False)
    assert "sk-123" not in (out / "README.md").read_text()


# 3. no FIFO, device or link outside stalls or feeds a command
def test_fifos_and_devices_named_like_records_or_checkpoints_do_not_stall(tmp_path, capsys):
    results = tmp_path / "results"
    good = put(results, real_record())
    fifo_run = results / "runs" / "resnet56-subset-seed1-aaaaaaaaaa"
    fifo_run.mkdir()
    os.mkfifo(fifo_run / "result.json")
    os.mkfifo(good / "last.ckpt")
    zero = results / "runs" / "resnet56-subset-seed2-bbbbbbbbbb"
    zero.mkdir()
    (zero / "result.json").symlink_to("/dev/zero")
    from ghost_ablate.report import build_report
    from ghost_ablate.record_schema import run_state

    started = time.monotonic()
    with deadline(60):
        assert main(["doctor", str(results)]) == 1
        found = capsys.readouterr().out
        assert run_state(fifo_run) == "damaged" and run_state(zero) == "damaged"
        build_report(results, tmp_path / "out", evidence=False)
    assert time.monotonic() - started < 60
    assert "not a regular file" in found and "links outside" in found
    md = (tmp_path / "out" / "README.md").read_text()
    assert "2 damaged record(s) left out" in md


# 4. strings from a record are escaped; unknown models are not rows
def test_record_strings_are_escaped_and_unknown_models_left_out(tmp_path):
    from ghost_ablate.report import build_report

    rec = real_record()
    rec["device"] = "cpu\n# Owned\n![x](https://evil.example/p.png)"
    put(tmp_path / "results", rec)
    alien = dict(real_record(), run_id="resnet99-subset-seed0-cccccccccc")
    alien["config"] = dict(alien["config"], model="resnet99")
    put(tmp_path / "results", alien)
    build_report(tmp_path / "results", tmp_path / "out", evidence=False)
    md = (tmp_path / "out" / "README.md").read_text()
    assert "\n# Owned" not in md and "![x](https" not in md and "\\!\\[x\\](https" in md
    assert "unknown model 'resnet99'" in md  # named among the damaged records
    table3 = (tmp_path / "out" / "table3_cifar10.csv").read_text()
    assert "resnet99" not in table3


# 5. copies and mislabelled records count once, or not at all
def test_copies_and_mislabelled_records_count_once(tmp_path):
    from ghost_ablate.report.tables import aggregate, load_runs

    results = tmp_path / "results"
    rec = real_record()
    put(results, rec)
    put(results, rec, folder="resnet56-subset-seed0-dddddddddd")  # the same record in a second folder
    put(results, relabel(rec, seed=1))  # a copy relabelled seed 1 under its correct id
    vgg = json.loads((DEMO / "vgg16-subset-seed0-263578dc34" / "result.json").read_text())
    put(results, dict(vgg, params=1), folder="resnet56-subset-seed5-eeeeeeeeee")  # folder says resnet56
    runs = load_runs(results)
    assert list(runs["run_id"]) == [REAL]
    entry = next(iter(aggregate(runs).values()))
    assert entry["n"] == 1
    left_out = " ".join(runs.attrs["damaged"])
    assert left_out.count("mislabelled") == 2 and "a copy of " + REAL in left_out


# 6. a grid is counted before it is expanded
def test_a_huge_grid_is_refused_from_its_axes(tmp_path, capsys):
    axis = list(range(1, 1001))
    (tmp_path / "exp.yaml").write_text(json.dumps({"profile": "smoke", "runs": [
        {"model": "ghost_vgg16", "ratio": axis, "dw_size": axis, "width": axis}]}))
    with deadline(20):
        code = main(["sweep", str(tmp_path / "exp.yaml"), "--dry-run", "--no-estimate"])
    err = one_line_error(capsys, code)
    assert "1,000,000,000 configurations" in err and "at most 10,000" in err


# 7. sort-val checks every move first and never touches files outside val/
def test_sort_val_checks_every_move_before_the_first(tmp_path, capsys):
    from ghost_ablate.data.imagenet_layout import wnids

    a, b = wnids()[:2]
    val = tmp_path / "val"
    val.mkdir()
    for name in ("ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"):
        (val / name).write_bytes(b"jpeg")
    (val / b / "ILSVRC2012_val_00000002.JPEG").mkdir(parents=True)  # a folder where the second image goes
    truth = tmp_path / "truth.txt"
    truth.write_text(f"ILSVRC2012_val_00000001.JPEG {a}\nILSVRC2012_val_00000002.JPEG {b}\n")
    before = tree(tmp_path)
    err = one_line_error(capsys, main(["imagenet", "sort-val", str(val), "--ground-truth", str(truth)]))
    assert "exists already" in err and tree(tmp_path) == before  # nothing moved, not even the first

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (val / b / "ILSVRC2012_val_00000002.JPEG").rmdir()
    (val / b).rmdir()
    (val / b).symlink_to(outside)  # a class folder that is a link
    err = one_line_error(capsys, main(["imagenet", "sort-val", str(val), "--ground-truth", str(truth)]))
    assert "a link" in err and list(outside.iterdir()) == []

    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.JPEG").write_bytes(b"x")
    truth.write_text(f"../../../outside/x.JPEG {a}\n")
    err = one_line_error(capsys, main(["imagenet", "sort-val", str(val), "--ground-truth", str(truth)]))
    assert "not a file name inside" in err


def test_doctor_fix_never_follows_a_linked_run_folder(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "result.json").write_text("{ not json")
    (outside / ".x.tmp").write_text("")
    (tmp_path / "results" / "runs").mkdir(parents=True)
    (tmp_path / "results" / "runs" / "resnet56-subset-seed0-ffffffffff").symlink_to(outside)
    main(["doctor", str(tmp_path / "results"), "--fix"])
    assert sorted(p.name for p in outside.iterdir()) == [".x.tmp", "result.json"]
    assert "a symbolic link, not a run folder" in capsys.readouterr().out


# 8. bad inputs are one line and exit 2
@pytest.mark.parametrize("argv,match", [
    (["count", "--model", "ghostnet", "--width", "inf"], "width must be a number in (0, 16]"),
    (["count", "--model", "ghost_vgg16", "--ratio", "1000000000000"], "ratio must be an integer 1..64"),
    (["count", "--model", "ghost_vgg16", "--dw-size", "100001"], "dw_size must be an odd integer 1..31"),
    (["sweep", "experiments/cifar10_pilot.yaml", "--seeds", "4294967296", "--dry-run", "--no-estimate"],
     "integers 0..4294967295"),
])
def test_bad_values_are_one_line(argv, match, capsys):
    assert match in one_line_error(capsys, main(argv))


def test_bad_folders_and_files_are_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    put(tmp_path / "results", real_record())
    err = one_line_error(capsys, main(["report", "--results-dir", str(tmp_path / "results"),
                                       "--out", str(tmp_path / "file")]))
    assert "not a folder" in err
    err = one_line_error(capsys, main(["sweep", "experiments/cifar10_pilot.yaml", "--results-dir",
                                       str(tmp_path / "file"), "--dry-run", "--no-estimate"]))
    assert "not a folder" in err
    (tmp_path / "results" / "bench.csv").write_text("a,b\n1,2\n")
    err = one_line_error(capsys, main(["report", "--results-dir", str(tmp_path / "results"), "--out",
                                       str(tmp_path / "out"), "--no-evidence"]))
    assert "bench.csv: missing column(s) model" in err
    truth = tmp_path / "empty.txt"
    truth.write_text("")
    (tmp_path / "val").mkdir()
    err = one_line_error(capsys, main(["imagenet", "sort-val", str(tmp_path / "val"), "--ground-truth", str(truth)]))
    assert "empty" in err
    truth.write_text("1\n2\n")
    for body in (b"\x00" * 128 + b"\x02\x00" + b"IM" + b"\x00" * 400, b"MATLAB 5.0 MAT-file"):
        (tmp_path / "meta.mat").write_bytes(body)
        err = one_line_error(capsys, main(["imagenet", "sort-val", str(tmp_path / "val"), "--ground-truth",
                                           str(truth), "--devkit", str(tmp_path / "meta.mat")]))
        assert "meta.mat" in err


def test_a_dangling_class_folder_is_one_line(tmp_path):
    from ghost_ablate.data import DataError
    from ghost_ablate.data.imagenet_layout import class_dirs, wnids

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / wnids()[0]).symlink_to(tmp_path / "gone")
    with pytest.raises(DataError, match="a link to nothing"):
        class_dirs(tmp_path / "train")


@pytest.mark.parametrize("change,field", [
    ({"final_test_acc": "0.9"}, "final_test_acc: Input should be a valid number"),
    ({"history": [1, "x", None]}, "history.0"),
    ({"test_confusion": [[1, 2], [3]]}, "test_confusion"),
    ({"final_test_acc": float("inf")}, "final_test_acc: Input should be a finite number"),
    ({"final_test_acc": float("nan")}, "final_test_acc: Input should be a finite number"),
    ({"config": "x"}, "config"),
])
def test_a_record_that_breaks_the_schema_is_one_line_and_no_row(tmp_path, capsys, change, field):
    from ghost_ablate.report.tables import load_runs

    rec = {**real_record(), **change}
    put(tmp_path / "results", rec, folder=REAL)
    put(tmp_path / "results", relabel(real_record(), seed=7) | {"history": []})
    runs = load_runs(tmp_path / "results")
    assert REAL not in set(runs["run_id"])
    assert any(field in d for d in runs.attrs["damaged"]), runs.attrs["damaged"]
    assert main(["doctor", str(tmp_path / "results")]) == 1
    assert field.split(":")[0] in capsys.readouterr().out


def test_a_recipe_that_is_not_a_mapping_is_damaged(tmp_path):
    from ghost_ablate.report.tables import load_runs

    rec = real_record()
    rec["config"]["recipe"] = "x"
    put(tmp_path / "results", rec, folder=REAL)
    put(tmp_path / "results", relabel(real_record(), seed=7) | {"history": []})
    runs = load_runs(tmp_path / "results")
    assert REAL not in set(runs["run_id"]) and "config.recipe" in " ".join(runs.attrs["damaged"])


# 9. SIGTERM cleans up like Ctrl-C; an image too large to decode is skipped like an unreadable one
def test_sigterm_during_report_leaves_no_staging_folder(tmp_path, monkeypatch, capsys):
    import ghost_ablate.report as report
    import ghost_ablate.report.sections  # noqa: F401 - patched below

    put(tmp_path / "results", real_record())

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this

    monkeypatch.setattr(report.sections, "plot_curves", terminated)
    code = main(["report", "--results-dir", str(tmp_path / "results"), "--out", str(tmp_path / "out"),
                 "--no-evidence"])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []
    assert signal.getsignal(signal.SIGTERM) is not report  # restored after the command


def test_an_image_over_the_pixel_bound_is_skipped_before_decoding(tmp_path):
    from PIL import Image

    from ghost_ablate.data.decode import MAX_PIXELS, Crops
    from ghost_ablate.data.imagenet import crop_one

    big = tmp_path / "big.png"
    Image.new("L", (12_000, 12_000)).save(big)  # ~140 KB on disk, 144M pixels
    assert 12_000 ** 2 > MAX_PIXELS and big.stat().st_size < 1_000_000
    started = time.monotonic()
    assert crop_one(big.read_bytes(), Crops(32, True)) is None  # what the loader workers run on every file
    assert time.monotonic() - started < 5


def test_a_fifo_named_like_a_cifar_batch_is_one_line(tmp_path, capsys):
    from ghost_ablate.data.cifar import TRAIN_FILES, fingerprint
    from ghost_ablate.data import DataError
    from conftest import make_cifar_folder

    folder = make_cifar_folder(tmp_path / "data")
    (folder / TRAIN_FILES[0]).unlink()
    os.mkfifo(folder / TRAIN_FILES[0])
    with deadline(20), pytest.raises(DataError, match="not a CIFAR-10 batch file"):
        fingerprint(folder.parent)


# ---- issue 40: shards, manifests, records and experiment files handed in --------------------

def _tar(path: Path, members: list[tuple[str, bytes]], edit=None) -> Path:
    """A tar of regular members; `edit(info)` may change each header before it is written."""
    import io
    import tarfile

    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if edit:
                edit(info)
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _sparse_bomb(path: Path, declared: int = 10 * 2 ** 30) -> Path:
    """A ~10 KB tar whose one GNU sparse member declares `declared` bytes (10 GiB)."""
    import tarfile

    info = tarfile.TarInfo("00000000.jpeg")
    info.type = tarfile.GNUTYPE_SPARSE
    info.size = 512
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[483:495] = tarfile.itn(declared, 12, tarfile.GNU_FORMAT)  # the real size the sparse map expands to
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header[:512])
    path.write_bytes(bytes(header[:512]) + b"\xff" * 512 + b"\0" * 1024 * 8)
    return path


def _declared(path: Path, size: int) -> Path:
    """A tar whose one regular member's header declares `size` bytes, followed by a few real ones."""
    import tarfile

    info = tarfile.TarInfo("00000000.jpeg")
    info.size = size
    path.write_bytes(info.tobuf(tarfile.GNU_FORMAT) + b"\xff" * 4096)
    return path


SAMPLE = [("00000000.jpeg", b"\xff\xd8 not really a jpeg"), ("00000000.cls", b"3"), ("00000000.txt", b"n0/x.JPEG")]


def _read_all(path: Path, classes: int = 10) -> list:
    from ghost_ablate.data.shards import read_shard

    return list(read_shard(str(path), classes))


@pytest.mark.parametrize("name, build, match", [
    ("sparse", lambda p: _sparse_bomb(p), "not a regular file"),
    ("symlink", lambda p: _tar(p, SAMPLE[:1], lambda i: (setattr(i, "type", __import__("tarfile").SYMTYPE),
                                                          setattr(i, "linkname", "/etc/passwd"))), "not a regular file"),
    ("hardlink", lambda p: _tar(p, SAMPLE[:1], lambda i: (setattr(i, "type", __import__("tarfile").LNKTYPE),
                                                           setattr(i, "linkname", "x"))), "not a regular file"),
    ("directory", lambda p: _tar(p, [("00000000.jpeg", b"")], lambda i: setattr(i, "type", __import__("tarfile").DIRTYPE)),
     "not a regular file"),
    ("no class", lambda p: _tar(p, [SAMPLE[0], SAMPLE[2]]), "has no .cls member"),
    ("class out of range", lambda p: _tar(p, [SAMPLE[0], ("00000000.cls", b"999999")]), r"class '999999'; valid: 0\.\.9"),
    ("duplicate", lambda p: _tar(p, [*SAMPLE, SAMPLE[0]]), "appears twice"),
    ("not a tar", lambda p: (p.write_bytes(b"just some bytes" * 100), p)[1], "not a readable tar shard"),
    ("truncated", lambda p: (p.write_bytes(_tar(p, [("00000000.jpeg", os.urandom(40_000)), SAMPLE[1]]).read_bytes()[:20_000]),
                             p)[1], "cut short|not a readable tar"),
    ("huge member", lambda p: _declared(p, 2 ** 31), "over the"),
])
def test_a_crafted_shard_is_one_line_naming_it_within_bounds(tmp_path, name, build, match):
    import resource

    from ghost_ablate.data.common import DataError

    path = build(tmp_path / "shard-000000.tar")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with deadline(20), pytest.raises(DataError, match=match) as err:
        _read_all(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 1024  # the 10 GiB sparse member is refused from its header, never read
    assert tree(tmp_path) == {"shard-000000.tar"}  # nothing extracted beside it


def test_a_crafted_shard_under_training_is_one_line(imagenet_folder, tmp_path, capsys):
    """Through the command line: the shard folder a stranger hands in, one shard replaced by a
    sparse bomb; `train` refuses it in one line (the inventory reads member headers first)."""
    dest = tmp_path / "shards"
    assert main(["imagenet", "shard", str(imagenet_folder), str(dest), "--per-shard", "60"]) == 0
    capsys.readouterr()
    _sparse_bomb(dest / "train" / "shard-000000.tar")
    with deadline(60):
        err = one_line_error(capsys, main(["train", "--model", "ghostnet", "--dataset", "imagenet", "--data-dir",
                                           str(dest), "--profile", "imagenet_smoke", "--out", str(tmp_path / "run")]))
    assert "shard-000000.tar" in err and "not a regular file" in err


def test_a_manifest_entry_linking_outside_is_refused(imagenet_folder, tmp_path, capsys):
    from ghost_ablate.data.common import DataError
    from ghost_ablate.data.shards import read_manifest

    dest = tmp_path / "shards"
    assert main(["imagenet", "shard", str(imagenet_folder), str(dest), "--per-shard", "60"]) == 0
    outside = _tar(tmp_path / "elsewhere.tar", SAMPLE)
    target = dest / "val" / "shard-000000.tar"
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(DataError, match="links are refused"):
        read_manifest(dest)


def _nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deeply_nested_json_records_and_manifests_are_one_line(tmp_path, capsys):
    from ghost_ablate.data.common import DataError
    from ghost_ablate.data.shards import read_manifest

    run = tmp_path / "results" / "runs" / REAL
    run.mkdir(parents=True)
    (run / "result.json").write_text('{"a": ' + _nested_json(100_000) + "}")
    with deadline(30):
        code = main(["doctor", str(tmp_path / "results")])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "RecursionError" not in out + err
    assert "nested deeper" in out + err and REAL in out + err
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "shards.json").write_text(_nested_json(100_000))
    with deadline(30), pytest.raises(DataError, match="nested deeper"):
        read_manifest(tmp_path / "shards")
    assert code in (0, 1, 2)


@pytest.mark.parametrize("text, match", [
    ("profile: subset\nruns:\n" + "  " + "[" * 50_000 + "]" * 50_000 + "\n", "nested deeper"),
    ("profile: subset\ndescription: " + "- " * 0 + "{a: " * 30_000 + "1" + "}" * 30_000 + "\n", "nested deeper"),
    ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b]\n"
     "profile: subset\nruns: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n", "aliases"),
])
def test_hostile_experiment_files_are_one_line(tmp_path, capsys, text, match):
    (tmp_path / "exp.yaml").write_text(text)
    with deadline(30):
        err = one_line_error(capsys, main(["sweep", str(tmp_path / "exp.yaml"), "--dry-run", "--no-estimate",
                                           "--results-dir", str(tmp_path / "res")]))
    assert "exp.yaml" in err and match in err


def test_a_hostile_profile_file_is_one_line(tmp_path, capsys):
    (tmp_path / "deep.yaml").write_text("epochs: " + "[" * 20_000 + "]" * 20_000 + "\n")
    (tmp_path / "exp.yaml").write_text("profile: subset\nruns: [{model: vgg16}]\n")
    with deadline(30):
        err = one_line_error(capsys, main(["sweep", str(tmp_path / "exp.yaml"), "--profile", str(tmp_path / "deep.yaml"),
                                           "--dry-run", "--no-estimate", "--results-dir", str(tmp_path / "res")]))
    assert "deep.yaml" in err and "nested deeper" in err


def test_a_bad_sample_met_in_a_loader_worker_is_one_line(tmp_path, capsys):
    """A .cls out of range is only seen when the sample is read, inside a loader worker; the error
    crosses the worker queue and still reaches the user as its own one line."""
    import torch

    from ghost_ablate.cli import one_line
    from ghost_ablate.data.common import DataError
    from ghost_ablate.data.shards import ShardImages

    path = _tar(tmp_path / "shard-000000.tar", [SAMPLE[0], ("00000000.cls", b"999999")])
    images = ShardImages([str(path)], lambda b: torch.zeros(1), train=False, classes=10)
    loader = torch.utils.data.DataLoader(images, batch_size=1, num_workers=1)
    with deadline(60), pytest.raises(DataError) as err:
        list(loader)
    assert "Original Traceback" in str(err.value)  # torch's wrapping...
    assert one_line(err.value) == f"{path}: sample '00000000' has class '999999'; valid: 0..9"  # ...unwrapped
