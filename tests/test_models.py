import pytest
import torch
from torch import nn

from ghost_ablate.flops import count_params
from ghost_ablate.models import MODELS, GhostModule, build_model, resolve_args


@pytest.mark.parametrize("name,width,expected", [
    ("vgg16", None, 14_987_722),
    ("resnet56", None, 853_018),
    ("ghostnet", 0.5, 2_587_292),
    ("ghostnet", 1.0, 5_182_508),
    ("ghostnet", 1.3, 7_358_820),
    ("ghostnetv2", 1.0, 6_156_908),
    ("ghostnetv2", 1.3, 8_960_404),
    ("ghostnetv2", 1.6, 12_392_698),
])
def test_exact_parameter_counts(name, width, expected):
    assert count_params(build_model(name, width=width)) == expected


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_runs_forward_and_backward(name):
    spec = MODELS[name]
    size = min(spec.input_size, 64)
    model = build_model(name, num_classes=7)
    y = model(torch.randn(2, 3, size, size))
    assert y.shape == (2, 7)
    y.sum().backward()


def test_ghost_vgg16_has_13_ghost_modules_and_no_double_bn():
    model = build_model("ghost_vgg16", ratio=3, dw_size=5)
    assert sum(isinstance(m, GhostModule) for m in model.modules()) == 13
    outside = [m for m in model.features if isinstance(m, (nn.BatchNorm2d, nn.ReLU))]
    assert outside == []  # every BN and ReLU lives inside a Ghost module
    plain_first = build_model("ghost_vgg16_keep_first")
    assert type(plain_first.features[0]) is nn.Conv2d
    assert sum(isinstance(m, GhostModule) for m in plain_first.modules()) == 12


def test_ghost_resnet56_replaces_block_convs_keeps_stem():
    model = build_model("ghost_resnet56", ratio=4, dw_size=1)
    assert type(model.conv1) is nn.Conv2d
    assert sum(isinstance(m, GhostModule) for m in model.modules()) == 54


# Keys and shapes of the officially released GhostNet 1.0x checkpoint.
GHOSTNET_KEYS = {
    "conv_stem.weight": (16, 3, 3, 3),
    "bn1.running_var": (16,),
    "blocks.0.0.ghost1.primary_conv.0.weight": (8, 16, 1, 1),
    "blocks.0.0.ghost1.cheap_operation.0.weight": (8, 1, 3, 3),
    "blocks.1.0.conv_dw.weight": (48, 1, 3, 3),
    "blocks.1.0.shortcut.2.weight": (24, 16, 1, 1),
    "blocks.3.0.se.conv_reduce.weight": (20, 72, 1, 1),
    "blocks.3.0.se.conv_expand.bias": (72,),
    "blocks.6.4.ghost2.primary_conv.1.weight": (56,),
    "blocks.9.0.conv.weight": (960, 160, 1, 1),
    "blocks.9.0.bn1.weight": (960,),
    "conv_head.weight": (1280, 960, 1, 1),
    "conv_head.bias": (1280,),
    "classifier.weight": (1000, 1280),
}


def test_ghostnet_state_dict_matches_released_layout():
    sd = build_model("ghostnet").state_dict()
    for key, shape in GHOSTNET_KEYS.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any("short_conv" in k for k in sd)
    build_model("ghostnet").load_state_dict(sd, strict=True)


def test_ghostnetv2_dfc_attention_from_third_block():
    model = build_model("ghostnetv2")
    sd = model.state_dict()
    assert not any(k.startswith(("blocks.0.0.ghost1.short_conv", "blocks.1.0.ghost1.short_conv")) for k in sd)
    assert tuple(sd["blocks.2.0.ghost1.short_conv.0.weight"].shape) == (72, 24, 1, 1)
    assert tuple(sd["blocks.2.0.ghost1.short_conv.2.weight"].shape) == (72, 1, 1, 5)
    assert tuple(sd["blocks.2.0.ghost1.short_conv.4.weight"].shape) == (72, 1, 5, 1)
    assert sum(k.endswith("ghost1.short_conv.0.weight") for k in sd) == 14
    assert not any("ghost2.short_conv" in k for k in sd)
    build_model("ghostnetv2").load_state_dict(sd, strict=True)


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="nope"), "valid: .*ghost_vgg16"),
    (dict(name="ghost_vgg16", ratio=0), "ratio"),
    (dict(name="ghost_vgg16", dw_size=2), "dw_size"),
    (dict(name="ghost_vgg16", dw_size=-1), "dw_size"),
    (dict(name="ghostnet", width=0), "width"),
    (dict(name="ghostnet", width=-1.0), "width"),
    (dict(name="vgg16", ratio=3), "takes"),
    (dict(name="vgg16", ratio=2), "takes"),
    (dict(name="resnet56", dw_size=3), "takes"),
    (dict(name="vgg16", num_classes=0), "num_classes"),
])
def test_registry_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)


def test_resolve_args_fills_defaults_and_marks_not_applicable():
    assert resolve_args("ghost_vgg16") == {"ratio": 2, "dw_size": 3, "width": None}
    assert resolve_args("vgg16") == {"ratio": None, "dw_size": None, "width": None}
    assert resolve_args("ghostnet", width=1) == {"ratio": 2, "dw_size": 3, "width": 1.0}
