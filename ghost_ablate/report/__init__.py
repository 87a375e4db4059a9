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
from ..progress import track
from ..formats import read_bounded
from ..records import write_atomic
from ..experiment import load_experiment
from .plots import headless
from .sections import HEADLINE, ReportInput, applicable, write_sections
from .tables import ReportError, aggregate, load_runs

__all__ = ["HEADLINE", "ReportError", "build_report", "load_runs"]


def report_steps(tables: tuple[str, ...] = paper.CIFAR_TABLES, bench: bool = False,
                 dataset: str = "cifar10") -> tuple[str, ...]:
    """The sections a report on `tables` announces as it writes them, one progress line each."""
    probe = ReportInput(pd.DataFrame(), {}, get_dataset(dataset), tables, {}, Path(), Path(),
                        bench=pd.DataFrame() if bench else None)
    return tuple(s.step for s in applicable(probe))


REPORT_STEPS = report_steps()  # a CIFAR-10 report's without bench.csv


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




def readme_markers(block: str) -> tuple[str, str]:
    """The comments around a generated block of the project README: `<!-- BLOCK: generated by
    ..., do not edit -->` (the command that fills it) and `<!-- /BLOCK -->`."""
    return f"<!-- {block}: generated by", f"<!-- /{block} -->"


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


def experiment_margins(paths: list[Path]) -> dict[str, float]:
    """The non-inferiority margin of each paper table, as the experiment files declare it."""

    margins: dict[str, float] = {}
    for path in paths:
        margins.update(load_experiment(path).margins)
    return margins


def _write_report(runs: pd.DataFrame, results_dir: Path, out: Path, previous: Path, experiments: list[Path] | None,
                  data_dir: Path | None, evidence: bool, bench: pd.DataFrame | None = None,
                  only: list[str] | None = None) -> list[Path]:
    """Every file of the report into `out` (a staging folder), section by section (`sections.py`);
    `previous` is the report folder, read for the evidence section an earlier report computed."""
    datasets = runs["dataset"].dropna().unique()  # one data set per report (`load_runs`)
    dataset = get_dataset(datasets[0] if len(datasets) else None)
    tables = paper.tables_of(dataset.name)
    if only:
        unknown = [t for t in only if t not in tables]
        if unknown:
            raise ReportError(f"--tables {unknown[0]}: not a {dataset.title} paper table; valid: {', '.join(tables)}")
        tables = tuple(t for t in tables if t in only)
    report = ReportInput(runs, aggregate(runs), dataset, tables, experiment_margins(experiments or []), results_dir,
                         previous, experiments, data_dir, evidence, bench)
    todo = applicable(report)
    return write_sections(report, out, track(todo, "report", "section", label=lambda s: s.step))
