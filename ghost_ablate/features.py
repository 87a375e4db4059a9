"""The paper's evidence beyond its tables: feature maps and their redundancy.

GhostNet rests on an observation (Sec. 3.1, Fig. 1): a trained CNN's feature maps hold
near-copies ("ghosts") of each other that a cheap linear operation could produce. This
module makes that measurable for any trained plain or Ghost network, without editing the
models: feature maps are captured with forward hooks on named modules.

- `conv_units`: the network's conv units, in order: each Ghost module, and each plain conv
  together with the BatchNorm and ReLU right after it (its output is taken after them, so
  plain and Ghost units compare like for like).
- `redundancy`: for every map of a unit, its most similar other map (cosine similarity of
  the two maps over a batch of test images), then the best d x d depthwise linear map
  (d*d weights and a bias) from that partner to the map, fitted in closed form by least
  squares (`torch.linalg.lstsq`), for d = 1, 3, 5, 7. The error is the normalised MSE,
  mean squared residual / variance of the map (1 - R^2), so layers compare. A map is a
  "ghost" when its partner reconstructs it to within a threshold (default 0.1, R^2 >= 0.9).
  Maps that are zero on the whole batch (dead after ReLU) are counted apart.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import safe_load
from .data import get_dataset
from .errors import UserError
from .labels import full_label
from .models import LEGACY, MODELS, build_model, extras
from .models.budget import rebuild_like
from .models.ghost import GhostModule, conv_unit, is_plain_conv

KERNELS = (1, 3, 5, 7)
GHOST_THRESHOLD = 0.1  # normalised MSE under which a map counts as a ghost of its partner
DEAD_VARIANCE = 1e-12


class FeatureError(UserError):
    """Bad input to featuremaps/redundancy; the message names what was wrong and what is valid."""


# ---- loading a trained network ---------------------------------------------------------------

@dataclass
class Trained:
    model: nn.Module
    name: str  # registry name
    knobs: dict[str, Any]  # ratio, dw_size, width
    label: str  # what figures and tables call it
    source: str


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Lightning checkpoint's state_dict holds the network under `model.`; a plain one does not."""
    if state and all(k.startswith("model.") for k in state):
        return {k[len("model."):]: v for k, v in state.items()}
    return state


def fit_widths(net: nn.Module, model: str, state: Any) -> nn.Module:
    """`net` rebuilt with the widths of the weights `state` (a Lightning or plain state_dict) where
    the model's widths come from pruning its source (`models/budget.py`); `net` itself otherwise."""
    if MODELS[model].shaped_by_source and isinstance(state, dict):
        return rebuild_like(net, _strip_prefix(state))
    return net


def _load_state(model: nn.Module, state: Any, where: str) -> None:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FeatureError(f"{where}: not a state_dict (a mapping of parameter names to tensors)")
    result = model.load_state_dict(_strip_prefix(state), strict=False)
    problems = [*(f"missing {k}" for k in result.missing_keys[:2]), *(f"unexpected {k}" for k in
                                                                       result.unexpected_keys[:2])]
    if problems:
        raise FeatureError(f"{where}: does not fit the model ({len(result.missing_keys)} missing, "
                           f"{len(result.unexpected_keys)} unexpected keys, e.g. {', '.join(problems)})")


def _torch_load(path: Path) -> Any:
    """The file's contents through `checkpoints.safe_load` (tensors and plain values only); any
    failure is one FeatureError line."""

    try:
        return safe_load(path)
    except UserError as err:
        raise FeatureError(str(err)) from None


def load_trained(source: str | Path | None = None, weights: str | Path | None = None, model: str | None = None,
                 ratio: int | None = None, dw_size: int | None = None, width: float | None = None,
                 knobs: dict[str, Any] | None = None) -> Trained:
    """A trained network from a run folder, a Lightning checkpoint, or a state_dict with its model name."""

    if weights is not None:
        if model is None:
            raise FeatureError("--weights needs --model NAME (and its --ratio/--dw-size/--width)")
        path = Path(weights)
        if not path.is_file():
            raise FeatureError(f"{path}: no such weights file")
        values = {"ratio": ratio, "dw_size": dw_size, "width": width, **(knobs or {})}
        net = build_model(model, **values)
        state = _torch_load(path)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        net = fit_widths(net, model, state)
        _load_state(net, state, str(path))
        return Trained(net.eval(), model, values, full_label(model, ratio, dw_size, width, extras(values)), str(path))
    if source is None:
        raise FeatureError("name a run folder or a checkpoint, or give --weights FILE --model NAME")
    path = Path(source)
    if path.is_dir():
        ckpt = path / "last.ckpt"
        if not ckpt.is_file():
            raise FeatureError(f"{path}: no last.ckpt in this run folder (checkpoints are not committed; train "
                               f"the run, or pass --weights FILE --model NAME)")
        path = ckpt
    elif not path.is_file():
        raise FeatureError(f"{path}: no such run folder or checkpoint")
    ckpt = _torch_load(path)
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hp or "model" not in hp:
        raise FeatureError(f"{path}: not a ghost-ablate Lightning checkpoint (no hyper_parameters); for a plain "
                           f"state_dict use --weights FILE --model NAME")
    values = {**{k: hp.get(k) for k in LEGACY}, **(hp.get("knobs") or {})}
    net = build_model(hp["model"], **values, num_classes=hp.get("num_classes"))
    net = fit_widths(net, hp["model"], ckpt.get("state_dict"))
    _load_state(net, ckpt.get("state_dict"), str(path))
    label = full_label(hp["model"], values["ratio"], values["dw_size"], values["width"], extras(values))
    return Trained(net.eval(), hp["model"], values, label, str(path))


# ---- conv units and hooks ---------------------------------------------------------------------

def conv_units(model: nn.Module) -> list[str]:
    """Names of the modules whose outputs are the network's conv units, in forward order."""
    units, inside_ghost = [], set()
    for name, module in model.named_modules():
        if any(name.startswith(g + ".") for g in inside_ghost):
            continue
        if isinstance(module, GhostModule):
            units.append(name)
            inside_ghost.add(name)
            continue
        for child_name, child in module.named_children():
            if not is_plain_conv(child):
                continue
            bn, relu = conv_unit(module, list(module.named_children()), child_name, child.out_channels)
            last = relu or bn or child_name
            units.append(f"{name}.{last}" if name else last)
    return units


def resolve_layer(model: nn.Module, layer: str | int) -> str:
    """A unit by 1-based position ("2": the second conv unit) or by module name."""
    units = conv_units(model)
    if isinstance(layer, int) or str(layer).isdigit():
        i = int(layer)
        if not 1 <= i <= len(units):
            raise FeatureError(f"layer {i}: the network has conv units 1..{len(units)}")
        return units[i - 1]
    if str(layer) not in dict(model.named_modules()):
        raise FeatureError(f"no layer named {layer!r}; conv units: {', '.join(units)} (or their positions 1.."
                           f"{len(units)})")
    return str(layer)


@torch.inference_mode()
def capture(model: nn.Module, layers: Sequence[str], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs of the named modules for `images`, through forward hooks (the model is unchanged)."""
    modules = dict(model.named_modules())
    found: dict[str, torch.Tensor] = {}
    handles = [modules[name].register_forward_hook(
        lambda mod, args, out, name=name: found.__setitem__(name, out.detach().float().clone()))
        for name in layers]
    try:
        model.eval()(images)
    finally:
        for h in handles:
            h.remove()
    return found


def ghost_sources(module: nn.Module) -> list[int] | None:
    """For a Ghost module's output channels: the intrinsic map each one comes from (its own
    index for intrinsic maps). None if `module` is not a Ghost module."""
    if not isinstance(module, GhostModule):
        return None
    intrinsic = module.primary_conv[0].out_channels
    if module.cheap.cheap_op == "rep":  # no intrinsic map is output: each gives `ratio` rep maps
        return [c // module.ratio for c in range(module.out_ch)]
    per = max(module.ratio - 1, 1)
    return [c if c < intrinsic else (c - intrinsic) // per for c in range(module.out_ch)]


# ---- redundancy --------------------------------------------------------------------------------

def most_similar(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For maps (B, C, H, W): each map's most cosine-similar other map over the batch, and the similarity."""
    flat = maps.transpose(0, 1).reshape(maps.shape[1], -1)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    sim = unit @ unit.T
    sim.fill_diagonal_(-2.0)
    best, partner = sim.max(dim=1)
    return partner, best


def fit_depthwise(source: torch.Tensor, target: torch.Tensor, d: int) -> tuple[torch.Tensor, float, float]:
    """Least-squares d x d filter and bias mapping `source` (B, H, W) to `target` (B, H, W), zero padded.

    Returns (weights d x d, bias, normalised MSE = mean residual^2 / variance of target).
    """
    patches = F.unfold(source[:, None].double(), d, padding=d // 2)  # (B, d*d, H*W)
    a = torch.cat([patches.transpose(1, 2).reshape(-1, d * d), torch.ones(patches.shape[0] * patches.shape[2], 1,
                                                                         dtype=torch.float64)], dim=1)
    b = target.double().reshape(-1, 1)
    solution = torch.linalg.lstsq(a, b, driver="gelsd").solution
    residual = b - a @ solution
    var = b.var(unbiased=False).item()
    nmse = float("nan") if var < DEAD_VARIANCE else residual.pow(2).mean().item() / var
    return solution[:-1, 0].reshape(d, d).float(), float(solution[-1, 0]), nmse


@dataclass(frozen=True)
class MapFit:
    channel: int
    partner: int
    similarity: float
    nmse: dict[int, float]  # d -> normalised MSE (nan for a dead map)


def layer_redundancy(maps: torch.Tensor, kernels: Sequence[int] = KERNELS) -> list[MapFit]:
    """Per map of one layer (B, C, H, W): its partner and the fit error for each d."""
    partner, sim = most_similar(maps)
    fits = []
    for c in range(maps.shape[1]):
        p = int(partner[c])
        nmse = {d: fit_depthwise(maps[:, p], maps[:, c], d)[2] for d in kernels}
        fits.append(MapFit(c, p, float(sim[c]), nmse))
    return fits


def summarize_layer(fits: list[MapFit], threshold: float = GHOST_THRESHOLD) -> dict[str, Any]:
    """Dead maps, mean normalised MSE and ghost share (of the live maps) for each d."""
    live = [f for f in fits if not any(v != v for v in f.nmse.values())]
    row: dict[str, Any] = {"channels": len(fits), "dead": len(fits) - len(live)}
    for d in (fits[0].nmse if fits else {}):
        errors = [f.nmse[d] for f in live]
        row[f"nmse_d{d}"] = sum(errors) / len(errors) if errors else None
        row[f"ghost_share_d{d}"] = sum(e <= threshold for e in errors) / len(errors) if errors else None
    return row


def redundancy_table(trained: Trained, images: torch.Tensor, kernels: Sequence[int] = KERNELS,
                     threshold: float = GHOST_THRESHOLD) -> tuple[list[dict[str, Any]], dict[str, list[MapFit]]]:
    """Layer-by-layer redundancy of every conv unit of a trained network on `images`."""
    units = conv_units(trained.model)
    maps = capture(trained.model, units, images)
    rows, fits = [], {}
    for i, unit in enumerate(units, 1):
        fits[unit] = layer_redundancy(maps[unit], kernels)
        rows.append({"network": trained.label, "unit": i, "layer": unit, **summarize_layer(fits[unit], threshold)})
    return rows, fits


def top_pairs(fits: list[MapFit], n: int = 4) -> list[MapFit]:
    """The `n` most similar live pairs of a layer (the paper's toy experiment picks such pairs),
    each unordered pair once."""
    live = [f for f in fits if not any(v != v for v in f.nmse.values())]
    chosen, seen = [], set()
    for f in sorted(live, key=lambda f: (-f.similarity, f.channel)):
        pair = frozenset((f.channel, f.partner))
        if pair not in seen:
            seen.add(pair)
            chosen.append(f)
    return chosen[:n]


# ---- data ------------------------------------------------------------------------------------

def test_images(data_dir: str | Path | None, count: int, first: int = 0, dataset: str | None = None) -> torch.Tensor:
    """`count` test images of the data set `dataset` (default CIFAR-10) in `data_dir` (default its
    declared folder) from `first` on, normalised as in training."""

    declared = get_dataset(dataset)
    if declared.test_images is None:
        raise FeatureError(f"{declared.title} is not held in memory; feature maps take a CIFAR-format data set")
    images, _ = declared.test_images(declared.folder(data_dir))
    if not 0 <= first < len(images):
        raise FeatureError(f"image {first}: the test set has images 0..{len(images) - 1}")
    return declared.normalize(images[first:first + count])
