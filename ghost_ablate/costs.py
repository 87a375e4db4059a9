"""The costs of configured runs and of the paper's rows: params and FLOPs counted once per
configuration (`flops.py` counts them, in the paper's convention) and cached, beside the
paper's own figures."""
from __future__ import annotations

import functools
from dataclasses import asdict
from typing import Any

from .cache import JsonCache
from .data import get_dataset
from .flops import Cost, measure
from .models import LEGACY, MODELS, build_model, extras, resolve_knobs
from .paper import KNOWN_GAPS, PaperRow, distinct_models, lookup
from .progress import track


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

    configs = paper_configs()
    show = progress if progress is not None else not all(is_counted(*c) for c in configs)
    return [cost_record(*c) for c in track(configs, "counting params and FLOPs", "model", show=show,
                                           label=lambda c: c[0])]
