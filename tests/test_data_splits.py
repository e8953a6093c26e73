"""Group-aware stratified splits: no leakage, every class in train, repeatable, saved and read back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keras_med.data import ImageTable, kfold_by_group, load_ham10000, load_split, save_split, split_by_group


@pytest.fixture(scope="module")
def ham_table(ham_demo_dir):
    return load_ham10000(ham_demo_dir)


def _groups_per_split(table):
    return table.frame.groupby("group")["split"].nunique()


def test_group_split_has_no_shared_group_and_every_class_everywhere(ham_table):
    table = split_by_group(ham_table, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert (_groups_per_split(table) == 1).all()
    for split in ("train", "val", "test"):
        assert set(table.subset(split).frame["label"]) == set(ham_table.class_names)
    assert 0.1 < (table.frame["split"] == "test").mean() < 0.3


def test_group_split_is_deterministic_for_a_seed(ham_table):
    first = split_by_group(ham_table, 0.2, 0.2, seed=7).frame["split"]
    again = split_by_group(ham_table, 0.2, 0.2, seed=7).frame["split"]
    other = split_by_group(ham_table, 0.2, 0.2, seed=8).frame["split"]
    assert first.equals(again) and not first.equals(other)


def test_split_csv_round_trips(ham_table, tmp_path):
    table = split_by_group(ham_table, 0.2, 0.2, seed=1)
    path = save_split(table, tmp_path / "split.csv")
    assert pd.read_csv(path).columns[:4].tolist() == ["path", "label", "group", "split"]
    again = load_split(path, table.class_names, table.task)
    assert again.frame[["path", "label", "group", "split"]].equals(table.frame[["path", "label", "group", "split"]])
    np.testing.assert_array_equal(again.targets(), table.targets())


def test_kfold_folds_partition_groups(ham_table):
    folds = list(kfold_by_group(ham_table, n_folds=3, seed=0))
    assert len(folds) == 3
    val_paths = [set(fold.subset("val").paths) for fold in folds]
    assert set().union(*val_paths) == set(ham_table.paths)
    assert sum(len(paths) for paths in val_paths) == len(ham_table)
    assert all((_groups_per_split(fold) == 1).all() for fold in folds)


def test_preassigned_test_is_kept_and_only_val_is_carved(ham_table):
    frame = ham_table.frame.copy()
    test_lesions = frame.groupby("label")["group"].unique().map(lambda lesions: list(lesions[::4])).sum()
    frame["split"] = np.where(frame["group"].isin(test_lesions), "test", "train")
    table = split_by_group(ham_table.with_frame(frame), val_fraction=0.2, test_fraction=0.2, seed=0)
    assert (table.frame["split"] == "test").equals(frame["split"] == "test")
    assert (table.frame["split"] == "val").any()


def test_multilabel_split_stratifies_on_rarest_label():
    rows = [{"path": f"/x/{i}.png", "group": f"p{i // 2}",
             "label": "|".join(name for name, every in (("common", 1), ("rare", 5)) if i % every == 0)}
            for i in range(80)]
    table = ImageTable(pd.DataFrame(rows), ["common", "rare"], "multilabel")
    split = split_by_group(table, 0.25, 0.25, seed=0)
    assert (_groups_per_split(split) == 1).all()
    for name in ("train", "val", "test"):
        assert split.subset(name).targets()[:, 1].sum() > 0
