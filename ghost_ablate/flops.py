"""Parameters and FLOPs in the paper's convention, counted with fvcore.

The GhostNet paper (like most compact-CNN papers) reports FLOPs as the
multiply-accumulates of convolution and fully connected layers. BatchNorm folds into
the preceding conv at inference, and ReLU, pooling, concat, the SE gate's product and
upsampling are treated as free. fvcore counts one "flop" per MAC for conv and linear
layers (the convention we need) but also counts BatchNorm, pooling and upsampling by
default; those handles are replaced here by ones returning 0 (setting a handle to
None does not remove fvcore's default for batch_norm).

Cheap-op variants follow the same convention: `copy` costs nothing; `rep` counts its
depthwise conv (the identity branch is a BN, free, and fuses into the conv); `dfc`
counts the attention's three convs at half resolution, while its pooling, sigmoid,
up-sampling and product are free, as GhostNetV2 counts them.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

with warnings.catch_warnings():  # fvcore's import touches deprecated torch.jit APIs
    warnings.simplefilter("ignore")
    from fvcore.nn import FlopCountAnalysis, flop_count_table

# Ops fvcore counts by default that the paper treats as free.
FREE_OPS = (
    "aten::batch_norm",
    "aten::group_norm",
    "aten::layer_norm",
    "aten::instance_norm",
    "aten::adaptive_avg_pool2d",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
)


def _free(inputs, outputs) -> int:  # noqa: ANN001 - fvcore's handle signature
    return 0


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int  # multiply-accumulates of conv + linear layers, one image


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flop_analysis(model: nn.Module, input_size: int, in_channels: int = 3) -> FlopCountAnalysis:
    """An fvcore analysis of `model` in eval mode on one image, with the paper's handles."""
    model.eval()
    x = torch.zeros(1, in_channels, input_size, input_size, device=next(model.parameters()).device)
    analysis = FlopCountAnalysis(model, x)
    for op in FREE_OPS:
        analysis.set_op_handle(op, _free)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return analysis


def count_flops(model: nn.Module, input_size: int) -> int:
    """Conv + linear multiply-accumulates for one input_size x input_size image (eval mode)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(flop_analysis(model, input_size).total())


def measure(model: nn.Module, input_size: int) -> Cost:
    """Params and FLOPs of `model`. Call before any torch.compile; restores the train/eval mode."""
    was_training = model.training
    try:
        return Cost(count_params(model), count_flops(model, input_size))
    finally:
        model.train(was_training)


def breakdown(model: nn.Module, input_size: int, max_depth: int = 3) -> str:
    """Per-module params and FLOPs as fvcore's table."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = flop_analysis(model, input_size)
        return flop_count_table(analysis, max_depth=max_depth)
