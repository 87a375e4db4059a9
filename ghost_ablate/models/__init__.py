"""Model families (one per file) and the registry that names them."""
from .cifar import ghost_resnet56, ghost_vgg16, resnet56, vgg16
from .ghost import CheapOp, GhostModule, fuse_rep, ghostify
from .ghostnet import GhostBottleneck, GhostNet, ghostnet, ghostnetv2
from .knobs import KNOBS, LEGACY, Knob, extras, format_assignments, parse_assignments, varying
from .registry import MODELS, ModelSpec, build_model, get_spec, knob_values, resolve_args, resolve_knobs
from .resnet import ghost_resnet50, resnet50

__all__ = [
    "CheapOp", "GhostModule", "fuse_rep", "ghostify",
    "KNOBS", "LEGACY", "Knob", "extras", "format_assignments", "parse_assignments", "varying",
    "knob_values", "resolve_knobs", "GhostBottleneck", "GhostNet", "ghostnet", "ghostnetv2",
    "vgg16", "ghost_vgg16", "resnet56", "ghost_resnet56", "resnet50", "ghost_resnet50",
    "MODELS", "ModelSpec", "build_model", "get_spec", "resolve_args",
]
