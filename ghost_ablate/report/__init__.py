"""Run records -> the paper's tables (CSV + markdown), statistics over seeds and plots.

Everything is rebuilt from `results/runs/*/result.json` (and `results/bench.csv` where it
exists); the paper's numbers come from `paper.py`. One module per kind of output:
`tables` (DataFrames), `stats` (seed statistics), `plots`, `markdown`, `experiments` (a
table for any experiment file), `evidence` (feature maps); this module
writes them into the report folder.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from .. import paper
from ..data import data_fingerprint, get_dataset
from ..labels import full_label
from ..progress import track
from ..records import PLAN_FILE, read_bounded, read_json_bounded, write_atomic
from ..sweep import load_experiment
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
from .plots import (
    headless,
    plot_accuracy_vs_cost,
    plot_confusion,
    plot_curves,
    plot_latency,
    plot_table,
)
from .sequential import read_designs, sequential_markdown
from .stats import MARGIN_PP
from .tables import (
    ReportError,
    aggregate,
    best_runs_by_family,
    equal_epochs_table,
    imagenet_costs,
    load_runs,
    made_from_a_run,
    paper_table,
    per_class_accuracy,
    speedup_table,
)

__all__ = ["ReportError", "build_report", "load_runs"]


def report_steps(tables: tuple[str, ...] = paper.CIFAR_TABLES) -> tuple[str, ...]:
    """The sections a report announces as it writes them, with one step per trained table."""
    return ("accuracy-vs-cost plots", *(f"{t} table and plot" for t in tables),
            "experiment tables and per-class accuracy", "evidence (feature maps, redundancy)",
            "ImageNet costs, speed-ups and README.md")


REPORT_STEPS = report_steps()  # a CIFAR-10 report's


def build_report(results_dir: str | Path, out_dir: str | Path, profile: str | None = None,
                 experiments: list[Path] | None = None, data_dir: str | Path | None = None,
                 data: str | None = None, evidence: bool = True, epochs: int | None = None,
                 tables: list[str] | None = None, stack: str | None = None) -> list[Path]:
    """Write every CSV table, the markdown report and the plots; return the files written.
    `tables`: only these of the data set's paper tables (default: all of them). `stack`: only
    the runs whose machine and torch ("DEVICE / torch VERSION") contain this text.
    `experiments`: the experiment files to give a table of their own (default: see
    `experiment_sections`). `data`: which data set's runs, by fingerprint (needed when the
    results hold several); `data_dir`: a data folder, whose runs are chosen among several and
    whose test images the evidence section uses if they are its runs' data; `evidence=False`
    keeps the previous evidence section instead of computing it.

    Everything is written into a staging folder beside `out_dir` first and moved in when
    complete, README.md last, so an interrupted report leaves the previous one in place."""
    headless()
    results_dir, out = Path(results_dir), Path(out_dir)
    prefer = None
    if data_dir is not None and data is None:
        prefer = data_fingerprint(data_dir)
    if out.exists() and not out.is_dir() or out.is_symlink():
        raise ReportError(f"--out {out}: not a folder (the report is written into a folder of its own)")
    runs = load_runs(results_dir, profile, data, prefer, epochs, stack=stack)
    bench = read_bench(results_dir)  # a bad bench.csv is one line before anything is written
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        written = _write_report(runs, results_dir, staging, out, experiments,
                                Path(data_dir) if data_dir else None, evidence, bench, tables)
        for path in sorted(written, key=lambda p: p.name == "README.md"):  # README.md last
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / p.name for p in written]


BENCH_COLUMNS = ("model", "ratio", "dw_size", "width", "flops", "device_kind", "latency_bs1_ms", "eval_img_s",
                 "train_img_s", "train_peak_mem_mb")


def read_bench(results_dir: Path) -> pd.DataFrame | None:
    """results/bench.csv (`ghost-ablate bench`) where it is a regular file of the results folder with
    the columns the speed-up table reads; a ReportError names what is missing."""

    data = read_bounded(results_dir / "bench.csv", results_dir)
    if data is None:
        return None
    try:
        bench = pd.read_csv(io.BytesIO(data), comment="#")
    except (ValueError, UnicodeDecodeError) as err:
        raise ReportError(f"{results_dir / 'bench.csv'}: not a CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in BENCH_COLUMNS if c not in bench]
    if missing:
        raise ReportError(f"{results_dir / 'bench.csv'}: missing column(s) {', '.join(missing)}; "
                          f"`ghost-ablate bench` writes it")
    return bench


EQUAL_EPOCHS_CSV = "equal_epochs.csv"
HEADLINE, HEADLINE_TABLE = "headline.md", "table2_ratio"  # the table the project README shows, generated


def readme_markers(block: str) -> tuple[str, str]:
    """The comments around a generated block of the project README: `<!-- BLOCK: generated by
    ..., do not edit -->` (the command that fills it) and `<!-- /BLOCK -->`."""
    return f"<!-- {block}: generated by", f"<!-- /{block} -->"


def headline_markdown(frame: pd.DataFrame, agg: dict, figure: str) -> str:
    """The project README's result: the headline table at a glance, its footnote, and its figure
    (linked relative to the report folder; `splice_readme` relinks it for the README)."""
    return "\n".join([f"**{paper.TABLES[HEADLINE_TABLE]}**", "", markdown_table(frame, agg), "",
                      f"![{paper.TABLES[HEADLINE_TABLE]}]({figure})", ""])


RELATIVE_LINK = re.compile(r"\]\((?![a-z][a-z0-9+.-]*:|/|#)([^)\s]+)\)")  # ](path), not a URL, root or anchor


def splice_readme(readme: Path, headline: str, block: str = "headline", report: str = "reports") -> None:
    """Replace the generated block `block` of `readme` with `headline` (one source: the report),
    its relative links made relative to the README (`report`: the report folder as seen from the
    README's folder)."""
    text = readme.read_text()
    start, end = readme_markers(block)
    if start not in text or end not in text.split(start, 1)[-1]:
        raise ReportError(f"{readme}: no {block} block ({start} ... -->, then {end}) to fill")
    before, rest = text.split(start, 1)
    marker, body = rest.split("-->", 1)
    after = body.split(end, 1)[1]
    linked = RELATIVE_LINK.sub(lambda m: f"]({report}/{m.group(1)})", headline)
    write_atomic(readme, f"{before}{start}{marker}-->\n{linked}{end}{after}")


def seed_plan_note(results_dir: Path) -> str:
    """How n was chosen, where `sweep --seeds auto` left its plan in the results folder."""

    plan = read_json_bounded(results_dir / PLAN_FILE, results_dir)
    if not isinstance(plan, dict) or not isinstance(plan.get("summary"), str):
        return ""
    return f"Seeds: {escape(plan['summary'])} (pilot: {escape(Path(str(plan.get('pilot'))).name)})."


def experiment_margins(paths: list[Path]) -> dict[str, float]:
    """The non-inferiority margin of each paper table, as the experiment files declare it."""

    margins: dict[str, float] = {}
    for path in paths:
        margins.update(load_experiment(path).margins)
    return margins


def _write_report(runs: pd.DataFrame, results_dir: Path, out: Path, previous: Path, experiments: list[Path] | None,
                  data_dir: Path | None, evidence: bool, bench: pd.DataFrame | None = None,
                  only: list[str] | None = None) -> list[Path]:
    """Every file of the report into `out` (a staging folder); `previous` is the report folder,
    read for the evidence section an earlier report computed."""
    agg = aggregate(runs)
    written: list[Path] = []
    margins = experiment_margins(experiments or [])
    datasets = runs["dataset"].dropna().unique()  # one data set per report (`load_runs`)
    dataset = get_dataset(datasets[0] if len(datasets) else None)
    tables = paper.tables_of(dataset.name)
    if only:
        unknown = [t for t in only if t not in tables]
        if unknown:
            raise ReportError(f"--tables {unknown[0]}: not a {dataset.title} paper table; valid: {', '.join(tables)}")
        tables = tuple(t for t in tables if t in only)
    steps = track(report_steps(tables), "report", "section", label=str)  # one line per finished section off a terminal
    next(steps)
    control_runs = pd.DataFrame(runs.attrs.get("controls") or [])
    sections = [header_markdown(provenance(pd.concat([runs, control_runs], ignore_index=True)
                                           if len(control_runs) else runs))]
    title = dataset.title
    plots = [("Accuracy vs FLOPs", plot_accuracy_vs_cost(agg, out, "flops", title, tables)),
             ("Accuracy vs parameters", plot_accuracy_vs_cost(agg, out, "params", title, tables)),
             ("Test accuracy and training loss per epoch", plot_curves(agg, out, title))]
    for table in tables:
        filename = paper.PAPER_TABLES[table].csv
        next(steps)
        frame = paper_table(table, agg, margins.get(table, MARGIN_PP))
        write_atomic(out / filename, frame.to_csv(index=False))
        written.append(out / filename)
        figure = plot_table(table, frame, agg, out)
        written += figure
        if table == HEADLINE_TABLE:
            write_atomic(out / HEADLINE, headline_markdown(frame, agg, figure[0].name))
            written.append(out / HEADLINE)
        sections += [f"## {paper.TABLES[table]}", "", markdown_table(frame, agg), f"\nCSV: [{filename}]({filename})", "",
                     f"![{paper.TABLES[table]}]({figure[0].name}) ([SVG]({figure[1].name}))", ""]
    sections += [seeds_markdown(agg), ""]
    if (designs := read_designs(results_dir)) and (decisions := sequential_markdown(runs, tables, designs)):
        sections += [decisions]
    if plan := seed_plan_note(results_dir):
        sections += [plan, ""]
    if pruned := pruned_markdown(runs):
        sections += [pruned, ""]
    made = set(runs.loc[made_from_a_run(runs), "model"])
    margin = next((margins.get(t, MARGIN_PP) for t in tables if made & {r.model for r in paper.rows(t)}), MARGIN_PP)
    if not (equal_epochs := equal_epochs_table(runs, margin)).empty:
        write_atomic(out / EQUAL_EPOCHS_CSV, equal_epochs.to_csv(index=False))
        written.append(out / EQUAL_EPOCHS_CSV)
        sections += [equal_epochs_markdown(equal_epochs), f"\nCSV: [{EQUAL_EPOCHS_CSV}]({EQUAL_EPOCHS_CSV})", ""]
    in_paper = {r.run_key for r in paper.rows(buildable=True)}
    extra = [k for k in agg if k not in in_paper]
    if extra:
        rows = [{"Model": full_label(*k), "Params (M)": fmt_number(agg[k]["params"] / 1e6, 3),
                 "FLOPs (M)": fmt_number(agg[k]["flops"] / 1e6, 1),
                 **top1_cells(agg[k]["top1_mean"], agg[k]["top1_std"], agg[k]["top1_ci95"], agg[k]["n"],
                             agg[k]["mixed"])}
                for k in extra]
        sections += ["## Runs outside the paper's tables", "", md_table(pd.DataFrame(rows)), ""]
    next(steps)
    files, more = experiment_sections(agg, out, experiments)
    written += files
    sections += more
    best = best_runs_by_family(runs)
    if best:
        classes = per_class_accuracy(best)
        write_atomic(out / "per_class_accuracy.csv", classes.to_csv(index=False))
        written.append(out / "per_class_accuracy.csv")
        sections += ["## Per-class test accuracy (%) of each family's best run", "", md_table(classes),
                     "\nCSV: [per_class_accuracy.csv](per_class_accuracy.csv)", ""]
        plots += [(f"Confusion matrix: best {family} run", plot_confusion(r, family, out))
                  for family, r in best.items()]
    next(steps)
    evidence_files, evidence_md = evidence_section(runs, results_dir, out, previous, data_dir, compute=evidence)
    written += evidence_files
    sections += [evidence_md]
    next(steps)
    if paper.tables_of(dataset.name):  # a paper data set's report: the paper's ImageNet rows beside it
        costs = imagenet_costs()
        write_atomic(out / "imagenet_costs.csv", costs.to_csv(index=False))
        written.append(out / "imagenet_costs.csv")
        sections += ["## ImageNet models: parameters and FLOPs (224x224, not trained here)", "",
                     md_table(costs.drop(columns=["table"])), "\nCSV: [imagenet_costs.csv](imagenet_costs.csv)", ""]
    if bench is not None:
        speed = speedup_table(bench)
        write_atomic(out / "speedup.csv", speed.to_csv(index=False))
        written.append(out / "speedup.csv")
        plots.append(("FLOPs vs measured latency", plot_latency(bench, out)))
        sections += ["## FLOPs ratio vs measured speed-up (from results/bench.csv)", "",
                     "Ratios are baseline / Ghost for FLOPs and latency, Ghost / baseline for throughput; "
                     "memory is Ghost / baseline peak of a training step.", "", md_table(speed), ""]
    sections += ["## Plots", ""]
    for title, paths in plots:
        png = paths[0].name
        sections += [f"### {title}", "", f"![{title}]({png}) ([SVG]({paths[1].name}))", ""]
        written += paths
    write_atomic(out / "README.md", "\n".join(sections))
    written.append(out / "README.md")
    for _ in steps:  # the last step's line
        pass
    return written
