import pytest

from ghost_ablate import paper
from ghost_ablate.models import MODELS, resolve_args


def test_every_buildable_row_names_a_registry_model_with_resolved_args():
    for row in paper.rows(buildable=True):
        assert row.model in MODELS
        args = resolve_args(row.model, row.ratio, row.dw_size, row.width)
        assert (args["ratio"], args["dw_size"], args["width"]) == (row.ratio, row.dw_size, row.width)


def test_tables_have_the_papers_rows():
    assert [r.dw_size for r in paper.rows("table1_dw_size")] == [1, 3, 5, 7]
    assert [r.ratio for r in paper.rows("table2_ratio")] == [None, 2, 3, 4, 5]
    assert len(paper.rows("table3_cifar10")) == 9
    assert len(paper.rows("table3_cifar10", buildable=True)) == 6  # SBP, CP and AMC are published only
    assert paper.lookup("ghost_vgg16", 2, 3, None).top1 == 93.7


def test_distinct_models_deduplicates_shared_rows():
    cifar = paper.distinct_models(paper.CIFAR_TABLES)
    # d=1,3,5,7; s=3,4,5; VGG-16; l1-VGG-16; ResNet-56; l1-ResNet-56; Ghost-ResNet-56; and the same-budget
    # table's budget-VGG-16 and budget-ResNet-56 once each (counted without a source, the criterion
    # does not change their widths)
    assert len(cifar) == 14
    assert len(paper.rows("budget_cifar10")) == 8 and all(r.top1 is None for r in paper.rows("budget_cifar10")
                                                          if r.model.startswith("budget_"))


def test_unknown_table_raises():
    with pytest.raises(ValueError, match="valid"):
        paper.rows("table9")
