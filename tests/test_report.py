from pathlib import Path

import pandas as pd
import pytest

from ghost_ablate.cli import main
from ghost_ablate.records import write_json_atomic
from ghost_ablate import paper
from ghost_ablate.report import REPORT_STEPS, ReportError, build_report, load_runs

from conftest import make_cifar_folder

RECIPE = {"epochs": 3}


def record(results: Path, model, ratio, dw_size, seed, final, best, status="finished", profile="quick", width=None,
           params=1_000_000, flops=2_000_000, train_size=50_000, **recipe):
    from ghost_ablate.config import RunConfig

    # a record is identified by its config (record_schema.identity_problem): the id its config really has
    rc = RunConfig.create(model, ratio, dw_size, width, profile, seed, **{**RECIPE, **recipe})
    run_id = rc.run_id
    history = [{"epoch": e, "test_acc": best if e == 1 else final, "train_time_s": 1.0, "train_images": 10}
               for e in range(3)]
    write_json_atomic(results / "runs" / run_id / "result.json", {
        "run_id": run_id, "status": status, "params": params, "flops": flops,
        "config": rc.to_dict(),
        "final_test_acc": final if status == "finished" else None,
        "best_test_acc": best if status == "finished" else None, "epochs_done": 3 if status == "finished" else 1,
        "data": {"dir": "/data/cifar", "train_size": train_size, "test_size": 10_000}, "device": "cpu: test",
        "history": history if status == "finished" else [],
    })


def make_results(r: Path) -> Path:
    record(r, "ghost_vgg16", 2, 3, 0, 0.90, 0.91, params=7_651_498, flops=158_110_000)
    record(r, "ghost_vgg16", 2, 3, 1, 0.92, 0.93, params=7_651_498, flops=158_110_000)
    record(r, "ghost_vgg16", 2, 3, 2, 0.94, 0.95, params=7_651_498, flops=158_110_000)
    record(r, "vgg16", None, None, 0, 0.935, 0.94, params=14_987_722, flops=313_464_000)
    record(r, "vgg16", None, None, 1, 0.0, 0.0, status="diverged", params=14_987_722, flops=313_464_000)
    record(r, "resnet56", None, None, 0, 0.5, 0.5, status="failed", params=853_018, flops=125_485_696)
    return r


@pytest.fixture
def results(tmp_path):
    return make_results(tmp_path / "results")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One report built from the hand-made records, shared by the read-only tests."""
    root = tmp_path_factory.mktemp("report")
    build_report(make_results(root / "results"), root / "reports")
    return root / "reports"


def test_exact_table_values(built):
    out = built
    t3 = pd.read_csv(out / "table3_cifar10.csv").set_index("label")
    g = t3.loc["Ghost-VGG-16 (s=2)"]
    assert (g["top1_mean"], g["top1_std"], g["n_seeds"], g["top1_best_mean"]) == (92.0, 2.0, 3, 93.0)
    assert g["top1_diff"] == pytest.approx(-1.7) and g["paper_top1"] == 93.7
    assert g["params_m"] == 7.651 and g["params_diff_pct"] == pytest.approx(-0.63)
    assert g["flops_m"] == 158.11 and g["flops_diff_pct"] == pytest.approx(0.07)
    v = t3.loc["VGG-16"]
    assert (v["top1_mean"], v["n_seeds"], v["status"]) == (93.5, 1, "run (1 failed)")
    assert pd.isna(v["top1_std"]) and v["top1_diff"] == pytest.approx(-0.1)
    r = t3.loc["ResNet-56"]
    assert r["status"] == "not run (1 failed)" and pd.isna(r["top1_mean"]) and r["params_m"] == 0.853
    gr = t3.loc["Ghost-ResNet-56 (s=2)"]
    assert gr["status"] == "not run" and gr["params_m"] == 0.438  # costs counted even when not run
    assert t3.loc["l1-VGG-16", "status"] == "not run" and t3.loc["l1-VGG-16", "paper_flops_m"] == 206
    assert t3.loc["l1-VGG-16", "params_m"] == 5.397  # built now: counted even when not run
    assert t3.loc["SBP-VGG-16", "status"] == "paper only"
    t1 = pd.read_csv(out / "table1_dw_size.csv")
    assert list(t1["d"]) == [1, 3, 5, 7] and list(t1["n_seeds"]) == [0, 3, 0, 0]
    assert list(t1["status"]) == ["not run", "run", "not run", "not run"]
    imagenet = pd.read_csv(out / "imagenet_costs.csv").set_index("label")
    assert imagenet.loc["GhostNet 1.0x", "params_m"] == 5.183 and imagenet.loc["GhostNet 1.0x", "paper_flops_m"] == 141
    assert len(imagenet) == 33 and imagenet.loc["MobileNetV2 0.35x", "params_m"] == 1.677
    assert imagenet.loc["ProxylessNAS", "note"].startswith("published only: ")
    assert "classifier is not a conv" in imagenet.loc["Ghost-ResNet-50 (s=2)", "note"]


def md_rows(md: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their first cell (the last table wins on repeats)."""
    rows = {}
    for line in md.splitlines():
        if line.startswith("|") and not line.startswith("|:") and not line.startswith("|-"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_markdown_rows_and_header(built):
    md = (built / "README.md").read_text()
    rows = md_rows(md)
    # at a glance: params, FLOPs, top-1 mean ± std (n), the tested gap, the verdict, the paper's top-1; VGG-16
    # has one finished seed, so nothing is tested and no gap is shown
    assert rows["Ghost-VGG-16 (s=2)"] == ["7.651", "158.1", "92.00 ± 2.00 (n=3)", "", "", "93.7"]
    assert rows["d=1"] == ["7.635", "157.0", "not run", "", "", "93.5"]
    assert rows["VGG-16"][2] == "93.50 (n=1)"
    assert rows["l1-VGG-16"] == ["5.397", "206.3", "not run", "", "", "93.4"]
    assert rows["SBP-VGG-16"][2] == "published only" and "SBP-VGG-16 (a pruning method" in md
    assert "*Made by: seeds 0, 1, 2 on cpu: test / torch unrecorded." in md
    assert "## How many seeds?" in md and "pooled over 1 rows" in md
    assert "Needs finished runs of VGG-16 and Ghost-VGG-16" in md  # no checkpoints: says what to run
    assert "| profile | quick |" in md and "50,000 training / 10,000 test" in md and "| seeds | 0, 1, 2 |" in md
    assert "Not a reproduction" in md and "fewer epochs than the paper" in md and "subset" not in md
    assert "![Accuracy vs FLOPs](accuracy_vs_flops.png)" in md


@pytest.mark.parametrize("stem", ["accuracy_vs_flops", "accuracy_vs_params", "table1_dw_size", "table2_ratio",
                                  "test_accuracy_per_epoch"])
def test_plots_are_written_and_not_empty(built, stem):
    png, svg = built / f"{stem}.png", built / f"{stem}.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert "<svg" in svg.read_text()[:2000]


def test_speedup_table_from_bench(results, tmp_path):
    pd.DataFrame([
        {"model": "vgg16", "ratio": None, "dw_size": None, "width": None, "flops": 300e6, "device_kind": "cpu",
         "device": "cpu: test", "latency_bs1_ms": 10.0, "eval_img_s": 100.0, "train_img_s": 50.0,
         "train_peak_mem_mb": 400.0},
        {"model": "ghost_vgg16", "ratio": 2, "dw_size": 3, "width": None, "flops": 150e6, "device_kind": "cpu",
         "device": "cpu: test", "latency_bs1_ms": 8.0, "eval_img_s": 160.0, "train_img_s": 55.0,
         "train_peak_mem_mb": 500.0},
    ]).to_csv(results / "bench.csv", index=False)
    out = tmp_path / "reports"
    build_report(results, out)
    row = pd.read_csv(out / "speedup.csv").iloc[0]
    assert (row["flops_ratio"], row["latency_speedup_bs1"], row["throughput_speedup"],
            row["train_speedup"], row["peak_memory_ratio"]) == (2.0, 1.25, 1.6, 1.1, 1.25)
    assert (out / "flops_vs_latency.png").stat().st_size > 10_000


def test_no_results_is_one_line_exit_2(tmp_path, capsys):
    assert main(["report", "--results-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "make sweep-cifar" in err


def test_several_profiles_need_a_choice(results, tmp_path):
    record(results, "vgg16", None, None, 0, 0.1, 0.1, profile="smoke")
    with pytest.raises(ReportError, match="several profiles.*--profile"):
        load_runs(results)
    assert len(load_runs(results, "smoke")) == 1
    header = (lambda out: (build_report(results, out, "smoke"), (out / "README.md").read_text())[1])(tmp_path / "s")
    assert "| profile | smoke |" in header


def test_report_includes_feature_map_evidence_from_checkpoints(tiny_cifar, tmp_path):
    from ghost_ablate.config import RunConfig
    from ghost_ablate.training import RunContext, train_run

    from ghost_ablate.data.cifar import fingerprint

    results = tmp_path / "results"
    for model, knobs in (("vgg16", {}), ("ghost_vgg16", {"ratio": 2, "dw_size": 3})):
        # whole epochs of the tiny data: the report computes no evidence for smoke runs' few batches
        rc = RunConfig.create(model, profile="smoke", batch_size=8, eval_batch_size=16, limit_train_batches=None,
                              limit_test_batches=None, data=fingerprint(tiny_cifar), **knobs)
        train_run(rc, RunContext.resolve(tiny_cifar), results / "runs" / rc.run_id, progress=False)
    out = tmp_path / "reports"
    # test images only from a folder that holds the runs' data: never from the path a record names
    other = tmp_path / "other"
    make_cifar_folder(other, seed=1)
    build_report(results, tmp_path / "elsewhere", data=fingerprint(tiny_cifar), data_dir=None)
    assert "Not computed (no --data-dir given" in (tmp_path / "elsewhere" / "README.md").read_text()
    build_report(results, tmp_path / "elsewhere", data_dir=other)
    assert f"Not computed: {other} holds data {fingerprint(other)}, the runs were trained on " in (
        tmp_path / "elsewhere" / "README.md").read_text()
    with pytest.raises(ReportError, match="no runs on data"):
        build_report(results, tmp_path / "elsewhere", data=fingerprint(other))
    build_report(results, out, data_dir=tiny_cifar)
    md = (out / "README.md").read_text()
    assert "## The paper's evidence" in md and "![Ghost-VGG-16 s=2 d=3, 2nd conv unit](feature_maps_ghost_vgg16.png)" in md
    assert (out / "feature_maps_vgg16.png").exists() and (out / "ghost_share.png").exists()
    table = pd.read_csv(out / "redundancy.csv")
    assert set(table["network"]) == {"VGG-16", "Ghost-VGG-16 s=2 d=3"} and len(table) == 26
    # without the checkpoints the earlier section is kept as it was: the report regenerates the same
    for ckpt in (results / "runs").glob("*/*.ckpt"):
        ckpt.unlink()
    build_report(results, out, data_dir=tiny_cifar)
    again = (out / "README.md").read_text()
    assert again.split("\n", 3)[3] == md.split("\n", 3)[3]  # all but the timestamp line


def test_smoke_runs_get_no_evidence_section_and_each_section_reports_progress(tmp_path, monkeypatch, capsys):
    from ghost_ablate import features

    results = tmp_path / "results"
    for model, s, d in (("vgg16", None, None), ("ghost_vgg16", 2, 3)):
        record(results, model, s, d, 0, 0.2, 0.2, profile="smoke", epochs=1, limit_train_batches=3)
        path = next((results / "runs").glob(f"{model}-{'s2-d3-' if s else ''}smoke-*/result.json"))
        (path.parent / "last.ckpt").write_bytes(b"not read")  # a checkpoint is there, and still not loaded
    monkeypatch.setattr(features, "load_trained", lambda *a, **k: pytest.fail("evidence computed for smoke runs"))
    build_report(results, tmp_path / "out", data_dir=tmp_path)
    assert "these are smoke runs" in (tmp_path / "out" / "README.md").read_text()
    err = capsys.readouterr().err
    n = len(REPORT_STEPS)  # one line per section: the plots, each CIFAR table, the rest (no bench.csv here)
    assert n == 6 + len(paper.CIFAR_TABLES)
    assert f"report: 1/{n} accuracy-vs-cost plots" in err and f"report: {n}/{n} plots and README.md" in err
    assert "speed-ups" not in err  # a section that does not apply is neither written nor announced


def test_pruned_rows_say_they_trained_on_top_of_their_source():
    from ghost_ablate.report.markdown import pruned_markdown

    base = {"ratio": None, "dw_size": None, "width": None, "knobs": {}, "status": "finished", "epochs": 12}
    runs = pd.DataFrame([
        {**base, "run_id": "vgg-0", "model": "vgg16", "final_test_acc": 0.40, "source": None},
        {**base, "run_id": "vgg-1", "model": "vgg16", "final_test_acc": 0.50, "source": None},
        {**base, "run_id": "l1-0", "model": "l1_vgg16", "epochs": 40, "final_test_acc": 0.60,
         "source": {"run_id": "vgg-0", "final_test_acc": 0.40}},
        {**base, "run_id": "l1-1", "model": "l1_vgg16", "epochs": 40, "final_test_acc": 0.64,
         "source": {"run_id": "vgg-1", "final_test_acc": 0.50}},
    ])
    text = pruned_markdown(runs)
    assert "l1-VGG-16: 2 run(s), 12 epochs of its source, then 40 of its own" in text
    assert "sources' mean top-1 45.00%, after pruning and retraining 62.00%" in text
    assert pruned_markdown(runs[runs["model"] == "vgg16"]) == ""  # no pruned runs, no paragraph


def test_tables_restricts_the_report_to_the_named_paper_tables(results, tmp_path, capsys):
    out = tmp_path / "only2"
    assert main(["report", "--results-dir", str(results), "--out", str(out), "--tables", "table2_ratio",
                 "--no-evidence"]) == 0
    assert sorted(p.name for p in out.glob("table*.csv")) == ["table2_ratio.csv"]
    readme = (out / "README.md").read_text()
    assert "## Table 2" in readme and "## Table 1" not in readme and "## Table 3" not in readme
    capsys.readouterr()
    assert main(["report", "--results-dir", str(results), "--out", str(out), "--tables", "table7"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tables table7: not a CIFAR-10 paper table; valid: table1_dw_size" in err
    assert (out / "table2_ratio.csv").is_file()  # the previous report stays


def test_equal_epochs_controls_are_tested_against_their_pruned_rows(tmp_path):
    """Scratch Ghost-VGG-16 runs at the pruned rows' epochs in all (3 of the source + 3 of their own)
    are that table's controls: kept out of the 3-epoch tables, paired by seed with l1-VGG-16."""
    from scipy import stats as sps

    from ghost_ablate.config import RunConfig
    from ghost_ablate.report.tables import chain_epochs, equal_epochs_table

    results = tmp_path / "results"
    pruned, control = [0.60, 0.62, 0.61, 0.65], [0.66, 0.68, 0.665, 0.715]

    def write(rc: RunConfig, final: float, **more) -> str:
        write_json_atomic(results / "runs" / rc.run_id / "result.json", {
            "run_id": rc.run_id, "status": "finished", "params": 1, "flops": 1, "config": rc.to_dict(),
            "final_test_acc": final, "best_test_acc": final, "epochs_done": rc.recipe.epochs, "device": "cpu: test",
            "data": {"dir": "/data/cifar", "train_size": 50_000, "test_size": 10_000}, "history": [], **more})
        return rc.run_id

    for seed in range(4):
        source = write(RunConfig.create("vgg16", profile="quick", seed=seed, epochs=3), 0.5)
        write(RunConfig.create("l1_vgg16", profile="quick", seed=seed, source=source, epochs=3), pruned[seed],
              source={"run_id": source, "final_test_acc": 0.5})
        write(RunConfig.create("ghost_vgg16", 2, 3, profile="quick", seed=seed, epochs=3), 0.55)
        write(RunConfig.create("ghost_vgg16", 2, 3, profile="quick", seed=seed, epochs=6), control[seed])
    runs = load_runs(results)  # 6 epochs is the controls' length, not a second schedule
    assert sorted(runs["epochs"].unique()) == [3] and len(runs) == 12 and len(runs.attrs["controls"]) == 4
    roots, totals = chain_epochs(runs)
    assert set(totals[runs["model"] == "l1_vgg16"]) == {6.0} and set(roots) == {3.0}
    row = equal_epochs_table(runs).iloc[0]
    diffs = [100 * (c - p) for c, p in zip(control, pruned)]
    t = sps.ttest_rel([100 * c for c in control], [100 * p for p in pruned])
    assert (row["pruned"], row["pruned_epochs"], row["control"], row["control_epochs"]) == \
        ("l1-VGG-16", "3 + 3", "Ghost-VGG-16 s=2 d=3", 6)
    assert row["diff"] == pytest.approx(sum(diffs) / 4, abs=1e-4) and row["diff_n"] == 4
    assert row["p_holm"] == pytest.approx(t.pvalue, abs=1e-4) and row["verdict_kind"] == "better"
    build_report(results, tmp_path / "out", evidence=False)
    text = (tmp_path / "out" / "README.md").read_text()
    assert "### Equal-epochs controls" in text and "l1-VGG-16 (3 + 3)" in text and "Ghost-VGG-16 s=2 d=3 (6)" in text
    assert len(pd.read_csv(tmp_path / "out" / "equal_epochs.csv")) == 1 and "left out" not in text
    assert sorted(load_runs(results, epochs=6)["model"]) == ["ghost_vgg16"] * 4  # the controls, asked for

    from ghost_ablate.report.markdown import equal_epochs_markdown

    runs.attrs["controls"] = [{**c, "stack": "cpu: Other / torch 9"} for c in runs.attrs["controls"]]
    row = equal_epochs_table(runs).iloc[0]  # controls from another machine: no pairs, not tested, and said so
    assert row["test"] == "" and row["cross_stack_pairs"] == 4 and pd.isna(row["p_holm"])
    assert row["verdict"].startswith("undetermined: not tested, 0 seed pair(s) on one machine and torch, 4 more")
    assert "4 seed pair(s) left out" in equal_epochs_markdown(equal_epochs_table(runs))

    loop = runs.copy()  # a foreign record whose source names itself ends the walk, it does not hang
    loop.at[0, "source"] = {"run_id": loop.at[0, "run_id"]}
    assert chain_epochs(loop)[1].iloc[0] == loop.at[0, "epochs"]
    loop.at[0, "source"] = {"run_id": ["not", "a", "name"]}  # nor does a source id that is no string
    assert chain_epochs(loop)[1].iloc[0] == loop.at[0, "epochs"]


def test_stack_restricts_the_report_to_one_machine_and_torch(tmp_path, capsys):
    results = make_results(tmp_path / "results")
    path = next((results / "runs").glob("ghost_vgg16-*seed2*/result.json"))
    rec = __import__("json").loads(path.read_text())
    write_json_atomic(path, {**rec, "device": "cpu: Other CPU (2 threads)", "versions": {"torch": "2.15.0"}})
    runs = load_runs(results, stack="Other CPU")
    assert list(runs["seed"]) == [2] and runs["stack"].iloc[0] == "cpu: Other CPU (2 threads) / torch 2.15.0"
    assert len(load_runs(results, stack="cpu: test")) == 5
    assert main(["report", "--results-dir", str(results), "--out", str(tmp_path / "out"), "--stack", "no such"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'no such'" in err and "cpu: Other CPU (2 threads) / torch 2.15.0" in err


def test_splice_readme_fills_one_named_block_and_links_its_figure_from_the_readme(tmp_path, capsys):
    from ghost_ablate.report import splice_readme

    results = make_results(tmp_path / "results")
    readme = tmp_path / "README.md"
    keep = "<!-- headline: generated by `make report`, do not edit -->\nold headline\n<!-- /headline -->\n"
    readme.write_text(f"# Project\n\n{keep}\ntext\n\n<!-- evidence: generated by `make evidence-report` -->\n"
                      "stale\n<!-- /evidence -->\ntail\n")
    out = tmp_path / "reports" / "evidence"
    assert main(["report", "--results-dir", str(results), "--out", str(out), "--no-evidence", "--tables",
                 "table2_ratio", "--readme", str(readme), "--readme-block", "evidence"]) == 0
    text = readme.read_text()
    assert keep in text and "stale" not in text and text.endswith("<!-- /evidence -->\ntail\n")
    assert "![Table 2: ratio s (Ghost-VGG-16, d=3, CIFAR-10)](reports/evidence/table2_ratio.png)" in text
    assert (out / "table2_ratio.png").is_file() and "| s=2 " in text
    assert "](table2_ratio.png)" in (out / "headline.md").read_text()  # relative to its own folder
    with pytest.raises(ReportError, match="no results block"):
        splice_readme(readme, "x", "results")
