"""Filter pruning by the l1 norm (Li et al., "Pruning Filters for Efficient ConvNets", ICLR
2017): the pruning baselines of the GhostNet paper's Table 3, built exactly.

Li et al. rank each conv layer's filters by the sum of their absolute kernel weights and
remove the smallest, layer by layer (the "independent" strategy: each layer's norms come
from the trained network's own weights), then fine-tune. Their CIFAR-10 networks:

- VGG-16-pruned-A: 50% of the filters of conv 1 and convs 8-13 removed, widths
  32, 64, M, 128, 128, M, 256, 256, 256, M, 256, 256, 256, M, 256, 256, 256 (paper, Table 2
  and Sec. 4.1). 5,397,034 params / 206,279,680 MACs here; published 5.4M / 206M, 93.40%.
- ResNet-56-pruned-B: only the first conv of each residual block is pruned (option-A
  shortcuts fix the block outputs), 60% / 30% / 10% of the filters in stages 1 / 2 / 3,
  kept widths floored (6, 22, 57), with the sensitive layers 16, 18, 20, 34, 38 and 54
  skipped (the stem is layer 1, block b's first conv layer 2b). 735,712 params /
  90,907,264 MACs; published 0.73M / 91M, 93.06% (the GhostNet paper lists it at 92.5%).
- ResNet-56-pruned-A: 10% in every stage, layers 16, 20, 38 and 54 skipped: 773,336 params
  / 112,435,840 MACs; published 0.77M / 112M, 93.10%.

The widths, skipped layers and rates agree with the paper and with the public
reimplementation of Liu et al., "Rethinking the Value of Network Pruning" (ICLR 2019),
repository Eric-mingjie/rethinking-network-pruning, files cifar/l1-norm-pruning/vggprune.py
and res56prune.py. Built without weights, these are Li et al.'s "trained from scratch"
variant; `prune_l1` fills them from a trained VGG-16 or ResNet-56.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .cifar import VGG16, CifarResNet

VGG16_PRUNED_A = (32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M", 256, 256, 256)
# variant: (fraction of filters removed per stage, layers left whole)
RESNET56_PRUNING = {"A": ((0.1, 0.1, 0.1), (16, 20, 38, 54)), "B": ((0.6, 0.3, 0.1), (16, 18, 20, 34, 38, 54))}
STAGE_WIDTHS = (16, 32, 64)
BLOCKS_PER_STAGE = 9


def resnet56_mids(variant: str) -> tuple[int, ...]:
    """The inner width of each of the 27 blocks of ResNet-56-pruned-A or -B."""
    rates, skipped = RESNET56_PRUNING[variant]
    mids = []
    for b in range(1, 3 * BLOCKS_PER_STAGE + 1):
        stage = (b - 1) // BLOCKS_PER_STAGE
        width = STAGE_WIDTHS[stage]
        mids.append(width if 2 * b in skipped else math.floor(width * (1 - rates[stage])))
    return tuple(mids)


def l1_vgg16(num_classes: int = 10, init: str = "pruned") -> VGG16:
    """Li et al.'s VGG-16-pruned-A: 5,397,034 params, 206M FLOPs; paper: 5.4M / 206M / 93.4%.
    `init` says where training takes the weights from (`training.train_run`); built, they are random."""
    return VGG16(num_classes, VGG16_PRUNED_A)


def l1_resnet56(num_classes: int = 10, l1_variant: str = "B", init: str = "pruned") -> CifarResNet:
    """Li et al.'s ResNet-56-pruned-B (or -A): 735,712 params, 91M FLOPs; paper: 0.73M / 91M / 92.5%.
    `init`: as for `l1_vgg16`."""
    return CifarResNet(BLOCKS_PER_STAGE, num_classes, resnet56_mids(l1_variant))


def l1_ranking(conv: nn.Conv2d) -> torch.Tensor:
    """Filter indices of `conv` by the l1 norm of their kernel weights, largest first."""
    return conv.weight.detach().abs().sum(dim=(1, 2, 3)).argsort(descending=True, stable=True)


def kept_filters(conv: nn.Conv2d, keep: int) -> torch.Tensor:
    """The `keep` filters of `conv` with the largest l1 norms, in their original order."""
    return l1_ranking(conv)[:keep].sort().values


def _copy_conv(src: nn.Conv2d, dst: nn.Conv2d, out_idx: torch.Tensor, in_idx: torch.Tensor) -> None:
    dst.weight.data.copy_(src.weight.data[out_idx][:, in_idx])


def _copy_bn(src: nn.BatchNorm2d, dst: nn.BatchNorm2d, idx: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).data.copy_(getattr(src, name).data[idx])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _convs_and_bns(seq: nn.Sequential) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    mods = list(seq)
    return [(m, mods[i + 1]) for i, m in enumerate(mods) if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def prune_l1(trained: nn.Module, pruned: nn.Module) -> nn.Module:
    """Fill `pruned` (an `l1_vgg16` or `l1_resnet56`) from `trained` (a VGG-16 or ResNet-56 of the
    same classes): in every pruned layer the filters with the largest l1 norms are kept, with
    their BatchNorm entries and the next layer's matching input channels. Returns `pruned`,
    which then computes what `trained` computes with the removed filters silenced."""
    if isinstance(trained, VGG16) and isinstance(pruned, VGG16):
        previous = torch.arange(3)
        for (conv, bn), (dst, dst_bn) in zip(_convs_and_bns(trained.features), _convs_and_bns(pruned.features),
                                             strict=True):
            keep = kept_filters(conv, dst.out_channels)
            _copy_conv(conv, dst, keep, previous)
            _copy_bn(bn, dst_bn, keep)
            previous = keep
        first, dst_first = trained.classifier[0], pruned.classifier[0]
        dst_first.weight.data.copy_(first.weight.data[:, previous])
        dst_first.bias.data.copy_(first.bias.data)
        pruned.classifier[1:].load_state_dict(trained.classifier[1:].state_dict())
        return pruned
    if isinstance(trained, CifarResNet) and isinstance(pruned, CifarResNet):
        pruned.conv1.load_state_dict(trained.conv1.state_dict())
        pruned.bn1.load_state_dict(trained.bn1.state_dict())
        pruned.fc.load_state_dict(trained.fc.state_dict())
        for block, dst in zip(trained.blocks, pruned.blocks, strict=True):
            keep = kept_filters(block.conv1, dst.conv1.out_channels)
            _copy_conv(block.conv1, dst.conv1, keep, torch.arange(block.conv1.in_channels))
            _copy_bn(block.bn1, dst.bn1, keep)
            _copy_conv(block.conv2, dst.conv2, torch.arange(block.conv2.out_channels), keep)
            dst.bn2.load_state_dict(block.bn2.state_dict())
        return pruned
    raise ValueError(f"prune_l1 takes a trained VGG-16 or ResNet-56 and its pruned counterpart, got "
                     f"{type(trained).__name__} and {type(pruned).__name__}")


def derive_l1(source: nn.Module, built: nn.Module, knobs: dict) -> tuple[nn.Module, str]:
    """`ModelSpec.derive` of Li et al.'s networks: `built` filled from its trained baseline `source`
    by the l1 criterion."""
    return prune_l1(source, built), "l1"
