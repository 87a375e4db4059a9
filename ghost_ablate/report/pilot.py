"""The pilot (issues 29 and 39): how long a recipe must train on the subset, judged ACROSS schedule
lengths. A cosine schedule reaches lr 0 at its end, so the last epochs of any length gain little
and say nothing about convergence; what does is whether training twice as long (a different run,
same seeds) still raises final top-1. Per recipe, each model has converged at the shortest length
from which every measured doubling adds less than CONVERGED_GAIN points, and the pair trains at the
longer of its models' converged lengths.
`make pilot` trains it; `ghost-ablate report --section pilot` writes reports/pilot.md, pilot_lengths.csv,
pilot_curves.csv and pilot_lengths.svg.

The recipe options (issue 39): a run whose recipe differs from its profile as declared (`make
pilot-options` trains the declared recipe with one field changed, at one length, the same seeds) is
left out of the length table and compared with the declared recipe at its length instead: final
top-1 of each model, the pair's gap per seed and its change (paired by seed, within one machine's
block), the training
images/s beside the machine's matrix-product peak (`ghost-ablate bench --peak`), and the hours it
cost (pilot_options.csv)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..config import RECIPE_DEFAULTS, ConfigError, load_profile, make_recipe, profile_name
from ..labels import full_label
from ..records import missing, row_key, write_atomic
from ..stacks import comparison_group, load_groups
from ..timing import steady_rate
from .markdown import escape, fmt_number, md_table
from .stats import paired_stats, seed_stats
from .tables import ReportError, load_runs, read_side_csv

# A doubling that adds less than the evidence's non-inferiority margin (stats.MARGIN_PP) moves
# both rows of a pair by less than the smallest gap the verdicts care about.
CONVERGED_GAIN = 1.0
MIN_SEEDS = 2  # seeds per length before a length comparison counts
LENGTH_AXIS = ("epochs",)  # the length pilot's own axis: a run of another length is no recipe option
BUSY_LOAD = 1.5  # an epoch that ended with the load average above this x the run's threads was timed beside other work
PEAK_COLUMNS = ("device", "precision", "gflop_s")  # results/peak.csv, as `bench --peak` writes it
TRAIN_FLOPS_PER_MAC = 6  # forward, and a backward of about twice its cost: 3 passes of 2 FLOPs per multiply-accumulate


def recipe_changes(config: dict[str, Any]) -> str | None:
    """What a run's recipe changes from its profile as declared today, its length aside:
    "key=value, ..." sorted by field, '' for the profile's own recipe; None where the record's
    recipe or its profile cannot be read (such a run stays with its profile, as before)."""
    try:
        ran = make_recipe(**(config.get("recipe") or {}))
        declared = load_profile(profile_name(config["profile"]))
    except (ConfigError, KeyError, TypeError, ValueError):
        return None
    return ", ".join(f"{k}={_spell(getattr(ran, k))}" for k in sorted(RECIPE_DEFAULTS)
                     if k not in LENGTH_AXIS and getattr(ran, k) != getattr(declared, k))


def _spell(value: Any) -> str:
    """A recipe value as a profile or `--set recipe.KEY=VALUE` writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):  # milestones, or model_knobs' (knob, value) pairs
        return ",".join(f"{v[0]}={v[1]}" if isinstance(v, tuple) else str(v) for v in value)
    return "none" if value is None else str(value)


def learning_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run and epoch: recipe, model label, schedule length, seed, machine,
    test top-1, training top-1 (%) and training loss."""

    rows = []
    for _, r in runs[runs["status"] == "finished"].iterrows():
        for h in r["history"]:
            if h.get("test_acc") is not None:
                rows.append({"recipe": r["profile"], "model": full_label(*row_key(r)), "schedule": int(r["epochs"]),
                             "seed": int(r["seed"]), "stack": r["stack"], "epoch": int(h["epoch"]) + 1,
                             "test_top1": 100 * h["test_acc"],
                             "train_top1": 100 * h["train_acc"] if h.get("train_acc") is not None else None,
                             "train_loss": h.get("train_loss")})
    return pd.DataFrame(rows, columns=["recipe", "model", "schedule", "seed", "stack", "epoch", "test_top1",
                                       "train_top1", "train_loss"])


def length_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Per recipe, model and schedule length: seeds, final test top-1 (mean, sd), final training
    top-1 and loss (means), and the gain of the next longer length over the seeds both have
    (paired: the same seed sees the same first batches), with its 95% interval."""
    finals = curves.sort_values("epoch").groupby(["recipe", "model", "schedule", "seed"]).last().reset_index()
    rows = []
    for (recipe, model), part in finals.groupby(["recipe", "model"], sort=True):
        lengths = sorted(part["schedule"].unique())
        for i, length in enumerate(lengths):
            here = part[part["schedule"] == length].set_index("seed")
            acc = seed_stats(list(here["test_top1"]))
            row = {"recipe": recipe, "model": model, "schedule": int(length), "seeds": acc.n,
                   "final top-1 mean": acc.mean, "final top-1 sd": acc.std,
                   "train top-1 mean": here["train_top1"].mean(), "train loss mean": here["train_loss"].mean(),
                   "next length": None, "gain to next": None, "gain ci95": None, "gain pairs": 0,
                   "machines": "; ".join(sorted(set(here["stack"])))}
            if i + 1 < len(lengths):
                longer = part[part["schedule"] == lengths[i + 1]].set_index("seed")
                shared = sorted(set(here.index) & set(longer.index))
                gain = paired_stats([here.at[s, "test_top1"] for s in shared],
                                    [longer.at[s, "test_top1"] for s in shared])
                row.update({"next length": int(lengths[i + 1]), "gain to next": gain.mean, "gain ci95": gain.ci95,
                            "gain pairs": gain.n})
            rows.append(row)
    return pd.DataFrame(rows)


def converged_length(part: pd.DataFrame, gain: float = CONVERGED_GAIN) -> pd.Series | None:
    """One model's converged length (rows of `length_table` for one recipe and model): the
    shortest length from which every measured doubling (next length at least twice as long,
    >= MIN_SEEDS paired seeds) adds less than `gain` points, with at least one such doubling;
    its row, or None. A later doubling that gains again undoes an earlier plateau."""
    rows = part.sort_values("schedule")
    measured = rows[rows["next length"].notna() & (rows["next length"] >= 2 * rows["schedule"])
                    & (rows["gain pairs"] >= MIN_SEEDS)]
    for i in range(len(measured)):
        if (measured["gain to next"].iloc[i:] < gain).all():
            return measured.iloc[i]
    return None


def chosen_length(table: pd.DataFrame, recipe: str, gain: float = CONVERGED_GAIN) -> tuple[int | None, str]:
    """The length `recipe` trains the pair at: each model's `converged_length`, and the longest of
    them, so every model trains at or past the length from which doubling added less than `gain`
    points; and the reason in words. None until every model has a converged length; the reason
    then says which lengths the unconverged models need next."""
    part = table[table["recipe"] == recipe]
    models = sorted(part["model"].unique())
    found = {m: converged_length(part[part["model"] == m], gain) for m in models}
    said = "; ".join(f"{m} at {int(r['schedule'])} ({int(r['next length'])} epochs adds {r['gain to next']:+.2f}, "
                     f"{int(r['gain pairs'])} paired seeds)" for m, r in found.items() if r is not None)
    if all(r is not None for r in found.values()):
        length = max(int(r["schedule"]) for r in found.values())
        return length, (f"{length} epochs: each model's doubling adds less than {gain:g} point from its converged "
                        f"length on ({said}); the pair trains at the longer, so each model trains at or past its own")
    if part["schedule"].nunique() == 1:
        longest = int(part["schedule"].max())
        return None, f"only {longest} epochs measured so far; train {2 * longest} epochs next"
    needs = {m: _needs(part, m) for m, r in found.items() if r is None}
    waiting = list(needs)
    steps = "; ".join(_next_step(part, [m for m in waiting if needs[m] == length], length)
                      for length in sorted(set(needs.values())))
    return None, (f"none yet: {', '.join(waiting)} {'has' if len(waiting) == 1 else 'have'} no length from which "
                  f"doubling adds under {gain:g} point over >= {MIN_SEEDS} paired seeds"
                  + (f" (converged: {said})" if said else "") + f"; {steps}")


def _needs(part: pd.DataFrame, model: str) -> int:
    """The length an unconverged model needs next: the first measured length past its longest
    complete one (>= MIN_SEEDS seeds) that is at least twice that, else twice its longest complete."""
    mine = part[part["model"] == model]
    complete = sorted(int(x) for x in mine.loc[mine["seeds"] >= MIN_SEEDS, "schedule"])
    if not complete:
        return int(part["schedule"].min())
    later = [int(x) for x in sorted(part["schedule"].unique()) if x >= 2 * complete[-1]]
    return later[0] if later else 2 * complete[-1]


def _short_of_seeds(part: pd.DataFrame, models: list[str], length: int) -> dict[str, int]:
    """The models with fewer than MIN_SEEDS seeds at `length`, and how many they have."""
    seeds = part[part["schedule"] == length].set_index("model")["seeds"]
    return {m: int(seeds.get(m, 0)) for m in models if seeds.get(m, 0) < MIN_SEEDS}


def _next_step(part: pd.DataFrame, models: list[str], length: int) -> str:
    """What `models` need at `length`: its missing seeds where it is measured, else to train it."""
    short = _short_of_seeds(part, models, length)
    if length in set(part["schedule"]):
        have = ", ".join(f"{m} {n} of {MIN_SEEDS}" for m, n in short.items())
        return f"{length} epochs is not complete yet (seeds: {have}): finish it next"
    return f"train {length} epochs next ({', '.join(models)})"


def run_speeds(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run: recipe, option (`recipe_changes`), model label, length, seed, final
    test top-1 (%), training images/s (the median epoch after the first), training hours, how many
    of its epochs were timed beside other work (load above BUSY_LOAD x its threads), its machine,
    precision and multiply-accumulates per image, and its comparison group (`stacks.comparison_group`:
    its machine and torch, or the group a stack probe joined them into)."""
    rows, groups = [], load_groups()
    for _, r in runs[runs["status"] == "finished"].iterrows():
        timed = [h for h in r["history"] if h.get("train_time_s") and h.get("train_images")]
        rows.append({
            "recipe": r["profile"], "option": r.get("option") or "", "model": full_label(*row_key(r)),
            "schedule": int(r["epochs"]), "seed": int(r["seed"]), "top1": 100 * r["final_test_acc"],
            "images_s": steady_rate([h["train_images"] / h["train_time_s"] for h in timed]) if timed else None,
            "hours": sum(h["train_time_s"] for h in timed) / 3600,
            "busy": sum(1 for h in timed if h.get("threads") and (h.get("load_1m") or 0) > BUSY_LOAD * h["threads"]),
            "epochs_timed": len(timed), "device": r["device"], "stack": r["stack"], "precision": r["precision"],
            "macs": r["flops"], "group": comparison_group(r["stack"], groups)})
    return pd.DataFrame(rows, columns=["recipe", "option", "model", "schedule", "seed", "top1", "images_s", "hours",
                                       "busy", "epochs_timed", "device", "stack", "precision", "macs", "group"])


def _gaps(part: pd.DataFrame, models: list[str]) -> dict[tuple[int, str], float]:
    """Per (seed, comparison group) that has both models in one group: the last model's final top-1
    minus the first's. Keyed by group too, so a change is only ever paired within one."""
    by = part.set_index(["model", "seed", "group"])["top1"]
    keys = (set(zip(*[part[part["model"] == models[0]][c] for c in ("seed", "group")]))
            & set(zip(*[part[part["model"] == models[-1]][c] for c in ("seed", "group")])))
    return {k: by[(models[-1], *k)] - by[(models[0], *k)] for k in sorted(keys)}


def share_of_peak(runs: pd.DataFrame, peaks: pd.DataFrame | None) -> float | None:
    """Training FLOP/s of these runs (images/s x TRAIN_FLOPS_PER_MAC x multiply-accumulates per image,
    medians) over the matrix-product peak measured on their machine in their precision; None
    without such a measurement or where the runs mix machines or precisions."""
    if peaks is None or runs.empty or runs["device"].nunique() != 1 or runs["precision"].nunique() != 1:
        return None
    match = peaks[(peaks["device"] == runs["device"].iloc[0]) & (peaks["precision"] == runs["precision"].iloc[0])]
    rate = runs["images_s"].median()
    if match.empty or missing(rate):
        return None
    return rate * TRAIN_FLOPS_PER_MAC * runs["macs"].median() / (match["gflop_s"].iloc[-1] * 1e9)


def options_table(speeds: pd.DataFrame, peaks: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per recipe, length and comparison group (one machine and torch, or stacks a probe showed to
    give the same runs) in which options were trained: the declared recipe's row, then one per
    option, so images/s and gaps are compared on one kind of machine. Each row: seeds, per model the mean final top-1, training images/s and share of the
    peak; the pair's gap per seed (last model minus first, mean and sd) and, for an option, the
    change of that gap from the declared recipe's, paired by seed on one stack; hours per seed (both models)
    and the epochs timed beside other work."""
    rows = []
    for (recipe, length, group), part in speeds.groupby(["recipe", "schedule", "group"], sort=True):
        options = sorted(set(part["option"]) - {""})
        models = sorted(part["model"].unique())
        if not options or len(models) < 2:
            continue
        base = _gaps(part[part["option"] == ""], models)
        for option in ["", *options]:
            here = part[part["option"] == option]
            gaps = _gaps(here, models)
            gap = seed_stats(list(gaps.values()))
            shared = sorted(set(gaps) & set(base)) if option else []
            change = paired_stats([base[s] for s in shared], [gaps[s] for s in shared]) if shared else None
            row = {"recipe": recipe, "epochs": int(length), "machine": group, "option": option, "seeds": len(gaps),
                   "gap": f"{models[-1]} - {models[0]}", "gap mean": gap.mean, "gap sd": gap.std,
                   "gap change": change.mean if change else None, "gap change ci95": change.ci95 if change else None,
                   "gap change pairs": change.n if change else 0,
                   "hours per seed": here.groupby("seed")["hours"].sum().mean() if len(here) else None,
                   "epochs beside other work": f"{int(here['busy'].sum())} of {int(here['epochs_timed'].sum())}"}
            for m in models:
                mine = here[here["model"] == m]
                row.update({f"{m} top-1": mine["top1"].mean() if len(mine) else None,
                            f"{m} images/s": mine["images_s"].median() if len(mine) else None,
                            f"{m} share of peak": share_of_peak(mine, peaks)})
            rows.append(row)
    return pd.DataFrame(rows)


def options_markdown(table: pd.DataFrame, peaks: pd.DataFrame | None) -> list[str]:
    """The recipe-options section of pilot.md."""
    head = ["## Recipe options", "",
            "Each option is the declared recipe with one field changed (`make pilot-options`), trained at one "
            "length with the same seeds as the declared recipe's runs of that length, one block per machine "
            "(machine and torch, or stacks a `stack-probe` showed to give the same runs): images/s and gaps are "
            "compared within a block. The gap is the pair's "
            "final top-1 difference per seed; its change is paired by seed with the declared recipe's, its 95% "
            "interval beside it: a change whose interval spans 0 is undetermined at this number of seeds, not "
            "shown to be absent. Images/s is the "
            "median epoch's training throughput; the share of the peak is images/s x "
            f"{TRAIN_FLOPS_PER_MAC} x multiply-accumulates per image over the matrix-product peak of the "
            "run's machine in its precision (`ghost-ablate bench --peak`"
            + ("" if peaks is not None else "; not measured for these results, so the column is empty")
            + f"). An epoch is counted beside other work when the load average at its end exceeded {BUSY_LOAD:g} "
            "x the run's threads: its images/s are lower than the machine gives alone.", ""]
    if table.empty:
        return head + ["No option has been trained yet: `make pilot-options` trains them.", ""]
    models = [c[: -len(" top-1")] for c in table.columns if c.endswith(" top-1")]
    shown = pd.DataFrame({
        "recipe": table["recipe"], "epochs": table["epochs"], "machine": table["machine"].map(escape),
        "option": table["option"].map(lambda o: escape(o) if o else "(as declared)"), "seeds": table["seeds"],
        **{f"{m} top-1 (%)": table[f"{m} top-1"].map(lambda v: fmt_number(v, 2)) for m in models},
        "gap (pp)": [("" if pd.isna(m) else f"{m:+.2f}") + ("" if pd.isna(sd) else f" ± {sd:.2f} sd")
                     for m, sd in zip(table["gap mean"], table["gap sd"])],
        "gap change (pp)": ["" if pd.isna(c) else f"{c:+.2f}" + ("" if pd.isna(ci) else f" ± {ci:.2f}")
                            + f" ({int(n)} pair{'' if n == 1 else 's'})"
                            for c, ci, n in zip(table["gap change"], table["gap change ci95"], table["gap change pairs"])],
        **{f"{m} images/s": table[f"{m} images/s"].map(lambda v: fmt_number(v, 0)) for m in models},
        **{f"{m} % of peak": table[f"{m} share of peak"].map(lambda v: "" if missing(v) else f"{100 * v:.0f}")
           for m in models},
        "hours per seed": table["hours per seed"].map(lambda v: fmt_number(v, 2)),
        "epochs beside other work": table["epochs beside other work"]})
    return head + [f"Gap: {escape(table['gap'].iloc[0])}.", "", md_table(shown), "",
                   "As CSV: [pilot_options.csv](pilot_options.csv).", ""]


def plot_lengths(table: pd.DataFrame, out: Path) -> list[Path]:
    """Final test top-1 (mean, with each seed's spread as error bars) against schedule length; a
    ring marks each model's converged length (`converged_length`)."""
    import matplotlib.pyplot as plt  # lazy: loaded only on the path that needs it

    from .plots import save_figure

    recipes = sorted(table["recipe"].unique())
    fig, axes = plt.subplots(1, len(recipes), figsize=(4.2 * len(recipes), 3.4), squeeze=False, sharey=True)
    for ax, recipe in zip(axes[0], recipes):
        for model, part in table[table["recipe"] == recipe].groupby("model"):
            part = part.sort_values("schedule")
            line = ax.errorbar(part["schedule"], part["final top-1 mean"], yerr=part["final top-1 sd"].fillna(0),
                               marker="o", capsize=3, label=model)
            if (at := converged_length(part)) is not None:
                ax.plot(at["schedule"], at["final top-1 mean"], "o", ms=13, mfc="none", mew=1.5,
                        color=line[0].get_color(), label=f"{model}: converged ({int(at['schedule'])})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(table[table["recipe"] == recipe]["schedule"].unique()))
        ax.get_xaxis().set_major_formatter(plt.ScalarFormatter())
        ax.set_title(f"recipe {recipe} (bars: sd over seeds)", fontsize=9)
        ax.set_xlabel("schedule length (epochs)")
        ax.set_ylabel("final test top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, out, "pilot_lengths")


def write_pilot_report(results_dir: str | Path, out: str | Path) -> list[Path]:
    profiles, options = _recipes(results_dir)
    runs = pd.concat([load_runs(results_dir, profile=p, mixed_epochs=True) for p in profiles],
                     ignore_index=True)  # every recipe the pilot holds, each compared across its lengths
    runs["option"] = runs["run_id"].map(lambda run_id: options.get(run_id) or "")
    curves = learning_curves(runs[runs["option"] == ""])  # an option's runs are compared in their own table
    if curves.empty:  # options alone have no declared recipe to be compared with
        raise ReportError(f"no finished pilot runs of a recipe as declared under {Path(results_dir) / 'runs'}; "
                          f"run `make pilot` first")
    peaks = read_side_csv(Path(results_dir), "peak.csv", PEAK_COLUMNS, "`ghost-ablate bench --peak`")
    tried = options_table(run_speeds(runs), peaks)
    table = length_table(curves)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not tried.empty:
        write_atomic(out / "pilot_options.csv", tried.to_csv(index=False))
    write_atomic(out / "pilot_curves.csv", curves.to_csv(index=False))
    write_atomic(out / "pilot_lengths.csv", table.to_csv(index=False))
    figures = plot_lengths(table, out)
    shown = pd.DataFrame({
        "recipe": table["recipe"], "model": table["model"], "epochs": table["schedule"], "seeds": table["seeds"],
        "final test top-1 (%)": [fmt_number(m, 2) + (f" ± {s:.2f}" if pd.notna(s) else "")
                                 for m, s in zip(table["final top-1 mean"], table["final top-1 sd"])],
        "final train top-1 (%)": table["train top-1 mean"].map(lambda v: fmt_number(v, 1)),
        "final train loss": table["train loss mean"].map(lambda v: fmt_number(v, 3)),
        "gain of the next length (pp)": [
            "" if pd.isna(g) else f"{int(n)}: {g:+.2f}" + (f" ± {c:.2f}" if pd.notna(c) else "") + f" ({int(k)} pair{'' if k == 1 else 's'})"
            for g, c, n, k in zip(table["gain to next"], table["gain ci95"], table["next length"],
                                  table["gain pairs"])],
        "machines": table["machines"].map(escape)})
    choices = [f"- **{recipe}**: " + chosen_length(table, recipe)[1] + "." for recipe in sorted(table["recipe"].unique())]
    text = "\n".join([
        "# Pilot: how long to train on the subset", "",
        "Table 2's pair (VGG-16 and Ghost-VGG-16, s=2, d=3) on the 5,085-image CIFAR-10 subset, trained at several "
        "schedule lengths per recipe (`make pilot`). A cosine schedule ends at lr 0, so the last epochs of any length "
        "gain little: convergence is judged by comparing lengths. A longer schedule is a different run with the same "
        f"seeds, so each length's gain is paired by seed. A model has converged at the shortest length from which "
        f"every measured doubling (next length at least twice as long) adds less than {CONVERGED_GAIN:g} point of "
        f"final test top-1 over >= {MIN_SEEDS} paired seeds; the pair trains at the longer of its two models' "
        "converged lengths, so each trains at or past its own. With so few seeds a gain is a point estimate, "
        "its interval beside it. "
        "The test split has 1,017 images: one point is about ten images. The training loss is the recipe's own "
        "(with label smoothing where the recipe uses it, so recipes differ in its floor).", "",
        "Chosen length:", "", *choices, "",
        md_table(shown), "", "![final test top-1 against schedule length](pilot_lengths.svg)", "",
        "Every epoch of every run (test and training top-1, training loss): [pilot_curves.csv](pilot_curves.csv); "
        "the table above as CSV: [pilot_lengths.csv](pilot_lengths.csv).", "",
        *options_markdown(tried, peaks)])
    write_atomic(out / "pilot.md", text)
    return [out / "pilot_curves.csv", out / "pilot_lengths.csv", *figures, out / "pilot.md",
            *([out / "pilot_options.csv"] if not tried.empty else [])]


def _recipes(results_dir: str | Path) -> tuple[list[str], dict[str, str | None]]:
    """The recipes (profiles) the pilot's records hold, and each run's changes to its recipe
    (`recipe_changes`), by run id."""
    from ..record_schema import read_records  # lazy: the schema imports the model registry

    records = read_records(Path(results_dir) / "runs")
    if not records:
        raise ReportError(f"no run records under {Path(results_dir) / 'runs'}; run `make pilot` first")
    return (sorted({r["config"]["profile"] for r in records}),
            {r["run_id"]: recipe_changes(r["config"]) for r in records})
