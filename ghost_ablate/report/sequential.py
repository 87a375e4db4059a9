"""A sequential design for seeds bought a block at a time (issue 39).

Each row of a table is compared with its reference by the per-seed paired gap d = row - reference
(top-1 points). Two one-sided hypotheses are tested at the non-inferiority margin m:

- "no worse": reject H0 mean(d) <= -m (the paired t of the margin, TOST's lower test);
- "worse by more than m": reject H0 mean(d) >= -m.

The two are complementary, so at most one can be a false decision. Seeds arrive in looks (one
block each: n = first, first + 1, ..., cap), so each test spends its alpha over the looks with a
fixed spending function alpha(t) = alpha * t**RHO (t = n / cap, Kim and DeMets' power family):
at look k the test runs at the level alpha * w_k, w_k = t_k**RHO - t_(k-1)**RHO. The row's
sequential p-value p = min_k p_k / w_k is valid at every look by the union bound
(P(p <= u) <= sum_k P(p_k <= u w_k) = u), conservatively so, whatever the looks' correlation and
whenever a row stops. Holm's step-down over these p-values then holds the family-wise error rate
across the table's rows. A row is decided when either test rejects after Holm; a row still open
at the cap is "undetermined at n = cap". With one look (first == cap) the tests are the fixed-n
paired t of statsmodels' `ttost_paired` and `multipletests(method="holm")`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .. import paper
from ..formats import read_json_bounded
from ..records import row_key, unpack_outcomes
from ..stacks import comparison_group, load_groups
from .markdown import md_table
from .stats import ALPHA, MARGIN_PP, SeedStats, holm, seed_stats, seeds_for_gap
from .tables import BASELINES, aggregate, vs_reference

RHO = 2.0  # spending exponent: little alpha at the first looks, where few seeds have little power
FIRST_LOOK = 3  # the first block the procedure looks at (n = 3 pairs)
DECISIONS = ("no worse", "worse by more than the margin")


@dataclass(frozen=True)
class Design:
    margin: float  # m, top-1 points
    cap: int  # the most seeds a row gets (the last look)
    first: int = FIRST_LOOK
    alpha: float = ALPHA
    rho: float = RHO

    def __post_init__(self) -> None:
        if not 2 <= self.first <= self.cap:
            raise ValueError(f"looks need 2 <= first ({self.first}) <= cap ({self.cap})")
        if self.margin <= 0 or not 0 < self.alpha < 1:
            raise ValueError(f"margin must be > 0 and alpha in (0, 1), got {self.margin}, {self.alpha}")

    @property
    def looks(self) -> list[int]:
        return list(range(self.first, self.cap + 1))

    def weight(self, n: int) -> float:
        """The share of alpha spent at the look with n pairs (0 for a seed count that is no look)."""
        if n < self.first or n > self.cap:
            return 0.0
        t, before = n / self.cap, (n - 1) / self.cap if n > self.first else 0.0
        return t ** self.rho - before ** self.rho


def look_ratios(diffs: np.ndarray, design: Design, lower: bool) -> np.ndarray:
    """p_k / w_k of one side at each look, for paired gaps `diffs` of shape (..., n) (n >= first):
    shape (..., looks reached), the one-sided paired t at the margin (lower=True: H0 mean <= -m,
    the "no worse" side; False: H0 mean >= -m). Gaps with no spread give p 0 or 1 by the side
    their common value lies on."""
    d = np.asarray(diffs, dtype=float)
    out = []
    for n in range(design.first, min(d.shape[-1], design.cap) + 1):
        part = d[..., :n]
        mean, sd = part.mean(-1), part.std(-1, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (mean + design.margin) / (sd / math.sqrt(n))
        t = np.where(np.isnan(t), 0.0, t)  # no spread, exactly at the margin: neither side rejects
        p = stats.t.sf(t, n - 1) if lower else stats.t.cdf(t, n - 1)
        p = np.where((sd == 0) & (mean + design.margin == 0), 1.0, p)
        out.append(np.minimum(p / design.weight(n), 1.0))
    return np.stack(out, axis=-1) if out else np.ones(d.shape[:-1] + (0,))


def sequential_p(diffs: Sequence[float], design: Design, lower: bool) -> float | None:
    """The row's sequential p-value of one side: min over the looks its pairs reached of p_k / w_k
    (capped at 1); None before the first look."""
    if len(diffs) < design.first:
        return None
    ratios = look_ratios(np.asarray(diffs, dtype=float), design, lower)
    return float(ratios.min())


def holm_array(p: np.ndarray) -> np.ndarray:
    """Holm's adjusted p-values along the last axis (the rows), vectorized over the leading axes:
    the same numbers as `stats.holm` on each row vector."""
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1) * np.arange(m, 0, -1)
    adjusted = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


@dataclass(frozen=True)
class RowDecision:
    row: str
    n: int  # pairs looked at
    gap: float | None  # mean paired gap (points)
    decision: str  # one of DECISIONS, "open" (below the cap) or "undetermined at n = cap"
    p_no_worse: float | None  # Holm-adjusted sequential p of each side
    p_worse: float | None
    more_seeds: int | None  # for an open row: pairs a fixed-n test at this spread would need (estimate)

    @property
    def decided(self) -> bool:
        return self.decision in DECISIONS


def decide(diffs_by_row: Mapping[str, Sequence[float]], design: Design) -> list[RowDecision]:
    """Each row's decision after the looks its pairs allow (a decided row's pairs end at the look
    that decided it), Holm across rows on each side."""
    rows = list(diffs_by_row)
    no_worse = holm([sequential_p(diffs_by_row[r], design, True) for r in rows])
    worse = holm([sequential_p(diffs_by_row[r], design, False) for r in rows])
    out = []
    for r, p_nw, p_w in zip(rows, no_worse, worse):
        diffs = list(diffs_by_row[r])
        s = seed_stats(diffs)
        if p_nw is not None and p_nw <= design.alpha:
            decision = DECISIONS[0]
        elif p_w is not None and p_w <= design.alpha:
            decision = DECISIONS[1]
        elif len(diffs) >= design.cap:
            decision = f"undetermined at n = {design.cap}"
        else:
            decision = "open"
        out.append(RowDecision(r, len(diffs), s.mean, decision, p_nw, p_w,
                               _more_seeds(s, design, len(rows)) if decision == "open" else None))
    return out


def _more_seeds(s: SeedStats, design: Design, rows: int) -> int | None:
    """Pairs beyond n that a test at the cap's share of alpha (Bonferroni over rows) would need to
    separate the observed gap from the margin with 80% power, if the gap and spread are as seen:
    a planning figure, not a promise. None without a spread or with the gap on the margin."""
    if s.std is None or s.mean is None or s.mean == -design.margin:
        return None
    need = seeds_for_gap(s.std, abs(s.mean + design.margin), design.alpha * design.weight(design.cap) / max(rows, 1))
    return None if need is None else max(need - s.n, 1)


def simulate(true_gap: float, sd: float, design: Design, rows: int, replications: int,
             seed: int = 0) -> dict[str, float]:
    """Monte Carlo of the whole procedure on synthetic normal paired gaps: `rows` rows with the same
    true gap, a row's p-values frozen from the look that decides it, Holm across rows at every look.
    Returns the share of replications in which at least one row was decided each way (family-wise)."""
    rng = np.random.default_rng(seed)
    data = rng.normal(true_gap, sd, size=(replications, rows, design.cap))
    sides = [np.minimum.accumulate(look_ratios(data, design, lower), axis=-1) for lower in (True, False)]
    decided = np.zeros((replications, rows), dtype=int)  # 0 open, 1 no worse, 2 worse
    frozen = [np.ones((replications, rows)) for _ in sides]
    for k in range(len(design.looks)):
        open_ = decided == 0
        adjusted = []
        for side, freeze in zip(sides, frozen):
            freeze[open_] = side[..., k][open_]
            adjusted.append(holm_array(freeze))
        decided = np.where(open_ & (adjusted[0] <= design.alpha), 1, decided)
        decided = np.where((decided == 0) & (adjusted[1] <= design.alpha), 2, decided)
    return {DECISIONS[0]: float((decided == 1).any(-1).mean()), DECISIONS[1]: float((decided == 2).any(-1).mean())}


def design_text(design: Design) -> str:
    """The design in words, for the report."""
    return (f"margin {design.margin:g} points; looks at n = {design.first}..{design.cap} pairs; alpha "
            f"{design.alpha:g} per side spent as alpha x (n/{design.cap})^{design.rho:g}; Holm across rows")


@dataclass(frozen=True)
class DecidableMargin:
    pairs: int  # seeds with both runs' per-image outcomes
    images: int
    low: float  # one-sided lower (1 - alpha) bound of the mean gap, test images and seeds resampled
    high: float  # the matching upper bound

    @property
    def margin(self) -> float:
        """The smallest non-inferiority margin these data would decide: a margin above -low is shown
        (the gap's lower bound clears it); at or below it, no test on these images could."""
        return max(0.0, -self.low)


def decidable_margin(pairs: Sequence[tuple[Sequence[bool], Sequence[bool]]], alpha: float = ALPHA,
                     draws: int = 4000, seed: int = 0) -> DecidableMargin | None:
    """The gap row - reference (points) when the test images are a sample too: a bootstrap over
    seeds and test images together (each draw resamples the seeds, and one multiset of test images
    shared by every run, as the runs share one test split). `pairs`: per seed, the reference's and
    the row's per-image outcomes on the same images. None without 2 pairs."""
    if len(pairs) < 2:
        return None
    ref = np.array([p[0] for p in pairs], dtype=np.int8)
    row = np.array([p[1] for p in pairs], dtype=np.int8)
    if ref.shape != row.shape:
        raise ValueError("every pair needs the same test images on both sides")
    diff = (row - ref).astype(float)  # (seeds, images): +1 only the row right, -1 only the reference
    seeds, images = diff.shape
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(images, np.full(images, 1 / images), size=draws)  # (draws, images)
    per_seed = counts @ diff.T * (100 / images)  # (draws, seeds): each seed's gap on the drawn images
    picks = rng.integers(0, seeds, size=(draws, seeds))
    gaps = np.take_along_axis(per_seed, picks, axis=1).mean(1)
    low, high = np.quantile(gaps, [alpha, 1 - alpha])
    return DecidableMargin(seeds, images, float(low), float(high))


DESIGN_FILE = "sequential_design.json"  # written beside a sequential sweep's runs; the report reads it


@dataclass(frozen=True)
class RowOutcome:
    table: str
    row: paper.PaperRow
    reference: paper.PaperRow
    decision: RowDecision
    margin: DecidableMargin | None = None


def table_decisions(runs: pd.DataFrame, tables: Sequence[str], designs: Mapping[str, Design]) -> list[RowOutcome]:
    """Each paper row of `tables` (that has a reference) decided from `runs` (one recipe and data set,
    `tables.load_runs`): its paired gaps by seed on one machine and torch (`tables.vs_reference`),
    the table's design, Holm across the table's rows; and the margin its per-image outcomes decide."""
    agg = aggregate(runs)
    out = []
    for table in tables:
        found = []
        for row in paper.rows(table, buildable=True):
            ref = paper.reference_row(row, BASELINES)
            if ref is None or ref.key == row.key:
                continue
            tested = vs_reference(agg.get(row.run_key), agg.get(ref.run_key))
            found.append((row, ref, list(tested.diffs) if tested.test == "paired t" else []))
        decisions = decide({row.label: diffs for row, _, diffs in found}, designs[table])
        for (row, ref, _), decision in zip(found, decisions):
            out.append(RowOutcome(table, row, ref, decision, decidable_margin(outcome_pairs(runs, row, ref))))
    return out


def outcome_pairs(runs: pd.DataFrame, row: paper.PaperRow, ref: paper.PaperRow) -> list[tuple[list[bool], list[bool]]]:
    """Per seed both ran on one machine and torch: the reference's and the row's per-image test
    outcomes (records that keep them: `test_correct`)."""
    if "test_correct" not in runs:
        return []
    done = runs[(runs["status"] == "finished") & runs["test_correct"].map(lambda v: isinstance(v, str))]
    keyed = {(row_key(r), int(r["seed"])): r for _, r in done.iterrows()}
    groups = load_groups()
    pairs = []
    for (key, seed), r in sorted(keyed.items(), key=lambda kv: kv[0][1]):
        if key != row.run_key or (ref.run_key, seed) not in keyed:
            continue
        base = keyed[(ref.run_key, seed)]
        if comparison_group(base["stack"], groups) == comparison_group(r["stack"], groups):
            pairs.append((unpack_outcomes(base["test_correct"]), unpack_outcomes(r["test_correct"])))
    return pairs


def keys_to_train(outcomes: Sequence[RowOutcome]) -> tuple[set[tuple], set[tuple]]:
    """(configurations of open rows and their references, configurations of decided rows): the next
    block trains the first and none of the second that is not also in the first."""
    needed = {k for o in outcomes if not o.decision.decided for k in (o.row.run_key, o.reference.run_key)}
    done = {o.row.run_key for o in outcomes if o.decision.decided} - needed
    return needed, done


def design_for(experiment) -> dict[str, Design]:  # noqa: ANN001 - experiment.Experiment (no import: layers)
    """Each paper table's design, from an experiment that declares `sequential` and its margins."""
    first, cap = experiment.sequential
    return {t: Design(experiment.margins.get(t, MARGIN_PP), cap, first) for t in experiment.tables}


def read_designs(results_dir: Path) -> dict[str, Design] | None:
    """The designs a sequential sweep wrote beside its runs (DESIGN_FILE), or None."""
    doc = read_json_bounded(Path(results_dir) / DESIGN_FILE, Path(results_dir))
    try:
        return {str(t): Design(float(m), int(doc["cap"]), int(doc["first"])) for t, m in doc["margins"].items()}
    except (TypeError, KeyError, ValueError, AttributeError):
        return None


def run_hours(runs: pd.DataFrame, key: tuple) -> tuple[float, int]:
    """CPU-hours (wall time) the finished runs of one configuration took, and how many there are."""
    mine = runs[(runs["status"] == "finished") & runs.apply(lambda r: row_key(r) == key, axis=1)]
    return float(mine["wall_time_s"].fillna(0).sum()) / 3600, len(mine)


def sequential_markdown(runs: pd.DataFrame, tables: Sequence[str], designs: Mapping[str, Design]) -> str:
    """The evidence section: each row's sequential decision, seeds and CPU-hours it took (or the
    seeds and hours it still needs), and the gap and margin the test images allow."""
    outcomes = table_decisions(runs, [t for t in tables if t in designs], designs)
    if not outcomes:
        return ""
    rows = []
    for o in outcomes:
        d = o.decision
        hours, n_runs = run_hours(runs, o.row.run_key)
        ref_hours, ref_runs = run_hours(runs, o.reference.run_key)
        per_pair = (hours / n_runs if n_runs else 0) + (ref_hours / ref_runs if ref_runs else 0)
        if d.decided or d.decision.startswith("undetermined"):
            cost = f"{d.n} seeds, {hours:.1f} h (+ {ref_hours:.1f} h of reference runs shared by the table)"
        elif d.more_seeds is not None:
            cost = f"{d.n} seeds so far; about {d.more_seeds} more ({d.more_seeds * per_pair:.1f} h with its reference)"
        else:
            cost = f"{d.n} seeds so far; the gap sits on the margin or its spread is unknown: no estimate"
        m = o.margin
        rows.append({
            "row": o.row.label, "vs": o.reference.label, "pairs": d.n,
            "mean gap (pp)": "" if d.gap is None else f"{d.gap:+.2f}",
            "decision": d.decision,
            "Holm p, no worse": "" if d.p_no_worse is None else f"{d.p_no_worse:.3f}",
            "Holm p, worse by > m": "" if d.p_worse is None else f"{d.p_worse:.3f}",
            "seeds and CPU-hours": cost,
            "gap, images and seeds resampled (90%)": "" if m is None else f"{m.low:+.2f} to {m.high:+.2f}",
            "smallest decidable margin (pp)": "" if m is None else f"{m.margin:.2f}"})
    design = next(iter(designs.values()))
    images = next((o.margin.images for o in outcomes if o.margin is not None), None)
    return "\n".join([
        "## Sequential decisions", "",
        f"Seeds are bought one block at a time and tested as they come ({design_text(design)}); a decided row gets "
        f"no more seeds. A row is \"no worse\" when its gap's lower side clears -m, \"worse by more than the margin\" "
        f"when its upper side stays below -m, else open (or undetermined at the cap). CPU-hours are the wall time of "
        f"the row's own runs as recorded.", "",
        md_table(pd.DataFrame(rows)), "",
        "Seeds vary the training; the test split does not. Every verdict above is conditional on these "
        f"{images or 'same'} test images{'' if images is None else ' (one point is about ' + str(round(images / 100)) + ' images)'}. "
        "The interval beside it resamples the test images and the seeds together (a bootstrap over both, "
        "from the per-image outcomes the records keep); the smallest decidable margin is the margin whose "
        "non-inferiority that interval's lower end would still show. Rows whose records predate per-image "
        "outcomes leave those cells empty.", ""])
