"""The Ghost module and `ghostify`, its drop-in use in any network.

Han et al., "GhostNet: More Features from Cheap Operations", CVPR 2020, Sec. 3.1:
a convolution with n output maps is replaced by a primary convolution producing
m = ceil(n / s) intrinsic maps and a cheap d x d depthwise operation that derives
s - 1 "ghost" maps from each of them. The two are concatenated and cut to n maps.
Compared with the plain convolution this saves a factor of about s in parameters
and FLOPs (Eq. 4-5 of the paper).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
from torch import nn


def check_ghost_args(ratio: int, dw_size: int) -> None:
    """Raise ValueError unless ratio is an integer >= 1 and dw_size an odd integer >= 1."""
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
        raise ValueError(f"ratio s must be an integer >= 1, got {ratio!r}")
    if isinstance(dw_size, bool) or not isinstance(dw_size, int) or dw_size < 1 or dw_size % 2 == 0:
        raise ValueError(f"dw_size d must be an odd integer >= 1 (1, 3, 5, 7, ...), got {dw_size!r}")


def _activation(relu: bool) -> nn.Module:
    # An empty Sequential (not Identity) keeps the indices of the released checkpoints.
    return nn.ReLU(inplace=True) if relu else nn.Sequential()


class GhostModule(nn.Module):
    """Primary conv to ceil(out_ch/s) maps, depthwise d x d cheap op for the rest, concat, slice.

    Attribute names (`primary_conv`, `cheap_operation`) follow the released GhostNet
    checkpoints. With s = 1 there is no cheap operation and the module is a plain
    conv-BN(-ReLU).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int | tuple[int, int] = 1,
        ratio: int = 2,
        dw_size: int = 3,
        stride: int | tuple[int, int] = 1,
        relu: bool = True,
        padding: int | tuple[int, int] | None = None,
        dilation: int | tuple[int, int] = 1,
    ) -> None:
        super().__init__()
        check_ghost_args(ratio, dw_size)
        if in_ch < 1 or out_ch < 1:
            raise ValueError(f"channels must be >= 1, got in_ch={in_ch}, out_ch={out_ch}")
        if padding is None:
            padding = tuple(k // 2 for k in kernel_size) if isinstance(kernel_size, tuple) else kernel_size // 2
        self.out_ch = out_ch
        self.ratio = ratio
        intrinsic = math.ceil(out_ch / ratio)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_ch, intrinsic, kernel_size, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(intrinsic),
            _activation(relu),
        )
        self.cheap_operation: nn.Sequential | None = None
        if ratio > 1:
            ghosts = intrinsic * (ratio - 1)
            self.cheap_operation = nn.Sequential(
                nn.Conv2d(intrinsic, ghosts, dw_size, 1, dw_size // 2, groups=intrinsic, bias=False),
                nn.BatchNorm2d(ghosts),
                _activation(relu),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        intrinsic = self.primary_conv(x)
        if self.cheap_operation is None:
            return intrinsic
        out = torch.cat([intrinsic, self.cheap_operation(intrinsic)], dim=1)
        return out if out.shape[1] == self.out_ch else out[:, : self.out_ch]


def is_plain_conv(module: nn.Module) -> bool:
    """A dense (groups=1) zero-padded Conv2d: what a Ghost module can stand in for."""
    return (
        type(module) is nn.Conv2d
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def conv_siblings(model: nn.Module) -> Iterator[tuple[nn.Module, str, str, list[tuple[str, nn.Module]]]]:
    """Yield (parent, parent_name, child_name, siblings) for every child of every module.

    `siblings` is the parent's children in registration order, so callers can look at
    what comes right after a conv (its BatchNorm, its ReLU). Snapshot first: callers
    replace children while iterating.
    """
    for parent_name, parent in list(model.named_modules()):
        siblings = list(parent.named_children())
        for name, _ in siblings:
            yield parent, parent_name, name, siblings


def following_bn(siblings: list[tuple[str, nn.Module]], name: str, channels: int) -> str | None:
    """Name of the BatchNorm registered right after `name` with `channels` features, if any."""
    names = [n for n, _ in siblings]
    i = names.index(name)
    if i + 1 < len(siblings):
        nxt_name, nxt = siblings[i + 1]
        if isinstance(nxt, (nn.BatchNorm2d, nn.BatchNorm1d)) and nxt.num_features == channels:
            return nxt_name
    return None


def ghostify(model: nn.Module, ratio: int, dw_size: int = 3, skip: Iterable[str] = ()) -> nn.Module:
    """Replace every plain Conv2d of `model` (in place) by a GhostModule; return the model.

    The Ghost module keeps the conv's kernel, stride, padding and dilation. It carries its
    own BatchNorm, so a BatchNorm2d registered right after the conv is absorbed (replaced
    by Identity) rather than applied twice; inside an nn.Sequential a ReLU right after that
    is absorbed too, and the module applies ReLU to both branches as in GhostNet. Outside
    a Sequential a ReLU may be shared or applied functionally, so it is left in place and
    the module is linear (relu=False). `skip` lists qualified names of convs to keep plain.
    """
    check_ghost_args(ratio, dw_size)
    skip = set(skip)
    known = {name for name, _ in model.named_modules()}
    unknown = skip - known
    if unknown:
        raise ValueError(f"skip names no module of the model: {sorted(unknown)}")
    for parent, parent_name, name, siblings in conv_siblings(model):
        conv = getattr(parent, name)
        qualified = f"{parent_name}.{name}" if parent_name else name
        if qualified in skip or not is_plain_conv(conv):
            continue
        bn_name = following_bn(siblings, name, conv.out_channels)
        relu_name = None
        if bn_name is not None and isinstance(parent, nn.Sequential):
            names = [n for n, _ in siblings]
            j = names.index(bn_name) + 1
            if j < len(siblings) and isinstance(siblings[j][1], nn.ReLU):
                relu_name = siblings[j][0]
        ghost = GhostModule(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            ratio=ratio,
            dw_size=dw_size,
            stride=conv.stride,
            relu=relu_name is not None,
            padding=conv.padding,
            dilation=conv.dilation,
        )
        setattr(parent, name, ghost)
        for absorbed in (bn_name, relu_name):
            if absorbed is not None:
                setattr(parent, absorbed, nn.Identity())
    return model
