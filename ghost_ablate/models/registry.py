"""One table from model names to builders, with the knobs each one takes.

Every builder is called as `build(ratio=..., dw_size=..., width=..., num_classes=...)`
through `build_model`, which validates the arguments and names the valid choices.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from . import cifar, resnet
from .ghostnet import cifar_ghostnet, ghostnet, ghostnetv2
from .ghost import check_ghost_args


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    input_size: int  # square input side the model is designed for
    num_classes: int  # default: CIFAR-10 or ImageNet
    knobs: frozenset[str] = frozenset()  # subset of {"ratio", "dw_size", "width"}
    widths: tuple[float, ...] = (1.0,)  # the paper's published widths (any width > 0 builds)
    description: str = ""
    baseline: str | None = None  # the plain network a Ghost model is compared against

    @property
    def is_ghost(self) -> bool:
        return "ratio" in self.knobs


MODELS: dict[str, ModelSpec] = {}
DEFAULTS = {"ratio": 2, "dw_size": 3, "width": 1.0}


def register(spec: ModelSpec) -> None:
    MODELS[spec.name] = spec


_GHOST = frozenset({"ratio", "dw_size"})
_GHOST_WIDTH = frozenset({"ratio", "dw_size", "width"})
for _spec in (
    ModelSpec("vgg16", lambda num_classes: cifar.vgg16(num_classes), 32, 10, description="VGG-16 (CIFAR)"),
    ModelSpec("ghost_vgg16", lambda ratio, dw_size, num_classes: cifar.ghost_vgg16(ratio, dw_size, num_classes),
              32, 10, _GHOST, description="Ghost-VGG-16, all 13 convs Ghost", baseline="vgg16"),
    ModelSpec("ghost_vgg16_keep_first",
              lambda ratio, dw_size, num_classes: cifar.ghost_vgg16(ratio, dw_size, num_classes, keep_first=True),
              32, 10, _GHOST, description="Ghost-VGG-16, first conv plain", baseline="vgg16"),
    ModelSpec("resnet56", lambda num_classes: cifar.resnet56(num_classes), 32, 10, description="ResNet-56 (CIFAR)"),
    ModelSpec("ghost_resnet56", lambda ratio, dw_size, num_classes: cifar.ghost_resnet56(ratio, dw_size, num_classes),
              32, 10, _GHOST, description="Ghost-ResNet-56", baseline="resnet56"),
    ModelSpec("cifar_ghostnet", cifar_ghostnet, 32, 10, _GHOST_WIDTH,
              description="GhostNet v1 adapted to 32x32 (stem stride 1)"),
    ModelSpec("ghostnet", ghostnet, 224, 1000, _GHOST_WIDTH, (0.5, 1.0, 1.3), "GhostNet v1"),
    ModelSpec("ghostnetv2", ghostnetv2, 224, 1000, _GHOST_WIDTH, (1.0, 1.3, 1.6), "GhostNetV2"),
    ModelSpec("resnet50", lambda num_classes: resnet.resnet50(num_classes), 224, 1000, description="ResNet-50"),
    ModelSpec("ghost_resnet50", lambda ratio, dw_size, num_classes: resnet.ghost_resnet50(ratio, dw_size, num_classes),
              224, 1000, _GHOST, description="Ghost-ResNet-50", baseline="resnet50"),
):
    register(_spec)


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def resolve_args(name: str, ratio: int | None = None, dw_size: int | None = None,
                 width: float | None = None) -> dict[str, int | float | None]:
    """Validate the knobs for `name`; return {ratio, dw_size, width} with defaults filled, None where n/a."""
    spec = get_spec(name)
    given = {"ratio": ratio, "dw_size": dw_size, "width": width}
    out: dict[str, int | float | None] = {}
    for knob, value in given.items():
        if knob not in spec.knobs:
            no_op = (knob == "ratio" and value == 1) or (knob == "width" and value == 1)
            if value is not None and not no_op:
                takes = ", ".join(sorted(spec.knobs)) or "none of ratio, dw_size, width"
                raise ValueError(f"model {name!r} has no {knob} to set (it takes {takes})")
            out[knob] = None
        else:
            out[knob] = DEFAULTS[knob] if value is None else value
    if out["ratio"] is not None:
        check_ghost_args(out["ratio"], out["dw_size"])
    if out["width"] is not None:
        w = out["width"]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w <= 0:
            raise ValueError(f"width must be a number > 0 (published: {spec.widths}), got {w!r}")
        out["width"] = float(w)
    return out


def build_model(name: str, ratio: int | None = None, dw_size: int | None = None,
                width: float | None = None, num_classes: int | None = None) -> nn.Module:
    """Build a registered model; ValueError naming the valid choices on bad arguments."""
    spec = get_spec(name)
    args = resolve_args(name, ratio, dw_size, width)
    classes = spec.num_classes if num_classes is None else num_classes
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {classes!r}")
    kwargs = {k: v for k, v in args.items() if k in spec.knobs}
    return spec.builder(num_classes=classes, **kwargs)
