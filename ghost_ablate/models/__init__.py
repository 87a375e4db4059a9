"""Model families (one per file) and the registry that names them."""
from .cifar import ghost_resnet56, ghost_vgg16, resnet56, vgg16
from .ghost import GhostModule, ghostify
from .ghostnet import GhostBottleneck, GhostNet, ghostnet, ghostnetv2
from .registry import MODELS, ModelSpec, build_model, get_spec, resolve_args
from .resnet import ghost_resnet50, resnet50

__all__ = [
    "GhostModule", "ghostify", "GhostBottleneck", "GhostNet", "ghostnet", "ghostnetv2",
    "vgg16", "ghost_vgg16", "resnet56", "ghost_resnet56", "resnet50", "ghost_resnet50",
    "MODELS", "ModelSpec", "build_model", "get_spec", "resolve_args",
]
