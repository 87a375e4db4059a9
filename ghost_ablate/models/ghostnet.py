"""GhostNet (Han et al., CVPR 2020) and GhostNetV2 (Tang et al., NeurIPS 2022) for ImageNet.

Module and parameter names are those of the officially released PyTorch checkpoints
(`conv_stem`, `bn1`, `blocks.{i}.{j}.ghost1.primary_conv.0.weight`, ..., `conv_head`,
`classifier`), so published weights load with `strict=True`.

Published ImageNet results, 224x224 (GhostNet Table 7; GhostNetV2 Table 2):
  GhostNet 0.5x 2.6M params  42M FLOPs 66.2%    GhostNetV2 1.0x  6.1M 167M 75.3%
  GhostNet 1.0x 5.2M params 141M FLOPs 73.9%    GhostNetV2 1.3x  8.9M 269M 76.9%
  GhostNet 1.3x 7.3M params 226M FLOPs 75.7%    GhostNetV2 1.6x 12.3M 399M 77.8%
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .ghost import DW, CheapOp, GhostModule

# One row per Ghost bottleneck: depthwise kernel k, expansion (hidden) width, output
# width, SE ratio, stride. Rows grouped in a stage share an nn.Sequential (`blocks.i`).
GHOSTNET_STAGES: tuple[tuple[tuple[int, int, int, float, int], ...], ...] = (
    ((3, 16, 16, 0.0, 1),),
    ((3, 48, 24, 0.0, 2),),
    ((3, 72, 24, 0.0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((5, 120, 40, 0.25, 1),),
    ((3, 240, 80, 0.0, 2),),
    ((3, 200, 80, 0.0, 1), (3, 184, 80, 0.0, 1), (3, 184, 80, 0.0, 1), (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1)),
    ((5, 672, 160, 0.25, 2),),
    ((5, 960, 160, 0.0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0.0, 1), (5, 960, 160, 0.25, 1)),
)


def make_divisible(value: float, divisor: int = 4) -> int:
    """Round a channel count to a multiple of `divisor`, never losing more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcite(nn.Module):
    """SE block with a hard-sigmoid gate, reduced width rounded to a multiple of 4."""

    def __init__(self, channels: int, se_ratio: float = 0.25) -> None:
        super().__init__()
        reduced = make_divisible(channels * se_ratio, 4)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.conv_expand(self.act1(self.conv_reduce(self.avg_pool(x))))
        return x * F.hardsigmoid(gate)


class GhostBottleneck(nn.Module):
    """Ghost bottleneck (paper Fig. 3): Ghost expand, [stride-2 depthwise], [SE], Ghost project.

    `expand_op` and `project_op` are the cheap operations of the two Ghost modules; GhostNetV2
    gives the expansion module DFC attention (`CheapOp("dfc")`).
    """

    def __init__(
        self,
        in_ch: int,
        mid_ch: int,
        out_ch: int,
        dw_kernel: int = 3,
        stride: int = 1,
        se_ratio: float = 0.0,
        ratio: int = 2,
        dw_size: int = 3,
        expand_op: CheapOp = DW,
        project_op: CheapOp = DW,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.ghost1 = GhostModule(in_ch, mid_ch, ratio=ratio, dw_size=dw_size, relu=True, cheap=expand_op)
        if stride > 1:
            pad = (dw_kernel - 1) // 2
            self.conv_dw = nn.Conv2d(mid_ch, mid_ch, dw_kernel, stride, pad, groups=mid_ch, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_ch)
        self.se = SqueezeExcite(mid_ch, se_ratio) if se_ratio > 0 else None
        self.ghost2 = GhostModule(mid_ch, out_ch, ratio=ratio, dw_size=dw_size, relu=False, cheap=project_op)
        if in_ch == out_ch and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            pad = (dw_kernel - 1) // 2
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, in_ch, dw_kernel, stride, pad, groups=in_ch, bias=False),
                nn.BatchNorm2d(in_ch),
                nn.Conv2d(in_ch, out_ch, 1, bias=False),
                nn.BatchNorm2d(out_ch),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ghost1(x)
        if self.stride > 1:
            out = self.bn_dw(self.conv_dw(out))
        if self.se is not None:
            out = self.se(out)
        return self.ghost2(out) + self.shortcut(x)


class ConvBnAct(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, 1, kernel_size // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


class GhostNet(nn.Module):
    """GhostNet v1, or v2 with `cheap=CheapOp("dfc")`, `dfc_from_block=2`.

    `cheap` is the cheap operation of every Ghost module, except that DFC attention (as in
    GhostNetV2) goes only to the expansion modules of bottlenecks `dfc_from_block` on, the
    others keeping the depthwise op. `stem_stride=1` adapts the network to 32x32 inputs
    (CIFAR): the five stride-2 stages then leave a 2x2 map instead of 1x1 before the global pool.
    """

    def __init__(
        self,
        width: float = 1.0,
        num_classes: int = 1000,
        dropout: float = 0.2,
        ratio: int = 2,
        dw_size: int = 3,
        cheap: CheapOp = DW,
        dfc_from_block: int = 2,
        stem_stride: int = 2,
    ) -> None:
        super().__init__()
        self.dropout = dropout
        in_ch = make_divisible(16 * width, 4)
        self.conv_stem = nn.Conv2d(3, in_ch, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.act1 = nn.ReLU(inplace=True)
        stages, block_id = [], 0
        for stage in GHOSTNET_STAGES:
            blocks = []
            for k, hidden, out, se_ratio, stride in stage:
                out_ch, mid_ch = make_divisible(out * width, 4), make_divisible(hidden * width, 4)
                if cheap.cheap_op == "dfc":
                    expand_op, project_op = (cheap if block_id >= dfc_from_block else DW), DW
                else:
                    expand_op = project_op = cheap
                blocks.append(GhostBottleneck(in_ch, mid_ch, out_ch, k, stride, se_ratio, ratio, dw_size,
                                              expand_op, project_op))
                in_ch, block_id = out_ch, block_id + 1
            stages.append(nn.Sequential(*blocks))
        head_ch = make_divisible(GHOSTNET_STAGES[-1][-1][1] * width, 4)
        stages.append(nn.Sequential(ConvBnAct(in_ch, head_ch, 1)))
        self.blocks = nn.Sequential(*stages)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(head_ch, 1280, 1, 1, 0, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        x = self.act2(self.conv_head(self.global_pool(x)))
        x = torch.flatten(x, 1)
        if self.dropout > 0:
            x = F.dropout(x, p=self.dropout, training=self.training)
        return self.classifier(x)


def ghostnet(width: float = 1.0, num_classes: int = 1000, ratio: int = 2, dw_size: int = 3,
             dfc_from_block: int = 2, dropout: float = 0.2, **cheap: Any) -> GhostNet:
    """GhostNet v1: 0.5x 2,587,292 / 1.0x 5,182,508 / 1.3x 7,358,820 params (1000 classes)."""
    return GhostNet(width, num_classes, dropout, ratio=ratio, dw_size=dw_size, cheap=CheapOp.of(cheap),
                    dfc_from_block=dfc_from_block)


def ghostnetv2(width: float = 1.0, num_classes: int = 1000, ratio: int = 2, dw_size: int = 3,
               dropout: float = 0.2) -> GhostNet:
    """GhostNetV2: 1.0x 6,156,908 / 1.3x 8,960,404 / 1.6x 12,392,698 params (1000 classes)."""
    return GhostNet(width, num_classes, dropout, ratio=ratio, dw_size=dw_size, cheap=CheapOp("dfc"),
                    dfc_from_block=2)


def cifar_ghostnet(width: float = 1.0, num_classes: int = 10, ratio: int = 2, dw_size: int = 3,
                   dfc_from_block: int = 2, dropout: float = 0.2, **cheap: Any) -> GhostNet:
    """GhostNet v1 for 32x32 inputs: stem stride 1, otherwise unchanged (an extra row, not in the paper)."""
    return GhostNet(width, num_classes, dropout, ratio=ratio, dw_size=dw_size, cheap=CheapOp.of(cheap),
                    dfc_from_block=dfc_from_block, stem_stride=1)
