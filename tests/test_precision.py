"""The recipe's precision: how `auto` resolves on each kind of machine, the run id, records, resume."""
import json

import pytest
import torch

from ghost_ablate.cache import JsonCache
from ghost_ablate.cli import main
from ghost_ablate.config import ConfigError, RunConfig, make_recipe
from ghost_ablate.precision import cpu_bf16_speedup, resolve_precision
from ghost_ablate.training import RunContext, train_run

FAST = dict(batch_size=16, eval_batch_size=16, limit_train_batches=2, limit_test_batches=1)


def resolve(requested, device="cpu", native=True, speedup=2.0, holds=True):
    return resolve_precision(requested, device, cpu_bf16=lambda: native, gpu_bf16=lambda: native,
                             cpu_speedup=lambda: speedup, cpu_accuracy=lambda: (holds, "evidence (mocked)"))


def test_auto_on_a_cpu_without_bf16_falls_back_to_32_with_a_reason():
    p = resolve("auto", native=False)
    assert (p.resolved, p.lightning, p.channels_last) == ("32", "32-true", False)
    assert "no native bf16" in p.reason and p.to_record()["memory_format"] == "contiguous"


def test_auto_on_a_cpu_where_bf16_is_native_but_slow_stays_32():
    p = resolve("auto", native=True, speedup=0.77)
    assert p.resolved == "32" and "0.77x" in p.reason


def test_auto_uses_bf16_and_channels_last_where_native_and_fast():
    p = resolve("auto", native=True, speedup=1.9)
    assert (p.resolved, p.lightning, p.channels_last) == ("bf16", "bf16-mixed", True)
    assert p.to_record() == {"requested": "auto", "resolved": "bf16", "reason": p.reason,
                             "memory_format": "channels_last"}
    gpu = resolve("auto", device="cuda", native=True, speedup=0.1)  # the CPU probe is not asked on a GPU
    assert gpu.resolved == "bf16" and gpu.channels_last


def test_auto_on_a_fast_bf16_cpu_stays_32_unless_accuracy_evidence_holds():
    probed = []
    p = resolve_precision("auto", "cpu", cpu_bf16=lambda: True, cpu_speedup=lambda: probed.append(1) or 2.0,
                          cpu_accuracy=lambda: (False, "ResNet-56: bf16 - fp32 -2.30 points"))
    assert p.resolved == "32" and "-2.30 points" in p.reason and "--precision bf16" in p.reason
    assert probed == []  # no evidence: the speed probe is not even run
    assert resolve("auto", native=True, speedup=2.0, holds=True).resolved == "bf16"
    assert resolve("bf16", native=True, holds=False).resolved == "bf16"  # an explicit request is obeyed


def _table(tmp_path, rows):
    import pandas as pd

    path = tmp_path / "precision.csv"
    pd.DataFrame(rows, columns=["model", "pairs", "diff_mean", "diff_ci95"]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("rows, holds", [
    ([("ResNet-56", 5, -0.2, 0.6), ("Ghost-VGG-16", 5, 0.5, 1.2)], True),  # lowest end -0.8 > -1
    ([("ResNet-56", 5, -0.2, 0.6), ("Ghost-VGG-16", 5, 0.5, 1.6)], False),  # -1.1: could cost > 1 point
    ([("ResNet-56", 4, 0.0, 0.1)], False),  # too few pairs
    ([("ResNet-56", 1, 0.0, None)], False),  # no interval at all
])
def test_accuracy_evidence_needs_pairs_and_a_tight_lower_bound(tmp_path, rows, holds):
    from ghost_ablate.precision import bf16_accuracy_holds

    got, words = bf16_accuracy_holds(_table(tmp_path, rows))
    assert got is holds and rows[0][0] in words
    assert bf16_accuracy_holds(tmp_path / "missing.csv")[0] is False


def test_explicit_requests_are_obeyed():
    assert resolve("32", native=True).resolved == "32"
    forced = resolve("bf16", native=False)
    assert forced.resolved == "bf16" and "emulated" in forced.reason


def test_the_speed_probe_is_measured_once_and_cached(tmp_path):
    cache = JsonCache("precision", tmp_path)
    first = cpu_bf16_speedup(cache)
    assert first > 0 and len(json.loads((tmp_path / "precision.json").read_text())) == 1
    assert cpu_bf16_speedup(JsonCache("precision", tmp_path)) == first  # read back, not re-measured


def test_unknown_precision_is_a_one_line_error(tiny_cifar, tmp_path, capsys):
    with pytest.raises(ConfigError, match="auto, 32, bf16"):
        make_recipe(precision="fp16")
    code = main(["train", "--model", "resnet56", "--profile", "smoke", "--precision", "fp16",
                 "--data-dir", str(tiny_cifar), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "'auto', '32', 'bf16'" in err
    assert not (tmp_path / "run").exists()


def test_auto_keeps_the_old_run_id_and_explicit_values_get_their_own():
    auto = RunConfig.create("ghost_vgg16", 2, 3, profile="paper")
    assert auto.run_id == "ghost_vgg16-s2-d3-paper-seed0-df40f40c39"  # as written before precision existed
    assert "precision" not in auto.to_dict()["recipe"]
    ids = {RunConfig.create("ghost_vgg16", 2, 3, profile="paper", precision=p).run_id for p in ("32", "bf16")}
    assert len(ids) == 2 and auto.run_id not in ids


class Kill(Exception):
    pass


@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_both_precisions_write_complete_records_and_resume(tiny_cifar, tmp_path, precision):
    import lightning as L

    class StopAtEpoch1(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                raise Kill()

    config = RunConfig.create("ghost_vgg16", 2, 3, profile="smoke", epochs=2, precision=precision, **FAST)
    out = tmp_path / "run"
    with pytest.raises(Kill):
        train_run(config, RunContext.resolve(tiny_cifar, accelerator="cpu"), out, progress=False,
                  callbacks=[StopAtEpoch1()])
    rec = train_run(config, RunContext.resolve(tiny_cifar, accelerator="cpu"), out, progress=False)
    assert rec["status"] == "finished" and rec["epochs_done"] == 2 and rec["attempts"] == 2
    assert rec["precision"]["requested"] == precision and rec["precision"]["resolved"] == precision
    assert rec["precision"]["memory_format"] == ("channels_last" if precision == "bf16" else "contiguous")
    confusion = torch.tensor(rec["test_confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10  # the tiny test set, counted once
    assert 0 <= rec["final_test_acc"] <= 1 and len(rec["history"]) == 2


def test_auto_on_a_cpu_follows_the_committed_precision_table():
    """The committed fp32-vs-bf16 table is the evidence `auto` reads; with the probe mocked as a
    fast bf16 CPU, what `auto` picks is what the table allows. Pairs count only where both runs
    share machine and torch (seed 0 was trained again in both precisions on one machine), and
    fewer than MIN_PAIRS would keep `auto` at fp32."""
    import pandas as pd

    from ghost_ablate.precision import EVIDENCE, MIN_PAIRS, bf16_accuracy_holds

    table = pd.read_csv(EVIDENCE)
    assert set(table["model"]) == {"ResNet-56", "Ghost-VGG-16 s=2 d=3"}
    assert (table["pairs"] + table["pairs_across_machines_left_out"] == MIN_PAIRS).all()
    holds, words = bf16_accuracy_holds()
    assert not holds if (table["pairs"] < MIN_PAIRS).any() else True
    p = resolve_precision("auto", "cpu", cpu_bf16=lambda: True, cpu_speedup=lambda: 2.0)
    assert p.resolved == ("bf16" if holds else "32") and words in p.reason
