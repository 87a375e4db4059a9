"""Comparison groups of machines (issue 39): two (device, torch) stacks pair runs only where they
give the same runs. A stack-equivalence probe (`ghost-ablate stack-probe RUN`) retrains on this
machine a finished run that a record already holds and compares the two outcomes bit for bit
(every epoch's losses and accuracies, the confusion matrix, each test image's outcome where
recorded). Where they match, the two stacks are one comparison group, written with the probe's
evidence to STACK_GROUPS; where not, pairs stay within one stack, as without a probe.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .formats import read_json_bounded
from .records import stack_label, write_atomic

STACK_GROUPS = Path(__file__).resolve().parents[1] / "results" / "stack_groups.json"
COMPARED = ("train_loss", "train_acc", "test_loss", "test_acc", "test_acc5")


def load_groups(path: Path | None = None) -> list[dict[str, Any]]:
    """The recorded groups: [{"stacks": [...], "evidence": [...]}, ...]; none where the file is absent."""
    path = path or STACK_GROUPS
    doc = read_json_bounded(path, path.parent)
    groups = doc.get("groups") if isinstance(doc, dict) else None
    return [g for g in groups or [] if isinstance(g, dict) and isinstance(g.get("stacks"), list)]


def comparison_group(stack: str, groups: list[dict[str, Any]] | None = None) -> str:
    """The label a stack pairs under: the first (sorted) stack of its group, or itself."""
    for group in load_groups() if groups is None else groups:
        members = sorted(str(s) for s in group["stacks"])
        if stack in members:
            return members[0]
    return stack


def first_difference(reference: dict[str, Any], probe: dict[str, Any]) -> str | None:
    """Where two records of the same configuration differ in outcome, in words; None if every epoch's
    losses and accuracies, the confusion matrix and the per-image outcomes agree exactly."""
    ref_h, probe_h = reference.get("history") or [], probe.get("history") or []
    if len(ref_h) != len(probe_h):
        return f"{len(ref_h)} epochs recorded against {len(probe_h)}"
    for a, b in zip(ref_h, probe_h):
        for key in COMPARED:
            if a.get(key) != b.get(key):
                return f"epoch {a.get('epoch')}: {key} {a.get(key)!r} against {b.get(key)!r}"
    if reference.get("test_confusion") != probe.get("test_confusion"):
        return "the confusion matrices differ"
    if reference.get("test_correct") and probe.get("test_correct") and \
            reference["test_correct"] != probe["test_correct"]:
        return "the per-image test outcomes differ"
    return None


def record_equivalence(reference: dict[str, Any], probe: dict[str, Any], path: Path | None = None) -> Path:
    """Join the two records' stacks into one group in `path` (merging groups they already belong
    to), with the probe's evidence; returns the path."""
    path = path or STACK_GROUPS
    groups = load_groups(path)
    a, b = stack_label(reference), stack_label(probe)
    joined = [g for g in groups if a in g["stacks"] or b in g["stacks"]]
    rest = [g for g in groups if g not in joined]
    correct = sum(row[i] for i, row in enumerate(reference.get("test_confusion") or []))
    evidence = {"reference": reference["run_id"], "epochs": len(reference.get("history") or []),
                "test_correct": correct, "stacks": [a, b],
                "matched": "every epoch's losses and accuracies, the confusion matrix"
                           + (", each test image's outcome" if reference.get("test_correct") else ""),
                "probed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    merged = {"stacks": sorted({a, b, *(s for g in joined for s in g["stacks"])}),
              "evidence": [e for g in joined for e in g.get("evidence", [])] + [evidence]}
    write_atomic(path, json.dumps({"groups": [*rest, merged]}, indent=1) + "\n")
    return path
