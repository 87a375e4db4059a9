"""How models are named and coloured in tables and plots."""
from __future__ import annotations

from typing import Any

from ..records import missing

NAMES = {"vgg16": "VGG-16", "ghost_vgg16": "Ghost-VGG-16", "ghost_vgg16_keep_first": "Ghost-VGG-16 (plain 1st)",
         "resnet56": "ResNet-56", "ghost_resnet56": "Ghost-ResNet-56", "cifar_ghostnet": "GhostNet (CIFAR)",
         "ghostnet": "GhostNet", "ghostnetv2": "GhostNetV2", "resnet50": "ResNet-50", "ghost_resnet50": "Ghost-ResNet-50",
         "l1_vgg16": "l1-VGG-16", "l1_resnet56": "l1-ResNet-56", "budget_vgg16": "budget-VGG-16",
         "budget_resnet56": "budget-ResNet-56", "mobilenetv1": "MobileNetV1",
         "mobilenetv2": "MobileNetV2", "shufflenetv2": "ShuffleNetV2", "mobilenetv3_small": "MobileNetV3-Small",
         "mobilenetv3_large": "MobileNetV3-Large", "mnasnet_a1": "MnasNet-A1"}


def knob_label(knobs: Any) -> str:
    """' rep', ' dfc k=7': the knobs beyond s, d and width that differ from their defaults."""
    parts = [str(v) if name == "cheap_op" else f"{name.removeprefix('dfc_')}={v}" for name, v in (knobs or ())]
    return "".join(f" {p}" for p in parts)


def short_label(model: str, ratio: Any, dw_size: Any, width: Any = None, knobs: Any = ()) -> str:
    """What tells a point apart within its network family: s/d, the width, or the baseline's name,
    then any other knob set away from its default."""
    if model in ("cifar_ghostnet", "ghostnet", "ghostnetv2") or (missing(ratio) and not missing(width)):
        return f"{NAMES[model]} {(None if missing(width) else width) or 1:g}x{knob_label(knobs)}"
    if missing(ratio):
        return NAMES.get(model, model) + knob_label(knobs)
    return f"s={int(ratio)} d={int(dw_size)}{knob_label(knobs)}"


def full_label(model: str, ratio: Any, dw_size: Any, width: Any = None, knobs: Any = ()) -> str:
    label = short_label(model, ratio, dw_size, width, knobs)
    return label if label.startswith(NAMES.get(model, model)) else f"{NAMES.get(model, model)} {label}"


def _family(model: str) -> str:
    for family, members in FAMILIES.items():
        if model in members:
            return family
    return "other"


FAMILIES = {"VGG-16": ("vgg16", "ghost_vgg16", "ghost_vgg16_keep_first", "l1_vgg16", "budget_vgg16"),
            "ResNet-56": ("resnet56", "ghost_resnet56", "l1_resnet56", "budget_resnet56"),
            "GhostNet": ("cifar_ghostnet", "ghostnet"), "GhostNetV2": ("ghostnetv2",),
            "ResNet-50": ("resnet50", "ghost_resnet50")}
COLORS = {"VGG-16": "tab:blue", "ResNet-56": "tab:orange", "GhostNet": "tab:green", "GhostNetV2": "tab:purple",
          "ResNet-50": "tab:red", "other": "tab:gray"}
# Marker per kind of model (`ModelSpec.kind`): Ghost, plain baseline and pruned baseline apart.
MARKERS = {"ghost": "o", "plain": "s", "pruned": "^"}
KIND_NAMES = {"ghost": "Ghost", "plain": "plain network", "pruned": "pruned (l1 or equal budget)"}


def marker(model: str) -> str:
    from ..models import MODELS

    return MARKERS[MODELS[model].kind] if model in MODELS else "D"
