import json

import pytest

from ghost_ablate.cli import main


def test_count_json_for_one_model(capsys):
    assert main(["count", "--model", "ghost_vgg16", "--ratio", "4", "--format", "json"]) == 0
    (rec,) = json.loads(capsys.readouterr().out)
    assert set(rec) == {"model", "ratio", "dw_size", "width", "knobs", "input_size", "params", "flops",
                        "paper_params", "paper_flops"}
    assert (rec["ratio"], rec["dw_size"], rec["width"], rec["knobs"], rec["input_size"]) == (4, 3, None, {}, 32)
    assert isinstance(rec["params"], int) and rec["paper_flops"] == 80_000_000


def test_count_all_rows_table(capsys):
    assert main(["count"]) == 0
    out = capsys.readouterr().out
    assert "ghost_vgg16_keep_first" in out and "ghostnetv2" in out and "ghost_resnet50" in out


def test_count_breakdown(capsys):
    assert main(["count", "--model", "resnet56", "--breakdown", "--depth", "1"]) == 0
    assert "layer1" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["count", "--model", "nope"],
    ["count", "--model", "ghost_vgg16", "--dw-size", "4"],
    ["count", "--model", "ghost_vgg16", "--ratio", "x"],
    ["count", "--model", "vgg16", "--ratio", "3"],
    ["count", "--ratio", "3"],
    ["count", "--model", "ghostnet", "--width", "0"],
])
def test_count_bad_arguments_one_line_exit_2(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse type errors exit from inside parse_args
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err


def test_costs_are_cached_on_disk_per_code_version(tmp_path, monkeypatch):
    from ghost_ablate import cache, costs

    monkeypatch.setenv(cache.ENV, str(tmp_path))
    costs.config_cost.cache_clear()
    cold = costs.config_cost("resnet56", None, None, None)
    assert (tmp_path / "costs.json").exists()

    def no_counting(*args):
        raise AssertionError("counted again although cached")

    costs.config_cost.cache_clear()
    monkeypatch.setattr(costs, "measure", no_counting)
    assert costs.config_cost("resnet56", None, None, None) == cold  # served from the file
    costs.config_cost.cache_clear()
    monkeypatch.setattr(cache, "code_fingerprint", lambda: "0.0.0+other")  # a new version of the code
    with pytest.raises(AssertionError, match="counted again"):
        costs.config_cost("resnet56", None, None, None)
    costs.config_cost.cache_clear()


@pytest.mark.parametrize("seconds", [0.0, 1.0])
@pytest.mark.parametrize("terminal", [False, True])
def test_cold_count_shows_progress_to_its_total(tmp_path, monkeypatch, seconds, terminal):
    """However long counting takes: a bar on a terminal that reaches 2/2 before it is cleared, one
    line per model elsewhere. The counting is mocked, and so is its clock."""
    import io

    from ghost_ablate import cache, costs

    monkeypatch.setenv(cache.ENV, str(tmp_path))
    monkeypatch.setattr(costs, "paper_configs", lambda: [("resnet56", None, None, None), ("vgg16", None, None, None)])
    clock = [0.0]

    def counted(model, *args):
        clock[0] += seconds
        return {"model": model}

    monkeypatch.setattr(costs, "cost_record", counted)
    monkeypatch.setattr("tqdm.std.time", lambda: clock[0])
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.setattr(stream, "isatty", lambda: terminal, raising=False)
    records = costs.paper_cost_records()
    assert [r["model"] for r in records] == ["resnet56", "vgg16"]
    err = stream.getvalue()
    if terminal:
        assert "counting params and FLOPs" in err and "2/2" in err and "\n" not in err
    else:
        assert err.splitlines() == ["counting params and FLOPs: 1/2 resnet56", "counting params and FLOPs: 2/2 vgg16"]


def test_cached_count_is_quiet(tmp_path, monkeypatch, capsys):
    from ghost_ablate import cache, costs

    monkeypatch.setenv(cache.ENV, str(tmp_path))
    monkeypatch.setattr(costs, "paper_configs", lambda: [("resnet56", None, None, None)])
    costs.config_cost.cache_clear()
    assert costs.paper_cost_records()[0]["params"] == 853_018
    assert "1/1 resnet56" in capsys.readouterr().err
    costs.config_cost.cache_clear()
    assert costs.paper_cost_records()[0]["params"] == 853_018
    assert capsys.readouterr().err == ""  # served from the cache: nothing to wait for, nothing shown
    costs.config_cost.cache_clear()


def test_help_and_version_explain_themselves_without_torch(capsys):
    import subprocess
    import sys

    from ghost_ablate import __version__

    # building the parser (what --help does) imports no torch: it answers at once
    probe = ("import sys; from ghost_ablate.cli import build_parser; build_parser().format_help(); "
             "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
    assert main(["--version"]) == 0 and capsys.readouterr().out == f"ghost-ablate {__version__}\n"
    assert main(["sweep", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("--seeds SEEDS comma-separated, e.g. 0,1,2; or auto", "(default: its declared folder, data/<name>)",
                  "(default: results)", "--precision {auto,32,bf16}", "schedule step|cosine cosine",
                  "one of imagenet_ghostnet, imagenet_ghostnet_dli14, imagenet_ghostnet_mindcv, imagenet_resnet50, imagenet_smoke, l1_finetune, paper, quick, smoke, standard, subset"):
        assert shown in text, shown


def test_doctor_takes_results_dir_like_every_other_command(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert main(["doctor", "--results-dir", str(tmp_path)]) == 0
    assert main(["doctor", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count(f"0 finding(s) in {tmp_path}") == 2
