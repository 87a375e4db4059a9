"""How models are named, grouped and coloured in tables and plots: all of it read from the model
specs (`ModelSpec.label`, `.family`, `.kind`), so a newly registered model is named and drawn
without a line here."""
from __future__ import annotations

from typing import Any

from .models import MODELS
from .records import missing

# tab10, in the order the families first appear in the registry (VGG-16 blue, ResNet-56 orange, ...)
PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan")
OTHER_COLOR = "tab:gray"  # a model no spec names (a record from another version)
# Marker per kind of model (`ModelSpec.kind`): Ghost, plain baseline and pruned baseline apart.
MARKERS = {"ghost": "o", "plain": "s", "pruned": "^"}
KIND_NAMES = {"ghost": "Ghost", "plain": "plain network", "pruned": "pruned (l1 or equal budget)"}


def name(model: str) -> str:
    """'Ghost-VGG-16': the spec's label, or the registry name of a model no spec declares."""
    return MODELS[model].label if model in MODELS else model


def family(model: str) -> str:
    """The family a model is drawn with (its panel and colour); 'other' for an unknown model."""
    return MODELS[model].family if model in MODELS else "other"


def families() -> list[str]:
    """Every declared family, in registry order."""
    return list(dict.fromkeys(spec.family for spec in MODELS.values()))


def color(model: str) -> str:
    known = families()
    fam = family(model)
    return PALETTE[known.index(fam) % len(PALETTE)] if fam in known else OTHER_COLOR


def marker(model: str) -> str:
    return MARKERS[MODELS[model].kind] if model in MODELS else "D"


def knob_label(knobs: Any) -> str:
    """' rep', ' dfc k=7': the knobs beyond s, d and width that differ from their defaults."""
    parts = [str(v) if knob == "cheap_op" else f"{knob.removeprefix('dfc_')}={v}" for knob, v in (knobs or ())]
    return "".join(f" {p}" for p in parts)


def short_label(model: str, ratio: Any, dw_size: Any, width: Any = None, knobs: Any = ()) -> str:
    """What tells a point apart within its family: the width of a network sized by width
    (GhostNet 1.3x), s/d of a Ghost model, or the network's name; then any other knob set away
    from its default."""
    widths = model in MODELS and "width" in MODELS[model].knobs
    if widths or (missing(ratio) and not missing(width)):
        return f"{name(model)} {(None if missing(width) else width) or 1:g}x{knob_label(knobs)}"
    if missing(ratio):
        return name(model) + knob_label(knobs)
    return f"s={int(ratio)} d={int(dw_size)}{knob_label(knobs)}"


def full_label(model: str, ratio: Any, dw_size: Any, width: Any = None, knobs: Any = ()) -> str:
    label = short_label(model, ratio, dw_size, width, knobs)
    return label if label.startswith(name(model)) else f"{name(model)} {label}"
