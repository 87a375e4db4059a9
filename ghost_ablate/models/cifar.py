"""The paper's CIFAR-10 testbeds (Sec. 4.1): VGG-16 and ResNet-56, plain and Ghost.

Published costs (GhostNet paper, Table 3), 32x32 input:
  VGG-16        15.0M params, 313M FLOPs, 93.6% top-1
  Ghost-VGG-16   7.7M params, 158M FLOPs, 93.7% (s=2, d=3)
  ResNet-56     0.85M params, 125M FLOPs, 93.0%
  Ghost-ResNet-56 0.43M params, 63M FLOPs, 92.7% (s=2, d=3)
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .ghost import CheapOp, ghostify

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class VGG16(nn.Module):
    """VGG-16 for CIFAR as in Li et al., "Pruning Filters for Efficient ConvNets".

    13 conv3x3-BN-ReLU layers in one flat `features` Sequential (the first conv is
    `features.0`), four 2x2 max-pools, a final 2x2 average pool down to 1x1, then
    Linear(last width, 512)-BN-ReLU-Linear(512, classes). 14,987,722 parameters with the
    standard widths `cfg`; narrower widths give Li et al.'s pruned networks (`pruned.py`).
    """

    def __init__(self, num_classes: int = 10, cfg: tuple = VGG16_CFG) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(in_ch, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                in_ch = v
        layers.append(nn.AvgPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(in_ch, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class PadShortcut(nn.Module):
    """Option-A shortcut of He et al.: subsample by 2 and zero-pad the new channels. No parameters."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.extra // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, self.extra - pad))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the shortcut, then ReLU; `mid` (default `out_ch`) is the width
    between the two convs, the one filter pruning narrows."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, mid: int | None = None) -> None:
        super().__init__()
        mid = out_ch if mid is None else mid
        self.conv1 = nn.Conv2d(in_ch, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        changes_shape = stride != 1 or in_ch != out_ch
        self.shortcut = PadShortcut(out_ch - in_ch) if changes_shape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-6n+2 for CIFAR (He et al. 2016, Sec. 4.2): stages of 16/32/64 channels.
    `mids`: the inner width of each block in order (default: the stage width)."""

    def __init__(self, blocks_per_stage: int = 9, num_classes: int = 10, mids: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_ch = [], 16
        inner = iter(mids) if mids is not None else None
        for i, width in enumerate((16, 32, 64)):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_ch, width, stride, next(inner) if inner else None))
                in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)

    @property
    def blocks(self) -> list[BasicBlock]:
        """The residual blocks of all three stages, in forward order."""
        return [b for stage in (self.layer1, self.layer2, self.layer3) for b in stage]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def vgg16(num_classes: int = 10) -> VGG16:
    """VGG-16 (CIFAR): 14,987,722 params, 313M FLOPs; paper: 15.0M / 313M / 93.6%."""
    return VGG16(num_classes)


def ghost_vgg16(ratio: int = 2, dw_size: int = 3, num_classes: int = 10, keep_first: bool = False,
                **cheap: Any) -> VGG16:
    """Ghost-VGG-16: all 13 conv-BN-ReLU units become Ghost modules (paper: 7.7M / 158M at s=2).

    `keep_first=True` leaves the first conv (3 -> 64) plain, as the authors later said
    they did; the paper's published costs match replacing it. `cheap` holds the cheap-op knobs.
    """
    return ghostify(vgg16(num_classes), ratio, dw_size, skip=("features.0",) if keep_first else (),
                    cheap=CheapOp.of(cheap))


def resnet56(num_classes: int = 10) -> CifarResNet:
    """ResNet-56 (CIFAR, option-A shortcuts): 853,018 params; paper: 0.85M / 125M / 93.0%."""
    return CifarResNet(9, num_classes)


def ghost_resnet56(ratio: int = 2, dw_size: int = 3, num_classes: int = 10, **cheap: Any) -> CifarResNet:
    """Ghost-ResNet-56: every 3x3 conv of the blocks a Ghost module; the stem stays plain.

    Paper: 0.43M / 63M / 92.7% at s=2. Our faithful build counts about 0.438M / 65M at
    d=3: the cheap depthwise ops and the BN of the ghost maps are not free (README).
    """
    return ghostify(resnet56(num_classes), ratio, dw_size, skip=("conv1",), cheap=CheapOp.of(cheap))
