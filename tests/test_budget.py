"""Equal-budget pruning (models/budget.py): VGG-16 and ResNet-56 pruned globally with torch-pruning
to the Ghost network's FLOPs, by the l1 magnitude or the BatchNorm scale, as a sweep step."""
import pytest
import torch

from ghost_ablate.cli import main
from ghost_ablate.flops import count_flops, measure
from ghost_ablate.features import load_trained
from ghost_ablate.models import build_model
from ghost_ablate.models.budget import ghost_budget, prune_to_budget, rebuild_like, widths
from ghost_ablate.record_schema import read_records

from conftest import add_trainer_callback, randomize_bn
from test_finetune import FAST, TermInFineTune, experiment


def test_the_budget_is_the_ghost_networks_flops():
    assert ghost_budget("vgg16", 2) == count_flops(build_model("ghost_vgg16", 2, 3), 32)  # the paper's 158M
    assert ghost_budget("resnet56", 2) == count_flops(build_model("ghost_resnet56", 2, 3), 32)  # 63M, ours 65M
    assert round(ghost_budget("vgg16", 2) / 1e6) == 158 and round(ghost_budget("resnet56", 2) / 1e6) == 65


@pytest.mark.parametrize("criterion", ["l1", "bn_scale"])
def test_resnet56_is_pruned_inside_blocks_to_the_budget_and_keeps_its_function(criterion):
    torch.manual_seed(0)
    trained = randomize_bn(build_model("resnet56"))
    budget = ghost_budget("resnet56", 2)
    pruned = prune_to_budget(trained, budget, criterion).eval()
    assert 0.97 * budget <= count_flops(pruned, 32) <= budget  # at most the budget, and close to it
    blocks = [b for s in (trained.layer1, trained.layer2, trained.layer3) for b in s]
    kept_blocks = [b for s in (pruned.layer1, pruned.layer2, pruned.layer3) for b in s]
    assert len(set(widths(pruned))) > 3  # global: the layers keep different fractions
    for block, kept in zip(blocks, kept_blocks, strict=True):
        assert kept.conv2.out_channels == block.conv2.out_channels  # stage outputs stay whole
        # which of the block's inner channels survived: their BN scales are unique
        idx = torch.tensor([int((block.bn1.weight == g).nonzero()) for g in kept.bn1.weight])
        assert torch.equal(idx, idx.sort().values)  # in their original order
        if criterion == "bn_scale":  # within a layer, the largest |gamma| are the ones kept
            removed = torch.ones(block.bn1.num_features, dtype=torch.bool)
            removed[idx] = False
            if removed.any():
                assert block.bn1.weight[idx].abs().min() >= block.bn1.weight[removed].abs().max()
        with torch.no_grad():  # silence the removed channels in the original
            drop = torch.ones(block.bn1.num_features, dtype=torch.bool)
            drop[idx] = False
            block.conv1.weight[drop] = 0
            block.bn1.weight[drop] = 0
            block.bn1.bias[drop] = 0
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(pruned(x), trained(x), atol=1e-4, rtol=1e-4)


def test_vgg16_keeps_its_classifier_and_rebuilds_from_saved_weights():
    torch.manual_seed(0)
    trained = randomize_bn(build_model("vgg16"))
    budget = ghost_budget("vgg16", 2)
    pruned = prune_to_budget(trained, budget, "bn_scale")
    assert count_flops(pruned, 32) <= budget and pruned.classifier[0].out_features == 512
    assert count_flops(trained, 32) > 300e6  # the source is left as it was
    plain = build_model("budget_vgg16")  # built without a source: uniform widths, within the budget
    assert count_flops(plain, 32) <= budget and widths(plain) != widths(pruned)
    rebuilt = rebuild_like(plain, pruned.state_dict())
    rebuilt.load_state_dict(pruned.state_dict())  # strict: every shape fits
    assert widths(rebuilt) == widths(pruned)
    assert rebuild_like(plain, {"other": torch.zeros(1)}) is plain  # weights of another network: left to the loader


def test_bad_criterion_and_budget_are_one_line_errors():
    with pytest.raises(ValueError, match="criterion must be one of l1, bn_scale, got 'taylor'"):
        build_model("budget_vgg16", criterion="taylor")
    with pytest.raises(ValueError, match="budget_s must be an integer >= 2"):
        build_model("budget_resnet56", budget_s=1)


def test_a_budget_row_prunes_its_source_and_resumes_from_its_own_widths(tiny_cifar, tmp_path, monkeypatch):
    from ghost_ablate import training

    exp = experiment(tmp_path, "profile: smoke\nruns:\n  - {model: budget_resnet56, criterion: bn_scale}\n")
    results = tmp_path / "results"
    args = ["sweep", str(exp), "--data-dir", str(tiny_cifar), "--results-dir", str(results), "--epochs", "2", *FAST]
    real = add_trainer_callback(monkeypatch, TermInFineTune("budget_resnet56"))
    with pytest.raises(SystemExit):
        main(args)
    monkeypatch.setattr(training, "make_trainer", real)
    assert main(args) == 0
    records = {r["config"]["model"]: r for r in read_records(results / "runs")}
    pruned, source = records["budget_resnet56"], records["resnet56"]
    assert pruned["status"] == "finished" and pruned["attempts"] == 2
    assert [h["epoch"] for h in pruned["history"]] == [0, 1]
    assert pruned["source"]["run_id"] == source["run_id"] and pruned["source"]["criterion"].startswith("bn_scale")
    assert pruned["flops"] <= ghost_budget("resnet56", 2) < source["flops"]
    net = load_trained(results / "runs" / pruned["run_id"]).model  # the report's loader finds its widths too
    assert (measure(net, 32).params, measure(net, 32).flops) == (pruned["params"], pruned["flops"])
