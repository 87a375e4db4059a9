"""Machines pooled when they give the same runs (issue 39): the stack-equivalence probe retrains a
recorded run, compares the outcomes bit for bit, and joins the two stacks into one comparison
group only where they match; pairs then form across the group."""
import json
import shutil

from ghost_ablate.cli import main
from ghost_ablate.report import tables
from ghost_ablate.stacks import comparison_group, load_groups

ELSEWHERE = "cpu: Some Other CPU (family 99 model 9, AVX2) (2 threads)"


def _reference(tiny_cifar, tmp_path, edit=None):
    """A finished run trained here, then its record moved to a results folder as if trained on
    another machine (its device renamed, `edit` applied)."""
    assert main(["train", "--model", "resnet56", "--profile", "smoke", "--data-dir", str(tiny_cifar),
                 "--results-dir", str(tmp_path / "here"), "--no-download"]) == 0
    (run,) = (tmp_path / "here" / "runs").iterdir()
    theirs = tmp_path / "theirs" / "runs" / run.name
    theirs.mkdir(parents=True)
    record = json.loads((run / "result.json").read_text())
    record["device"] = ELSEWHERE
    if edit:
        edit(record)
    (theirs / "result.json").write_text(json.dumps(record))
    shutil.rmtree(tmp_path / "here")
    return theirs, record


def test_a_probe_that_matches_joins_the_stacks_and_pairs_form_across_them(tiny_cifar, tmp_path, capsys, monkeypatch):
    run, record = _reference(tiny_cifar, tmp_path)
    groups = tmp_path / "groups.json"
    assert main(["stack-probe", str(run), "--data-dir", str(tiny_cifar), "--groups", str(groups)]) == 0
    assert "bit for bit" in capsys.readouterr().out
    (group,) = load_groups(groups)
    assert len(group["stacks"]) == 2 and group["evidence"][0]["reference"] == record["run_id"]
    assert sum(ELSEWHERE in s for s in group["stacks"]) == 1
    a, b = sorted(group["stacks"])
    assert comparison_group(a, load_groups(groups)) == comparison_group(b, load_groups(groups)) == a
    # a row on one stack against its reference on the other: untested without the group, paired with it
    ours = {"final": [60.0, 61.0, 62.0], "seeds": [0, 1, 2], "stacks": [a] * 3}
    ref = {"final": [59.0, 60.5, 61.2], "seeds": [0, 1, 2], "stacks": [b] * 3}
    monkeypatch.setattr(tables, "load_groups", lambda: [])
    assert tables.vs_reference(ours, ref).test == "" and tables.vs_reference(ours, ref).cross_stack == 3
    monkeypatch.setattr(tables, "load_groups", lambda: load_groups(groups))
    assert tables.vs_reference(ours, ref).test == "paired t"


def test_a_probe_that_differs_joins_nothing(tiny_cifar, tmp_path, capsys):
    def nudge(record):
        record["history"][-1]["test_loss"] += 1e-9

    run, _ = _reference(tiny_cifar, tmp_path, nudge)
    groups = tmp_path / "groups.json"
    assert main(["stack-probe", str(run), "--data-dir", str(tiny_cifar), "--groups", str(groups)]) == 1
    out = capsys.readouterr().out
    assert "not the same runs: epoch 0: test_loss" in out and "stay separate comparison groups" in out
    assert not groups.exists()
