"""Training recipes (profiles) and the resolved configuration of one run.

`Recipe` is the one list of recipe fields: profiles in `experiments/profiles/*.yaml`
set some of them, the command line can override any of them, and a run's identity
hashes all of them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from .errors import UserError
from .formats import FormatError, load_yaml
from .models import KNOBS, extras
from .records import plain_name

PROFILES_DIR = Path(__file__).resolve().parent.parent / "experiments" / "profiles"
SCHEDULES = ("step", "cosine")
PRECISIONS = ("auto", "32", "bf16")
LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")  # where a run's metrics go besides its CSV logs
# Recipe fields added after run records existed. While such a field holds its default it
# is left out of a run's identity (`RunConfig.to_dict`), so earlier run ids and records
# stay valid. `precision: auto` is resolved per machine (bf16 where it is native and
# fast, else 32) and the record states what it resolved to; keeping it out of the id
# means a sweep sharded over mixed machines never splits one configuration in two.
ID_NEUTRAL_DEFAULTS: dict[str, Any] = {"precision": "auto", "label_smoothing": 0.0, "lr_reference_batch": None,
                                       "image_size": None, "sync_batchnorm": False, "norm_weight_decay": None,
                                       "ema_decay": None, "interpolation": "bilinear", "color_jitter": 0.0,
                                       "randaugment": None, "random_erasing": 0.0, "model_knobs": (),
                                       "tta_flip": False}
INTERPOLATIONS = ("bilinear", "bicubic")
AUGMENTATION = ("interpolation", "color_jitter", "randaugment", "random_erasing")  # folder data sets only


class ConfigError(UserError, ValueError):
    """A bad profile, field or value; the message names the valid choices."""


@dataclass(frozen=True)
class Recipe:
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # "step" (x gamma at milestones) or "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: int = 0  # linear warm-up from lr/10, before the schedule
    limit_train_batches: int | None = None  # None: the whole training set each epoch
    limit_test_batches: int | None = None
    eval_batch_size: int = 512
    compile: bool = False  # torch.compile the model (GPU)
    deterministic: bool = False  # deterministic kernels; off lets cuDNN pick the fastest
    precision: str = "auto"  # "auto" (bf16 where native and fast, else 32), "32" or "bf16"
    label_smoothing: float = 0.0  # of the training loss (the test loss is plain cross-entropy)
    # `lr` is for this global batch; another batch_size scales it linearly (Goyal et al., 2017).
    # None: `lr` as given, whatever the batch.
    lr_reference_batch: int | None = None
    image_size: int | None = None  # training crop / evaluation crop side; None: the data set's own
    sync_batchnorm: bool = False  # under DDP, batch statistics over the global batch, not each device's share
    # Options of the ImageNet recipes' sources (experiments/profiles/imagenet_*.yaml), each off by default.
    norm_weight_decay: float | None = None  # weight decay of normalization layers' parameters; None: weight_decay
    ema_decay: float | None = None  # EMA of the weights, updated each step; they are the ones evaluated and saved
    interpolation: str = "bilinear"  # of the random-resized crop and the evaluation resize
    color_jitter: float = 0.0  # brightness, contrast and saturation each scaled by a factor in [1-x, 1+x]
    randaugment: int | None = None  # RandAugment's magnitude (torchvision, 2 ops per image); None: off
    random_erasing: float = 0.0  # probability of erasing a random rectangle of a training image
    # Values for the model's declared knobs (models/knobs.py) that the recipe's source sets, e.g.
    # the classifier's dropout; used where the model declares the knob and the run leaves it unset.
    model_knobs: tuple[tuple[str, Any], ...] = ()
    # Test-time augmentation: each test image is scored by the mean of its own and its mirror's
    # logits (airbench's flip TTA); training is unchanged.
    tta_flip: bool = False

    @property
    def augmentation(self) -> dict[str, Any]:
        """The augmentation options set away from their defaults (folder data sets take them)."""
        return {k: getattr(self, k) for k in AUGMENTATION if getattr(self, k) != ID_NEUTRAL_DEFAULTS[k]}

    def knobs_for(self, declared: tuple[str, ...]) -> dict[str, Any]:
        """`model_knobs` restricted to the knobs a model declares."""
        return {k: v for k, v in self.model_knobs if k in declared}

    @property
    def scaled_lr(self) -> float:
        """The learning rate for `batch_size` (the global batch, over all devices and nodes)."""
        return self.lr * self.batch_size / self.lr_reference_batch if self.lr_reference_batch else self.lr

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
            "momentum": 0 <= self.momentum < 1, "weight_decay": self.weight_decay >= 0,
            "gamma": 0 < self.gamma <= 1, "warmup_epochs": 0 <= self.warmup_epochs < self.epochs,
            "eval_batch_size": self.eval_batch_size >= 1,
            "limit_train_batches": self.limit_train_batches is None or self.limit_train_batches >= 1,
            "limit_test_batches": self.limit_test_batches is None or self.limit_test_batches >= 1,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "lr_reference_batch": self.lr_reference_batch is None or self.lr_reference_batch >= 1,
            "image_size": self.image_size is None or self.image_size >= 16,
            "norm_weight_decay": self.norm_weight_decay is None or self.norm_weight_decay >= 0,
            "ema_decay": self.ema_decay is None or 0 < self.ema_decay < 1,
            "color_jitter": 0 <= self.color_jitter < 1,
            "randaugment": self.randaugment is None or 0 <= self.randaugment <= 30,
            "random_erasing": 0 <= self.random_erasing <= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid value for {bad[0]}: {getattr(self, bad[0])!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        from .models import KNOBS  # lazy: read by the command line's start-up, which loads no torch

        for name, value in self.model_knobs:
            if name not in KNOBS:
                raise ConfigError(f"model_knobs: unknown knob {name!r}; valid: {', '.join(KNOBS)}")
            try:
                KNOBS[name].coerce(value)
            except ValueError as err:
                raise ConfigError(f"model_knobs: {err}") from None
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if any(m < 1 or m > self.epochs for m in self.milestones):
            raise ConfigError(f"milestones must lie in 1..epochs ({self.epochs}), got {list(self.milestones)}")


RECIPE_FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}
MAX_LISTED_COUNTS = 12  # process counts a refused batch split names


def check_processes(recipe: Recipe, processes: int, accumulate: int, device: str) -> int:
    """What a recipe needs of the processes it trains on, checked before any starts: its batch
    splits over them (`device_batch`, returned), and SyncBatchNorm has GPUs."""
    if recipe.sync_batchnorm and processes > 1 and device != "cuda":
        raise ConfigError("sync_batchnorm needs CUDA devices (torch's SyncBatchNorm runs on GPUs only); drop "
                          "--sync-batchnorm or train on GPUs")
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


def _coerce(name: str, value: Any) -> Any:
    """Convert a YAML or command-line value to the type of Recipe field `name`."""
    kind = RECIPE_FIELDS[name].type
    try:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if "None" in kind:
                return None
            raise ValueError("may not be empty")
        if name == "model_knobs":  # a mapping in YAML, KNOB=VALUE,... on the command line
            items = (value.items() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else
                     (part.split("=", 1) for part in str(value).split(",") if part.strip()))
            return tuple(sorted((str(k).strip(), v.strip() if isinstance(v, str) else v) for k, v in items))
        if kind.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(int(v) for v in items if str(v).strip() != "")
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("expected an integer")
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            return int(value)
        if kind.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"field {name!r}: cannot use {value!r} ({err})") from None


def make_recipe(base: Recipe | None = None, **overrides: Any) -> Recipe:
    """`base` (default Recipe()) with `overrides` applied; unknown fields name the valid ones."""
    unknown = sorted(set(overrides) - set(RECIPE_FIELDS))
    if unknown:
        raise ConfigError(f"unknown recipe field {unknown[0]!r}; valid: {', '.join(RECIPE_FIELDS)}")
    values = {k: _coerce(k, v) for k, v in overrides.items()}
    return dataclasses.replace(base or Recipe(), **values)


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
