"""The mobile networks GhostNet is compared against on ImageNet (Han et al. 2020, Table 7),
built so that `count` and the ImageNet cost table measure them beside the paper's numbers.

torchvision builds MobileNetV2 (widths 0.35 / 0.6 / 1.0) and ShuffleNetV2 (0.5 / 1.0 / 1.5).
timm builds MobileNetV3 Small 0.75, Large 0.75 and Large 1.0 (torchvision's `width_mult`
also shrinks the last layers, which the paper's numbers do not) and MnasNet-A1 (torchvision's
`mnasnet1_0` is the B1 network). MobileNetV1 is short enough to define here (Howard et al.
2017, Table 1; 0.5x: 1.3M params, 149M MACs at 224x224). ShuffleNetV1, FE-Net, FBNet-B and
ProxylessNAS have no maintained builder in either library: `paper.PUBLISHED_ONLY` says so.

Every builder takes the width the paper lists; any other is a ValueError naming the valid ones.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

# (output channels, stride) of MobileNetV1's 13 depthwise-separable layers after the stem
_V1_LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *((512, 1),) * 5, (1024, 2), (1024, 1))


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class MobileNetV1(nn.Module):
    """Stem 3x3 conv (stride 2), 13 depthwise 3x3 + pointwise 1x1 pairs, global pool, classifier."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        c = int(32 * width)
        layers = _conv_bn(3, c, 3, 2)
        for out, stride in _V1_LAYERS:
            out = int(out * width)
            layers += _conv_bn(c, c, 3, stride, groups=c) + _conv_bn(c, out, 1, 1)
            c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _by_width(name: str, builders: dict[float, Callable[..., nn.Module]], width: float) -> Callable[..., nn.Module]:
    if width not in builders:
        raise ValueError(f"{name} is built at width {', '.join(f'{w:g}' for w in builders)}, got {width:g}")
    return builders[width]


def mobilenet_v1(num_classes: int = 1000, width: float = 0.5) -> nn.Module:
    _by_width("mobilenetv1", {0.5: None, 0.75: None, 1.0: None}, width)
    return MobileNetV1(num_classes, width)


def mobilenet_v2(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    from torchvision.models import mobilenet_v2 as build  # lazy: loaded only on the path that needs it

    _by_width("mobilenetv2", {0.35: None, 0.6: None, 1.0: None}, width)
    return build(num_classes=num_classes, width_mult=width)


def shufflenet_v2(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    from torchvision import models  # lazy: loaded only on the path that needs it

    return _by_width("shufflenetv2", {0.5: models.shufflenet_v2_x0_5, 1.0: models.shufflenet_v2_x1_0,
                                      1.5: models.shufflenet_v2_x1_5}, width)(num_classes=num_classes)


def _timm(variant: str, num_classes: int) -> nn.Module:
    import timm  # lazy: an optional or rarely used dependency, loaded on use

    return timm.create_model(variant, pretrained=False, num_classes=num_classes)


def mobilenet_v3_small(num_classes: int = 1000, width: float = 0.75) -> nn.Module:
    _by_width("mobilenetv3_small", {0.75: None, 1.0: None}, width)
    return _timm(f"mobilenetv3_small_{round(width * 100):03d}", num_classes)


def mobilenet_v3_large(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    _by_width("mobilenetv3_large", {0.75: None, 1.0: None}, width)
    return _timm(f"mobilenetv3_large_{round(width * 100):03d}", num_classes)


def mnasnet_a1(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    _by_width("mnasnet_a1", {1.0: None}, width)
    return _timm("semnasnet_100", num_classes)  # timm's name for MnasNet-A1 (it maps mnasnet_a1 to it)
