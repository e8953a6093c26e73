"""evaluate_external: a saved model in its run directory scored on a labelled folder, with TTA and ensembles."""

import json

import numpy as np
import pytest
from PIL import Image

from keras_med.evaluation import predict_with_tta
from keras_med.evaluation.external import evaluate_external

from helpers import tiny_cnn

SIZE = 24


def _model(seed):
    return tiny_cnn(classes=2, size=SIZE, seed=seed, convs=((4, 1),), rescale="unit")


def _run_dir(root, seed, thresholds):
    run_dir = root / f"run{seed}"
    (run_dir / "checkpoints").mkdir(parents=True)
    _model(seed).save(run_dir / "checkpoints" / "best.keras")
    (run_dir / "class_names.json").write_text(json.dumps({"class_names": ["benign", "malignant"],
                                                          "task": "multiclass"}))
    (run_dir / "metrics.json").write_text(json.dumps({"thresholds": thresholds}))
    return run_dir / "checkpoints" / "best.keras"


@pytest.fixture
def external_set(tmp_path):
    rng = np.random.default_rng(0)
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    rows = ["image_id,label"]
    for index in range(12):
        label = "malignant" if index % 2 else "benign"
        pixels = rng.integers(0, 120, (SIZE, SIZE, 3)) + (100 if index % 2 else 0)
        Image.fromarray(pixels.astype(np.uint8)).save(image_dir / f"img{index}.png")
        rows.append(f"img{index},{label}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return labels, image_dir


def test_single_model_with_flip_tta_writes_a_report(tmp_path, external_set):
    labels, image_dir = external_set
    model_path = _run_dir(tmp_path, 0, [0.4, 0.6])
    out = tmp_path / "external"
    metrics = evaluate_external(model_path, labels, image_dir, out, tta="flips", batch_size=5, n_bootstrap=50,
                                explain=1)
    assert metrics["n_samples"] == 12 and metrics["thresholds"] == [0.4, 0.6]
    assert metrics["external"]["tta"] == "flips"
    assert json.loads((out / "metrics.json").read_text())["external"]["models"] == [str(model_path)]
    assert (out / "report.html").is_file() and metrics["gradcam"]


def test_ensemble_averages_the_members(tmp_path, external_set):
    labels, image_dir = external_set
    paths = [_run_dir(tmp_path, 0, [0.4, 0.6]), _run_dir(tmp_path, 1, [0.6, 0.4])]
    ensemble = evaluate_external(paths, labels, image_dir, tmp_path / "ens", n_bootstrap=20, explain=0)
    singles = [evaluate_external(p, labels, image_dir, tmp_path / f"one{i}", n_bootstrap=20, explain=0)
               for i, p in enumerate(paths)]
    assert ensemble["thresholds"] == pytest.approx([0.5, 0.5])
    assert ensemble["per_class"]["malignant"]["support"] == singles[0]["per_class"]["malignant"]["support"] == 6
    # Each folder keeps its per-image predictions, so `keras-med compare` compares two of them.
    from keras_med.comparison.runs import load_run_predictions_for_comparison

    compared = [load_run_predictions_for_comparison(tmp_path / name) for name in ("ens", "one0")]
    assert [len(run.image_ids) for run in compared] == [12, 12]
    assert compared[0].split_hash == compared[1].split_hash
    assert not np.allclose(compared[0].scored.y_prob, compared[1].scored.y_prob)


def test_predict_with_tta_averages_flips():
    class Recorder:
        def predict(self, images, batch_size=None, verbose=0):
            return images[:, :1, 0, 0]  # the top-left pixel: changes under flips
    images = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3)
    dataset = [(images, None)]
    plain = predict_with_tta(Recorder(), dataset, "none")
    flipped = predict_with_tta(Recorder(), dataset, "flips")
    expected = (images[:, 0, 0, 0] + images[:, 0, -1, 0] + images[:, -1, 0, 0]) / 3
    assert plain[:, 0] == pytest.approx(images[:, 0, 0, 0]) and flipped[:, 0] == pytest.approx(expected)
    with pytest.raises(ValueError, match="tta"):
        predict_with_tta(Recorder(), dataset, "rotations")


def test_missing_run_metadata_is_explained(tmp_path, external_set):
    labels, image_dir = external_set
    lone = tmp_path / "lone.keras"
    _model(0).save(lone)
    with pytest.raises(FileNotFoundError, match="class_names.json"):
        evaluate_external(lone, labels, image_dir, tmp_path / "out")
