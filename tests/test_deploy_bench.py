import pandas as pd
import pytest
import torch

from ghost_ablate.bench import BenchSettings, bench_models, pipeline_comparison
from ghost_ablate.cli import main
from ghost_ablate.deploy import check_onnx, count_bn, export_onnx, fold_bn
from ghost_ablate.models import MODELS, build_model

from conftest import randomize_bn


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bn_folding_is_exact_and_removes_every_bn(name):
    model = randomize_bn(build_model(name, ratio=3 if MODELS[name].is_ghost else None))
    size = min(MODELS[name].input_size, 64)
    x = torch.randn(2, 3, size, size)
    folded = fold_bn(model)
    assert count_bn(folded) == 0 and count_bn(model) > 0  # the original is untouched
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("name,kwargs", [("ghost_resnet56", {"ratio": 3, "dw_size": 5}), ("ghostnetv2", {}),
                                         ("ghost_vgg16", {})])
def test_onnx_export_matches_pytorch(tmp_path, name, kwargs):
    model = randomize_bn(build_model(name, **kwargs))
    size = MODELS[name].input_size
    path = export_onnx(model, tmp_path / f"{name}.onnx", size)
    assert check_onnx(model, path, size, batch=3) < 1e-4  # batch 3: the batch axis is dynamic
    assert check_onnx(fold_bn(model), export_onnx(fold_bn(model), tmp_path / "f.onnx", size), size) < 1e-4


def test_cli_export(tmp_path, capsys):
    assert main(["export", "--model", "resnet56", "--out", str(tmp_path / "r.onnx")]) == 0
    assert "ok" in capsys.readouterr().out and (tmp_path / "r.onnx").stat().st_size > 100_000
    assert main(["export", "--model", "resnet56", "--ratio", "2"]) == 2


TINY = BenchSettings(repeats=2, warmup=1, batch_size=8, throughput_batches=1, train_batch_size=4, train_steps=1,
                     threads=1)
COLUMNS = {"model", "ratio", "dw_size", "width", "params", "flops", "latency_bs1_ms", "latency_bs1_bn_folded_ms",
           "eval_img_s", "eval_batch_size", "train_img_s", "train_peak_mem_mb", "mem_method", "device_kind",
           "device", "threads", "torch"}


def test_bench_writes_csv_and_keeps_other_devices(tmp_path):
    out = tmp_path / "bench.csv"
    pd.DataFrame([{"model": "resnet56", "ratio": None, "dw_size": None, "width": None, "device_kind": "cuda",
                   "latency_bs1_ms": 1.0}]).to_csv(out, index=False)
    bench_models([("resnet56", None, None, None), ("ghost_resnet56", 2, 3, None)], TINY, out, log=lambda s: None)
    assert out.read_text().startswith("# ghost-ablate bench")
    frame = pd.read_csv(out, comment="#")
    assert COLUMNS <= set(frame.columns)
    cpu = frame[frame["device_kind"] == "cpu"]
    assert list(cpu["model"]) == ["resnet56", "ghost_resnet56"] and (frame["device_kind"] == "cuda").sum() == 1
    assert (cpu["latency_bs1_ms"] > 0).all() and (cpu["train_img_s"] > 0).all()
    assert (cpu["train_peak_mem_mb"] > 0).all() and cpu["mem_method"].str.contains("RSS").all()
    assert cpu.set_index("model").loc["ghost_resnet56", "flops"] == 65_286_784
    bench_models([("resnet56", None, None, None)], TINY, out, log=lambda s: None)  # re-run replaces its row
    assert len(pd.read_csv(out, comment="#")) == 3


def test_bench_measures_the_training_precision_with_fp32_beside_it():
    import dataclasses

    from ghost_ablate.bench import measure_model

    row = measure_model(("resnet56", None, None, None), dataclasses.replace(TINY, precision="bf16"))
    assert (row["precision"], row["memory_format"]) == ("bf16", "channels_last")
    assert row["train_img_s"] > 0 and row["train_img_s_fp32"] > 0 and row["latency_bs1_ms_fp32"] > 0
    plain = measure_model(("resnet56", None, None, None), dataclasses.replace(TINY, precision="32"))
    assert plain["precision"] == "32" and "train_img_s_fp32" not in plain


def test_cpu_memory_rise_measures_what_a_step_allocates():
    from ghost_ablate.bench import _cpu_peak_growth_mb

    held = []
    rise = _cpu_peak_growth_mb(lambda: held.append(torch.ones(64 * 2**20 // 4)))  # 64 MiB, every page written
    assert 60 <= rise <= 100, rise
    assert _cpu_peak_growth_mb(lambda: None) < 8


def test_pipeline_comparison_runs_both_loops(monkeypatch):
    from ghost_ablate import bench

    frame = pipeline_comparison(["resnet56"], "cpu", n_train=128, batch_size=32, epochs=1, num_workers=0,
                                log=lambda s: None)
    row = frame.iloc[0]
    assert row["plain_img_s"] > 0 and row["ours_img_s"] > 0 and row["ours_precision"] == "32"
    # the ratios, from rates fixed by hand: ours 300 (bf16) and 240 (fp32) images/s against 120
    monkeypatch.setattr(bench, "plain_loop_rate", lambda *a, **k: 120.0)
    monkeypatch.setattr(bench, "ours_rate", lambda *a, precision="auto", **k: (240.0, "32") if precision == "32"
                        else (300.0, "bf16"))
    fixed = pipeline_comparison(["vgg16"], "cpu", n_train=128, log=lambda s: None).iloc[0]
    assert (fixed["speedup"], fixed["speedup_fp32"], fixed["ours_precision"]) == (2.5, 2.0, "bf16")


def test_bench_a_model_outside_the_paper_rows(tmp_path, capsys):
    out = tmp_path / "b.csv"
    assert main(["bench", "--models", "cifar_ghostnet", "--repeats", "1", "--warmup", "0", "--batch-size", "4",
                 "--throughput-batches", "1", "--train-batch-size", "4", "--train-steps", "1", "--out", str(out)]) == 0
    row = pd.read_csv(out, comment="#").iloc[0]
    assert (row["model"], row["ratio"], row["dw_size"], row["width"], row["flops"]) == ("cifar_ghostnet", 2, 3, 1.0,
                                                                                      13_935_872)


@pytest.mark.parametrize("argv", [["bench", "--models", "nope"], ["bench", "--device", "cuda"],
                                  ["bench", "--models", "resnet50", "--cifar-only"]])
def test_bench_bad_input(argv, capsys):
    if argv[-1] == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_bench_peak_measures_both_precisions_and_keeps_other_machines(tmp_path, capsys):
    from ghost_ablate.machine import describe_device

    out = tmp_path / "peak.csv"
    other = "cpu: Another CPU (8 threads)"
    out.write_text(f"device,precision,gflop_s,torch,measured\n{other},32,1.5,2.0,x\n")
    assert main(["bench", "--peak", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    table = pd.read_csv(out, dtype={"precision": str})
    here = table[table["device"] != other]
    assert set(here["device"]) == {describe_device("cpu")}  # named as run records name their machine
    assert sorted(here["precision"]) == ["32", "bf16"] and (here["gflop_s"] > 0).all()
    assert f"{describe_device('cpu')}: 32 matrix product" in said
    assert main(["bench", "--peak", "--out", str(out)]) == 0  # measured again: replaced, the other machine kept
    again = pd.read_csv(out, dtype={"precision": str})
    assert len(again) == 3 and again[again["device"] == other]["gflop_s"].tolist() == [1.5]
