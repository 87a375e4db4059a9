"""Figures and tables of the paper's evidence beyond its tables (see `features.py`): the
feature maps of one conv unit, the ghost share per layer, and the toy experiment."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from .. import features
from ..data import DataError, get_dataset
from ..features import (
    GHOST_THRESHOLD,
    KERNELS,
    FeatureError,
    MapFit,
    Trained,
    capture,
    ghost_sources,
    redundancy_table,
    resolve_layer,
    top_pairs,
)
from ..formats import UnsafeFile, read_bounded
from ..records import missing, row_key, write_atomic
from .markdown import md_table
from .plots import save_figure

MAX_PANELS = 32  # maps drawn per figure: enough to see the pattern, few enough to read


def plot_feature_maps(trained: Trained, layer: str | int, image: Any, out: Path, stem: str) -> list[Path]:
    """The maps of one conv unit for one image. For a Ghost module, ghost maps are drawn beside
    the intrinsic map each one is made from, and the two kinds are marked apart."""

    name = resolve_layer(trained.model, layer)
    maps = capture(trained.model, [name], image)[name][0]
    sources = ghost_sources(dict(trained.model.named_modules())[name])
    if sources is None:
        pairs = [(c, None) for c in range(min(len(maps), MAX_PANELS))]
        cols = 8
    else:
        intrinsic = sum(1 for c, s in enumerate(sources) if c == s)
        ghosts = [(sources[c], c) for c in range(intrinsic, len(sources))]
        pairs = ghosts[: MAX_PANELS // 2]
        cols = 8  # four (intrinsic, ghost) pairs per row
    shown = [c for pair in pairs for c in pair if c is not None]
    vmax = float(maps[shown].abs().max()) or 1.0
    vmin = 0.0 if float(maps[shown].min()) >= 0 else -vmax
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows + 0.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    image_ax = None
    for ax, c in zip(axes.flat, shown):
        image_ax = ax.imshow(maps[c].numpy(), cmap="viridis", vmin=vmin, vmax=vmax)
        if sources is None:
            ax.set_title(f"map {c}", fontsize=7)
        elif c == sources[c]:
            ax.set_title(f"intrinsic {c}", fontsize=7, color="tab:blue")
        else:
            ax.set_title(f"ghost {c} (of {sources[c]})", fontsize=7, color="tab:red")
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:red")
    kind = ("plain conv unit" if sources is None else
            f"Ghost module: intrinsic maps (blue) beside the ghost maps made from them (red); "
            f"{len(sources)} maps, {intrinsic} intrinsic")
    fig.suptitle(f"{trained.label}, layer {name}: {kind}\nfirst {len(shown)} of {len(maps)} maps, one test image, "
                 f"shared colour scale", fontsize=9)
    fig.colorbar(image_ax, ax=axes.ravel().tolist(), shrink=0.6, label="activation")
    return save_figure(fig, out, stem)


def plot_ghost_share(rows: pd.DataFrame, out: Path, d: int = 3, threshold: float = GHOST_THRESHOLD) -> list[Path]:
    """Ghost share per conv unit, one line per network."""

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for network, part in rows.groupby("network", sort=False):
        axes[0].plot(part["unit"], 100 * part[f"ghost_share_d{d}"], "o-", label=network)
        axes[1].plot(part["unit"], part[f"nmse_d{d}"], "o-", label=network)
    axes[0].set_ylabel(f"maps reconstructed by another map (%)\n(normalised MSE <= {threshold:g}, d={d})")
    axes[1].set_ylabel(f"mean normalised MSE (d={d})")
    for ax in axes:
        ax.set_xlabel("conv unit (forward order)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("Ghost share per layer")
    axes[1].set_title("How well the most similar map reconstructs each map")
    return save_figure(fig, out, "ghost_share")


def toy_table(fits: list[MapFit], network: str, layer: str, n: int = 4) -> pd.DataFrame:
    """The paper's toy experiment in its layout: for the most similar pairs of a layer, the
    error of the best d x d depthwise map from one map of the pair to the other, per d."""
    rows = [{"network": network, "layer": layer, "pair": f"{f.partner} -> {f.channel}",
             "cosine similarity": round(f.similarity, 3),
             **{f"d={d}": f"{f.nmse[d]:.2e}" for d in f.nmse}} for f in top_pairs(fits, n)]
    return pd.DataFrame(rows)


def redundancy_outputs(networks: list[Trained], images: Any, out: Path, toy_unit: int = 2,
                       threshold: float = GHOST_THRESHOLD) -> tuple[list[Path], str]:
    """CSV, markdown and plot of the redundancy of each network, and the toy-experiment table
    of unit `toy_unit`; returns the files and the markdown."""

    all_rows, toys = [], []
    for trained in networks:
        rows, fits = redundancy_table(trained, images, threshold=threshold)
        all_rows += rows
        unit = rows[min(toy_unit, len(rows)) - 1]["layer"]
        toys.append(toy_table(fits[unit], trained.label, unit))
    table = pd.DataFrame(all_rows)
    toy = pd.concat(toys, ignore_index=True)
    write_atomic(out / "redundancy.csv", table.to_csv(index=False, float_format="%.4g"))
    write_atomic(out / "toy_experiment.csv", toy.to_csv(index=False))
    paths = [out / "redundancy.csv", out / "toy_experiment.csv", *plot_ghost_share(table, out, threshold=threshold)]
    shown = table[["network", "unit", "layer", "channels", "dead", *(f"ghost_share_d{d}" for d in KERNELS),
                   "nmse_d3"]].copy()
    for col in [c for c in shown if c.startswith("ghost_share")]:
        shown[col] = shown[col].map(lambda v: "" if v is None or v != v else f"{100 * v:.0f}%")
    shown["nmse_d3"] = shown["nmse_d3"].map(lambda v: "" if v is None or v != v else f"{v:.3f}")
    md = "\n".join([
        f"Each map's most similar other map in the same unit (cosine similarity over {len(images)} test images) "
        f"is fitted to it with the best d x d depthwise filter and a bias (closed-form least squares). Ghost "
        f"share: the live maps reconstructed with normalised MSE (residual / variance) <= {threshold:g}; dead "
        f"maps (zero on every image) are counted apart.", "",
        md_table(shown), "\nCSV: [redundancy.csv](redundancy.csv)", "",
        "### Toy experiment (the paper's Table 1 layout): normalised MSE of the most similar pairs, by d", "",
        md_table(toy), "\nCSV: [toy_experiment.csv](toy_experiment.csv)", "",
        "![ghost share per layer](ghost_share.png) ([SVG](ghost_share.svg))", ""])
    return paths, md


EVIDENCE_MD = "evidence.md"
PAIR = (("vgg16", None, None, None, ()), ("ghost_vgg16", 2, 3, None, ()))  # the paper's feature-map figure: layer 2


def previous_evidence(previous: Path, title: str) -> str | None:
    """The evidence section an earlier report wrote into `previous`, carried by content: a regular
    file of that folder (never a link), at most 256 KB, starting with the section's title and holding
    no remote link, image or HTML (so nothing else can be pasted into a report through it)."""

    try:
        data = read_bounded(previous / EVIDENCE_MD, previous, 256 * 1024)
    except UnsafeFile:
        return None
    if data is None or (previous / EVIDENCE_MD).is_symlink():
        return None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    if not text.startswith(title) or "://" in text or re.search(r"<[A-Za-z/!?]", text):
        return None
    return text


def evidence_section(runs: pd.DataFrame, results_dir: Path, out: Path, previous: Path | None = None,
                     data_dir: Path | None = None, compute: bool = True) -> tuple[list[Path], str]:
    """The report's evidence section: computed from the checkpoints of finished VGG-16 and
    Ghost-VGG-16 (s=2, d=3) runs where they are on this machine, with test images from
    `data_dir` when it holds the data those runs were trained on (by fingerprint: a path in a
    record is never followed); else the section an earlier report wrote into `previous`
    (checkpoints are never committed); else what to run. Files go into `out`."""

    previous = previous or out
    title = "## The paper's evidence: ghost feature maps and their redundancy"
    chosen = []
    for key in PAIR:
        match = runs[(runs["status"] == "finished")
                     & runs.apply(lambda r: row_key(r) == key, axis=1)].sort_values(["seed", "run_id"])
        found = [r for _, r in match.iterrows() if (results_dir / "runs" / r["run_id"] / "last.ckpt").is_file()]
        chosen.append(found[0] if found else None)
    reason = None
    if not compute:
        reason = "skipped (--no-evidence)"
    elif any(r is not None and not missing(r.get("limit_train_batches")) for r in chosen):
        reason = "skipped: these are smoke runs (a few batches per epoch), whose feature maps show nothing"
    elif any(r is None for r in chosen):
        reason = "no checkpoints of finished VGG-16 and Ghost-VGG-16 (s=2, d=3) runs here"
    elif data_dir is None:
        reason = "no --data-dir given for the test images"
    if reason is None:
        try:
            wanted = {r["data_fingerprint"] for r in chosen}
            dataset = chosen[0].get("dataset")
            seen = get_dataset(dataset).fingerprint(data_dir)
            if wanted != {seen}:
                raise DataError(f"{data_dir} holds data {seen}, the runs were trained on {', '.join(map(str, wanted))}")
            networks = [features.load_trained(results_dir / "runs" / r["run_id"]) for r in chosen]
            image = features.test_images(data_dir, 1, dataset=dataset)
            images = features.test_images(data_dir, 32, dataset=dataset)
        except (FeatureError, DataError) as err:
            return [], f"{title}\n\nNot computed: {err}\n"
        paths = []
        figures = []
        for net, r in zip(networks, chosen):
            stem = f"feature_maps_{r['model']}"
            paths += plot_feature_maps(net, 2, image, out, stem)
            figures.append(f"![{net.label}, 2nd conv unit]({stem}.png)")
        more, md = redundancy_outputs(networks, images, out)
        runs_used = ", ".join(f"`{r['run_id']}`" for r in chosen)
        text = "\n".join([title, "", f"From the checkpoints of {runs_used}, on the test images of "
                           f"`{Path(data_dir).name}`. The 2nd conv unit of each network for test image 0 (the "
                           f"paper's feature-map figure):", "", *figures, "", md])
        write_atomic(out / EVIDENCE_MD, text)
        return [*paths, *more, out / EVIDENCE_MD], text
    if kept := previous_evidence(previous, title):
        return [], kept
    return [], (f"{title}\n\nNot computed ({reason}). Needs finished runs of VGG-16 and Ghost-VGG-16 (s=2, d=3) "
                f"with their checkpoints on this machine and `--data-dir` with their data: run `make demo` (or "
                f"`make sweep-cifar`) and then `make report`, or point `ghost-ablate featuremaps` and "
                f"`ghost-ablate redundancy` at any trained run.\n")
