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

import functools
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .cache import JsonCache
from .models import LEGACY, MODELS, build_model, extras, resolve_knobs
from .paper import KNOWN_GAPS, PaperRow, distinct_models, lookup

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


def relative_diff(ours: float, paper: float | None) -> float | None:
    """(ours - paper) / paper, or None where the paper gives no figure."""
    if paper is None or paper == 0:
        return None
    return (ours - paper) / paper


@functools.lru_cache(maxsize=None)
def config_cost(model: str, ratio: int | None, dw_size: int | None, width: float | None,
                knobs: tuple[tuple[str, Any], ...] = (), dataset: str | None = None) -> Cost:
    """Cost of a resolved configuration (`knobs`: the other knobs, as `RunConfig.knobs`) at the
    model's own input size and classes, or at those of `dataset` (`data.DATASETS`: what a run on it
    computes, e.g. an ImageNet model trained on CIFAR-10 at 32 px): counted once per code version
    and kept in the user's cache folder (see `cache.py`), and once per process in memory."""
    size, classes = MODELS[model].input_size, None
    if dataset is not None:
        from .data import get_dataset

        declared = get_dataset(dataset)
        size, classes = declared.input_size, declared.num_classes
    disk = JsonCache("costs")
    key = disk.key(model, ratio, dw_size, width, *disk.knob_parts(knobs), *((size, classes) if dataset else ()))
    hit = disk.get(key)
    if _is_cost(hit):
        return Cost(**hit)
    cost = measure(build_model(model, ratio, dw_size, width, num_classes=classes, **dict(knobs)), size)
    disk.put(key, asdict(cost))
    return cost


def _is_cost(entry: Any) -> bool:
    return isinstance(entry, dict) and set(entry) == {"params", "flops"}


def _resolved(model: str, ratio: int | None, dw_size: int | None, width: float | None,
              knobs: dict[str, Any] | None) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...]]:
    """(ratio, dw_size, width with defaults filled in, the other non-default knobs) of a configuration."""
    resolved = resolve_knobs(model, ratio, dw_size, width, **(knobs or {}))
    return {k: resolved[k] for k in LEGACY}, extras(resolved)


def is_counted(model: str, ratio: int | None = None, dw_size: int | None = None, width: float | None = None,
               knobs: dict[str, Any] | None = None) -> bool:
    """Whether `config_cost` of this configuration would come from a cache (no counting)."""
    args, other = _resolved(model, ratio, dw_size, width, knobs)
    disk = JsonCache("costs")
    return _is_cost(disk.get(disk.key(model, *args.values(), *disk.knob_parts(other))))


def cost_record(model: str, ratio: int | None = None, dw_size: int | None = None,
                width: float | None = None, knobs: dict[str, Any] | None = None) -> dict:
    """Our params/FLOPs for one configuration beside the paper's (the `count` row); `knobs`
    sets any other declared knob. The paper's figures only where no other knob is set."""
    args, other = _resolved(model, ratio, dw_size, width, knobs)
    size = MODELS[model].input_size
    cost = config_cost(model, args["ratio"], args["dw_size"], args["width"], other)
    ref: PaperRow | None = None if other else lookup(model, args["ratio"], args["dw_size"], args["width"])
    paper_params = round(ref.params_m * 1e6) if ref and ref.params_m is not None else None
    paper_flops = round(ref.flops_m * 1e6) if ref and ref.flops_m is not None else None
    return {
        "model": model, **args, "knobs": dict(other), "input_size": size,
        "params": cost.params, "flops": cost.flops,
        "paper_params": paper_params, "paper_flops": paper_flops,
        "params_diff": relative_diff(cost.params, paper_params),
        "flops_diff": relative_diff(cost.flops, paper_flops),
        "note": KNOWN_GAPS.get(ref.label, "") if ref else "",
    }


def paper_configs() -> list[tuple]:
    """(model, s, d, width) of every distinct paper row, plus the plain-first-conv Ghost-VGG-16."""
    configs = [r.key for r in distinct_models()]
    configs.insert(configs.index(("ghost_vgg16", 2, 3, None)) + 1, ("ghost_vgg16_keep_first", 2, 3, None))
    return configs


def paper_cost_records(progress: bool | None = None) -> list[dict]:
    """One `cost_record` per paper configuration (`paper_configs`), with progress on stderr
    (`progress.track`; False: none). Cached costs need none: progress is shown only for counting."""
    from .progress import track

    configs = paper_configs()
    show = progress if progress is not None else not all(is_counted(*c) for c in configs)
    return [cost_record(*c) for c in track(configs, "counting params and FLOPs", "model", show=show,
                                           label=lambda c: c[0])]
