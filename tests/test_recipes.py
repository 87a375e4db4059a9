"""The ImageNet recipes as their sources wrote them (issue 31): every profile value cited, the
author's dropout and schedule in the model he trained, and the options the sources use (no
weight decay on BN, EMA weights, bicubic crops, colour jitter, RandAugment, random erasing),
each off by default so that no run id changes."""
from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
import torch

from ghost_ablate.errors import UserError
from ghost_ablate.config import PROFILES_DIR, ConfigError, RunConfig, load_profile, make_recipe
from ghost_ablate.classifier import ImageClassifier, param_groups
from ghost_ablate.training import RunContext, train_run

IMAGENET_PROFILES = sorted(PROFILES_DIR.glob("imagenet_ghostnet*.yaml")) + [PROFILES_DIR / "imagenet_resnet50.yaml"]


@pytest.mark.parametrize("path", IMAGENET_PROFILES, ids=lambda p: p.stem)
def test_every_value_of_an_imagenet_recipe_names_its_source(path: Path):
    """Each value line carries a tag that its header defines: a quoted source, or [ours] with a reason."""
    lines = path.read_text().splitlines()
    header = "\n".join(ln for ln in lines if ln.startswith("#"))
    values = [ln for ln in lines if ln.strip() and not ln.startswith("#") and not ln.rstrip().endswith(":")]
    assert values
    for line in values:
        tags = re.findall(r"\[([^\]]+)\]", line.partition("#")[2])
        assert tags, f"{path.name}: no source for {line.strip()!r}"
        for tag in tags:
            assert f"[{tag}]" in header or tag.startswith("ours"), f"{path.name}: [{tag}] is not defined in the header"


def test_the_authors_recipe_builds_ghostnet_with_his_dropout_and_schedule():
    config = RunConfig.create("ghostnet", width=1.0, profile="imagenet_ghostnet", dataset="imagenet")
    module = ImageClassifier("ghostnet", None, None, 1.0, 1000, config.to_dict()["recipe"])
    assert module.model.dropout == 0.15  # his "dropout0.15", not the model's own 0.2
    optim = module.configure_optimizers()
    opt, sched = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4 * 0.1)  # warm-up starts at lr / 10
    assert opt.defaults["weight_decay"] == pytest.approx(3e-5)
    warm, cosine = sched._schedulers
    assert isinstance(warm, torch.optim.lr_scheduler.LinearLR) and warm.total_iters == 5
    assert isinstance(cosine, torch.optim.lr_scheduler.CosineAnnealingLR) and cosine.T_max == 400 - 5
    # a run's own knob wins over the recipe's, and a model without the knob ignores it
    assert ImageClassifier("ghostnet", None, None, 1.0, 1000, config.to_dict()["recipe"],
                           {"dropout": 0.1}).model.dropout == 0.1
    ImageClassifier("resnet50", None, None, None, 1000, config.to_dict()["recipe"])


def test_recipe_options_are_off_by_default_and_keep_every_run_id():
    plain = RunConfig.create("resnet56", profile="paper")
    for field, value in (("norm_weight_decay", None), ("ema_decay", None), ("interpolation", "bilinear"),
                         ("color_jitter", 0.0), ("randaugment", None), ("random_erasing", 0.0), ("model_knobs", {})):
        assert RunConfig.create("resnet56", profile="paper", **{field: value}).run_id == plain.run_id
    assert RunConfig.create("resnet56", profile="paper", ema_decay=0.999).run_id != plain.run_id
    with pytest.raises(ConfigError, match="interpolation must be one of bilinear, bicubic, got 'nearest'"):
        make_recipe(interpolation="nearest")
    with pytest.raises(ConfigError, match="model_knobs: unknown knob 'droput'"):
        make_recipe(model_knobs="droput=0.1")


def test_norm_weight_decay_puts_batchnorm_parameters_in_their_own_group():
    recipe = load_profile("imagenet_ghostnet_dli14")
    model = ImageClassifier("resnet56", recipe=RunConfig.create("resnet56", profile="paper").to_dict()["recipe"]).model
    other, norm = param_groups(model, recipe)
    bn = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert {id(p) for p in norm["params"]} == bn and norm["weight_decay"] == 0.0
    assert not bn & {id(p) for p in other["params"]} and "weight_decay" not in other  # the recipe's own
    assert len(param_groups(model, load_profile("paper"))) == 1  # off: one group, as before


class LiveWeights(L.Callback):
    """The live weights after every optimizer step (before the EMA callback, which comes later)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):  # noqa: ANN001
        self.steps.append({k: v.detach().clone() for k, v in module.model.named_parameters()})


def test_ema_weights_track_the_live_ones_and_are_the_ones_scored_and_saved(tiny_cifar, tmp_path):
    decay = 0.6
    config = RunConfig.create("resnet56", profile="smoke", epochs=1, batch_size=8, limit_train_batches=4,
                              ema_decay=decay)
    live = LiveWeights()
    record = train_run(config, RunContext.resolve(tiny_cifar, accelerator="cpu", download=False), tmp_path,
                       progress=False, callbacks=[live])
    assert record["status"] == "finished" and record["scored_weights"] == "ema (decay 0.6)"
    assert len(live.steps) == record["optimizer_steps"] == 4
    expected = dict(live.steps[0])  # the first update copies, each later one blends in the new step
    for step in live.steps[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * step[k] for k in step}
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    for name, value in expected.items():
        assert torch.allclose(saved[f"model.{name}"], value, atol=1e-6), name
    moved = [n for n in expected if not torch.allclose(expected[n], live.steps[-1][n])]
    assert moved  # the averaged weights are not the last live ones


def test_augmentation_options_build_torchvision_transforms_and_cifar_refuses_them(tiny_cifar, tmp_path):
    from torchvision.transforms import v2

    from ghost_ablate.data.imagenet import ImageNetDataModule

    from torchvision.io import encode_jpeg

    from ghost_ablate.data.imagenet import crop_one

    dm = ImageNetDataModule(tmp_path, image_size=64, augmentation=load_profile("imagenet_ghostnet_mindcv").augmentation)
    extras = dm.crops[True].extras.transforms
    assert [type(t) for t in extras] == [v2.RandAugment, v2.RandomErasing]
    assert extras[0].magnitude == 9 and extras[1].p == 0.25 and dm.crops[False].extras is None
    author = ImageNetDataModule(tmp_path, image_size=64, augmentation=load_profile("imagenet_ghostnet").augmentation)
    (jitter,) = author.crops[True].extras.transforms
    assert author.crops[True].interpolation == author.crops[False].interpolation == "bicubic"
    assert jitter.brightness == (0.6, 1.4)
    jpeg = encode_jpeg(torch.randint(0, 256, (3, 80, 100), dtype=torch.uint8)).numpy().tobytes()
    assert crop_one(jpeg, dm.crops[True]).shape == crop_one(jpeg, author.crops[False]).shape == (3, 64, 64)
    config = RunConfig.create("resnet56", profile="smoke", color_jitter=0.4)
    with pytest.raises(UserError, match="CIFAR-10 trains with the paper's pad-4 crop and flip; color_jitter are "
                                          "options of folder data sets"):
        train_run(config, RunContext.resolve(tiny_cifar, accelerator="cpu", download=False), tmp_path / "run",
                  progress=False)
