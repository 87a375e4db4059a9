"""Model families (one per file) and the registry that names them.

The knob declarations (`knobs.py`, no torch) are imported at once; the families and the
registry load on first use (PEP 562), so the command line can build its parser and answer
`--help` without importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

from .knobs import (
    KNOBS,
    LEGACY,
    Knob,
    extras,
    format_assignments,
    parse_assignments,
    varying,
)

_LAZY = {
    **dict.fromkeys(("ghost_resnet56", "ghost_vgg16", "resnet56", "vgg16"), ".cifar"),
    **dict.fromkeys(("CheapOp", "GhostModule", "fuse_rep", "ghostify"), ".ghost"),
    **dict.fromkeys(("GhostBottleneck", "GhostNet", "ghostnet", "ghostnetv2"), ".ghostnet"),
    **dict.fromkeys(("MODELS", "ModelSpec", "build_model", "get_spec", "knob_values", "resolve_args",
                     "resolve_knobs"), ".registry"),
    **dict.fromkeys(("ghost_resnet50", "resnet50"), ".resnet"),
    **dict.fromkeys(("l1_resnet56", "l1_vgg16", "prune_l1"), ".pruned"),
}

__all__ = ["KNOBS", "LEGACY", "Knob", "extras", "format_assignments", "parse_assignments", "varying", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
