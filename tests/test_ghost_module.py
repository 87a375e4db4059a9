import math

import pytest
import torch
import torchvision
from torch import nn

from ghost_ablate.models import GhostModule, ghostify
from ghost_ablate.models.ghost import is_plain_conv


@pytest.mark.parametrize("in_ch,out_ch,s,d,stride", [
    (3, 64, 2, 3, 1), (16, 16, 3, 1, 1), (16, 10, 3, 5, 2), (8, 7, 4, 7, 1), (5, 13, 5, 3, 2), (4, 6, 1, 3, 1),
])
def test_output_shape(in_ch, out_ch, s, d, stride):
    m = GhostModule(in_ch, out_ch, kernel_size=3, ratio=s, dw_size=d, stride=stride)
    y = m(torch.randn(2, in_ch, 9, 9))
    side = (9 + 2 * 1 - 3) // stride + 1
    assert y.shape == (2, out_ch, side, side)


@pytest.mark.parametrize("out_ch,s", [(64, 2), (10, 3), (7, 4), (13, 5)])
def test_cheap_op_is_depthwise_with_multiplier_s_minus_1(out_ch, s):
    m = GhostModule(8, out_ch, ratio=s, dw_size=5)
    intrinsic = math.ceil(out_ch / s)
    primary, cheap = m.primary_conv[0], m.cheap_operation[0]
    assert primary.out_channels == intrinsic
    assert cheap.groups == cheap.in_channels == intrinsic
    assert cheap.out_channels == intrinsic * (s - 1)
    assert cheap.weight.shape == (intrinsic * (s - 1), 1, 5, 5)


def test_ratio_one_is_plain_conv_bn_relu():
    m = GhostModule(4, 6, kernel_size=3, ratio=1)
    assert m.cheap_operation is None
    assert [type(x) for x in m.primary_conv] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert m(torch.randn(1, 4, 5, 5)).shape == (1, 6, 5, 5)


def test_relu_flag_controls_activation():
    x = torch.randn(2, 4, 6, 6)
    assert (GhostModule(4, 8, relu=True)(x) >= 0).all()
    assert (GhostModule(4, 8, relu=False)(x) < 0).any()


def test_gradients_reach_both_branches():
    m = GhostModule(4, 9, kernel_size=3, ratio=3, dw_size=3)
    m(torch.randn(2, 4, 8, 8)).square().sum().backward()
    for conv in (m.primary_conv[0], m.cheap_operation[0]):
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs", [dict(ratio=0), dict(ratio=2.5), dict(dw_size=4), dict(dw_size=0), dict(ratio=True)])
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        GhostModule(4, 8, **kwargs)


def _count_plain_convs(model):
    return sum(is_plain_conv(m) for m in model.modules())


def test_ghostify_torchvision_resnet_keeps_shape_and_replaces_every_eligible_conv():
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    before = _count_plain_convs(model)
    expected_shape = model(x).shape
    ghostify(model, ratio=2, dw_size=3)
    ghosts = [m for m in model.modules() if isinstance(m, GhostModule)]
    assert len(ghosts) == before == 20
    # the only plain convs left are the Ghost modules' own primary convs
    assert _count_plain_convs(model) == len(ghosts)
    assert model.eval()(x).shape == expected_shape


def test_ghostify_keeps_depthwise_and_skipped_convs():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 4, 1))
    ghostify(model, ratio=2, skip=("2",))
    assert isinstance(model[0], GhostModule)
    assert type(model[1]) is nn.Conv2d and type(model[2]) is nn.Conv2d


def test_ghostify_absorbs_following_bn_and_relu_in_sequential():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    ghostify(model, ratio=2)
    assert isinstance(model[0], GhostModule)
    assert isinstance(model[1], nn.Identity) and isinstance(model[2], nn.Identity)
    assert isinstance(model[0].primary_conv[2], nn.ReLU)  # ReLU moved inside, BN not doubled


def test_ghostify_rejects_bad_skip_and_args():
    with pytest.raises(ValueError, match="skip"):
        ghostify(nn.Sequential(nn.Conv2d(3, 8, 3)), ratio=2, skip=("nope",))
    with pytest.raises(ValueError):
        ghostify(nn.Sequential(nn.Conv2d(3, 8, 3)), ratio=2, dw_size=2)


def test_torchvision_ops_import():
    # guards the CPU/CUDA torch-torchvision mismatch ("operator torchvision::nms does not exist")
    import torchvision.ops

    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]
