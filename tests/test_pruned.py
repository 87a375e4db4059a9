"""Li et al.'s l1 filter pruning: exact costs, and pruning that keeps the right filters."""
import pytest
import torch

from ghost_ablate.costs import cost_record
from ghost_ablate.models import build_model, prune_l1
from ghost_ablate.models.pruned import kept_filters, resnet56_mids

from conftest import randomize_bn


def test_costs_are_li_et_al_s_exactly():
    # the GhostNet paper's Table 3 rows (5.4M / 206M and 0.73M / 91M) and Li et al.'s pruned-A
    assert (cost_record("l1_vgg16")["params"], cost_record("l1_vgg16")["flops"]) == (5_397_034, 206_279_680)
    assert (cost_record("l1_resnet56")["params"], cost_record("l1_resnet56")["flops"]) == (735_712, 90_907_264)
    a = cost_record("l1_resnet56", knobs={"l1_variant": "A"})
    assert (a["params"], a["flops"]) == (773_336, 112_435_840)
    assert cost_record("l1_resnet56")["paper_flops"] == 91_000_000 and a["paper_flops"] is None


def test_pruned_b_widths_follow_the_rates_and_skipped_layers():
    mids = resnet56_mids("B")
    # stage widths 16/32/64 less 60/30/10%, floored: 6, 22, 57; blocks 8, 9, 10, 17, 19, 27 (layers 16, 18,
    # 20, 34, 38, 54) keep their full width
    assert mids == (6,) * 7 + (16, 16) + (32,) + (22,) * 6 + (32,) + (22,) + (64,) + (57,) * 7 + (64,)
    assert resnet56_mids("A") == (14,) * 7 + (16, 14) + (32,) + (28,) * 8 + (64,) + (57,) * 7 + (64,)


def silence(model, conv, bn, keep):
    """Zero the filters of `conv` outside `keep` and their BN scale and shift: those maps are then 0."""
    drop = torch.ones(conv.out_channels, dtype=torch.bool)
    drop[keep] = False
    with torch.no_grad():
        conv.weight[drop] = 0
        bn.weight[drop] = 0
        bn.bias[drop] = 0


@pytest.mark.parametrize("name", ["vgg16", "resnet56"])
def test_l1_pruning_keeps_the_largest_filters_and_the_function(name):
    torch.manual_seed(0)
    trained = randomize_bn(build_model(name))
    pruned = prune_l1(trained, build_model(f"l1_{name}").eval()).eval()
    if name == "vgg16":
        pairs = [(trained.features[i], trained.features[i + 1]) for i, m in enumerate(trained.features)
                 if isinstance(m, torch.nn.Conv2d)]
        widths = [m.out_channels for m in pruned.features if isinstance(m, torch.nn.Conv2d)]
    else:
        blocks = [b for stage in (trained.layer1, trained.layer2, trained.layer3) for b in stage]
        pairs = [(b.conv1, b.bn1) for b in blocks]
        widths = list(resnet56_mids("B"))
    pruned_layers = 0
    for (conv, bn), width in zip(pairs, widths, strict=True):
        keep = kept_filters(conv, width)
        norms = conv.weight.abs().sum(dim=(1, 2, 3))
        if width < conv.out_channels:  # every kept filter's l1 norm is at least every removed one's
            pruned_layers += 1
            removed = torch.ones(conv.out_channels, dtype=torch.bool)
            removed[keep] = False
            assert norms[keep].min() >= norms[removed].max()
        silence(trained, conv, bn, keep)
    assert pruned_layers == (7 if name == "vgg16" else 21)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(pruned(x), trained(x), atol=1e-4, rtol=1e-4)


def test_pruning_other_networks_is_refused():
    with pytest.raises(ValueError, match="VGG-16 or ResNet-56"):
        prune_l1(build_model("vgg16"), build_model("l1_resnet56"))
