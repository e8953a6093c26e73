"""`--cv K`: K fold runs on group-wise folds, their summary, the out-of-fold pool, and one averaged SavedModel."""

import json

import pandas as pd
import pytest

from keras_med.engine.command import main
from keras_med.recipes import ham10000

from helpers import tiny_flags

TINY = tiny_flags(extra=["--ood", "none"])


@pytest.fixture(scope="module")
def cross_validated(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv")
    cv_dir = root / "cv"
    code = main(ham10000.SPEC, TINY + ["--cv", "2", "--cv-export", "--output-dir", str(root / "runs"),
                                       "--run-dir", str(cv_dir), "--saved-models", str(root / "saved_models")])
    assert code == 0
    return root, cv_dir


def test_folds_are_group_wise_and_share_one_test_split(cross_validated):
    _, cv_dir = cross_validated
    splits = [pd.read_csv(cv_dir / f"fold{k}" / "split.csv") for k in (1, 2)]
    assert splits[0].loc[splits[0].split == "test", "path"].tolist() == splits[1].loc[splits[1].split == "test",
                                                                                     "path"].tolist()
    validated = [set(split.loc[split.split == "val", "group"]) for split in splits]
    assert not validated[0] & validated[1]
    non_test = set(splits[0].loc[splits[0].split != "test", "group"])
    assert validated[0] | validated[1] == non_test
    for split in splits:
        assert split.groupby("group")["split"].nunique().max() == 1


def test_summary_reports_each_fold_the_spread_and_the_out_of_fold_pool(cross_validated):
    _, cv_dir = cross_validated
    summary = json.loads((cv_dir / "cv_summary.json").read_text())
    assert len(summary["folds"]) == 2
    values = [fold["test"]["balanced_accuracy"] for fold in summary["folds"]]
    assert summary["test_mean_std"]["balanced_accuracy"]["mean"] == pytest.approx(sum(values) / 2)
    split = pd.read_csv(cv_dir / "fold1" / "split.csv")
    assert summary["out_of_fold"]["n_images"] == int((split.split != "test").sum())
    assert 0.0 <= summary["ensemble"]["balanced_accuracy"] <= 1.0
    ensemble = json.loads((cv_dir / "ensemble" / "metrics.json").read_text())
    assert ensemble["n_samples"] == int((split.split == "test").sum())
    assert (cv_dir / "ensemble" / "report.md").is_file()


def test_the_folds_are_exported_as_one_averaged_saved_model(cross_validated):
    root, cv_dir = cross_validated
    summary = json.loads((cv_dir / "cv_summary.json").read_text())
    stored = json.loads((root / "saved_models" / "ham10000" / "1" / "assets.extra" / "keras_med.json").read_text())
    assert summary["export"].endswith("1") and stored["members"] == 2
    assert not (cv_dir / "fold1" / "saved_models").exists()


def test_a_finished_cross_validation_is_not_trained_again(cross_validated):
    root, cv_dir = cross_validated
    before = {k: (cv_dir / f"fold{k}" / "history.csv").stat().st_mtime_ns for k in (1, 2)}
    assert main(ham10000.SPEC, TINY + ["--cv", "2", "--output-dir", str(root / "runs"), "--run-dir", str(cv_dir),
                                       "--no-export"]) == 0
    assert before == {k: (cv_dir / f"fold{k}" / "history.csv").stat().st_mtime_ns for k in (1, 2)}


@pytest.mark.parametrize("flags, message", [(["--cv", "1"], "at least 2 folds"), (["--cv-export"], "needs --cv"),
                                            (["--cv", "2", "--strategy", "multiworker"], "not with --strategy multiworker")])
def test_bad_cross_validation_flags_are_one_line(flags, message, capsys, tmp_path):
    assert main(ham10000.SPEC, ["--demo", "--output-dir", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err
