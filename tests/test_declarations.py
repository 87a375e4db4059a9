"""One declaration per fact: a data set, or a model family, declared in one place reaches every
command (train, sweep, report, count) with no other module touched."""
import json
from pathlib import Path

import pytest
from torch import nn

from ghost_ablate.cli import main

CLASSES = tuple(f"fine_{i:02d}" for i in range(100))


@pytest.fixture
def cifar100(monkeypatch, tmp_path) -> Path:
    """CIFAR-100's layout (one `train` and one `test` pickle, `fine_labels`, 100 classes), declared
    in this one place, and a generated folder of it."""
    from ghost_ablate import data
    from ghost_ablate.data import cifar

    layout = cifar.CifarLayout("CIFAR-100", "cifar-100-python", ("train",), ("test",), CLASSES,
                               (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), label_key="fine_labels")
    monkeypatch.setitem(data.DATASETS, "cifar100", cifar.declare("cifar100", layout))
    return cifar.write_folder(tmp_path / "c100", layout, n_train=96, n_test=64)


def test_a_data_set_declared_in_one_place_trains_sweeps_and_reports(cifar100, tmp_path, capsys):
    from ghost_ablate.models import build_model

    runs = tmp_path / "train"
    assert main(["train", "--model", "resnet56", "--dataset", "cifar100", "--data-dir", str(cifar100),
                 "--profile", "smoke", "--results-dir", str(runs), "--no-download"]) == 0
    (record,) = [json.loads(p.read_text()) for p in runs.glob("runs/*/result.json")]
    assert record["config"]["dataset"] == "cifar100" and record["status"] == "finished"
    assert record["params"] == sum(p.numel() for p in build_model("resnet56", num_classes=100).parameters())
    assert len(record["test_confusion"]) == 100  # a 100 x 100 matrix: the declared classes

    experiment = tmp_path / "c100.yaml"
    experiment.write_text("description: VGG-16 and Ghost-VGG-16 on CIFAR-100\ndataset: cifar100\nprofile: smoke\n"
                          "runs:\n  - {model: vgg16}\n  - {model: ghost_vgg16, ratio: 2, dw_size: 3}\n")
    results, out = tmp_path / "results", tmp_path / "report"
    assert main(["sweep", str(experiment), "--data-dir", str(cifar100), "--results-dir", str(results),
                 "--no-estimate", "--no-download"]) == 0
    records = [json.loads(p.read_text()) for p in results.glob("runs/*/result.json")]
    assert len(records) == 2 and {r["config"]["dataset"] for r in records} == {"cifar100"}
    assert main(["report", "--results-dir", str(results), "--out", str(out), "--experiment", str(experiment),
                 "--no-evidence"]) == 0
    readme = (out / "README.md").read_text()
    assert "CIFAR-100" in readme and "CIFAR-10," not in readme
    assert not any(p.name.startswith("table") for p in out.glob("*.csv"))  # the paper has no CIFAR-100 table
    assert not (out / "imagenet_costs.csv").exists() and "ImageNet" not in readme  # nor an ImageNet section
    per_class = (out / "per_class_accuracy.csv").read_text().splitlines()
    assert per_class[1].startswith("fine_00") and len(per_class) == 101  # header + the 100 declared classes
    assert "VGG-16 and Ghost-VGG-16 on CIFAR-100" in readme  # the experiment's own table and plot
    svg = (out / "accuracy_vs_flops.svg").read_text()
    assert "on CIFAR-100" in svg and "CIFAR-100 top-1" in svg


def test_a_model_family_declared_in_one_place_is_counted_and_drawn(monkeypatch, capsys):
    """A new plain network and its Ghost version, registered with their labels and family and
    nothing else, get their own rows in `count`, their own colour and panel in the plot."""
    from ghost_ablate.labels import color, full_label
    from ghost_ablate.models import MODELS, ModelSpec
    from ghost_ablate.models.ghost import GhostModule
    from ghost_ablate.models.registry import register
    from ghost_ablate.report.plots import draw_accuracy_vs_cost

    def tiny(num_classes: int, ghost: bool = False, ratio: int = 2, dw_size: int = 3, **_: object) -> nn.Module:
        conv = GhostModule(3, 16, ratio=ratio, dw_size=dw_size) if ghost else nn.Conv2d(3, 16, 3, padding=1)
        return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))

    for spec in (ModelSpec("tinynet", tiny, 32, 10, label="TinyNet"),
                 ModelSpec("ghost_tinynet", lambda **kw: tiny(ghost=True, **kw), 32, 10, ("ratio", "dw_size"),
                           baseline="tinynet", label="Ghost-TinyNet")):
        monkeypatch.setitem(MODELS, spec.name, spec)  # removed again after the test
        register(spec)  # the one declaration
    assert MODELS["ghost_tinynet"].family == "TinyNet"  # from its baseline

    assert main(["count", "--model", "ghost_tinynet", "--ratio", "2", "--format", "json"]) == 0
    capsys.readouterr()
    import ghost_ablate.costs
    import ghost_ablate.models

    # the paper's rows and the other registered models stand aside (counting ImageNet networks takes minutes)
    monkeypatch.setattr(ghost_ablate.costs, "paper_cost_records", lambda: [ghost_ablate.costs.cost_record("vgg16")])
    monkeypatch.setattr(ghost_ablate.models, "MODELS", {k: MODELS[k] for k in ("vgg16", "tinynet", "ghost_tinynet")})
    assert main(["count", "--format", "json"]) == 0
    assert {r["model"] for r in json.loads(capsys.readouterr().out)} == {"vgg16"}  # the paper's rows alone
    assert main(["count", "--all", "--format", "json"]) == 0  # a registered family appears beside them
    assert {r["model"] for r in json.loads(capsys.readouterr().out)} == {"vgg16", "tinynet", "ghost_tinynet"}
    assert full_label("ghost_tinynet", 2, 3) == "Ghost-TinyNet s=2 d=3"
    agg = {("tinynet", None, None, None, ()): {"top1_mean": 50.0, "final": [49.0, 51.0], "flops": 4.4e5,
                                               "params": 600.0},
           ("ghost_tinynet", 2, 3, None, ()): {"top1_mean": 48.0, "final": [47.0, 49.0], "flops": 2.4e5,
                                               "params": 400.0}}
    fig = draw_accuracy_vs_cost(agg, "flops")
    panel = next(ax for ax in fig.axes if ax.get_title().startswith("TinyNet: ours"))
    assert {t.get_text() for t in panel.texts} == {"TinyNet", "s=2 d=3"}
    assert {line.get_color() for line in panel.lines if line.get_marker() in "os"} == {color("tinynet")}
    assert color("tinynet") not in {color(m) for m in ("vgg16", "resnet56", "ghostnet", "ghostnetv2", "resnet50")}
