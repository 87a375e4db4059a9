"""Model knobs: every setting a model spec can take, declared once with its type, default,
valid values and meaning.

The registry says which knobs each model takes; the run config, its id, experiment files,
the `--set KNOB=VALUE` flag, `count`, `dry-run`, summary.csv and the report all read these
declarations. `ratio`, `dw_size` and `width` predate the declarations and keep their own
fields in run configs and records; every later knob is stored under `knobs`, and only
when it differs from its default, so records written before a knob existed keep their ids.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CHEAP_OPS = ("dw", "dfc", "copy", "rep")


@dataclass(frozen=True)
class Knob:
    name: str
    type: type  # int, float or str
    default: Any
    meaning: str
    choices: tuple[Any, ...] = ()  # the valid values of a closed set
    check: Callable[[Any], bool] | None = None  # the valid values otherwise...
    valid: str = ""  # ...and how to name them in an error
    tag: str = ""  # prefix of the value in run ids ("s" -> s2); "" for the value alone
    applies_when: tuple[str, tuple[Any, ...]] | None = None  # (knob, values) under which it has an effect

    def describe_valid(self) -> str:
        return ", ".join(str(c) for c in self.choices) if self.choices else self.valid

    def coerce(self, value: Any) -> Any:
        """`value` (from YAML or the command line) as this knob's type; ValueError naming the valid values."""
        bad = ValueError(f"{self.name} must be {'one of ' if self.choices else ''}{self.describe_valid()}, "
                         f"got {value!r}")
        if isinstance(value, bool):
            raise bad
        try:
            if self.type is int:
                number = float(value)
                if not number.is_integer():
                    raise bad
                value = int(number)
            elif self.type is float:
                value = float(value)
            else:
                value = str(value)
        except (TypeError, ValueError):
            raise bad from None
        if (self.choices and value not in self.choices) or (self.check and not self.check(value)):
            raise bad
        return value

    def inert(self, values: Mapping[str, Any]) -> bool:
        """Whether this knob has no effect given the other knobs' `values` (DFC knobs when
        cheap_op is not dfc); False when the knob it depends on is absent."""
        if self.applies_when is None:
            return False
        other, effective = self.applies_when
        return values.get(other) is not None and values[other] not in effective

    def id_part(self, value: Any) -> str:
        return f"{self.tag}{value:g}" if isinstance(value, float) else f"{self.tag}{value}"


MAX_RATIO, MAX_KERNEL, MAX_WIDTH = 64, 31, 16.0  # far past any network here; bounds keep a typo from allocating TBs


def _odd(v: int) -> bool:
    return 1 <= v <= MAX_KERNEL and v % 2 == 1


KNOBS: dict[str, Knob] = {k.name: k for k in (
    Knob("ratio", int, 2, "Ghost ratio s: 1/s of the output maps come from the primary conv",
         check=lambda v: 1 <= v <= MAX_RATIO, valid=f"an integer 1..{MAX_RATIO}", tag="s"),
    Knob("dw_size", int, 3, "kernel d of the cheap d x d depthwise operation", check=_odd,
         valid=f"an odd integer 1..{MAX_KERNEL} (1, 3, 5, 7, ...)", tag="d", applies_when=("cheap_op", ("dw", "dfc", "rep"))),
    Knob("width", float, 1.0, "width multiplier of every layer (GhostNet family)",
         check=lambda v: 0 < v <= MAX_WIDTH, valid=f"a number in (0, {MAX_WIDTH:g}]", tag="w"),
    Knob("cheap_op", str, "dw", "how ghost maps are made: dw (depthwise d x d), dfc (dw + GhostNetV2's DFC "
         "attention), copy (copies of the intrinsic maps, no parameters), rep (RepGhost-style, fusable)",
         choices=CHEAP_OPS),
    Knob("dfc_kernel", int, 5, "length k of DFC attention's 1 x k and k x 1 depthwise convs", check=_odd,
         valid=f"an odd integer 1..{MAX_KERNEL}", tag="k", applies_when=("cheap_op", ("dfc",))),
    Knob("dfc_down", str, "avg", "DFC attention's 2x down-sampling", choices=("avg", "max"), tag="down",
         applies_when=("cheap_op", ("dfc",))),
    Knob("dfc_up", str, "nearest", "DFC attention's up-sampling back to the output size",
         choices=("nearest", "bilinear"), tag="up", applies_when=("cheap_op", ("dfc",))),
    Knob("dfc_sigmoid", str, "before", "DFC attention's sigmoid: before or after up-sampling",
         choices=("before", "after"), tag="sig", applies_when=("cheap_op", ("dfc",))),
    Knob("l1_variant", str, "B", "Li et al.'s pruned ResNet-56: B (60/30/10% of each block's first-conv filters "
         "per stage, six sensitive layers whole) or A (10% everywhere, four whole)", choices=("A", "B"), tag="l1"),
    Knob("init", str, "pruned", "how a pruned network starts: pruned (the largest-l1 filters of its baseline "
         "trained first, the experiment row's `from:` run, then fine-tuned) or scratch (random filters, Li et al.'s "
         "train-from-scratch variant)", choices=("pruned", "scratch"), tag="init"),
    Knob("criterion", str, "l1", "how an equal-budget pruned network ranks channels across all its layers: l1 "
         "(group l1 magnitude) or bn_scale (BatchNorm |gamma|, Network Slimming)", choices=("l1", "bn_scale")),
    Knob("budget_s", int, 2, "the Ghost ratio s whose Ghost network's FLOPs (d=3) an equal-budget pruned network "
         "is pruned to", check=lambda v: v >= 2, valid="an integer >= 2", tag="budget-s"),
    Knob("dfc_from_block", int, 2, "GhostNet family: the first bottleneck (0-15) whose expansion module gets DFC "
         "attention", check=lambda v: 0 <= v <= 15, valid="an integer 0..15", tag="from",
         applies_when=("cheap_op", ("dfc",))),
    Knob("dropout", float, 0.2, "GhostNet family: dropout before the classifier (0.2 as in the official code; the "
         "first author's answers name 0.1 or 0.15 for GhostNet 1.0x, iamhankai/ghostnet.pytorch#3)",
         check=lambda v: 0.0 <= v < 1.0, valid="a number in [0, 1)", tag="drop"),
)}
LEGACY = ("ratio", "dw_size", "width")  # run-config fields of their own, from before knobs were declared
CHEAP_KNOBS = ("cheap_op", "dfc_kernel", "dfc_down", "dfc_up", "dfc_sigmoid")


def unknown_knob(name: str, valid: Iterable[str]) -> ValueError:
    return ValueError(f"unknown knob {name!r}; valid: {', '.join(valid)}")


def extras(values: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The declared non-legacy knobs of `values` that differ from their defaults, in declaration
    order: what a run's identity holds besides ratio, dw_size and width."""
    return tuple((name, values[name]) for name, knob in KNOBS.items()
                 if name not in LEGACY and name in values and values[name] is not None
                 and values[name] != knob.default)


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """['cheap_op=rep', 'dfc_kernel=7'] -> {'cheap_op': 'rep', 'dfc_kernel': '7'} (values checked later)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"--set {item!r}: expected KNOB=VALUE, e.g. --set cheap_op=rep")
        out[name.strip()] = value.strip()
    return out


def format_assignments(knobs: Mapping[str, Any]) -> str:
    """{'cheap_op': 'rep', 'dfc_kernel': 7} -> 'cheap_op=rep dfc_kernel=7' (what --set takes)."""
    return " ".join(f"{name}={value}" for name, value in knobs.items())


def varying(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The declared knobs that take more than one value (blanks aside) across `rows` (dicts of
    knob values), in declaration order: the columns that tell a grid's configurations apart."""
    rows = list(rows)
    return [name for name in KNOBS if len({repr(r.get(name)) for r in rows if r.get(name) is not None}) > 1]
