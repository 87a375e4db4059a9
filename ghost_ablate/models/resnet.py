"""ResNet-50 for ImageNet and its Ghost version (GhostNet paper, Table 4).

Published, 224x224: ResNet-50 25.6M params / 4.1B FLOPs / 75.3%;
Ghost-ResNet-50 s=2 13.0M / 2.2B / 75.0%; s=4 6.5M / 1.2B / 74.1%.
"""
from __future__ import annotations

from typing import Any

from torchvision.models import ResNet
from torchvision.models import resnet50 as tv_resnet50

from .ghost import CheapOp, ghostify


def resnet50(num_classes: int = 1000) -> ResNet:
    """torchvision's ResNet-50 (v1.5: stride on the 3x3 conv), randomly initialised."""
    return tv_resnet50(weights=None, num_classes=num_classes)


def ghost_resnet50(ratio: int = 2, dw_size: int = 3, num_classes: int = 1000, **cheap: Any) -> ResNet:
    """Every conv of the bottlenecks and downsample paths a Ghost module; the 7x7 stem and FC stay.

    The fully connected layer (2.05M params) cannot shrink with s, which is why our
    parameter count lies above the paper's (README).
    """
    return ghostify(resnet50(num_classes), ratio, dw_size, skip=("conv1",), cheap=CheapOp.of(cheap))
