"""The command line's surface: the recipe declared once and reachable from every training command,
the retired flags and commands answered with what replaced them (docs/migration.md)."""
from __future__ import annotations

import argparse

import pytest

from ghost_ablate.cli import ALIASES, build_parser, expand_alias, main
from ghost_ablate.cli.args import RECIPE_ALIASES, recipe_overrides
from ghost_ablate.config import RECIPE_DEFAULTS, RECIPE_FIELDS, load_profile, make_recipe

# A value away from the default for every recipe field, as a user types it, and what it becomes.
TYPED = {"epochs": ("7", 7), "batch_size": ("64", 64), "lr": ("0.05", 0.05), "momentum": ("0.8", 0.8),
         "nesterov": ("true", True), "weight_decay": ("1e-4", 1e-4), "schedule": ("step", "step"),
         "milestones": ("2,4", (2, 4)), "gamma": ("0.2", 0.2), "warmup_epochs": ("1", 1),
         "limit_train_batches": ("3", 3), "limit_test_batches": ("2", 2), "eval_batch_size": ("32", 32),
         "compile": ("yes", True), "deterministic": ("1", True), "precision": ("bf16", "bf16"),
         "label_smoothing": ("0.1", 0.1), "lr_reference_batch": ("256", 256), "image_size": ("64", 64),
         "sync_batchnorm": ("on", True), "norm_weight_decay": ("0", 0.0), "ema_decay": ("0.999", 0.999),
         "interpolation": ("bicubic", "bicubic"), "color_jitter": ("0.4", 0.4), "randaugment": ("9", 9),
         "random_erasing": ("0.25", 0.25), "model_knobs": ("dropout=0.2", (("dropout", "0.2"),)),
         "tta_flip": ("true", True)}
COMMANDS = (["train", "--model", "resnet56"], ["sweep", "experiments/cifar10_ablation.yaml"])


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def every_parser(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from every_parser(sub)


def test_every_recipe_field_has_a_typed_example():
    assert set(TYPED) == set(RECIPE_FIELDS)
    assert all(RECIPE_DEFAULTS[name] != value for name, (_, value) in TYPED.items())


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("name", sorted(RECIPE_FIELDS))
def test_each_old_recipe_flag_has_its_equivalent(command, name, capsys):
    """What `--<field> VALUE` set before 0.2, `--set recipe.<field>=VALUE` sets now, on train and
    sweep alike; a retired flag is refused with that spelling, an alias kept gives the same recipe."""
    text, value = TYPED[name]
    parser = build_parser()
    overrides = recipe_overrides(parser.parse_args([*command, "--set", f"recipe.{name}={text}"]))
    assert overrides == {name: text}
    recipe = make_recipe(load_profile("smoke"), **overrides, **({"epochs": 8} if name in ("milestones", "warmup_epochs") else {}))
    assert getattr(recipe, name) == value
    old = [*command, flag(name), text]
    if name in RECIPE_ALIASES:
        assert recipe_overrides(parser.parse_args(old)) == overrides
    else:
        assert main(old) == 2
        assert capsys.readouterr().err.strip() == (f"ghost-ablate: error: {flag(name)} is now --set recipe.{name}=VALUE "
                                                   f"(the recipe keys are listed at the end of --help)")


def test_one_field_given_twice_differently_is_refused(capsys):
    assert main(["train", "--model", "resnet56", "--epochs", "3", "--set", "recipe.epochs=4"]) == 2
    assert "recipe.epochs given twice ('3' and '4')" in capsys.readouterr().err


def test_sweep_help_lists_the_recipe_keys_once(capsys):
    assert main(["sweep", "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in RECIPE_FIELDS:
        assert sum(line.split()[:1] == [name] for line in lines) == 1, name


def test_the_flag_count_fell_by_a_third():
    """Before 0.2: 231 flags over 22 help pages (every recipe field a flag on train, sweep and
    plan-seeds); the bar is 231 x 2/3 = 154."""
    pages = list(every_parser(build_parser()))
    flags = sum(1 for p in pages for a in p._actions
                if a.option_strings and not isinstance(a, (argparse._HelpAction, argparse._VersionAction)))
    assert flags <= 154, flags


@pytest.mark.parametrize("old", sorted(ALIASES))
def test_retired_commands_run_as_what_replaced_them(old, capsys):
    argv = expand_alias([old, "--out", "x"])
    assert argv[0] == ALIASES[old][0] and argv[-2:] == ["--out", "x"]
    assert f"`{old}` is now `{' '.join(ALIASES[old])}`" in capsys.readouterr().err
    build_parser().parse_args(argv if old != "plan-seeds" else [*argv[:-2], "experiments/cifar10_ablation.yaml"])


def test_options_before_the_command_are_kept():
    assert expand_alias(["pilot-table", "--results-dir", "r"]) == ["report", "--section", "pilot", "--results-dir",
                                                                   "results/pilot", "--results-dir", "r"]
    assert expand_alias(["report", "--out", "plan-seeds"]) == ["report", "--out", "plan-seeds"]
