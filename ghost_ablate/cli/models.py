"""Commands about models without training them: count, knobs, export."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError
from .args import model_knobs


def cmd_count(args: argparse.Namespace) -> int:
    from ..costs import cost_record, paper_cost_records  # lazy: the command line answers --help without torch
    from ..flops import breakdown  # lazy: the command line answers --help without torch
    from ..models import MODELS, build_model  # lazy: the command line answers --help without torch

    if args.model is None:
        if any(v is not None for v in (args.ratio, args.dw_size, args.width)) or args.knobs or args.breakdown:
            raise UserError("--ratio, --dw-size, --width, --set and --breakdown need --model")
        records = paper_cost_records()
        if args.all:  # every registered model the paper's rows leave out, at its declared defaults
            counted = {r["model"] for r in records}
            for name, spec in MODELS.items():
                if name not in counted and not spec.shaped_by_source:  # those take their widths from a run
                    records.append(cost_record(name))
    elif args.all:
        raise UserError("--all lists every registered model; drop --model, or drop --all")
    else:
        knobs = model_knobs(args)
        records = [cost_record(args.model, args.ratio, args.dw_size, args.width, knobs)]
    if args.format == "json":
        keys = ("model", "ratio", "dw_size", "width", "knobs", "input_size", "params", "flops", "paper_params",
                "paper_flops")
        print(json.dumps([{k: r[k] for k in keys} for r in records], indent=2))
        return 0
    print(format_count_table(records))
    if args.breakdown:
        model = build_model(args.model, args.ratio, args.dw_size, args.width, **knobs)
        print()
        print(breakdown(model, MODELS[args.model].input_size, args.depth))
    return 0


def format_count_table(records: list[dict]) -> str:
    import pandas as pd  # lazy: the command line answers --help without torch

    from ..models import format_assignments  # lazy: the command line answers --help without torch

    def millions(v: float | None, digits: int) -> str:
        return "-" if v is None or pd.isna(v) else f"{v / 1e6:.{digits}f}"

    def pct(v: float | None) -> str:
        return "-" if v is None or pd.isna(v) else f"{100 * v:+.1f}%"

    df = pd.DataFrame(records)
    table = pd.DataFrame({
        "model": df["model"],
        "s": df["ratio"].map(lambda v: "-" if pd.isna(v) else int(v)),
        "d": df["dw_size"].map(lambda v: "-" if pd.isna(v) else int(v)),
        "width": df["width"].map(lambda v: "-" if pd.isna(v) else f"{v:g}"),
        **({"knobs": df["knobs"].map(lambda k: format_assignments(k) or "-")}
           if "knobs" in df and df["knobs"].map(bool).any() else {}),
        "input": df["input_size"],
        "params (M)": df["params"].map(lambda v: millions(v, 3)),
        "paper": df["paper_params"].map(lambda v: millions(v, 2)),
        "diff": df["params_diff"].map(pct),
        "FLOPs (M)": df["flops"].map(lambda v: millions(v, 1)),
        "paper ": df["paper_flops"].map(lambda v: millions(v, 0)),
        "diff ": df["flops_diff"].map(pct),
    })
    text = table.to_string(index=False)
    notes = [f"{r['model']} {r['width']:g}x: {r['note']}" if r["width"] is not None and r["ratio"] is None else
             f"{r['model']}" + (f" s={r['ratio']}" if r["ratio"] is not None else "") + f": {r['note']}"
             for r in records if r.get("note")]
    return text + ("\n\nGaps beyond the tolerance, explained:\n" + "\n".join(f"  {n}" for n in notes) if notes else "")


def cmd_knobs(args: argparse.Namespace) -> int:
    """Every model's declared knobs: type, default, valid values, meaning."""
    import pandas as pd  # lazy: the command line answers --help without torch

    from ..models import MODELS, get_spec  # lazy: the command line answers --help without torch

    names = [get_spec(args.model).name] if args.model else sorted(MODELS)
    rows = [{"model": name, "knob": k.name, "type": k.type.__name__, "default": k.default,
             "valid": k.describe_valid(), "meaning": k.meaning}
            for name in names for k in get_spec(name).declared()]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"{args.model} takes no knobs")
        return 0
    print(pd.DataFrame(rows).astype(str).to_markdown(index=False, tablefmt="plain", disable_numparse=True))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..deploy import check_onnx, export_onnx, fold_bn  # lazy: the command line answers --help without torch
    from ..models import MODELS, build_model, fuse_rep  # lazy: the command line answers --help without torch

    model = build_model(args.model, args.ratio, args.dw_size, args.width, **model_knobs(args)).eval()
    if args.fold_bn:
        model = fold_bn(fuse_rep(model))
    size = MODELS[args.model].input_size
    out = Path(args.out or f"{args.model}.onnx")
    export_onnx(model, out, size, args.opset)
    try:
        diff = check_onnx(model, out, size)
    except ImportError:
        print(f"wrote {out}; onnxruntime not installed, output not checked (pip install 'ghost-ablate[onnx]')")
        return 0
    ok = diff < 1e-3
    print(f"wrote {out}; onnxruntime vs PyTorch max |diff| = {diff:.2e} ({'ok' if ok else 'MISMATCH'})")
    return 0 if ok else 1


