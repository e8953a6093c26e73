"""`--members K`: K seeds on one split, their mean evaluated and served as one SavedModel."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from keras_med.cli import main as cli
from keras_med.engine.command import main
from keras_med.evaluation.conformal import calibrate_conformal
from keras_med.evaluation.run_predictions import load_run_predictions
from keras_med.export.predictor import load_predictor
from keras_med.recipes import ham10000

from helpers import tiny_flags

TINY = tiny_flags()


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    run_dir = root / "ensemble_run"
    code = main(ham10000.SPEC, TINY + ["--members", "2", "--output-dir", str(root / "runs"), "--run-dir", str(run_dir),
                                       "--saved-models", str(root / "saved_models")])
    assert code == 0
    return root, run_dir


def test_members_share_one_split_and_differ_by_seed(ensemble):
    _, run_dir = ensemble
    splits = [pd.read_csv(run_dir / f"member{k}" / "split.csv") for k in (1, 2)]
    pd.testing.assert_frame_equal(splits[0], splits[1])
    seeds = [(run_dir / f"member{k}" / "config.toml").read_text() for k in (1, 2)]
    assert "seed = 3\n" in seeds[0] and "seed = 4\n" in seeds[1]
    first, second = (load_run_predictions(run_dir / f"member{k}") for k in (1, 2))
    np.testing.assert_array_equal(first["y_test"], second["y_test"])
    assert not np.allclose(first["p_test_none"], second["p_test_none"])


def test_the_ensemble_is_scored_on_the_mean_of_the_members(ensemble):
    _, run_dir = ensemble
    runs = [load_run_predictions(run_dir / f"member{k}") for k in (1, 2)]
    mean = np.mean([run["p_test_none"] for run in runs], axis=0)
    metrics = json.loads((run_dir / "ensemble" / "metrics.json").read_text())
    y_test = runs[0]["y_test"]
    y_test = y_test.argmax(axis=1) if y_test.ndim == 2 else y_test
    assert metrics["balanced_accuracy"]["value"] == pytest.approx(balanced_accuracy_score(y_test, mean.argmax(axis=1)))
    summary = json.loads((run_dir / "members_summary.json").read_text())
    values = [member["test"]["balanced_accuracy"] for member in summary["members"]]
    assert summary["test_mean_std"]["balanced_accuracy"]["mean"] == pytest.approx(np.mean(values))
    assert summary["ensemble"]["balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"]["value"])
    # the served guard is member 1's, and so are the figures reported for it
    member = json.loads((run_dir / "member1" / "metrics.json").read_text())
    assert metrics["ood"] == member["ood"]
    # the prediction sets are the ensemble's own: calibrated on the mean of the members' validation
    # probabilities (the demo's defaults: no decision rule, no flips), measured on the mean test ones
    y_val = runs[0]["y_val"]
    y_val = y_val.argmax(axis=1) if y_val.ndim == 2 else y_val
    expected = calibrate_conformal(np.mean([run["p_val_none"] for run in runs], axis=0), y_val, 0.9,
                                   member["conformal"]["mode"])
    stored = json.loads((run_dir / "ensemble" / "trust" / "conformal.json").read_text())
    assert stored["applies_to"] == "answer"
    np.testing.assert_allclose(stored["thresholds"], expected.thresholds, rtol=1e-6)
    assert metrics["conformal"]["thresholds"] == pytest.approx(stored["thresholds"])
    covered = expected.predict(mean)[np.arange(len(y_test)), y_test]
    assert metrics["conformal"]["coverage"]["value"] == pytest.approx(covered.mean())
    assert not (run_dir / "member2" / "trust" / "ood_guard.npz").exists()
    assert (run_dir / "member1" / "trust" / "ood_guard.npz").is_file()
    assert (run_dir / "ensemble" / "report.md").is_file()


def test_the_served_ensemble_gives_the_scored_figures(ensemble, tmp_path):
    root, run_dir = ensemble
    export = root / "saved_models" / "ham10000" / "1"
    stored = json.loads((export / "assets.extra" / "keras_med.json").read_text())
    assert stored["members"] == 2
    assert not any((run_dir / f"member{k}" / "saved_models").exists() for k in (1, 2))
    sets = json.loads((run_dir / "ensemble" / "trust" / "conformal.json").read_text())
    assert stored["conformal"]["thresholds"] == pytest.approx(sets["thresholds"])
    assert stored["conformal"]["applies_to"] == "answer"
    split = pd.read_csv(run_dir / "member1" / "split.csv")
    test = split[split["split"] == "test"]
    # every served set is the classes whose served probability reaches the ensemble's thresholds, and
    # the served sets cover the test images as the ensemble's report says
    answers = load_predictor(export).predict_files(list(test["path"]))
    assert all(answer.valid for answer in answers)
    thresholds = np.asarray(sets["thresholds"], np.float32)
    names = list(answers[0].probabilities)
    for answer in answers:
        probabilities = np.asarray([answer.probabilities[name] for name in names], np.float32)
        assert answer.prediction_set == [name for name, keep in zip(names, probabilities >= thresholds) if keep]
    covered = [label in answer.prediction_set for label, answer in zip(test["label"], answers)]
    scored_sets = json.loads((run_dir / "ensemble" / "metrics.json").read_text())["conformal"]
    assert np.mean(covered) == pytest.approx(scored_sets["coverage"]["value"], abs=1e-6)
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"image_id": [Path(path).stem for path in test["path"]], "label": test["label"]}).to_csv(
        labels, index=False)
    assert cli(["evaluate", "--model", str(export), "--labels", str(labels), "--images",
                str(root / "runs" / "ham10000" / "demo_data"), "--bootstrap", "0", "--explain", "0",
                "--out", str(tmp_path / "served")]) == 0
    served = json.loads((tmp_path / "served" / "metrics.json").read_text())
    scored = json.loads((run_dir / "ensemble" / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_auc"):
        assert served[key]["value"] == pytest.approx(scored[key]["value"], abs=1e-6), key


def test_a_finished_member_is_not_trained_again(ensemble):
    root, run_dir = ensemble
    before = {k: (run_dir / f"member{k}" / "history.csv").stat().st_mtime_ns for k in (1, 2)}
    assert main(ham10000.SPEC, TINY + ["--members", "2", "--output-dir", str(root / "runs"), "--run-dir", str(run_dir),
                                       "--no-export"]) == 0
    assert before == {k: (run_dir / f"member{k}" / "history.csv").stat().st_mtime_ns for k in (1, 2)}


@pytest.mark.parametrize("flags, message", [(["--members", "0"], "--members"),
                                            (["--members", "2", "--cv", "2"], "not with --cv")])
def test_bad_member_flags_are_one_line(flags, message, capsys, tmp_path):
    assert main(ham10000.SPEC, ["--demo", "--output-dir", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err
