"""Training recipes (profiles) and the resolved configuration of one run.

`Recipe` is the one declaration of recipe fields (pydantic, as the run records are): profiles
in `experiments/profiles/*.yaml` set some of them, the command line overrides any of them
(`--set recipe.KEY=VALUE`), and a run's identity hashes all of them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, ValidationError, field_validator
from pydantic.dataclasses import dataclass as declared

from .errors import UserError
from .formats import FormatError, load_yaml
from .models import KNOBS, extras
from .records import plain_name

PROFILES_DIR = Path(__file__).resolve().parent.parent / "experiments" / "profiles"
Schedule = Literal["step", "cosine"]
Precision = Literal["auto", "32", "bf16"]
Interpolation = Literal["bilinear", "bicubic"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)
PRECISIONS: tuple[str, ...] = get_args(Precision)
INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)
CHOICES = {"schedule": SCHEDULES, "precision": PRECISIONS, "interpolation": INTERPOLATIONS}  # the fields with choices
LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")  # where a run's metrics go besides its CSV logs
# Recipe fields added after run records existed. While such a field holds its default it
# is left out of a run's identity (`RunConfig.to_dict`), so earlier run ids and records
# stay valid. `precision: auto` is resolved per machine (bf16 where it is native and
# fast, else 32) and the record states what it resolved to; keeping it out of the id
# means a sweep sharded over mixed machines never splits one configuration in two.
ID_NEUTRAL = ("precision", "label_smoothing", "lr_reference_batch", "image_size", "sync_batchnorm",
              "norm_weight_decay", "ema_decay", "interpolation", "color_jitter", "randaugment", "random_erasing",
              "model_knobs", "tta_flip")
AUGMENTATION = ("interpolation", "color_jitter", "randaugment", "random_erasing")  # folder data sets only


class ConfigError(UserError, ValueError):
    """A bad profile, field or value; the message names the valid choices."""


@declared(frozen=True)
class Recipe:
    """How a model is trained. Each field's description is what `--help` and the docs show."""

    epochs: int = Field(200, ge=1, description="training epochs")
    batch_size: int = Field(128, ge=1, description="global batch (over all devices, nodes and accumulation steps)")
    lr: float = Field(0.1, gt=0, description="peak learning rate of SGD")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(False, description="Nesterov momentum")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay")
    schedule: Schedule = Field("cosine", description="cosine, or step (x gamma at the milestones)")
    milestones: tuple[int, ...] = Field((), description="epochs of the step schedule's decays, E1,E2,...")
    gamma: float = Field(0.1, gt=0, le=1, description="the step schedule's factor")
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up from lr/10, before the schedule")
    limit_train_batches: int | None = Field(None, ge=1, description="batches per epoch (none: the whole set)")
    limit_test_batches: int | None = Field(None, ge=1, description="test batches (none: the whole set)")
    eval_batch_size: int = Field(512, ge=1, description="test batch")
    compile: bool = Field(False, description="torch.compile the model (GPU)")
    deterministic: bool = Field(False, description="deterministic kernels (off lets cuDNN pick the fastest)")
    precision: Precision = Field("auto", description="auto (bf16 where native and fast, else 32), 32 or bf16")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="of the training loss (the test loss is plain)")
    lr_reference_batch: int | None = Field(
        None, ge=1, description="the batch `lr` is for; another batch scales it linearly (Goyal et al., 2017)")
    image_size: int | None = Field(None, ge=16, description="training and evaluation crop side (none: the data "
                                                            "set's own)")
    sync_batchnorm: bool = Field(False, description="under DDP, batch statistics over the global batch (GPUs)")
    # Options of the ImageNet recipes' sources (experiments/profiles/imagenet_*.yaml), each off by default.
    norm_weight_decay: float | None = Field(None, ge=0, description="weight decay of normalization layers "
                                                                    "(none: weight_decay)")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="EMA of the weights, evaluated and saved "
                                                                  "(none: off)")
    interpolation: Interpolation = Field("bilinear", description="of the random-resized crop and the eval resize")
    color_jitter: float = Field(0.0, ge=0, lt=1, description="brightness, contrast, saturation scaled in [1-x, 1+x]")
    randaugment: int | None = Field(None, ge=0, le=30, description="RandAugment magnitude, 2 ops (none: off)")
    random_erasing: float = Field(0.0, ge=0, le=1, description="probability of erasing a random rectangle")
    # the declared knobs' values the recipe's source sets (e.g. the classifier's dropout), used where the
    # model declares the knob and the run leaves it unset
    model_knobs: tuple[tuple[str, Any], ...] = Field((), description="model knob values, KNOB=VALUE,...")
    tta_flip: bool = Field(False, description="score each test image by the mean of its and its mirror's logits")

    @field_validator("*", mode="before")
    @classmethod
    def _read(cls, value: Any, info: Any) -> Any:
        """YAML and command-line spellings: 'none'/'null' for unset, 'E1,E2' for a list, 'K=V,...'
        for knobs, a number for a choice ('32'); and no true/false where a count is meant."""
        name = info.field_name
        if isinstance(value, str) and value.strip().lower() in ("none", "null"):
            value = None
        if value is None:
            return () if name in ("milestones", "model_knobs") else None
        if name == "model_knobs":
            items = (value.items() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else
                     (part.split("=", 1) for part in str(value).split(",") if part.strip()))
            return tuple(sorted((str(k).strip(), v.strip() if isinstance(v, str) else v) for k, v in items))
        if name == "milestones" and isinstance(value, str):
            return [part for part in value.split(",") if part.strip()]
        if name in CHOICES and isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, bool) and RECIPE_TYPES.get(name) in ("int", "int | None"):
            raise ValueError("expected an integer, not true/false")
        return value

    def __post_init__(self) -> None:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be below epochs ({self.epochs}), got {self.warmup_epochs}")
        if any(m < 1 or m > self.epochs for m in self.milestones):
            raise ValueError(f"milestones must lie in 1..epochs ({self.epochs}), got {list(self.milestones)}")
        for name, value in self.model_knobs:
            if name not in KNOBS:
                raise ValueError(f"model_knobs: unknown knob {name!r}; valid: {', '.join(KNOBS)}")
            KNOBS[name].coerce(value)  # a ValueError names the knob and its valid values

    @property
    def augmentation(self) -> dict[str, Any]:
        """The augmentation options set away from their defaults (folder data sets take them)."""
        return {k: getattr(self, k) for k in AUGMENTATION if getattr(self, k) != RECIPE_DEFAULTS[k]}

    def knobs_for(self, declared: tuple[str, ...]) -> dict[str, Any]:
        """`model_knobs` restricted to the knobs a model declares."""
        return {k: v for k, v in self.model_knobs if k in declared}

    @property
    def scaled_lr(self) -> float:
        """The learning rate for `batch_size` (the global batch, over all devices and nodes)."""
        return self.lr * self.batch_size / self.lr_reference_batch if self.lr_reference_batch else self.lr


RECIPE_FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}
RECIPE_TYPES = {name: str(f.type) for name, f in RECIPE_FIELDS.items()}
RECIPE_DEFAULTS = {name: f.default.default for name, f in RECIPE_FIELDS.items()}  # f.default is the pydantic Field
ID_NEUTRAL_DEFAULTS: dict[str, Any] = {name: RECIPE_DEFAULTS[name] for name in ID_NEUTRAL}


def recipe_help() -> list[tuple[str, str, Any, str]]:
    """(key, type, default, description) of every recipe field, in declaration order."""
    def kind(name: str) -> str:
        if name in CHOICES:
            return "|".join(CHOICES[name])
        text = RECIPE_TYPES[name].replace("tuple[int, ...]", "E1,E2,...").replace("tuple[tuple[str, Any], ...]", "K=V,...")
        return text.replace(" | None", " or none")

    return [(name, kind(name), RECIPE_DEFAULTS[name], f.default.description or "") for name, f in RECIPE_FIELDS.items()]


def _one_line(err: ValidationError) -> str:
    """The first problem of a validation error, in one line that names the field and what is valid."""
    first = err.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else "recipe"
    if first["type"] == "literal_error":
        return f"{name} must be one of {', '.join(CHOICES[name])}, got {first['input']!r}"
    if first["type"] == "value_error" and not first["loc"]:  # __post_init__'s cross-field checks
        return str(first["ctx"]["error"])
    message = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"][0].lower() + first["msg"][1:]
    return f"invalid value for {name}: {first['input']!r} ({message})"


MAX_LISTED_COUNTS = 12  # process counts a refused batch split names


def check_processes(recipe: Recipe, processes: int, accumulate: int, device: str) -> int:
    """What a recipe needs of the processes it trains on, checked before any starts: its batch
    splits over them (`device_batch`, returned), and SyncBatchNorm has GPUs."""
    if recipe.sync_batchnorm and processes > 1 and device != "cuda":
        raise ConfigError("sync_batchnorm needs CUDA devices (torch's SyncBatchNorm runs on GPUs only); drop "
                          "recipe.sync_batchnorm or train on GPUs")
    return device_batch(recipe.batch_size, processes, accumulate)


def device_batch(batch: int, processes: int, accumulate: int = 1) -> int:
    """The per-device batch that makes the recipe's global `batch` exactly: per-device x
    processes (devices x nodes) x gradient-accumulation steps. A split that does not divide is
    refused (a smaller real batch would train at the learning rate of the recipe's)."""
    if processes < 1 or accumulate < 1:
        raise ConfigError(f"processes and --accumulate must be >= 1, got {processes} and {accumulate}")
    if batch % (processes * accumulate):
        counts = [n for n in range(1, batch + 1) if batch % (n * accumulate) == 0][:MAX_LISTED_COUNTS]
        raise ConfigError(f"the recipe's global batch {batch} does not split over {processes} process(es) x "
                          f"{accumulate} accumulation step(s); with --accumulate {accumulate} valid devices x nodes "
                          f"are {', '.join(map(str, counts))}")
    return batch // (processes * accumulate)


def make_recipe(base: Recipe | None = None, **overrides: Any) -> Recipe:
    """`base` (default Recipe()) with `overrides` applied; unknown fields name the valid ones."""
    unknown = sorted(set(overrides) - set(RECIPE_FIELDS))
    if unknown:
        raise ConfigError(f"unknown recipe field {unknown[0]!r}; valid: {', '.join(RECIPE_FIELDS)}")
    try:
        return dataclasses.replace(base or Recipe(), **overrides)
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def profile_path(name: str) -> Path:
    """experiments/profiles/NAME.yaml for a profile name, or the file itself for a YAML path. A
    name is letters, digits, '_', '.', '-', so it can never point outside the profiles folder."""
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
    elif plain_name(name, 64):
        path = PROFILES_DIR / f"{name}.yaml"
    else:
        raise ConfigError(f"bad profile {name!r}: a name (letters, digits, '_', '.', '-') from "
                          f"{', '.join(available_profiles())}, or a path ending in .yaml")
    if not path.is_file():
        raise ConfigError(f"unknown profile {name!r}; valid: {', '.join(available_profiles())} or a .yaml path")
    return path


def profile_name(name: str) -> str:
    """What a profile is called in run ids and records: its name, or a YAML path's file stem (its
    fields are hashed into the id in any case). A stem that is no valid name is refused."""
    if not name.endswith((".yaml", ".yml")):
        return name
    stem = Path(name).stem
    if not plain_name(stem, 64):
        raise ConfigError(f"profile file {name!r}: its file name must be letters, digits, '_', '.', '-' "
                          f"(it names the runs); rename the file")
    return stem


def load_profile(name: str) -> Recipe:
    """A profile by name (experiments/profiles/NAME.yaml) or by path to a YAML file."""
    path = profile_path(name)
    try:
        data = load_yaml(path) or {}
    except FormatError as err:
        raise ConfigError(str(err)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a profile is a mapping of recipe fields")
    try:
        return make_recipe(**data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run, and so its identity.

    `knobs` holds the model's declared knobs other than ratio, dw_size and width that differ
    from their defaults (`models.extras`), so a config is the same whether a default was
    written out or not, and runs from before a knob existed keep their ids.
    """

    model: str
    ratio: int | None
    dw_size: int | None
    width: float | None
    profile: str
    recipe: Recipe = field(default_factory=Recipe)
    seed: int = 0
    dataset: str = "cifar10"
    knobs: tuple[tuple[str, Any], ...] = ()
    data: str | None = None  # `data.fingerprint` of the data set; None only where it is not at hand
    source: str | None = None  # run id of the trained network a pruned run starts from (`init: pruned`)

    @classmethod
    def create(cls, model: str, ratio: int | None = None, dw_size: int | None = None,
               width: float | None = None, profile: str = "standard", seed: int = 0,
               knobs: dict[str, Any] | None = None, data: str | None = None, source: str | None = None,
               dataset: str = "cifar10", **overrides: Any) -> RunConfig:
        """Validate model knobs (`knobs` may name ratio, dw_size and width too), load the profile
        and apply recipe overrides. `dataset`: a name from `data.DATASETS`; `data`: that data set's
        fingerprint (`DataSet.fingerprint`)."""
        from .models import (  # lazy: read by the command line's start-up, which loads no torch
            resolve_knobs,  # the registry (and torch) only when a config is made
        )

        given = {"ratio": ratio, "dw_size": dw_size, "width": width}
        others = dict(knobs or {})
        for name in list(given):
            if name in others:
                value = others.pop(name)
                if given[name] is not None and value is not None and value != given[name]:
                    raise ConfigError(f"{name} given twice ({given[name]!r} and {value!r})")
                given[name] = given[name] if value is None else value
        args = resolve_knobs(model, **given, **others)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2 ** 32 - 1:
            raise ConfigError(f"seed must be an integer 0..{2 ** 32 - 1}, got {seed!r}")
        from .data import get_dataset  # lazy: read by the command line's start-up, which loads no torch

        get_dataset(dataset)  # an unknown one names the valid ones
        return cls(model, args["ratio"], args["dw_size"], args["width"], profile_name(profile),
                   make_recipe(load_profile(profile), **overrides), seed, dataset, knobs=extras(args), data=data,
                   source=source)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """The config a record's `config` (`to_dict`) describes; ConfigError if it is not one."""
        from .models import resolve_knobs  # lazy: read by the command line's start-up, which loads no torch

        try:
            recipe = make_recipe(**d["recipe"])
            knobs = extras(resolve_knobs(d["model"], d.get("ratio"), d.get("dw_size"), d.get("width"),
                                         **(d.get("knobs") or {})))
            rc = cls(d["model"], d.get("ratio"), d.get("dw_size"), d.get("width"), profile_name(d["profile"]),
                     recipe, d["seed"], d.get("dataset", "cifar10"), knobs, d.get("data"), d.get("source"))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"not a run config ({type(err).__name__}: {err})") from None
        return rc

    def with_data(self, data: str | None) -> RunConfig:
        """The same run on the data set with fingerprint `data`."""
        return dataclasses.replace(self, data=data)

    @property
    def key(self) -> tuple:
        """(model, s, d, width, other knobs): the model configuration, without recipe or seed."""
        return (self.model, self.ratio, self.dw_size, self.width, self.knobs)

    @property
    def model_args(self) -> dict[str, Any]:
        """Keyword arguments of `build_model` for this configuration."""
        return {"ratio": self.ratio, "dw_size": self.dw_size, "width": self.width, **dict(self.knobs)}

    def to_dict(self) -> dict[str, Any]:
        """The identity of the run (hashed into its id, stored in its record)."""
        d = dataclasses.asdict(self)
        d["recipe"]["milestones"] = list(self.recipe.milestones)
        for name, default in ID_NEUTRAL_DEFAULTS.items():
            if d["recipe"][name] == default:
                del d["recipe"][name]
        if "model_knobs" in d["recipe"]:  # a mapping, as in profiles and in the JSON of records
            d["recipe"]["model_knobs"] = dict(self.recipe.model_knobs)
        if self.knobs:
            d["knobs"] = dict(self.knobs)
        else:
            del d["knobs"]
        if self.data is None:  # only configs made without their data (a dry-run with no data here)
            del d["data"]
        if self.source is None:  # every run but a pruned one that starts from another run
            del d["source"]
        return d

    @property
    def run_id(self) -> str:
        """Readable prefix plus a hash of the full resolved config."""
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
        parts = [self.model]
        if self.ratio is not None:
            parts += [f"s{self.ratio}", f"d{self.dw_size}"]
        if self.width is not None:
            parts.append(f"w{self.width:g}")
        parts += [KNOBS[name].id_part(value) for name, value in self.knobs]
        parts += [self.profile, f"seed{self.seed}", digest]
        return "-".join(parts)
