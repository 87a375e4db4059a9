"""The report as a list of sections, in the order README.md shows them.

Each `Section` says whether it applies to these runs and data set (`applies`) and writes its
files and markdown onto the `Page` (`write`); `build_report` runs the ones that apply, one
progress line each, then writes README.md. A new output is one more entry in `SECTIONS`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .. import paper
from ..data import DataSet
from ..labels import full_label
from ..formats import read_json_bounded
from ..records import PLAN_FILE, write_atomic
from .evidence import evidence_section
from .experiments import experiment_sections
from .markdown import (
    equal_epochs_markdown,
    escape,
    fmt_number,
    header_markdown,
    markdown_table,
    md_table,
    provenance,
    pruned_markdown,
    seeds_markdown,
    top1_cells,
)
from .plots import plot_accuracy_vs_cost, plot_confusion, plot_curves, plot_latency, plot_table
from .sequential import read_designs, sequential_markdown
from .stats import MARGIN_PP
from .tables import (
    best_runs_by_family,
    equal_epochs_table,
    imagenet_costs,
    made_from_a_run,
    paper_table,
    per_class_accuracy,
    speedup_table,
)

EQUAL_EPOCHS_CSV = "equal_epochs.csv"
HEADLINE, HEADLINE_TABLE = "headline.md", "table2_ratio"  # the table the project README shows, generated


@dataclass(frozen=True)
class ReportInput:
    """What every section reads: the runs (and their aggregate per configuration), the data set and
    its paper tables chosen for this report, and where things are."""

    runs: pd.DataFrame
    agg: dict[tuple, dict[str, Any]]
    dataset: DataSet
    tables: tuple[str, ...]
    margins: dict[str, float]
    results_dir: Path
    previous: Path  # the report folder, read for the evidence section an earlier report computed
    experiments: list[Path] | None = None
    data_dir: Path | None = None
    evidence: bool = True
    bench: pd.DataFrame | None = None


@dataclass
class Page:
    """What the sections have written so far: files in the staging folder `out`, README lines, and
    the figures the Plots section lists at the end."""

    out: Path
    written: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    plots: list[tuple[str, list[Path]]] = field(default_factory=list)

    def csv(self, name: str, frame: pd.DataFrame) -> None:
        write_atomic(self.out / name, frame.to_csv(index=False))
        self.written.append(self.out / name)

    def text(self, name: str, body: str) -> None:
        write_atomic(self.out / name, body)
        self.written.append(self.out / name)


@dataclass(frozen=True)
class Section:
    step: str  # its progress line
    write: Callable[[ReportInput, Page], None]
    applies: Callable[[ReportInput], bool] = lambda r: True


def headline_markdown(frame: pd.DataFrame, agg: dict, figure: str) -> str:
    """The project README's result: the headline table at a glance, its footnote, and its figure
    (linked relative to the report folder; `splice_readme` relinks it for the README)."""
    return "\n".join([f"**{paper.TABLES[HEADLINE_TABLE]}**", "", markdown_table(frame, agg), "",
                      f"![{paper.TABLES[HEADLINE_TABLE]}]({figure})", ""])


def _provenance(r: ReportInput, page: Page) -> None:
    controls = pd.DataFrame(r.runs.attrs.get("controls") or [])
    page.lines.append(header_markdown(provenance(pd.concat([r.runs, controls], ignore_index=True)
                                                 if len(controls) else r.runs)))
    title = r.dataset.title
    page.plots += [("Accuracy vs FLOPs", plot_accuracy_vs_cost(r.agg, page.out, "flops", title, r.tables)),
                   ("Accuracy vs parameters", plot_accuracy_vs_cost(r.agg, page.out, "params", title, r.tables)),
                   ("Test accuracy and training loss per epoch", plot_curves(r.agg, page.out, title))]


def _paper_table(table: str) -> Section:
    def write(r: ReportInput, page: Page) -> None:
        filename = paper.PAPER_TABLES[table].csv
        frame = paper_table(table, r.agg, r.margins.get(table, MARGIN_PP))
        page.csv(filename, frame)
        figure = plot_table(table, frame, r.agg, page.out)
        page.written += figure
        if table == HEADLINE_TABLE:
            page.text(HEADLINE, headline_markdown(frame, r.agg, figure[0].name))
        page.lines += [f"## {paper.TABLES[table]}", "", markdown_table(frame, r.agg), f"\nCSV: [{filename}]({filename})",
                       "", f"![{paper.TABLES[table]}]({figure[0].name}) ([SVG]({figure[1].name}))", ""]

    return Section(f"{table} table and plot", write)


def seed_plan_note(results_dir: Path) -> str:
    """How n was chosen, where `sweep --seeds auto` left its plan in the results folder."""
    plan = read_json_bounded(results_dir / PLAN_FILE, results_dir)
    if not isinstance(plan, dict) or not isinstance(plan.get("summary"), str):
        return ""
    return f"Seeds: {escape(plan['summary'])} (pilot: {escape(Path(str(plan.get('pilot'))).name)})."


def _seeds_and_controls(r: ReportInput, page: Page) -> None:
    """Seeds, the sequential decisions and seed plan, pruned rows and their equal-epochs controls,
    and the runs outside the paper's tables."""
    page.lines += [seeds_markdown(r.agg), ""]
    if (designs := read_designs(r.results_dir)) and (decisions := sequential_markdown(r.runs, r.tables, designs)):
        page.lines.append(decisions)
    if plan := seed_plan_note(r.results_dir):
        page.lines += [plan, ""]
    if pruned := pruned_markdown(r.runs):
        page.lines += [pruned, ""]
    made = set(r.runs.loc[made_from_a_run(r.runs), "model"])
    margin = next((r.margins.get(t, MARGIN_PP) for t in r.tables if made & {x.model for x in paper.rows(t)}),
                  MARGIN_PP)
    if not (equal_epochs := equal_epochs_table(r.runs, margin)).empty:
        page.csv(EQUAL_EPOCHS_CSV, equal_epochs)
        page.lines += [equal_epochs_markdown(equal_epochs), f"\nCSV: [{EQUAL_EPOCHS_CSV}]({EQUAL_EPOCHS_CSV})", ""]
    in_paper = {x.run_key for x in paper.rows(buildable=True)}
    if extra := [k for k in r.agg if k not in in_paper]:
        rows = [{"Model": full_label(*k), "Params (M)": fmt_number(r.agg[k]["params"] / 1e6, 3),
                 "FLOPs (M)": fmt_number(r.agg[k]["flops"] / 1e6, 1),
                 **top1_cells(r.agg[k]["top1_mean"], r.agg[k]["top1_std"], r.agg[k]["top1_ci95"], r.agg[k]["n"],
                              r.agg[k]["mixed"])}
                for k in extra]
        page.lines += ["## Runs outside the paper's tables", "", md_table(pd.DataFrame(rows)), ""]


def _experiments_and_classes(r: ReportInput, page: Page) -> None:
    files, more = experiment_sections(r.agg, page.out, r.experiments)
    page.written += files
    page.lines += more
    if best := best_runs_by_family(r.runs):
        page.csv("per_class_accuracy.csv", classes := per_class_accuracy(best))
        page.lines += ["## Per-class test accuracy (%) of each family's best run", "",
                       md_table(classes), "\nCSV: [per_class_accuracy.csv](per_class_accuracy.csv)", ""]
        page.plots += [(f"Confusion matrix: best {family} run", plot_confusion(run, family, page.out))
                       for family, run in best.items()]


def _evidence(r: ReportInput, page: Page) -> None:
    files, text = evidence_section(r.runs, r.results_dir, page.out, r.previous, r.data_dir, compute=r.evidence)
    page.written += files
    page.lines.append(text)


def _imagenet_costs(r: ReportInput, page: Page) -> None:
    costs = imagenet_costs()
    page.csv("imagenet_costs.csv", costs)
    page.lines += ["## ImageNet models: parameters and FLOPs (224x224, not trained here)", "",
                   md_table(costs.drop(columns=["table"])), "\nCSV: [imagenet_costs.csv](imagenet_costs.csv)", ""]


def _speedups(r: ReportInput, page: Page) -> None:
    page.csv("speedup.csv", speed := speedup_table(r.bench))
    page.plots.append(("FLOPs vs measured latency", plot_latency(r.bench, page.out)))
    page.lines += ["## FLOPs ratio vs measured speed-up (from results/bench.csv)", "",
                   "Ratios are baseline / Ghost for FLOPs and latency, Ghost / baseline for throughput; "
                   "memory is Ghost / baseline peak of a training step.", "", md_table(speed), ""]


def _plots_and_readme(r: ReportInput, page: Page) -> None:
    page.lines += ["## Plots", ""]
    for title, paths in page.plots:
        page.lines += [f"### {title}", "", f"![{title}]({paths[0].name}) ([SVG]({paths[1].name}))", ""]
        page.written += paths
    page.text("README.md", "\n".join(page.lines))


def sections(tables: tuple[str, ...]) -> tuple[Section, ...]:
    """Every section of a report on `tables` (the data set's paper tables chosen), in page order."""
    return (Section("accuracy-vs-cost plots", _provenance),
            *(_paper_table(t) for t in tables),
            Section("seeds, sequential decisions, controls", _seeds_and_controls),
            Section("experiment tables and per-class accuracy", _experiments_and_classes),
            Section("evidence (feature maps, redundancy)", _evidence),
            # the paper's ImageNet rows beside a paper data set's report, not beside another's (CIFAR-100)
            Section("ImageNet costs", _imagenet_costs, lambda r: bool(paper.tables_of(r.dataset.name))),
            Section("speed-ups", _speedups, lambda r: r.bench is not None),
            Section("plots and README.md", _plots_and_readme))


def applicable(report: ReportInput) -> list[Section]:
    return [s for s in sections(report.tables) if s.applies(report)]


def write_sections(report: ReportInput, out: Path, steps: Iterator[Section]) -> list[Path]:
    """Write each section in `steps` (the applicable ones, wrapped in a progress tracker) into `out`."""
    page = Page(out)
    for section in steps:
        section.write(report, page)
    return page.written
