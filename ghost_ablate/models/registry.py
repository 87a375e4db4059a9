"""One table from model names to builders, with the knobs each one takes.

Every builder is called as `build(num_classes=..., **knobs)` through `build_model`, with
exactly the knobs its spec declares (knobs.py), validated and with defaults filled;
errors name the valid choices.
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from . import budget, cifar, mobile, pruned, resnet
from .ghostnet import cifar_ghostnet, ghostnet, ghostnetv2
from .knobs import CHEAP_KNOBS, KNOBS, LEGACY, Knob, unknown_knob


# (trained source network, the network as built, resolved knobs) -> (network to train, what the record says)
Derivation = Callable[[nn.Module, nn.Module, dict[str, Any]], tuple[nn.Module, str]]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    input_size: int  # square input side the model is designed for
    num_classes: int  # default: CIFAR-10 or ImageNet
    knobs: tuple[str, ...] = ()  # names of the declared knobs (knobs.KNOBS) it takes, in order
    widths: tuple[float, ...] = (1.0,)  # the paper's published widths (any width > 0 builds)
    description: str = ""
    baseline: str | None = None  # the plain network a Ghost model is compared against
    shaped_by_source: bool = False  # widths come from pruning its trained source (models/budget.py)
    label: str = ""  # its name in tables and plots (default: the registry name)
    family: str = ""  # the plot panel and colour it shares (default: its baseline's family, else its label)
    # How it is made from a trained `baseline` run (a pruned network). Every model can also start
    # from a finished run of its own (`finetune`). Sweep and training ask `derivation` which
    # applies; nothing outside the spec branches on model names.
    derive: Derivation | None = None

    @property
    def is_ghost(self) -> bool:
        return "ratio" in self.knobs

    @property
    def kind(self) -> str:
        """"ghost" (takes a ratio s), "pruned" (a plain network with filters removed: it has a
        baseline but no ratio) or "plain"; plots give each kind its own marker."""
        return "ghost" if self.is_ghost else "pruned" if self.baseline else "plain"

    def declared(self) -> list[Knob]:
        return [KNOBS[k] for k in self.knobs]


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add `spec` to MODELS, its label and family filled in; a baseline must be registered first."""
    unknown = [k for k in spec.knobs if k not in KNOBS]
    if unknown:
        raise unknown_knob(unknown[0], KNOBS)
    if spec.baseline is not None and spec.baseline not in MODELS:
        raise ValueError(f"{spec.name}: baseline {spec.baseline!r} is not registered (register it first)")
    label = spec.label or spec.name
    family = spec.family or (MODELS[spec.baseline].family if spec.baseline else label)
    MODELS[spec.name] = replace(spec, label=label, family=family)
    return MODELS[spec.name]


_GHOST = ("ratio", "dw_size", *CHEAP_KNOBS)
_GHOSTNET = ("ratio", "dw_size", "width", *CHEAP_KNOBS, "dfc_from_block", "dropout")
_PRUNED = ("criterion", "budget_s", "init")
_MOBILE = "GhostNet"  # the family Table 7 compares the mobile networks with: drawn in GhostNet's panel
for _spec in (
    ModelSpec("vgg16", lambda num_classes: cifar.vgg16(num_classes), 32, 10, description="VGG-16 (CIFAR)",
              label="VGG-16"),
    ModelSpec("ghost_vgg16", cifar.ghost_vgg16, 32, 10, _GHOST, description="Ghost-VGG-16, all 13 convs Ghost",
              baseline="vgg16", label="Ghost-VGG-16"),
    ModelSpec("ghost_vgg16_keep_first", lambda **kw: cifar.ghost_vgg16(keep_first=True, **kw), 32, 10, _GHOST,
              description="Ghost-VGG-16, first conv plain", baseline="vgg16", label="Ghost-VGG-16 (plain 1st)"),
    ModelSpec("resnet56", lambda num_classes: cifar.resnet56(num_classes), 32, 10, description="ResNet-56 (CIFAR)",
              label="ResNet-56"),
    ModelSpec("ghost_resnet56", cifar.ghost_resnet56, 32, 10, _GHOST, description="Ghost-ResNet-56",
              baseline="resnet56", label="Ghost-ResNet-56"),
    ModelSpec("l1_vgg16", pruned.l1_vgg16, 32, 10, ("init",), description="VGG-16-pruned-A (Li et al., l1 filter "
              "pruning)", baseline="vgg16", label="l1-VGG-16", derive=pruned.derive_l1),
    ModelSpec("l1_resnet56", pruned.l1_resnet56, 32, 10, ("l1_variant", "init"),
              description="ResNet-56-pruned-B or -A (Li et al., l1 filter pruning)", baseline="resnet56",
              label="l1-ResNet-56", derive=pruned.derive_l1),
    ModelSpec("budget_vgg16", budget.budget_vgg16, 32, 10, _PRUNED, baseline="vgg16", shaped_by_source=True,
              description="VGG-16 pruned globally to Ghost-VGG-16's FLOPs (torch-pruning)", label="budget-VGG-16",
              derive=functools.partial(budget.derive_budget, "vgg16")),
    ModelSpec("budget_resnet56", budget.budget_resnet56, 32, 10, _PRUNED, baseline="resnet56", shaped_by_source=True,
              description="ResNet-56 pruned globally to Ghost-ResNet-56's FLOPs (torch-pruning)",
              label="budget-ResNet-56", derive=functools.partial(budget.derive_budget, "resnet56")),
    ModelSpec("cifar_ghostnet", cifar_ghostnet, 32, 10, _GHOSTNET,
              description="GhostNet v1 adapted to 32x32 (stem stride 1)", label="GhostNet (CIFAR)", family="GhostNet"),
    ModelSpec("ghostnet", ghostnet, 224, 1000, _GHOSTNET, (0.5, 1.0, 1.3), "GhostNet v1", label="GhostNet"),
    ModelSpec("ghostnetv2", ghostnetv2, 224, 1000, ("ratio", "dw_size", "width", "dropout"), (1.0, 1.3, 1.6),
              "GhostNetV2", label="GhostNetV2"),
    ModelSpec("resnet50", lambda num_classes: resnet.resnet50(num_classes), 224, 1000, description="ResNet-50",
              label="ResNet-50"),
    ModelSpec("mobilenetv1", mobile.mobilenet_v1, 224, 1000, ("width",), (0.5,), "MobileNetV1 (defined here)",
              label="MobileNetV1", family=_MOBILE),
    ModelSpec("mobilenetv2", mobile.mobilenet_v2, 224, 1000, ("width",), (0.35, 0.6, 1.0), "MobileNetV2 (torchvision)",
              label="MobileNetV2", family=_MOBILE),
    ModelSpec("shufflenetv2", mobile.shufflenet_v2, 224, 1000, ("width",), (0.5, 1.0, 1.5),
              "ShuffleNetV2 (torchvision)", label="ShuffleNetV2", family=_MOBILE),
    ModelSpec("mobilenetv3_small", mobile.mobilenet_v3_small, 224, 1000, ("width",), (0.75,),
              "MobileNetV3-Small (timm)", label="MobileNetV3-Small", family=_MOBILE),
    ModelSpec("mobilenetv3_large", mobile.mobilenet_v3_large, 224, 1000, ("width",), (0.75, 1.0),
              "MobileNetV3-Large (timm)", label="MobileNetV3-Large", family=_MOBILE),
    ModelSpec("mnasnet_a1", mobile.mnasnet_a1, 224, 1000, ("width",), (1.0,), "MnasNet-A1 (timm)",
              label="MnasNet-A1", family=_MOBILE),
    ModelSpec("ghost_resnet50", resnet.ghost_resnet50, 224, 1000, _GHOST, description="Ghost-ResNet-50",
              baseline="resnet50", label="Ghost-ResNet-50"),
):
    register(_spec)


def finetune(source: nn.Module, built: nn.Module, knobs: dict[str, Any]) -> tuple[nn.Module, str]:
    """How any model starts from a finished run of its own: that run's network, as trained."""
    return copy.deepcopy(source), "fine-tuned"


def derivation(name: str, source: str) -> Derivation:
    """How model `name` is made from a trained run of model `source`: its spec's `derive` from its
    baseline, or `finetune` from itself; ValueError naming what it can start from otherwise."""
    spec = get_spec(name)
    if source == spec.baseline and spec.derive is not None:
        return spec.derive
    if source == name:
        return finetune
    valid = " or ".join(repr(m) for m in (name, spec.baseline if spec.derive else None) if m)
    raise ValueError(f"{name} starts from a run of {valid} (fine-tuned{', or pruned' if spec.derive else ''}), "
                     f"not of {source!r}")


def starts_from_baseline(name: str, knobs: Mapping[str, Any]) -> bool:
    """Whether a run of `name` with these knobs needs a source run when none is named: a network
    derived from its baseline, unless `init: scratch` trains it from random weights."""
    spec = get_spec(name)
    return spec.derive is not None and knobs.get("init", "pruned") == "pruned"


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def _no_op(knob: Knob, value: Any) -> bool:
    """A value that changes nothing on a model without the knob: s=1, width 1, a later knob's default."""
    if value is None or (knob.name in ("ratio", "width") and value == 1):
        return True
    return knob.name not in LEGACY and value == knob.default


def resolve_knobs(name: str, ratio: Any = None, dw_size: Any = None, width: Any = None,
                  **knobs: Any) -> dict[str, Any]:
    """Validate the knobs for model `name`; return ratio, dw_size and width (None where the model
    has none) and every other knob it declares, defaults filled. ValueError names what is valid."""
    spec = get_spec(name)
    given = {"ratio": ratio, "dw_size": dw_size, "width": width, **knobs}
    for knob in given:
        if knob not in KNOBS:
            raise unknown_knob(knob, spec.knobs or KNOBS)
    out: dict[str, Any] = {k: None for k in LEGACY}
    for knob, value in given.items():
        if knob in spec.knobs:
            continue
        if not _no_op(KNOBS[knob], value):
            takes = ", ".join(spec.knobs) or "no knobs"
            raise ValueError(f"model {name!r} has no {knob} to set (it takes {takes})")
    for k in spec.declared():
        value = given.get(k.name)
        out[k.name] = k.default if value is None else k.coerce(value)
    for k in spec.declared():  # a knob set away from its default where it has no effect is a mistake
        if k.inert(out) and given.get(k.name) is not None and out[k.name] != k.default:
            other, effective = k.applies_when
            raise ValueError(f"{k.name} applies only with {other} in {', '.join(effective)} "
                             f"(here {other}={out[other]})")
    return out


def resolve_args(name: str, ratio: Any = None, dw_size: Any = None, width: Any = None) -> dict[str, Any]:
    """`resolve_knobs` restricted to ratio, dw_size and width (the fields a run config keeps apart)."""
    resolved = resolve_knobs(name, ratio, dw_size, width)
    return {k: resolved[k] for k in LEGACY}


def knob_values(name: str, stored: Mapping[str, Any]) -> dict[str, Any]:
    """Every knob's value for a stored config (legacy fields plus a `knobs` mapping, as records
    keep them): declared defaults filled; None for knobs the model lacks (or an unknown model)
    and for knobs without effect in this config (the DFC knobs of a `dw` model)."""
    extra = dict(stored.get("knobs") or {})
    spec = MODELS.get(name)
    values = {}
    for k in KNOBS.values():
        value = stored.get(k.name) if k.name in LEGACY else extra.get(k.name)
        if value is None and spec is not None and k.name in spec.knobs:
            value = k.default
        values[k.name] = value
    return {knob: None if KNOBS[knob].inert(values) else value for knob, value in values.items()}


def build_model(name: str, ratio: Any = None, dw_size: Any = None, width: Any = None,
                num_classes: int | None = None, **knobs: Any) -> nn.Module:
    """Build a registered model; ValueError naming the valid choices on bad arguments."""
    spec = get_spec(name)
    resolved = resolve_knobs(name, ratio, dw_size, width, **knobs)
    classes = spec.num_classes if num_classes is None else num_classes
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {classes!r}")
    return spec.builder(num_classes=classes, **{k: resolved[k] for k in spec.knobs})
