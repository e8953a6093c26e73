"""One SavedModel serving K checkpoints, flip TTA and the decision rule, exactly as they were scored."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_med.cli import main as cli
from keras_med.evaluation.conformal import calibrate_conformal
from keras_med.evaluation.decision_rule import LogitAdjustment, adjust_probabilities
from keras_med.evaluation.ood import fit_ood_guard
from keras_med.evaluation.trust import predict_features
from keras_med.export import export_for_serving
from keras_med.export.combined import serving_model

from helpers import CLASSES, tiny_cnn

SIZE = 24


def small_model(seed):
    # one name for every member, as checkpoints of one recipe have
    return tiny_cnn(size=SIZE, seed=seed, convs=((8, 1),), name="cnn")


def images(count, seed):
    # integers: the serving graph rounds pixels to the training pipeline's uint8 grid
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3)).astype(np.float32)


def flips_mean(model, x):
    return np.mean([model.predict(view, verbose=0) for view in (x, x[:, :, ::-1], x[:, ::-1])], axis=0)


def test_ensemble_flips_and_rule_are_computed_in_the_graph(tmp_path):
    members = [small_model(0), small_model(1)]
    rule = LogitAdjustment((0.0, 0.7, -0.4), "balanced", fitted_on=50)
    path = export_for_serving(members, name="skin", base_dir=tmp_path, class_names=CLASSES, task="multiclass",
                              tta="flips", decision_rule=rule)
    x = images(5, seed=3)
    expected = adjust_probabilities(np.mean([flips_mean(m, x) for m in members], axis=0), rule.biases)
    served = tf.saved_model.load(str(path)).signatures["predict_pixels"](pixels=tf.constant(x))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    assert (served["top_class_index"].numpy() == expected.argmax(axis=1)).all()
    stored = json.loads((path / "assets.extra" / "keras_med.json").read_text())
    assert stored["members"] == 2 and stored["tta"] == "flips" and stored["decision_rule"]["biases"] == [0.0, 0.7, -0.4]


def test_members_that_differ_and_rules_on_binary_models_are_refused(tmp_path):
    other = keras.Sequential([keras.Input((SIZE + 8, SIZE + 8, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax", name="predictions")])
    with pytest.raises(ValueError, match="ensemble member 2"):
        serving_model([small_model(0), other])
    with pytest.raises(ValueError, match="tta"):
        serving_model([small_model(0)], tta="rotations")
    plain = small_model(0)
    assert serving_model([plain]) is plain


def test_guards_of_an_ensemble_are_the_first_members(tmp_path):
    first, second = small_model(0), small_model(1)
    train, val = images(60, seed=0), images(40, seed=1)
    train_raw, train_features, train_std = predict_features(first, train)
    val_raw, val_features, val_std = predict_features(first, val)
    guard = fit_ood_guard(train_features, train_raw.argmax(axis=1), val_features, val_raw,
                          train_spread=train_std, val_spread=val_std)
    sets = calibrate_conformal(val_raw, val_raw.argmax(axis=1), coverage=0.9)
    path = export_for_serving([first, second], name="skin", base_dir=tmp_path, class_names=CLASSES,
                              task="multiclass", ood_guard=guard, conformal_sets=sets, tta="flips")
    served = tf.saved_model.load(str(path)).signatures["predict_pixels"](pixels=tf.constant(val[:8]))
    own = first.predict(val[:8], verbose=0)
    # the set and the score come from the first member's own probabilities, as calibrated
    assert (served["prediction_set"].numpy() == (own >= np.asarray(sets.thresholds)[None, :])).all()
    np.testing.assert_allclose(served["ood_score"].numpy(), guard.score(val_features[:8], own), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(served["probabilities"].numpy(),
                               np.mean([flips_mean(m, val[:8]) for m in (first, second)], axis=0), atol=1e-5)


def _trained_run(root, labelled):
    """A run directory with a model trained a few steps on the labelled images, its rule and thresholds."""
    x, y = labelled
    model = small_model(0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    model.save(run / "checkpoints" / "best.keras")
    (run / "class_names.json").write_text(json.dumps({"class_names": CLASSES, "task": "multiclass"}))
    rule = LogitAdjustment((0.0, 0.3, -0.2), "balanced", fitted_on=20)
    (run / "metrics.json").write_text(json.dumps({"thresholds": [0.3, 0.4, 0.5], "decision_rule": rule.to_dict()}))
    (run / "config.toml").write_text('[data]\nresize = "resize"\n\n[evaluation]\ntta = "flips"\n')
    return run / "checkpoints" / "best.keras"


@pytest.fixture
def labelled_folder(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(18) % 3
    x = np.clip(rng.integers(0, 90, (18, SIZE, SIZE, 3)) + 80 * y[:, None, None, None], 0, 255).astype(np.float32)
    folder = tmp_path / "images"
    folder.mkdir()
    for index, image in enumerate(x):
        Image.fromarray(image.astype(np.uint8)).save(folder / f"img{index}.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,label\n" + "".join(f"img{i},{CLASSES[k]}\n" for i, k in enumerate(y)))
    return (x, y), labels, folder


@pytest.mark.slow
def test_evaluate_gives_the_same_figures_on_the_checkpoint_and_its_export(tmp_path, labelled_folder):
    labelled, labels, folder = labelled_folder
    checkpoint = _trained_run(tmp_path, labelled)
    base = tmp_path / "saved_models"
    # the run's flips and decision rule go into the served model
    assert cli(["export", "--model", str(checkpoint), "--name", "skin", "--base-dir", str(base)]) == 0
    stored = json.loads((base / "skin" / "1" / "assets.extra" / "keras_med.json").read_text())
    assert stored["tta"] == "flips" and stored["decision_rule"]["biases"] == [0.0, 0.3, -0.2]
    common = ["--labels", str(labels), "--images", str(folder), "--bootstrap", "0", "--explain", "0"]
    # without --tta the checkpoint is scored with its run's flips, as its export serves it
    assert cli(["evaluate", "--model", str(checkpoint), "--out", str(tmp_path / "ckpt"), *common]) == 0
    assert cli(["evaluate", "--model", str(base / "skin" / "1"), "--out", str(tmp_path / "served"), *common]) == 0
    scored, served = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("ckpt", "served"))
    assert scored["external"]["tta"] == "flips" and served["external"]["tta"] == "none"
    # flips on top of the served graph would score another model than the one served
    assert cli(["evaluate", "--model", str(base / "skin" / "1"), "--tta", "flips", "--out", str(tmp_path / "x"),
                *common]) == 2
    assert scored["decision_rule"]["biases"] == [0.0, 0.3, -0.2]
    for key in ("accuracy", "balanced_accuracy", "macro_auc", "weighted_auc"):
        assert served[key]["value"] == pytest.approx(scored[key]["value"], abs=1e-6), key
    assert served["confusion_matrix"] == scored["confusion_matrix"]
    assert served["thresholds"] == pytest.approx(scored["thresholds"])
    for name in CLASSES:
        assert served["per_class"][name]["recall"] == pytest.approx(scored["per_class"][name]["recall"])
