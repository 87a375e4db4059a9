"""Deployment form: BatchNorm folded into the preceding conv/linear layers, and ONNX export."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from .models.ghost import conv_siblings, following_bn


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with every BatchNorm that directly follows a conv or
    linear layer (registered right after it) folded into that layer's weights.

    Works inside Ghost modules (both branches), Ghost bottlenecks, DFC attention, torchvision
    ResNets and timm's BN-with-activation layers; outputs match the original to float tolerance.
    """
    folded = copy.deepcopy(model).eval()
    for parent, _, name, siblings in conv_siblings(folded):
        layer = getattr(parent, name)
        if type(layer) is nn.Conv2d:
            bn_name = following_bn(siblings, name, layer.out_channels)
            fuse = fuse_conv_bn_eval
        elif type(layer) is nn.Linear:
            bn_name = following_bn(siblings, name, layer.out_features)
            fuse = fuse_linear_bn_eval
        else:
            continue
        if bn_name is None or not isinstance(getattr(parent, bn_name), nn.modules.batchnorm._BatchNorm):
            continue
        bn = getattr(parent, bn_name)
        setattr(parent, name, fuse(layer, bn))
        # a BN with its activation inside (timm's BatchNormAct2d: drop, then act) keeps them
        setattr(parent, bn_name, nn.Sequential(*bn.children()) if any(True for _ in bn.children()) else nn.Identity())
    return folded


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def export_onnx(model: nn.Module, path: str | Path, input_size: int, opset: int = 17) -> Path:
    """Export with a dynamic batch dimension (input `images`, output `logits`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dummy = torch.randn(1, 3, input_size, input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
    return path


def check_onnx(model: nn.Module, path: str | Path, input_size: int, batch: int = 2) -> float:
    """Max absolute difference between onnxruntime and PyTorch outputs on random input."""
    import onnxruntime as ort  # lazy: an optional or rarely used dependency, loaded on use

    x = torch.randn(batch, 3, input_size, input_size)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"images": x.numpy()})
    return float(np.abs(got - expected).max())
