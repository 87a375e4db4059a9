"""Declared knobs and the cheap-operation variants (dw, dfc, copy, rep) of the Ghost module."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from ghost_ablate.bench import deploy_form, variant_keys
from ghost_ablate.cli import main
from ghost_ablate.config import RunConfig
from ghost_ablate.costs import config_cost
from ghost_ablate.flops import count_flops
from ghost_ablate.models import KNOBS, CheapOp, GhostModule, build_model, fuse_rep, get_spec, knob_values, varying
from ghost_ablate.models.ghost import GhostCopies, RepDepthwise
from ghost_ablate.report import build_report
from ghost_ablate.report.experiments import experiment_table
from ghost_ablate.report.tables import aggregate, load_runs
from ghost_ablate.experiment import load_experiment, plan_runs
from ghost_ablate.record_schema import run_state, summary_frame
from ghost_ablate.sweep import run_sweep
from ghost_ablate.training import RunContext

from conftest import SUBSET_DATA, randomize_bn

REPO = Path(__file__).resolve().parents[1]
OPS = KNOBS["cheap_op"].choices


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("ratio,out_ch", [(2, 16), (3, 16), (4, 30)])
def test_each_cheap_op_gives_the_output_shape_and_gradients(op, ratio, out_ch):
    module = GhostModule(8, out_ch, 3, ratio=ratio, dw_size=3, stride=2, cheap=CheapOp(op))
    x = torch.randn(2, 8, 9, 9, requires_grad=True)
    y = module(x)
    assert y.shape == (2, out_ch, 5, 5)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("model", ["ghost_vgg16", "ghost_resnet56", "cifar_ghostnet"])
@pytest.mark.parametrize("op", OPS)
def test_every_testbed_takes_every_cheap_op(model, op):
    net = build_model(model, cheap_op=op, **({"dw_size": None} if op == "copy" else {}))
    kinds = {m.cheap.cheap_op for m in net.modules() if isinstance(m, GhostModule)}
    assert op in kinds
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()


def test_copy_has_no_cheap_op_parameters_and_copies_the_intrinsic_maps():
    module = GhostModule(4, 12, 1, ratio=3, cheap=CheapOp("copy")).eval()
    assert isinstance(module.cheap_operation, GhostCopies)
    assert sum(p.numel() for p in module.cheap_operation.parameters()) == 0
    y = module(torch.randn(1, 4, 5, 5))
    intrinsic = y[:, :4]
    for i in range(4):  # ghosts 4 + 2i, 5 + 2i come from intrinsic map i
        assert torch.equal(y[:, 4 + 2 * i], intrinsic[:, i]) and torch.equal(y[:, 5 + 2 * i], intrinsic[:, i])
    dw = GhostModule(4, 12, 1, ratio=3)
    plain = sum(p.numel() for p in dw.parameters()) - sum(p.numel() for p in dw.cheap_operation.parameters())
    assert sum(p.numel() for p in module.parameters()) == plain


@pytest.mark.parametrize("ratio,dw_size,relu", [(2, 3, True), (3, 5, False), (2, 1, True)])
def test_rep_fused_deploy_form_equals_the_training_form(ratio, dw_size, relu):
    torch.manual_seed(0)
    module = GhostModule(6, 10, 3, ratio=ratio, dw_size=dw_size, relu=relu, cheap=CheapOp("rep"))
    randomize_bn(module)
    x = torch.randn(3, 6, 8, 8)
    with torch.no_grad():
        expected = module(x)
        fuse_rep(module)
        got = module(x)
    assert isinstance(module.cheap_operation, RepDepthwise) and module.cheap_operation.fused is not None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in module.cheap_operation.modules())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_rep_deploy_form_of_a_whole_network_matches():
    torch.manual_seed(0)
    net = build_model("ghost_resnet56", cheap_op="rep")
    randomize_bn(net)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(deploy_form(net)(x), net(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("down,up,sigmoid", [("avg", "nearest", "before"), ("max", "bilinear", "after")])
def test_dfc_attention_variants_gate_the_output(down, up, sigmoid):
    module = GhostModule(8, 16, 1, cheap=CheapOp("dfc", dfc_kernel=3, dfc_down=down, dfc_up=up,
                                                 dfc_sigmoid=sigmoid)).eval()
    x = torch.randn(2, 8, 7, 7)
    with torch.no_grad():
        gate = module.attention(x, torch.Size((7, 7)))
        plain = torch.cat([module.primary_conv(x), module.cheap_operation(module.primary_conv(x))], 1)
        out = module(x)
    assert gate.shape == (2, 16, 7, 7) and bool(((gate > 0) & (gate < 1)).all())
    torch.testing.assert_close(out, plain * gate)
    assert module.short_conv[2].kernel_size == (1, 3) and module.short_conv[4].kernel_size == (3, 1)


def test_dfc_from_block_picks_the_bottlenecks_with_attention():
    def with_dfc(net):
        return [i for i, b in enumerate(m for s in net.blocks[:-1] for m in s) if hasattr(b.ghost1, "short_conv")]

    assert with_dfc(build_model("cifar_ghostnet", cheap_op="dfc")) == list(range(2, 16))
    assert with_dfc(build_model("cifar_ghostnet", cheap_op="dfc", dfc_from_block=9)) == list(range(9, 16))
    assert with_dfc(build_model("cifar_ghostnet")) == []
    assert build_model("ghostnetv2").blocks[2][0].ghost1.cheap.cheap_op == "dfc"  # V2 unchanged


def test_costs_follow_the_papers_convention_for_every_cheap_op():
    def flops(op, **kw):
        return count_flops(nn.Sequential(GhostModule(3, 32, 3, ratio=2, dw_size=3, cheap=CheapOp(op, **kw))), 8)

    primary, cheap = 3 * 16 * 9 * 64, 16 * 9 * 64  # MACs on an 8x8 map
    assert flops("dw") == primary + cheap
    assert flops("copy") == primary
    assert flops("rep") == primary + 32 * 9 * 64  # every output map comes from the depthwise conv
    # DFC at 4x4: 1x1 conv 3->32 and two depthwise 1x5 / 5x1; pooling, sigmoid, upsampling free
    assert flops("dfc") == primary + cheap + 16 * (3 * 32 + 2 * 32 * 5)
    assert flops("dfc", dfc_down="max", dfc_up="bilinear") == flops("dfc")


@pytest.mark.parametrize("kwargs,match", [
    ({"cheap_op": "conv"}, r"cheap_op must be one of dw, dfc, copy, rep, got 'conv'"),
    ({"bogus": 1}, r"unknown knob 'bogus'; valid: ratio, dw_size, cheap_op"),
    ({"dfc_kernel": 7}, r"dfc_kernel applies only with cheap_op in dfc"),
    ({"cheap_op": "dfc", "dfc_kernel": 4}, r"dfc_kernel must be an odd integer 1..31, got 4"),
    ({"cheap_op": "dfc", "dfc_up": "cubic"}, r"dfc_up must be one of nearest, bilinear"),
    ({"cheap_op": "copy", "dw_size": 5}, r"dw_size applies only with cheap_op in dw, dfc, rep"),
    ({"dfc_from_block": 3}, r"no dfc_from_block to set"),
])
def test_bad_knobs_fail_naming_the_valid_ones(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RunConfig.create("ghost_vgg16", profile="smoke", knobs=kwargs)


def test_a_model_without_the_knob_refuses_it_but_accepts_its_default():
    with pytest.raises(ValueError, match="model 'vgg16' has no cheap_op to set"):
        build_model("vgg16", cheap_op="rep")
    assert RunConfig.create("vgg16", profile="smoke", knobs={"cheap_op": "dw"}).knobs == ()


def test_knob_values_come_as_strings_from_the_command_line_and_yaml():
    rc = RunConfig.create("ghost_vgg16", profile="smoke", knobs={"cheap_op": "dfc", "dfc_kernel": "7"})
    assert rc.knobs == (("cheap_op", "dfc"), ("dfc_kernel", 7))
    assert "dfc-k7" in rc.run_id and rc.to_dict()["knobs"] == {"cheap_op": "dfc", "dfc_kernel": 7}
    # a default written out is the same run as a default left out
    same = RunConfig.create("ghost_vgg16", profile="smoke", knobs={"cheap_op": "dfc", "dfc_kernel": 5})
    assert same.run_id == RunConfig.create("ghost_vgg16", profile="smoke", knobs={"cheap_op": "dfc"}).run_id


def test_run_ids_of_earlier_versions_are_unchanged():
    # ids of committed demo records, written before knobs were declared
    assert RunConfig.create("ghost_vgg16", 2, 3, profile="subset").run_id == "ghost_vgg16-s2-d3-subset-seed0-60c186c143"
    assert RunConfig.create("vgg16", profile="subset").run_id == "vgg16-subset-seed0-1219bf0d1e"
    assert RunConfig.create("ghost_vgg16", 2, 3, profile="subset",
                            knobs={"cheap_op": "dw"}).run_id == "ghost_vgg16-s2-d3-subset-seed0-60c186c143"
    assert "knobs" not in RunConfig.create("ghost_resnet56", profile="paper").to_dict()


def test_a_record_of_the_earlier_version_is_found_skipped_and_reported(tmp_path):
    old = "ghost_vgg16-s2-d3-subset-seed0-2231259e39"  # the committed demo record (its data migrated)
    source = REPO / "results" / "demo" / "runs" / old / "result.json"
    assert "knobs" not in json.loads(source.read_text())["config"]
    (tmp_path / "runs" / old).mkdir(parents=True)
    shutil.copy(source, tmp_path / "runs" / old / "result.json")
    exp = load_experiment(REPO / "experiments" / "cifar10_cheap_ops.yaml")
    runs = [rc for rc in plan_runs(exp, [0], "subset", data=SUBSET_DATA) if rc.model == "ghost_vgg16"]
    assert runs[0].run_id == old and run_state(tmp_path / "runs" / old) == "done"
    outcome = run_sweep(runs[:1], RunContext.resolve(tmp_path / "no-data", download=False), tmp_path)
    assert outcome.skipped == [old] and not outcome.done and not outcome.failed
    table = experiment_table(exp, aggregate(load_runs(tmp_path, "subset")))
    row = table[(table["model"] == "ghost_vgg16") & (table["cheap_op"] == "dw")].iloc[0]
    assert row["n_seeds"] == 1 and row["top1_mean"] > 30
    summary = summary_frame(tmp_path / "runs")
    assert summary.loc[0, "cheap_op"] == "dw" and pd.isna(summary.loc[0, "dfc_kernel"])


def test_experiment_files_expand_any_declared_knob(tmp_path):
    exp = load_experiment(REPO / "experiments" / "cifar10_dfc.yaml")
    assert len(exp.configs) == 16
    kernels = sorted(c["knobs"].get("dfc_kernel", 5) for c in exp.configs
                     if c["model"] == "ghost_vgg16" and c["knobs"].get("cheap_op") == "dfc"
                     and set(c["knobs"]) <= {"cheap_op", "dfc_kernel"})
    assert kernels == [3, 5, 7]
    cheap = load_experiment(REPO / "experiments" / "cifar10_cheap_ops.yaml")
    assert {c["knobs"].get("cheap_op", "dw") for c in cheap.configs if c["model"] == "ghost_resnet56"} == set(OPS)
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: smoke\nruns:\n  - {model: ghost_vgg16, cheap_op: [dw, conv]}\n")
    with pytest.raises(ValueError, match=r"runs\[0\].*cheap_op must be one of dw, dfc, copy, rep"):
        load_experiment(bad)


def _agg_record(model, knobs, finals):
    rc = RunConfig.create(model, profile="smoke", knobs=knobs)
    return rc.key, {"final": finals, "n": len(finals), "top1_mean": sum(finals) / len(finals), "top1_std": 0.5,
                    "top1_ci95": 1.0, "seeds": list(range(len(finals))), "stacks": ["cpu: A / torch 2"] * len(finals)}


def test_the_generic_table_has_the_varying_knobs_as_columns(tmp_path):
    exp = load_experiment(REPO / "experiments" / "cifar10_cheap_ops.yaml")
    agg = dict([_agg_record("ghost_vgg16", {}, [60.0, 61.0, 62.0]),
                _agg_record("ghost_vgg16", {"cheap_op": "copy"}, [50.0, 51.0, 52.0])])
    table = experiment_table(exp, agg)
    assert [c for c in table.columns if c in KNOBS] == ["cheap_op"]  # s=2, d=3 do not vary
    vgg = table[table["model"] == "ghost_vgg16"].set_index("cheap_op")
    assert list(vgg.index) == ["dw", "dfc", "rep", "copy"] and vgg.loc["dw", "reference"] == "yes"
    assert vgg.loc["copy", "top1_mean"] == 51.0 and vgg.loc["copy", "p_vs_reference"] < 0.01
    assert vgg.loc["copy", "flops_m"] < vgg.loc["dw", "flops_m"] < vgg.loc["rep", "flops_m"] < vgg.loc["dfc", "flops_m"]
    assert vgg.loc["dfc", "n_seeds"] == 0 and pd.isna(vgg.loc["dfc", "top1_mean"])
    assert table["model"].tolist().index("ghost_resnet56") == 4  # rows grouped by model


def test_varying_ignores_blanks_and_knob_values_blank_what_has_no_effect():
    dw = knob_values("ghost_vgg16", {"ratio": 2, "dw_size": 3})
    dfc = knob_values("ghost_vgg16", {"ratio": 2, "dw_size": 3, "knobs": {"cheap_op": "dfc"}})
    assert dw["cheap_op"] == "dw" and dw["dfc_kernel"] is None and dfc["dfc_kernel"] == 5
    assert varying([dw, dfc, knob_values("vgg16", {})]) == ["cheap_op"]


def test_cli_set_builds_counts_and_rejects(capsys):
    assert main(["count", "--model", "ghost_resnet56", "--set", "cheap_op=copy", "--format", "json"]) == 0
    (rec,) = json.loads(capsys.readouterr().out)
    assert rec["knobs"] == {"cheap_op": "copy"} and rec["paper_flops"] is None
    assert rec["flops"] == config_cost("ghost_resnet56", 2, 3, None, (("cheap_op", "copy"),)).flops
    assert main(["count", "--model", "ghost_resnet56", "--set", "cheap_op=conv"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cheap_op must be one of dw, dfc, copy, rep" in err and "\n" not in err
    assert main(["count", "--model", "ghost_resnet56", "--set", "ratio=3"]) == 2
    assert "use --ratio" in capsys.readouterr().err
    assert main(["knobs", "--model", "cifar_ghostnet", "--format", "json"]) == 0
    declared = json.loads(capsys.readouterr().out)
    assert [d["knob"] for d in declared] == list(get_spec("cifar_ghostnet").knobs)


def test_bench_variants_cover_every_cheap_op_after_the_baseline():
    keys = variant_keys(["ghost_vgg16"])
    assert keys[0] == ("vgg16", None, None, None, ())
    assert [dict(k[4]).get("cheap_op", "dw") for k in keys[1:]] == list(OPS)


def _finished_smoke_runs(results: Path, *runs: tuple[str, dict]) -> None:
    for model, knobs in runs:
        rc = RunConfig.create(model, profile="smoke", knobs=knobs)
        path = results / "runs" / rc.run_id / "result.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"run_id": rc.run_id, "status": "finished", "config": rc.to_dict(),
                                    "final_test_acc": 0.4, "best_test_acc": 0.4, "history": [],
                                    "params": 1, "flops": 1, "data": {}}))


def test_report_of_a_smoke_like_experiment_writes_its_table(tmp_path):
    _finished_smoke_runs(tmp_path, ("vgg16", {}), ("ghost_vgg16", {"cheap_op": "rep"}),
                         ("ghost_vgg16", {"cheap_op": "dfc", "dfc_kernel": 7}))
    written = build_report(tmp_path, tmp_path / "out", "smoke")
    names = {p.name for p in written}
    assert {"experiment_cifar10_cheap_ops.csv", "experiment_cifar10_cheap_ops_accuracy_vs_flops.png"} <= names
    assert "experiment_cifar10_cross.csv" not in names  # no run of it outside the paper's rows
    dfc = pd.read_csv(tmp_path / "out" / "experiment_cifar10_dfc.csv")
    assert dfc.loc[dfc["dfc_kernel"] == 7, "n_seeds"].tolist() == [1, 0]  # Ghost-VGG-16 run, GhostNet not
    text = (tmp_path / "out" / "README.md").read_text()
    assert "## Experiment cifar10_cheap_ops.yaml" in text and "| rep " in text.replace("  ", " ")


def test_paper_grid_runs_alone_write_no_experiment_table(tmp_path):
    # the CIFAR GhostNet is an extra run of the paper's experiment file and the dw reference
    # of cifar10_dfc.yaml: the paper report already shows it, so no one-row DFC table appears
    _finished_smoke_runs(tmp_path, ("vgg16", {}), ("cifar_ghostnet", {}))
    written = build_report(tmp_path, tmp_path / "out", "smoke")
    assert not [p.name for p in written if p.name.startswith("experiment_")]
    (row,) = [line for line in (tmp_path / "out" / "README.md").read_text().splitlines()
              if line.startswith("| GhostNet (CIFAR)")]
    assert "| 40.00 (n=1) " in row  # under "Runs outside the paper's tables", in the tables' format


def test_calibration_builds_and_keys_the_configured_cheap_op():
    from ghost_ablate.estimate import calibration_key
    from ghost_ablate.precision import resolve_precision

    fp32 = resolve_precision("32", "cpu")

    dw = RunConfig.create("ghost_resnet56", profile="smoke")
    dfc = RunConfig.create("ghost_resnet56", profile="smoke", knobs={"cheap_op": "dfc"})
    assert calibration_key(dw, "cpu", fp32) != calibration_key(dfc, "cpu", fp32)
    assert len(calibration_key(dw, "cpu", fp32)) == 9  # keys cached before knobs existed stay valid
    net = build_model(dfc.model, **dfc.model_args)
    assert any(getattr(m, "cheap", None) == CheapOp("dfc") for m in net.modules())


def test_dropout_is_a_knob_of_the_ghostnet_family_and_keeps_old_ids():
    """Issue 31: the author's dropout (0.1 or 0.15) can be swept; the default (0.2) is the old
    hard-coded value, so no run id changes."""
    import torch

    from ghost_ablate.config import RunConfig
    from ghost_ablate.models import build_model

    net = build_model("ghostnet", width=1.0, dropout=0.15)
    assert net.dropout == 0.15
    # it acts on the pooled features the classifier reads: in training some logits change, in eval none
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))
    assert build_model("ghostnetv2", width=1.0, dropout=0.1).dropout == 0.1
    default = RunConfig.create("cifar_ghostnet", width=1.0, profile="subset")
    assert RunConfig.create("cifar_ghostnet", width=1.0, profile="subset", knobs={"dropout": 0.2}).run_id == default.run_id
    assert "-drop0.1-" in RunConfig.create("cifar_ghostnet", width=1.0, profile="subset", knobs={"dropout": 0.1}).run_id
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        RunConfig.create("ghostnet", width=1.0, knobs={"dropout": 1.5})
    with pytest.raises(ValueError, match="has no dropout to set"):
        RunConfig.create("vgg16", knobs={"dropout": 0.1})
