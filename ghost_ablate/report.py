"""Run records -> the paper's tables (CSV + markdown) and plots.

Everything is rebuilt from `results/runs/*/result.json` (and `results/bench.csv` where it
exists); the paper's numbers come from `paper.py`. The table functions are pure
(DataFrames in, DataFrames out) so they are tested without any training.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from . import paper
from .config import load_profile
from .costs import cost_record
from .errors import UserError
from .models import MODELS
from .records import config_key as key_of
from .records import flatten_record, missing, read_records, write_atomic

KEY = ("model", "ratio", "dw_size", "width")
CSV_NAMES = {"table1_dw_size": "table1_dw_size.csv", "table2_ratio": "table2_ratio.csv",
             "table3_cifar10": "table3_cifar10.csv"}
TABLE_COLUMNS = ["table", "label", "model", "s", "d", "width", "params_m", "flops_m", "top1_mean", "top1_std",
                 "n_seeds", "top1_best_mean", "paper_params_m", "paper_flops_m", "paper_top1",
                 "params_diff_pct", "flops_diff_pct", "top1_diff", "status"]
PLOT_FORMATS = ("png", "svg")
FULL_TRAIN_SIZE = 50_000


class ReportError(UserError):
    """Nothing (or nothing usable) to report; the message says what to run."""


def _none(v: Any) -> Any:
    return None if missing(v) else v


def load_runs(results_dir: str | Path, profile: str | None = None) -> pd.DataFrame:
    """One row per run record of one profile; ReportError if there are none."""
    runs_dir = Path(results_dir) / "runs"
    records = read_records(runs_dir)
    if not records:
        raise ReportError(f"no run records under {runs_dir}; run `make sweep-cifar` first")
    runs = pd.DataFrame([flatten_record(r) for r in records])
    for col in ("params", "flops", "final_test_acc", "best_test_acc", "device", "train_size", "test_size",
                "data_dir", "history"):  # hand-made or partial records may lack some fields
        if col not in runs:
            runs[col] = None
    runs["history"] = runs["history"].map(lambda h: h if isinstance(h, list) else [])
    profiles = sorted(runs["profile"].dropna().unique())
    if profile is None:
        if len(profiles) > 1:
            raise ReportError(f"{runs_dir} holds runs of several profiles ({', '.join(profiles)}); "
                              f"choose one with --profile")
        return runs
    if profile not in profiles:
        raise ReportError(f"no runs of profile {profile!r} under {runs_dir}; found: {', '.join(profiles)}")
    return runs[runs["profile"] == profile].reset_index(drop=True)


def aggregate(runs: pd.DataFrame) -> dict[tuple, dict[str, Any]]:
    """Per configuration: mean/std of final and best top-1 (%) over finished seeds, costs, failures."""
    out: dict[tuple, dict[str, Any]] = {}
    for _, r in runs.iterrows():
        k = key_of(r["model"], r["ratio"], r["dw_size"], r["width"])
        entry = out.setdefault(k, {"final": [], "best": [], "failed": 0, "params": r["params"],
                                   "flops": r["flops"], "histories": []})
        if r["status"] == "finished" and _none(r["final_test_acc"]) is not None:
            entry["final"].append(100 * r["final_test_acc"])
            entry["best"].append(100 * r["best_test_acc"])
            entry["histories"].append(r["history"])
        elif r["status"] in ("failed", "diverged"):
            entry["failed"] += 1
    for entry in out.values():
        final, best = pd.Series(entry["final"], dtype=float), pd.Series(entry["best"], dtype=float)
        entry.update(n=len(final), top1_mean=final.mean() if len(final) else None,
                     top1_std=final.std() if len(final) > 1 else None,
                     top1_best_mean=best.mean() if len(best) else None)
    return out


def _round(v: Any, digits: int) -> Any:
    v = _none(v)
    return None if v is None else round(float(v), digits)


def _pct(ours: Any, ref: Any) -> Any:
    ours, ref = _none(ours), _none(ref)
    return None if ours is None or ref is None or ref == 0 else round(100 * (ours - ref) / ref, 2)


def paper_table(table: str, agg: dict[tuple, dict[str, Any]]) -> pd.DataFrame:
    """The paper's table with our numbers beside its own, one row per paper row."""
    rows = []
    for row in paper.rows(table):
        ours = agg.get(row.key) if row.model else None
        if row.model is None:
            params = flops = None
            status = "paper only"
        else:
            if ours and ours["params"] is not None:
                params, flops = ours["params"], ours["flops"]
            else:
                cost = cost_record(*row.key)
                params, flops = cost["params"], cost["flops"]
            n = ours["n"] if ours else 0
            status = "run" if n else "not run"
            if ours and ours["failed"]:
                status += f" ({ours['failed']} failed)"
        top1 = ours["top1_mean"] if ours else None
        rows.append({
            "table": table, "label": row.label, "model": row.model, "s": row.ratio, "d": row.dw_size,
            "width": row.width,
            "params_m": _round(None if params is None else params / 1e6, 3),
            "flops_m": _round(None if flops is None else flops / 1e6, 2),
            "top1_mean": _round(top1, 2), "top1_std": _round(ours["top1_std"] if ours else None, 2),
            "n_seeds": ours["n"] if ours else 0,
            "top1_best_mean": _round(ours["top1_best_mean"] if ours else None, 2),
            "paper_params_m": row.params_m, "paper_flops_m": row.flops_m, "paper_top1": row.top1,
            "params_diff_pct": _pct(None if params is None else params / 1e6, row.params_m),
            "flops_diff_pct": _pct(None if flops is None else flops / 1e6, row.flops_m),
            "top1_diff": None if _none(top1) is None or row.top1 is None else round(top1 - row.top1, 2),
            "status": status,
        })
    frame = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    for col in ("s", "d", "n_seeds"):
        frame[col] = frame[col].astype("Int64")
    return frame


def imagenet_costs() -> pd.DataFrame:
    """Our params/FLOPs of the ImageNet models beside the paper's (no training involved)."""
    rows = []
    for row in paper.rows(buildable=True):
        if row.table not in paper.IMAGENET_TABLES:
            continue
        cost = cost_record(*row.key)
        rows.append({"table": row.table, "label": row.label, "model": row.model, "s": row.ratio,
                     "d": row.dw_size, "width": row.width, "params_m": round(cost["params"] / 1e6, 3),
                     "flops_m": round(cost["flops"] / 1e6, 1), "paper_params_m": row.params_m,
                     "paper_flops_m": row.flops_m, "paper_top1": row.top1,
                     "params_diff_pct": _pct(cost["params"] / 1e6, row.params_m),
                     "flops_diff_pct": _pct(cost["flops"] / 1e6, row.flops_m)})
    frame = pd.DataFrame(rows)
    frame["s"], frame["d"] = frame["s"].astype("Int64"), frame["d"].astype("Int64")
    return frame


def speedup_table(bench: pd.DataFrame) -> pd.DataFrame:
    """Per Ghost model: FLOPs ratio to its baseline beside the measured speed-ups and memory ratio."""
    rows = []
    for device, on_device in bench.groupby("device_kind"):
        by_model = {m: g.iloc[0] for m, g in on_device.groupby("model")}
        for _, r in on_device.iterrows():
            base_name = MODELS[r["model"]].baseline if r["model"] in MODELS else None
            if base_name is None or base_name not in by_model:
                continue
            b = by_model[base_name]
            rows.append({
                "device": device, "model": r["model"], "s": r["ratio"], "d": r["dw_size"], "baseline": base_name,
                "flops_ratio": round(b["flops"] / r["flops"], 2),
                "latency_speedup_bs1": round(b["latency_bs1_ms"] / r["latency_bs1_ms"], 2),
                "throughput_speedup": round(r["eval_img_s"] / b["eval_img_s"], 2),
                "train_speedup": round(r["train_img_s"] / b["train_img_s"], 2),
                "peak_memory_ratio": round(r["train_peak_mem_mb"] / b["train_peak_mem_mb"], 2),
            })
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["s"], frame["d"] = frame["s"].astype("Int64"), frame["d"].astype("Int64")
    return frame


# ---- plots ---------------------------------------------------------------------------------

NAMES = {"vgg16": "VGG-16", "ghost_vgg16": "Ghost-VGG-16", "ghost_vgg16_keep_first": "Ghost-VGG-16 (plain 1st)",
         "resnet56": "ResNet-56", "ghost_resnet56": "Ghost-ResNet-56", "cifar_ghostnet": "GhostNet (CIFAR)",
         "ghostnet": "GhostNet", "ghostnetv2": "GhostNetV2", "resnet50": "ResNet-50", "ghost_resnet50": "Ghost-ResNet-50"}


def short_label(model: str, ratio: Any, dw_size: Any, width: Any = None) -> str:
    """What tells a point apart within its network family: s/d, the width, or the baseline's name."""
    if model in ("cifar_ghostnet", "ghostnet", "ghostnetv2"):
        return f"{NAMES[model]} {_none(width) or 1:g}x"
    if _none(ratio) is None:
        return NAMES.get(model, model)
    return f"s={int(ratio)} d={int(dw_size)}"


def full_label(model: str, ratio: Any, dw_size: Any, width: Any = None) -> str:
    label = short_label(model, ratio, dw_size, width)
    return label if label.startswith(NAMES.get(model, model)) else f"{NAMES.get(model, model)} {label}"


def _family(model: str) -> str:
    for family, members in FAMILIES.items():
        if model in members:
            return family
    return "other"


FAMILIES = {"VGG-16": ("vgg16", "ghost_vgg16", "ghost_vgg16_keep_first"), "ResNet-56": ("resnet56", "ghost_resnet56"),
            "GhostNet": ("cifar_ghostnet", "ghostnet"), "GhostNetV2": ("ghostnetv2",),
            "ResNet-50": ("resnet50", "ghost_resnet50")}
COLORS = {"VGG-16": "tab:blue", "ResNet-56": "tab:orange", "GhostNet": "tab:green", "GhostNetV2": "tab:purple",
          "ResNet-50": "tab:red", "other": "tab:gray"}


def _plain_log_ticks(axis) -> None:  # noqa: ANN001 - a matplotlib Axis
    """Label a log axis 20, 50, 100 rather than 2x10^1; minor labels only on short ranges."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    low, high = axis.get_view_interval()
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(FormatStrFormatter("%g") if high / max(low, 1e-12) < 20 else NullFormatter())


def _save(fig, out: Path, stem: str) -> list[Path]:  # noqa: ANN001 - matplotlib Figure
    paths = []
    for fmt in PLOT_FORMATS:
        path = out / f"{stem}.{fmt}"
        # no date and fixed ids in SVGs, so regenerating an unchanged report changes no file
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        paths.append(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def plot_accuracy_vs_cost(agg: dict[tuple, dict[str, Any]], out: Path, cost: str) -> list[Path]:
    """Top-1 vs FLOPs (or params), one panel per testbed: ours with error bars over seeds,
    the paper's as hollow markers, every point labelled with its s/d."""
    import matplotlib.pyplot as plt
    from adjustText import adjust_text

    field, paper_field = ("flops", "flops_m") if cost == "flops" else ("params", "params_m")
    xlabel = ("FLOPs (M multiply-accumulates per image)" if cost == "flops" else "parameters (M)") + ", log scale"
    panels = {"VGG-16": ("VGG-16",), "ResNet-56 and GhostNet": ("ResNet-56", "GhostNet")}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, (title, families) in zip(axes, panels.items()):
        texts = []
        for key, e in sorted(agg.items(), key=lambda kv: str(kv[0])):
            if e["top1_mean"] is None or _family(key[0]) not in families:
                continue
            color, x = COLORS[_family(key[0])], e[field] / 1e6
            ax.errorbar(x, e["top1_mean"], yerr=e["top1_std"] or 0, fmt="o", color=color, capsize=3)
            texts.append(ax.text(x, e["top1_mean"], short_label(*key), fontsize=7, color=color))
        for row in paper.distinct_models(paper.CIFAR_TABLES):
            if row.top1 is None or _family(row.model) not in families:
                continue
            color, x = COLORS[_family(row.model)], getattr(row, paper_field)
            ax.plot(x, row.top1, "o", mfc="none", mec=color, ms=9)
            texts.append(ax.text(x, row.top1, "paper " + short_label(*row.key), fontsize=7, color=color, alpha=0.75))
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("CIFAR-10 top-1 test accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(handles=[plt.Line2D([], [], marker="o", ls="", color="k", label="ours (mean ± std over seeds)"),
                           plt.Line2D([], [], marker="o", ls="", mfc="none", mec="k", ms=9, label="paper")],
                  fontsize=8, loc="best")
        _plain_log_ticks(ax.xaxis)
        if texts:
            adjust_text(texts, ax=ax, arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
    fig.suptitle(f"Accuracy vs {'FLOPs' if cost == 'flops' else 'parameters'} on CIFAR-10")
    return _save(fig, out, f"accuracy_vs_{cost}")


def plot_ablations(agg: dict[tuple, dict[str, Any]], out: Path) -> list[Path]:
    """Table 1 (d at s=2) and Table 2 (s at d=3) as curves, ours beside the paper's."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, table, axis, name in ((axes[0], "table1_dw_size", "dw_size", "kernel size d of the cheap op (s=2)"),
                                  (axes[1], "table2_ratio", "ratio", "ratio s (d=3)")):
        rows = [r for r in paper.rows(table, buildable=True) if getattr(r, axis) is not None]
        xs = [getattr(r, axis) for r in rows]
        ax.plot(xs, [r.top1 for r in rows], "o--", mfc="none", color="tab:gray", label="paper")
        ours = [(getattr(r, axis), agg.get(r.key)) for r in rows]
        ours = [(x, e) for x, e in ours if e and e["top1_mean"] is not None]
        if ours:
            ax.errorbar([x for x, _ in ours], [e["top1_mean"] for _, e in ours],
                        yerr=[e["top1_std"] or 0 for _, e in ours], fmt="o-", color="tab:blue", capsize=3,
                        label="ours")
        ax.set_xticks(xs)
        ax.set_xlabel(name)
        ax.set_ylabel("CIFAR-10 top-1 test accuracy (%)")
        ax.set_title(paper.TABLES[table].split(":")[0] + ": Ghost-VGG-16")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out, "ablation_s_d")


def plot_curves(agg: dict[tuple, dict[str, Any]], out: Path) -> list[Path]:
    """Test accuracy per epoch for each configuration (mean over seeds)."""
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for key, e in sorted(agg.items(), key=lambda kv: str(kv[0])):
        curves = [pd.Series({h["epoch"]: 100 * h["test_acc"] for h in hist if "test_acc" in h})
                  for hist in e["histories"]]
        curves = [c for c in curves if len(c)]
        if not curves:
            continue
        mean = pd.concat(curves, axis=1).mean(axis=1)
        ax.plot(mean.index + 1, mean.values, marker="." if len(mean) < 30 else None, label=full_label(*key))
    ax.set_xlabel("epoch")
    ax.set_ylabel("CIFAR-10 top-1 test accuracy (%)")
    ax.set_title("Test accuracy per epoch (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out, "test_accuracy_per_epoch")


def plot_latency(bench: pd.DataFrame, out: Path) -> list[Path]:
    """FLOPs against measured batch-1 latency, one panel per device kind."""
    import matplotlib.pyplot as plt

    from adjustText import adjust_text

    kinds = sorted(bench["device_kind"].unique())
    fig, axes = plt.subplots(1, len(kinds), figsize=(8 * len(kinds), 6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        part = bench[bench["device_kind"] == kind]
        texts = []
        for _, r in part.iterrows():
            color = COLORS[_family(r["model"])]
            x, y = r["flops"] / 1e6, r["latency_bs1_ms"]
            ax.plot(x, y, "o", color=color)
            texts.append(ax.text(x, y, full_label(r["model"], r["ratio"], r["dw_size"], r["width"]), fontsize=7,
                                 color=color))
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_ticks(ax.xaxis)
        _plain_log_ticks(ax.yaxis)
        ax.set_xlabel("FLOPs (millions of multiply-accumulates per image), log scale")
        ax.set_ylabel("measured latency at batch 1 (ms), log scale")
        ax.set_title(f"FLOPs vs latency on {kind}: {part['device'].iloc[0]}")
        ax.grid(alpha=0.3)
        adjust_text(texts, ax=ax, arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
    return _save(fig, out, "flops_vs_latency")


# ---- markdown ------------------------------------------------------------------------------

def _md(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, missingval="", disable_numparse=True)  # keep our formatting


def _fmt(v: Any, digits: int) -> str:
    v = _none(v)
    return "" if v is None else f"{v:.{digits}f}"


def markdown_table(table: pd.DataFrame) -> str:
    """One paper table laid out like the paper's, our numbers beside the published ones."""
    rows = []
    for _, r in table.iterrows():
        if r["status"] == "paper only":
            ours = "(not built)"
        elif _none(r["top1_mean"]) is None:
            ours = "not run"
        else:
            std = "" if _none(r["top1_std"]) is None else f" ± {r['top1_std']:.2f}"
            ours = f"{r['top1_mean']:.2f}{std} (n={r['n_seeds']})"
        rows.append({"Model": r["label"], "s": "" if _none(r["s"]) is None else int(r["s"]),
                     "d": "" if _none(r["d"]) is None else int(r["d"]),
                     "Params (M)": _fmt(r["params_m"], 3), "FLOPs (M)": _fmt(r["flops_m"], 1),
                     "Top-1 (%) final": ours, "Top-1 (%) best epoch": _fmt(r["top1_best_mean"], 2),
                     "Paper params (M)": _fmt(r["paper_params_m"], 2), "Paper FLOPs (M)": _fmt(r["paper_flops_m"], 0),
                     "Paper top-1 (%)": _fmt(r["paper_top1"], 1), "Δ top-1 (pp)": _fmt(r["top1_diff"], 2)})
    return _md(pd.DataFrame(rows))


def provenance(runs: pd.DataFrame) -> dict[str, Any]:
    finished = runs[runs["status"] == "finished"]
    source = finished if len(finished) else runs
    return {
        "profiles": sorted(source["profile"].dropna().unique()),
        "epochs": sorted(int(e) for e in source["epochs"].dropna().unique()),
        "train_sizes": sorted(int(n) for n in source["train_size"].dropna().unique()),
        "test_sizes": sorted(int(n) for n in source["test_size"].dropna().unique()),
        "data_dirs": sorted(source["data_dir"].dropna().unique()),
        "seeds": sorted(int(s) for s in source["seed"].dropna().unique()),
        "devices": sorted(source["device"].dropna().unique()),
        "runs": len(runs), "finished": len(finished),
    }


def header_markdown(p: dict[str, Any]) -> str:
    paper_epochs = load_profile("paper").epochs
    lines = ["# ghost-ablate report", "",
             f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from {p['finished']} finished of "
             f"{p['runs']} recorded runs.", "",
             "| how the numbers were made | |", "|---|---|",
             f"| profile | {', '.join(p['profiles'])} |",
             f"| epochs | {', '.join(map(str, p['epochs']))} (paper: {paper_epochs}) |",
             f"| data set | CIFAR-10, {', '.join(f'{n:,}' for n in p['train_sizes'])} training / "
             f"{', '.join(f'{n:,}' for n in p['test_sizes'])} test images (full: 50,000 / 10,000) |",
             f"| data folder | {', '.join(f'`{d}`' for d in p['data_dirs'])} |",
             f"| seeds | {', '.join(map(str, p['seeds']))} |",
             f"| device | {'; '.join(p['devices'])} |", ""]
    short = [why for ok, why in ((all(n >= FULL_TRAIN_SIZE for n in p["train_sizes"]), "a subset of the data"),
                                 (all(e >= paper_epochs for e in p["epochs"]), "fewer epochs than the paper"))
             if not ok]
    if short:
        lines += [f"> **Not a reproduction.** These runs used {' and '.join(short)}; their accuracies say "
                  f"nothing about the paper's claims. Parameter and FLOP counts do not depend on training.", ""]
    return "\n".join(lines)


def build_report(results_dir: str | Path, out_dir: str | Path, profile: str | None = None) -> list[Path]:
    """Write every CSV table, the markdown report and the plots; return the files written."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "ghost-ablate"
    results_dir, out = Path(results_dir), Path(out_dir)
    runs = load_runs(results_dir, profile)
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(runs)
    written: list[Path] = []
    sections = [header_markdown(provenance(runs))]
    plots = [("Accuracy vs FLOPs", plot_accuracy_vs_cost(agg, out, "flops")),
             ("Accuracy vs parameters", plot_accuracy_vs_cost(agg, out, "params")),
             ("Ablations of s and d", plot_ablations(agg, out)),
             ("Test accuracy per epoch", plot_curves(agg, out))]
    for table, filename in CSV_NAMES.items():
        frame = paper_table(table, agg)
        write_atomic(out / filename, frame.to_csv(index=False))
        written.append(out / filename)
        sections += [f"## {paper.TABLES[table]}", "", markdown_table(frame), f"\nCSV: [{filename}]({filename})", ""]
    extra = [k for k in agg if k not in {r.key for r in paper.rows(buildable=True)}]
    if extra:
        rows = [{"Model": full_label(*k), "Params (M)": _fmt(agg[k]["params"] / 1e6, 3),
                 "FLOPs (M)": _fmt(agg[k]["flops"] / 1e6, 1),
                 "Top-1 (%) final": _fmt(agg[k]["top1_mean"], 2), "n": agg[k]["n"]} for k in extra]
        sections += ["## Runs outside the paper's tables", "", _md(pd.DataFrame(rows)), ""]
    costs = imagenet_costs()
    write_atomic(out / "imagenet_costs.csv", costs.to_csv(index=False))
    written.append(out / "imagenet_costs.csv")
    sections += ["## ImageNet models: parameters and FLOPs (224x224, not trained here)", "",
                 _md(costs.drop(columns=["table"])), "\nCSV: [imagenet_costs.csv](imagenet_costs.csv)", ""]
    bench_path = results_dir / "bench.csv"
    if bench_path.exists():
        bench = pd.read_csv(bench_path, comment="#")
        speed = speedup_table(bench)
        write_atomic(out / "speedup.csv", speed.to_csv(index=False))
        written.append(out / "speedup.csv")
        plots.append(("FLOPs vs measured latency", plot_latency(bench, out)))
        sections += ["## FLOPs ratio vs measured speed-up (from results/bench.csv)", "",
                     "Ratios are baseline / Ghost for FLOPs and latency, Ghost / baseline for throughput; "
                     "memory is Ghost / baseline peak of a training step.", "", _md(speed), ""]
    sections += ["## Plots", ""]
    for title, paths in plots:
        png = paths[0].name
        sections += [f"### {title}", "", f"![{title}]({png}) ([SVG]({paths[1].name}))", ""]
        written += paths
    write_atomic(out / "README.md", "\n".join(sections))
    written.append(out / "README.md")
    return written
