"""Feature maps and their redundancy: known answers on planted data, hooks, and bad input."""
import torch
import torch.nn.functional as F

from ghost_ablate.cli import main
from ghost_ablate.features import (capture, conv_units, fit_depthwise, ghost_sources, layer_redundancy,
                                   summarize_layer, top_pairs)
from ghost_ablate.models import build_model
from ghost_ablate.models.ghost import GhostModule


def shifted(x, dy, dx):
    """x moved by (dy, dx) pixels with zeros shifted in (what a d x d filter with zero padding can make)."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_planted_kernel_is_recovered():
    g = torch.Generator().manual_seed(0)
    source = torch.randn(8, 12, 12, generator=g)
    kernel = torch.randn(5, 5, generator=g)
    target = F.conv2d(source[:, None], kernel[None, None], padding=2)[:, 0] + 0.7
    weights, bias, nmse = fit_depthwise(source, target, 5)
    assert torch.allclose(weights, kernel, atol=1e-4) and abs(bias - 0.7) < 1e-4 and nmse < 1e-10
    assert fit_depthwise(source, target, 3)[2] > 0.01  # a smaller filter cannot make it


def test_shifted_and_scaled_copies_are_all_ghosts_at_the_d_that_covers_the_shift():
    g = torch.Generator().manual_seed(1)
    # smooth maps, as feature maps are: a shifted copy stays most similar to its source
    base = F.interpolate(torch.randn(16, 4, 4, 4, generator=g), size=(10, 10), mode="bilinear")
    base = F.pad(base, (1, 1, 1, 1))  # a zero border, so a one-pixel shift loses nothing either way
    maps = torch.cat([base, 2.5 * base[:, :2] + 0.3, shifted(base[:, 2:], 1, -1)], dim=1)  # 8 maps
    fits = layer_redundancy(maps)
    assert {f.channel: f.partner for f in fits} == {0: 4, 1: 5, 2: 6, 3: 7, 4: 0, 5: 1, 6: 2, 7: 3}
    summary = summarize_layer(fits)
    assert summary["ghost_share_d3"] == 1.0 and summary["dead"] == 0
    assert max(f.nmse[3] for f in fits[:2] + fits[4:6]) < 1e-10  # scaled copies: exact at every d
    assert all(f.nmse[1] < 1e-10 for f in fits[:2])
    assert all(f.nmse[1] > 0.05 for f in fits[2:4] + fits[6:])  # a 1x1 filter cannot shift a map...
    assert all(f.nmse[3] < 1e-10 for f in fits[2:4] + fits[6:])  # ...a 3x3 one can, both ways
    assert len(top_pairs(fits)) == 4 and len({frozenset((f.channel, f.partner)) for f in top_pairs(fits)}) == 4


def test_independent_random_maps_are_not_ghosts():
    maps = torch.randn(16, 12, 10, 10, generator=torch.Generator().manual_seed(2))
    summary = summarize_layer(layer_redundancy(maps))
    assert summary["ghost_share_d1"] == 0.0 and summary["ghost_share_d7"] == 0.0
    assert summary["nmse_d3"] > 0.8


def test_dead_maps_are_counted_apart():
    maps = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(3))
    maps[:, 1] = 0
    summary = summarize_layer(layer_redundancy(maps))
    assert summary["dead"] == 1 and summary["channels"] == 3


def test_units_hooks_and_ghost_sources():
    plain, ghost = build_model("vgg16").eval(), build_model("ghost_vgg16", 2, 3).eval()
    assert len(conv_units(plain)) == len(conv_units(ghost)) == 13
    assert conv_units(plain)[1] == "features.5" and conv_units(ghost)[1] == "features.3"
    assert len(conv_units(build_model("ghost_resnet56", 2, 3))) == len(conv_units(build_model("resnet56"))) == 55
    x = torch.randn(2, 3, 32, 32)
    maps = capture(plain, ["features.2"], x)["features.2"]
    with torch.no_grad():
        expected = plain.features[:3](x)
    assert torch.equal(maps, expected)
    assert all(not m._forward_hooks for m in plain.modules())  # hooks removed: the model is as it was
    module = GhostModule(8, 10, 3, ratio=3)  # 4 intrinsic maps, 8 ghosts (2 each), cut to 10 maps
    assert ghost_sources(module) == [0, 1, 2, 3, 0, 0, 1, 1, 2, 2]
    assert ghost_sources(plain.features[0]) is None


def test_bad_input_is_one_line_and_writes_nothing(tiny_cifar, tmp_path, capsys):
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    out = tmp_path / "out"
    state = tmp_path / "vgg.pt"
    torch.save(build_model("vgg16").state_dict(), state)
    cases = [
        (["features", "--only", "maps", str(empty_run)], "no last.ckpt"),
        (["features", "--only", "maps", "--weights", str(state), "--model", "vgg16", "--layer", "nope"], "conv units: features.2"),
        (["features", "--only", "redundancy", "--weights", str(state), "--model", "resnet56"], "does not fit the model"),
        (["features", "--only", "maps", "--weights", str(state), "--model", "vgg16", "--layer", "14"], "conv units 1..13"),
    ]
    for argv, message in cases:
        code = main(argv + ["--data-dir", str(tiny_cifar), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_commands_write_figures_and_tables(tiny_cifar, tmp_path):
    state = tmp_path / "ghost.pt"
    torch.save(build_model("ghost_vgg16", 2, 3).state_dict(), state)
    out = tmp_path / "out"
    args = ["--weights", str(state), "--model", "ghost_vgg16", "--ratio", "2", "--dw-size", "3",
            "--data-dir", str(tiny_cifar), "--out", str(out)]
    assert main(["features", "--only", "maps", *args]) == 0
    assert (out / "feature_maps_ghostvgg16_s2_d3.png").stat().st_size > 20_000
    assert main(["features", "--only", "redundancy", *args, "--images", "4"]) == 0
    import pandas as pd

    table = pd.read_csv(out / "redundancy.csv")
    assert len(table) == 13 and set(table["network"]) == {"Ghost-VGG-16 s=2 d=3"}
    share = table["ghost_share_d3"]
    assert (table.loc[share.isna(), "dead"] == table.loc[share.isna(), "channels"]).all()  # no live map: no share
    # a known answer: with the `copy` cheap op every ghost map is an exact copy of its intrinsic map,
    # so every live map has a partner that reconstructs it exactly, at every d
    copies = tmp_path / "copy.pt"
    torch.save(build_model("ghost_vgg16", 2, 3, cheap_op="copy").state_dict(), copies)
    assert main(["features", "--only", "redundancy", "--weights", str(copies), "--model", "ghost_vgg16", "--ratio", "2", "--dw-size", "3",
                 "--set", "cheap_op=copy", "--data-dir", str(tiny_cifar), "--out", str(tmp_path / "copy"),
                 "--images", "4"]) == 0
    exact = pd.read_csv(tmp_path / "copy" / "redundancy.csv")
    live = exact[exact["dead"] < exact["channels"]]
    assert len(live) >= 10 and (live["ghost_share_d1"] == 1.0).all() and (live["ghost_share_d3"] == 1.0).all()
    assert "Toy experiment" in (out / "redundancy.md").read_text()


def test_features_without_only_writes_maps_and_redundancy_from_one_load(tiny_cifar, tmp_path):
    state = tmp_path / "vgg.pt"
    torch.save(build_model("vgg16").state_dict(), state)
    out = tmp_path / "out"
    assert main(["features", "--weights", str(state), "--model", "vgg16", "--data-dir", str(tiny_cifar),
                 "--out", str(out), "--images", "4"]) == 0
    assert (out / "feature_maps_vgg16.png").exists() and (out / "redundancy.csv").exists()
