"""Equal-budget pruning baselines: VGG-16 and ResNet-56 pruned to a Ghost model's FLOPs.

The rows the GhostNet paper lacks: the plain network, trained under our recipe, pruned
globally with torch-pruning (Fang et al., "DepGraph", CVPR 2023) until it costs no more
multiply-accumulates (our fvcore counter, not the library's own, which differs by ~1%) than
the Ghost network at ratio `budget_s`, d=3: 158M for VGG-16 and 65M for ResNet-56 at s=2.
Two criteria rank the channels across all layers at once:

- `l1`: the l1 magnitude of each channel's group (its filter, BatchNorm entry and the next
  layer's input slice; `GroupMagnitudeImportance(p=1)`), normalised per group by the library;
- `bn_scale`: the BatchNorm scale |gamma| of the channel (Liu et al., "Network Slimming",
  ICCV 2017), learned from the data during training.

What is pruned: in VGG-16 the 13 convs' filters (the classifier keeps its 512 hidden units;
its input follows the last conv); in ResNet-56 only the first conv of each residual block.
Stage outputs stay whole, because the option-A shortcut (`F.pad`) is traced as an element-wise
op and pruning the residual stream would couple channels by index into a model whose forward
fails. No layer loses more than `MAX_LAYER_PRUNING` of its filters.

The kept widths depend on the trained weights, so a run's network is pruned from its source at
the start and rebuilt from its own checkpoint's shapes afterwards (`rebuild_like`). Built with no
source (what `count` shows, and what `init: scratch` trains), every prunable layer keeps the same
fraction of its filters, the largest that meets the budget.
"""
from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from ..flops import count_flops
from .cifar import (
    VGG16,
    VGG16_CFG,
    CifarResNet,
    ghost_resnet56,
    ghost_vgg16,
    resnet56,
    vgg16,
)

CRITERIA = ("l1", "bn_scale")
MAX_LAYER_PRUNING = 0.9
STEPS = 200  # pruning steps up to MAX_LAYER_PRUNING of all channels: ~0.5% of the channels, ~1% of the FLOPs each
INPUT_SIZE = 32


@functools.lru_cache(maxsize=None)
def ghost_budget(baseline: str, ratio: int) -> int:
    """FLOPs (MACs, our counter) of the Ghost version of `baseline` at ratio `ratio`, d=3."""

    ghost = ghost_vgg16(ratio, 3) if baseline == "vgg16" else ghost_resnet56(ratio, 3)
    return count_flops(ghost, INPUT_SIZE)


def _importance(criterion: str):  # noqa: ANN202 - a torch_pruning importance
    import torch_pruning as tp  # lazy: an optional or rarely used dependency, loaded on use

    if criterion == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if criterion == "bn_scale":
        return tp.importance.BNScaleImportance()
    raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")


def _kept_whole(model: nn.Module) -> list[nn.Module]:
    """Layers whose outputs are not pruned: the classifier, and ResNet's stem and block outputs."""
    if isinstance(model, VGG16):
        return [m for m in model.classifier if isinstance(m, nn.Linear)]
    return [model.conv1, model.fc, *(b.conv2 for b in model.blocks)]


def _vgg_cfg(conv_widths: list[int]) -> tuple:
    """VGG-16's cfg with these 13 conv widths, its max-pools where they were."""
    convs = iter(conv_widths)
    return tuple(v if v == "M" else next(convs) for v in VGG16_CFG)


def _conv_indices(model: VGG16) -> list[int]:
    return [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]


def widths(model: nn.Module) -> tuple:
    """The architecture of a (pruned) VGG-16 or ResNet-56: VGG's cfg, or ResNet's 27 block mids."""
    if isinstance(model, VGG16):
        return _vgg_cfg([model.features[i].out_channels for i in _conv_indices(model)])
    return tuple(b.conv1.out_channels for b in model.blocks)


def _build(like: nn.Module, num_classes: int, arch: tuple) -> nn.Module:
    """A fresh network of `like`'s class (VGG-16 or ResNet-56) with the architecture `arch` (`widths`)."""
    return VGG16(num_classes, arch) if isinstance(like, VGG16) else CifarResNet(9, num_classes, arch)


def prune_to_budget(trained: nn.Module, budget_flops: int, criterion: str = "l1", uniform: bool = False) -> nn.Module:
    """A copy of `trained` (a VGG-16 or ResNet-56 of `cifar.py`) pruned globally by `criterion` until
    its FLOPs are at most `budget_flops`; `trained` itself is left as it is. `uniform`: the same
    fraction of every prunable layer instead (what a network without trained weights gets)."""

    import torch_pruning as tp  # lazy: an optional or rarely used dependency, loaded on use

    if not isinstance(trained, (VGG16, CifarResNet)):
        raise ValueError(f"prune_to_budget takes a VGG-16 or ResNet-56, got {type(trained).__name__}")
    model = copy.deepcopy(trained).eval()
    num_classes = (model.classifier[-1] if isinstance(model, VGG16) else model.fc).out_features
    pruner = tp.pruner.BasePruner(
        model, torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE), importance=_importance(criterion), global_pruning=not uniform,
        pruning_ratio=MAX_LAYER_PRUNING, max_pruning_ratio=MAX_LAYER_PRUNING, iterative_steps=STEPS,
        ignored_layers=_kept_whole(model))
    for _ in range(STEPS):
        if count_flops(model, INPUT_SIZE) <= budget_flops:
            break
        pruner.step()
    else:
        if count_flops(model, INPUT_SIZE) > budget_flops:
            raise ValueError(f"cannot prune to {budget_flops / 1e6:.0f}M FLOPs with at most "
                             f"{MAX_LAYER_PRUNING:.0%} of each layer's filters removed")
    clean = _build(model, num_classes, widths(model))  # a plain module: no pruning hooks or leftovers
    clean.load_state_dict(model.state_dict())
    return clean


def rebuild_like(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """A network of `model`'s class with the widths the weights `state` were saved with (a budget
    run's checkpoint), so that they load; other models, or weights of another network, are returned
    as they are (loading them then names what does not fit)."""
    try:
        return _rebuilt(model, state)
    except (KeyError, IndexError):
        return model


def _rebuilt(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    if isinstance(model, VGG16):
        arch = _vgg_cfg([state[f"features.{i}.weight"].shape[0] for i in _conv_indices(model)])
        return _build(model, model.classifier[-1].out_features, arch)
    if isinstance(model, CifarResNet):
        arch = tuple(state[f"layer{s}.{b}.conv1.weight"].shape[0] for s in (1, 2, 3) for b in range(9))
        return _build(model, model.fc.out_features, arch)
    return model


@functools.lru_cache(maxsize=16)
def _uniform_widths(baseline: str, budget_s: int) -> tuple:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        plain = vgg16() if baseline == "vgg16" else resnet56()
    return widths(prune_to_budget(plain, ghost_budget(baseline, budget_s), uniform=True))


def budget_vgg16(num_classes: int = 10, criterion: str = "l1", budget_s: int = 2, init: str = "pruned") -> VGG16:
    """VGG-16 pruned to Ghost-VGG-16's FLOPs at s=`budget_s` (158M at s=2; not in the paper). Built,
    its widths are uniform; `training` prunes the trained source globally by `criterion` instead."""
    return VGG16(num_classes, _uniform_widths("vgg16", budget_s))


def budget_resnet56(num_classes: int = 10, criterion: str = "l1", budget_s: int = 2,
                    init: str = "pruned") -> CifarResNet:
    """ResNet-56 with its blocks' first convs pruned globally to Ghost-ResNet-56's FLOPs at
    s=`budget_s` (65M at s=2); widths as for `budget_vgg16`. Not in the paper."""
    return CifarResNet(9, num_classes, _uniform_widths("resnet56", budget_s))


def derive_budget(baseline: str, source: nn.Module, built: nn.Module, knobs: dict) -> tuple[nn.Module, str]:
    """`ModelSpec.derive` of the equal-budget networks: the trained `source` (a `baseline`) pruned
    globally by the run's criterion to the Ghost model's FLOPs at s=budget_s (`built`'s widths are
    not used: pruning chooses them)."""
    budget = ghost_budget(baseline, knobs["budget_s"])
    return prune_to_budget(source, budget, knobs["criterion"]), f"{knobs['criterion']}, global, to {budget / 1e6:.1f}M FLOPs"
