"""The report's plots read at a glance: per-seed points, a paired-difference panel per table, the
paper on axes of its own, accuracy axes within 0-100%, and no label that overlaps another or
leaves its axes (checked on the renderer's text extents)."""
import itertools
import math
from pathlib import Path

import pytest
from matplotlib.text import Text

from ghost_ablate import paper
from ghost_ablate.report.layout import spread, y_limits
from ghost_ablate.report.plots import draw_accuracy_vs_cost, draw_table, headless
from ghost_ablate.report.stats import seed_stats
from ghost_ablate.report.tables import BASELINES, paper_table

headless()

# Four seeds per row; d=1/5/7 sit within 1% of s=2 d=3's FLOPs, so their labels would collide
# if placed beside their points; one row spans 0-100% to test the axes' limits.
RUNS = {("ghost_vgg16", 2, 1, None): [38.2, 39.0, 37.5, 38.8], ("ghost_vgg16", 2, 3, None): [45.0, 47.3, 44.1, 46.0],
        ("ghost_vgg16", 2, 5, None): [40.5, 41.3, 40.0, 41.0], ("ghost_vgg16", 2, 7, None): [35.7, 41.5, 38.0, 39.9],
        ("ghost_vgg16", 3, 3, None): [43.6, 43.9, 42.1, 44.0], ("ghost_vgg16", 4, 3, None): [41.7, 44.5, 42.0, 43.2],
        ("ghost_vgg16", 5, 3, None): [0.0, 38.0, 35.1, 100.0], ("vgg16", None, None, None): [45.7, 49.0, 46.5, 47.7],
        ("l1_vgg16", None, None, None): [44.0, 45.5, 43.9, 46.1], ("resnet56", None, None, None): [54.9, 56.8, 55.1, 57.0],
        ("ghost_resnet56", 2, 3, None): [59.8, 64.4, 60.3, 62.2], ("l1_resnet56", None, None, None): [52.0, 53.1, 50.2, 54.0],
        ("cifar_ghostnet", 2, 3, 1.0): [58.1, 60.3, 59.0, 61.2]}
# By run key (knobs included): the same-budget table's pruned rows, by l1 and by BN scale.
FINAL = {**{(*k, ()): v for k, v in RUNS.items()},
         ("budget_vgg16", None, None, None, ()): [44.8, 46.0, 44.0, 45.9],
         ("budget_vgg16", None, None, None, (("criterion", "bn_scale"),)): [45.1, 46.6, 44.9, 46.2],
         ("budget_resnet56", None, None, None, ()): [55.0, 57.2, 54.1, 56.3],
         ("budget_resnet56", None, None, None, (("criterion", "bn_scale"),)): [56.2, 57.0, 55.5, 56.9]}


def _agg() -> dict:
    from ghost_ablate.costs import cost_record

    agg = {}
    for key, final in FINAL.items():
        s = seed_stats(final)
        cost = cost_record(*key[:4], knobs=dict(key[4]))
        agg[key] = {"final": final, "seeds": [0, 1, 2, 3], "n": s.n, "top1_mean": s.mean, "top1_std": s.std,
                           "top1_ci95": s.ci95, "top1_best_mean": s.mean, "params": cost["params"],
                           "flops": cost["flops"], "failed": 0, "mixed": "", "histories": []}
    return agg


def _texts(fig) -> list[tuple[Text, object]]:
    """Every visible, non-empty text the figure draws, with its box on the canvas (an
    annotation's text alone, not its leader line; tick labels only of ticks in view)."""
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    found = []
    for text in fig.findobj(Text):
        if not text.get_visible() or not text.get_text().strip():
            continue
        found.append((text, Text.get_window_extent(text, renderer)))
    ticks = set()
    for ax in fig.axes:
        for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            for tick, loc in [*zip(axis.get_major_ticks(), axis.get_majorticklocs()),
                              *zip(axis.get_minor_ticks(), axis.get_minorticklocs())]:
                if not min(lo, hi) <= loc <= max(lo, hi):
                    ticks |= {id(tick.label1), id(tick.label2)}
    return [(t, box) for t, box in found if id(t) not in ticks]


def assert_readable(fig, accuracy_axes) -> None:  # noqa: ANN001
    texts = _texts(fig)
    assert len(texts) > 10
    for (a, box_a), (b, box_b) in itertools.combinations(texts, 2):
        shrunk = box_a.shrunk(0.98, 0.9)
        assert not shrunk.overlaps(box_b.shrunk(0.98, 0.9)), f"{a.get_text()!r} overlaps {b.get_text()!r}"
    for ax in fig.axes:
        inside = ax.get_window_extent()
        for label in ax.texts:  # labels and annotations drawn in the data area
            box = Text.get_window_extent(label, fig.canvas.get_renderer())
            assert inside.x0 - 1 <= box.x0 and box.x1 <= inside.x1 + 1 and inside.y0 - 1 <= box.y0 \
                and box.y1 <= inside.y1 + 1, f"{label.get_text()!r} leaves its axes"
    for ax in accuracy_axes:
        low, high = ax.get_ylim()
        assert 0 <= low < high <= 100


def test_spread_keeps_order_gap_and_bounds():
    placed = spread([0.5, 0.5, 0.51, 0.2, 0.99, 0.98], gap=0.05, low=0.02, high=0.98)
    order = sorted(range(6), key=lambda i: ([0.5, 0.5, 0.51, 0.2, 0.99, 0.98][i], i))
    ys = [placed[i] for i in order]
    assert all(b - a >= 0.05 - 1e-12 for a, b in zip(ys, ys[1:])) and 0.02 <= min(ys) and max(ys) <= 0.98
    assert placed[3] == pytest.approx(0.2)  # a label with room stays level with its point
    crowded = spread([0.5] * 30, gap=0.05, low=0.0, high=1.0)  # cannot fit 30 at 0.05: the gap shrinks
    assert min(crowded) >= 0 and max(crowded) <= 1 and len(set(round(y, 9) for y in crowded)) == 30
    assert y_limits([0.0, 100.0]) == (0.0, 100.0) and y_limits([40.0, 41.0])[0] < 40.0


@pytest.mark.parametrize("cost", ["flops", "params"])
def test_accuracy_vs_cost_shows_every_seed_and_keeps_labels_apart(cost):
    import matplotlib.pyplot as plt

    fig = draw_accuracy_vs_cost(_agg(), cost)
    by_title = {ax.get_title().split(" (")[0]: ax for ax in fig.axes}
    # one column per model family (from the specs), ours above the paper's
    assert list(by_title) == ["VGG-16: ours", "ResNet-56: ours", "GhostNet: ours",
                              "VGG-16: paper", "ResNet-56: paper", "GhostNet: paper"]
    assert [t.get_text() for t in by_title["GhostNet: paper"].texts] == ["no published row on CIFAR-10"]
    ours_vgg, ours_resnet, paper_vgg = by_title["VGG-16: ours"], by_title["ResNet-56: ours"], by_title["VGG-16: paper"]
    assert_readable(fig, fig.axes)
    seeds = [y for line in ours_vgg.lines for y in line.get_ydata() if line.get_markersize() < 5]
    assert sorted(seeds) == sorted(v for k, vs in FINAL.items()
                                   if k[0] in ("vgg16", "ghost_vgg16", "l1_vgg16", "budget_vgg16") for v in vs)
    labels = {t.get_text() for t in ours_vgg.texts}
    assert {"s=2 d=1", "s=2 d=3", "s=2 d=5", "s=2 d=7", "VGG-16", "l1-VGG-16", "budget-VGG-16",
            "budget-VGG-16 criterion=bn_scale"} <= labels
    # the paper's 93% lives on its own axes: ours keep a y range fitted to ours
    assert paper_vgg.get_ylim()[0] > 90 and ours_resnet.get_ylim()[1] < 70
    markers = {line.get_marker() for line in ours_vgg.lines}
    assert {"o", "s", "^"} <= markers  # Ghost, plain and pruned as separate marker families
    for ax in (ours_vgg, ours_resnet, paper_vgg, by_title["ResNet-56: paper"]):  # no two leader lines cross (the VGG panels drew crossing lines before)
        leaders = [line.get_xydata() for line in ax.lines if len(line.get_xdata()) == 3]
        assert len(leaders) == len(ax.texts) and len(leaders) >= 3
        for a, b in itertools.combinations(leaders, 2):
            assert not any(segments_cross(a[i], a[i + 1], b[j], b[j + 1]) for i in range(2) for j in range(2))
    plt.close(fig)


def segments_cross(p1, p2, q1, q2) -> bool:  # noqa: ANN001 - 2-vectors
    """Whether two segments intersect anywhere but a shared end point (orientation test)."""
    def side(a, b, c) -> float:  # noqa: ANN001
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    d1, d2, d3, d4 = side(q1, q2, p1), side(q1, q2, p2), side(p1, p2, q1), side(p1, p2, q2)
    return d1 * d2 < 0 and d3 * d4 < 0


def test_segments_cross_detects_a_crossing():
    assert segments_cross((0, 0), (1, 1), (0, 1), (1, 0)) and not segments_cross((0, 0), (1, 0), (0, 1), (1, 1))


@pytest.mark.parametrize("table", paper.CIFAR_TABLES)
def test_table_plot_has_seeds_paired_differences_and_the_paper(table):
    import matplotlib.pyplot as plt

    agg = _agg()
    frame = paper_table(table, agg)
    fig = draw_table(table, frame, agg)
    ours, diff, published = fig.axes
    assert_readable(fig, [ours, published])
    shown = [r for r in paper.rows(table) if r.model is not None]
    assert [t.get_text() for t in published.get_xticklabels()] == [r.label for r in shown]
    # the difference panel: each tested row's paired mean difference (a single marker at its x)
    centres = [line.get_ydata()[0] for line in diff.lines if len(line.get_ydata()) == 1]
    tested = 0
    for row in shown:
        ref = paper.reference_row(row, BASELINES)
        if ref is None or ref.key == row.key:
            continue
        mean = sum(b - a for a, b in zip(FINAL[ref.run_key], FINAL[row.run_key])) / 4
        assert any(math.isclose(c, mean, abs_tol=1e-9) for c in centres), row.label
        tested += 1
    assert tested >= 2
    plt.close(fig)


def test_committed_report_shows_the_new_plots():
    report = Path(__file__).resolve().parents[1] / "reports" / "README.md"
    text = report.read_text()
    for table in paper.CIFAR_TABLES:
        assert f"({table}.png)" in text


def test_an_interval_past_the_panel_is_cut_and_its_bound_written():
    import matplotlib.pyplot as plt

    from ghost_ablate.report.plots import draw_clipped_intervals

    fig, ax = plt.subplots()
    draw_clipped_intervals(ax, [(0, -2.0, 40.0, "o", "C0", False), (1, 1.0, 0.5, "o", "C1", True)], -5.0, 5.0)
    bar = ax.lines[0].get_ydata()
    assert list(bar) == [-5.0, 5.0]  # cut at the limits, not -42..+38
    assert sorted(t.get_text() for t in ax.texts) == ["+38.0", "-42.0"]  # only the cut one is written
    assert list(ax.lines[4].get_ydata()) == [0.5, 1.5]  # the narrow interval whole (after bar, mean, 2 arrows)
    plt.close(fig)


def test_an_imagenet_report_draws_only_imagenet_tables_and_names_its_data_set():
    from ghost_ablate import paper
    from ghost_ablate.report.plots import draw_accuracy_vs_cost

    fig = draw_accuracy_vs_cost({}, "flops", "ImageNet", paper.IMAGENET_TABLES)
    titles = [ax.get_title() for ax in fig.axes]
    assert fig._suptitle.get_text() == "Accuracy vs FLOPs on ImageNet"
    assert not any("VGG" in t or "ResNet-56" in t for t in titles)
    labels = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert "GhostNet 1x" in labels and not any(label.startswith("s=2 d=3") and "VGG" in label for label in labels)
    resnet50 = next(ax for ax in fig.axes if ax.get_title().startswith("ResNet-50: paper"))
    assert resnet50.get_xlim()[1] > 4100  # ResNet-50's 4,100M FLOPs: ImageNet points, not CIFAR's
    # one column per family the ImageNet tables hold; the mobile networks drawn with GhostNet (Table 7)
    assert [t.split(":")[0] for t in titles[:3]] == ["GhostNet", "GhostNetV2", "ResNet-50"]
    ghostnet = next(ax for ax in fig.axes if ax.get_title().startswith("GhostNet: paper"))
    assert {"MobileNetV2 1x", "GhostNet 1.3x"} <= {t.get_text() for t in ghostnet.texts}
