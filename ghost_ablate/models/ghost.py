"""The Ghost module and `ghostify`, its drop-in use in any network.

Han et al., "GhostNet: More Features from Cheap Operations", CVPR 2020, Sec. 3.1:
a convolution with n output maps is replaced by a primary convolution producing
m = ceil(n / s) intrinsic maps and a cheap d x d depthwise operation that derives
s - 1 "ghost" maps from each of them. The two are concatenated and cut to n maps.
Compared with the plain convolution this saves a factor of about s in parameters
and FLOPs (Eq. 4-5 of the paper).

The cheap operation is a knob (`CheapOp`):
  dw    the paper's depthwise d x d conv + BN (+ReLU), the default;
  dfc   dw, with the output multiplied by GhostNetV2's DFC attention computed from the
        module's input (Tang et al., NeurIPS 2022, Sec. 4);
  copy  each ghost map is a copy of its intrinsic map: no parameters, no FLOPs (a control);
  rep   RepGhost-style (Chen et al., 2022): a depthwise conv + BN summed with an identity
        + BN branch; `fuse_rep` folds both into one depthwise conv for deployment, and the
        concat is gone (every output map comes from the depthwise conv).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .knobs import CHEAP_KNOBS


def check_ghost_args(ratio: int, dw_size: int) -> None:
    """Raise ValueError unless ratio is an integer >= 1 and dw_size an odd integer >= 1."""
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
        raise ValueError(f"ratio s must be an integer >= 1, got {ratio!r}")
    if isinstance(dw_size, bool) or not isinstance(dw_size, int) or dw_size < 1 or dw_size % 2 == 0:
        raise ValueError(f"dw_size d must be an odd integer >= 1 (1, 3, 5, 7, ...), got {dw_size!r}")


def _activation(relu: bool) -> nn.Module:
    # An empty Sequential (not Identity) keeps the indices of the released checkpoints.
    return nn.ReLU(inplace=True) if relu else nn.Sequential()


@dataclass(frozen=True)
class CheapOp:
    """Which cheap operation a Ghost module uses, and DFC attention's settings (knobs.py)."""

    cheap_op: str = "dw"
    dfc_kernel: int = 5
    dfc_down: str = "avg"
    dfc_up: str = "nearest"
    dfc_sigmoid: str = "before"

    @classmethod
    def of(cls, knobs: Mapping[str, Any]) -> CheapOp:
        """The cheap-op knobs among `knobs` (others ignored)."""
        return cls(**{k: knobs[k] for k in CHEAP_KNOBS if k in knobs})


DW = CheapOp()
assert tuple(f.name for f in fields(CheapOp)) == CHEAP_KNOBS


class GhostCopies(nn.Module):
    """The `copy` cheap op: each intrinsic map repeated `copies` times, in the order a
    depthwise conv with `groups=intrinsic` would emit its outputs. No parameters."""

    def __init__(self, copies: int) -> None:
        super().__init__()
        self.copies = copies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.copies, dim=1)


class RepDepthwise(nn.Module):
    """RepGhost-style cheap op: BN(depthwise d x d (x)) + BN(identity(x)) (+ReLU), each input
    map giving `per_map` outputs. `fuse()` turns it into one depthwise conv with bias,
    equal in eval mode to float tolerance."""

    def __init__(self, channels: int, per_map: int, dw_size: int, relu: bool) -> None:
        super().__init__()
        out = channels * per_map
        self.per_map = per_map
        self.conv = nn.Conv2d(channels, out, dw_size, 1, dw_size // 2, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(out)
        self.fusion_bn = nn.BatchNorm2d(out)
        self.act = _activation(relu)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.act(self.fused(x))
        identity = x.repeat_interleave(self.per_map, dim=1) if self.per_map > 1 else x
        return self.act(self.bn(self.conv(x)) + self.fusion_bn(identity))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold both branches and their BNs into `self.fused` (eval mode: the BNs' running
        statistics). The identity is a depthwise conv whose kernel is 1 at the centre, so
        torch's own conv-BN fusion folds each branch, and the two sums add up."""
        identity = copy.deepcopy(self.conv)
        identity.weight.zero_()
        centre = self.conv.kernel_size[0] // 2
        identity.weight[:, 0, centre, centre] = 1.0
        fused = fuse_conv_bn_eval(self.conv, self.bn)
        shortcut = fuse_conv_bn_eval(identity, self.fusion_bn)
        fused.weight += shortcut.weight
        fused.bias += shortcut.bias
        self.fused = fused
        del self.conv, self.bn, self.fusion_bn


class GhostModule(nn.Module):
    """Primary conv to ceil(out_ch/s) maps, a cheap op for the rest, concat, slice.

    Attribute names (`primary_conv`, `cheap_operation`, `short_conv`) follow the released
    GhostNet and GhostNetV2 checkpoints. With s = 1 there is no cheap operation (nor
    attention) and the module is a plain conv-BN(-ReLU).

    DFC attention (`cheap.cheap_op == "dfc"`): 2x down-sampling of the input (avg or max),
    a 1x1 conv with the primary conv's stride + BN, depthwise 1 x k + BN, depthwise k x 1 +
    BN, a sigmoid before or after up-sampling (nearest or bilinear) to the output size; the
    module's output is multiplied by it. GhostNetV2's dense conv has the primary conv's
    kernel, which is 1x1 in every GhostNetV2 module; 1x1 is kept for any primary kernel,
    since copying a 3x3 primary would make the attention cost more than the module.
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
        cheap: CheapOp = DW,
    ) -> None:
        super().__init__()
        check_ghost_args(ratio, dw_size)
        if in_ch < 1 or out_ch < 1:
            raise ValueError(f"channels must be >= 1, got in_ch={in_ch}, out_ch={out_ch}")
        if padding is None:
            padding = tuple(k // 2 for k in kernel_size) if isinstance(kernel_size, tuple) else kernel_size // 2
        self.out_ch = out_ch
        self.ratio = ratio
        self.cheap = cheap
        intrinsic = math.ceil(out_ch / ratio)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_ch, intrinsic, kernel_size, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(intrinsic),
            _activation(relu),
        )
        self.cheap_operation: nn.Module | None = None
        if ratio == 1:
            return
        ghosts = intrinsic * (ratio - 1)
        if cheap.cheap_op == "copy":
            self.cheap_operation = GhostCopies(ratio - 1)
        elif cheap.cheap_op == "rep":
            self.cheap_operation = RepDepthwise(intrinsic, ratio, dw_size, relu)
        else:
            self.cheap_operation = nn.Sequential(
                nn.Conv2d(intrinsic, ghosts, dw_size, 1, dw_size // 2, groups=intrinsic, bias=False),
                nn.BatchNorm2d(ghosts),
                _activation(relu),
            )
        if cheap.cheap_op == "dfc":
            k = cheap.dfc_kernel
            self.short_conv = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.Conv2d(out_ch, out_ch, (1, k), 1, (0, k // 2), groups=out_ch, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.Conv2d(out_ch, out_ch, (k, 1), 1, (k // 2, 0), groups=out_ch, bias=False),
                nn.BatchNorm2d(out_ch),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        intrinsic = self.primary_conv(x)
        if self.cheap_operation is None:
            return intrinsic
        if self.cheap.cheap_op == "rep":  # no concat: every output map comes from the cheap op
            out = self.cheap_operation(intrinsic)
        else:
            out = torch.cat([intrinsic, self.cheap_operation(intrinsic)], dim=1)
        out = out if out.shape[1] == self.out_ch else out[:, : self.out_ch]
        return out * self.attention(x, out.shape[-2:]) if self.cheap.cheap_op == "dfc" else out

    def attention(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """DFC attention of input `x`, up-sampled to `size`."""
        pool = F.avg_pool2d if self.cheap.dfc_down == "avg" else F.max_pool2d
        a = self.short_conv(pool(x, 2, 2))
        def up(t: torch.Tensor) -> torch.Tensor:  # bilinear: align_corners False, torch's default
            return F.interpolate(t, size=size, mode=self.cheap.dfc_up)

        return up(torch.sigmoid(a)) if self.cheap.dfc_sigmoid == "before" else torch.sigmoid(up(a))


def fuse_rep(model: nn.Module) -> nn.Module:
    """Fold every RepGhost-style cheap op of `model` (in place, eval mode) into its deploy form."""
    model.eval()
    for module in model.modules():
        if isinstance(module, RepDepthwise) and module.fused is None:
            module.fuse()
    return model


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


def conv_unit(parent: nn.Module, siblings: list[tuple[str, nn.Module]], name: str,
              channels: int) -> tuple[str | None, str | None]:
    """The conv `name`'s unit among its siblings: (its BatchNorm, the ReLU right after that BN),
    each None where absent. A ReLU counts only inside an nn.Sequential, where it applies to this
    output alone (elsewhere it may be shared or applied functionally)."""
    bn = following_bn(siblings, name, channels)
    if bn is None or not isinstance(parent, nn.Sequential):
        return bn, None
    names = [n for n, _ in siblings]
    j = names.index(bn) + 1
    return bn, siblings[j][0] if j < len(siblings) and isinstance(siblings[j][1], nn.ReLU) else None


def ghostify(model: nn.Module, ratio: int, dw_size: int = 3, skip: Iterable[str] = (),
             cheap: CheapOp = DW) -> nn.Module:
    """Replace every plain Conv2d of `model` (in place) by a GhostModule; return the model.

    The Ghost module keeps the conv's kernel, stride, padding and dilation. It carries its
    own BatchNorm, so a BatchNorm2d registered right after the conv is absorbed (replaced
    by Identity) rather than applied twice; inside an nn.Sequential a ReLU right after that
    is absorbed too, and the module applies ReLU to both branches as in GhostNet. Outside
    a Sequential a ReLU may be shared or applied functionally, so it is left in place and
    the module is linear (relu=False). `skip` lists qualified names of convs to keep plain;
    `cheap` picks the cheap operation of every Ghost module.
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
        bn_name, relu_name = conv_unit(parent, siblings, name, conv.out_channels)
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
            cheap=cheap,
        )
        setattr(parent, name, ghost)
        for absorbed in (bn_name, relu_name):
            if absorbed is not None:
                setattr(parent, absorbed, nn.Identity())
    return model
