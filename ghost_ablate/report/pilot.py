"""The pilot (issues 29 and 39): how long a recipe must train on the subset, judged ACROSS schedule
lengths. A cosine schedule reaches lr 0 at its end, so the last epochs of any length gain little
and say nothing about convergence; what does is whether training twice as long (a different run,
same seeds) still raises final top-1. Per recipe, the chosen length is the shortest one at which
the next longer schedule adds less than CONVERGED_GAIN points for every model of the pair.
`make pilot` trains it; `ghost-ablate report --section pilot` writes reports/pilot.md, pilot_lengths.csv,
pilot_curves.csv and pilot_lengths.svg."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..labels import full_label
from ..records import row_key, write_atomic
from .markdown import escape, fmt_number, md_table
from .stats import paired_stats, seed_stats
from .tables import ReportError, load_runs

# A doubling that adds less than the evidence's non-inferiority margin (stats.MARGIN_PP) moves
# both rows of a pair by less than the smallest gap the verdicts care about.
CONVERGED_GAIN = 1.0
MIN_SEEDS = 2  # seeds per length before a length comparison counts


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


def chosen_length(table: pd.DataFrame, recipe: str, gain: float = CONVERGED_GAIN) -> tuple[int | None, str]:
    """The shortest length of `recipe` whose next longer schedule (at least twice as long) adds less
    than `gain` points of mean final top-1 for every model, over >= MIN_SEEDS paired seeds; and the
    reason in words. None where no measured length qualifies yet."""
    part = table[table["recipe"] == recipe]
    models = sorted(part["model"].unique())
    for length in sorted(part["schedule"].unique()):
        at = part[part["schedule"] == length]
        if len(at) < len(models) or at["next length"].isna().any():
            continue
        doubled = (at["next length"] >= 2 * length).all()
        enough = (at["gain pairs"] >= MIN_SEEDS).all()
        if doubled and enough and (at["gain to next"] < gain).all():
            worst = at.loc[at["gain to next"].idxmax()]
            return int(length), (f"{int(length)} epochs: training {int(worst['next length'])} epochs adds at most "
                                 f"{worst['gain to next']:+.2f} points (mean of {int(worst['gain pairs'])} paired "
                                 f"seeds, {worst['model']}), under the {gain:g}-point threshold for every model")
    longest = int(part["schedule"].max())
    if part["schedule"].nunique() == 1:
        return None, f"only {longest} epochs measured so far; train {2 * longest} epochs next"
    step = _next_step(part, models, longest)
    complete = [length for length in sorted(part["schedule"].unique()) if not _short_of_seeds(part, models, length)]
    into = int(complete[-1]) if complete else longest
    gains = part[part["next length"] == into]
    said = "; ".join(f"{r['model']} {r['gain to next']:+.2f}" for _, r in gains.iterrows() if pd.notna(r["gain to next"]))
    return None, (f"none yet: no measured length's doubling adds under {gain:g} point for every model over "
                  f">= {MIN_SEEDS} paired seeds (gains into {into} epochs: {said or 'not measured'}); {step}")


def _short_of_seeds(part: pd.DataFrame, models: list[str], length: int) -> dict[str, int]:
    """The models with fewer than MIN_SEEDS seeds at `length`, and how many they have."""
    seeds = part[part["schedule"] == length].set_index("model")["seeds"]
    return {m: int(seeds.get(m, 0)) for m in models if seeds.get(m, 0) < MIN_SEEDS}


def _next_step(part: pd.DataFrame, models: list[str], longest: int) -> str:
    """What to train next: the longest length's missing seeds, or, once it is complete, twice it."""
    if short := _short_of_seeds(part, models, longest):
        have = ", ".join(f"{m} {n} of {MIN_SEEDS}" for m, n in short.items())
        return f"{longest} epochs is not complete yet (seeds: {have}): finish it next"
    return f"train {2 * longest} epochs next"


def plot_lengths(table: pd.DataFrame, out: Path) -> list[Path]:
    """Final test top-1 (mean, with each seed's spread as error bars) against schedule length."""
    import matplotlib.pyplot as plt  # lazy: loaded only on the path that needs it

    from .plots import save_figure

    recipes = sorted(table["recipe"].unique())
    fig, axes = plt.subplots(1, len(recipes), figsize=(4.2 * len(recipes), 3.4), squeeze=False, sharey=True)
    for ax, recipe in zip(axes[0], recipes):
        for model, part in table[table["recipe"] == recipe].groupby("model"):
            part = part.sort_values("schedule")
            ax.errorbar(part["schedule"], part["final top-1 mean"], yerr=part["final top-1 sd"].fillna(0),
                        marker="o", capsize=3, label=model)
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
    runs = pd.concat([load_runs(results_dir, profile=p, mixed_epochs=True) for p in _profiles(results_dir)],
                     ignore_index=True)  # every recipe the pilot holds, each compared across its lengths
    curves = learning_curves(runs)
    if curves.empty:
        raise ReportError(f"no finished pilot runs under {Path(results_dir) / 'runs'}; run `make pilot` first")
    table = length_table(curves)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
        f"seeds, so each length's gain is paired by seed. The chosen length is the shortest whose next length "
        f"(at least twice as long) adds less than {CONVERGED_GAIN:g} point of final test top-1 for both models "
        f"over >= {MIN_SEEDS} paired seeds; with so few seeds that is a point estimate, its interval beside it. "
        "The test split has 1,017 images: one point is about ten images. The training loss is the recipe's own "
        "(with label smoothing where the recipe uses it, so recipes differ in its floor).", "",
        "Chosen length:", "", *choices, "",
        md_table(shown), "", "![final test top-1 against schedule length](pilot_lengths.svg)", "",
        "Every epoch of every run (test and training top-1, training loss): [pilot_curves.csv](pilot_curves.csv); "
        "the table above as CSV: [pilot_lengths.csv](pilot_lengths.csv).", ""])
    write_atomic(out / "pilot.md", text)
    return [out / "pilot_curves.csv", out / "pilot_lengths.csv", *figures, out / "pilot.md"]


def _profiles(results_dir: str | Path) -> list[str]:
    """The recipes (profiles) the pilot's records hold."""
    from ..record_schema import read_records  # lazy: the schema imports the model registry

    found = sorted({r["config"]["profile"] for r in read_records(Path(results_dir) / "runs")})
    if not found:
        raise ReportError(f"no run records under {Path(results_dir) / 'runs'}; run `make pilot` first")
    return found
