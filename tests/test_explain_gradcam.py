"""Grad-CAM / Grad-CAM++ on a tiny conv net trained to find a bright blob, and the file-level entry."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from keras_med.evaluation import evaluate_run
from keras_med.explain import compute_gradcam, explain_files, feature_map_layer_name, save_overlays
from keras_med.explain.cam import GradcamModel, corner_aligned_resize_matrix
from keras_med.explain.gradcam import reference_gradcam
from keras_med.explain.overlay import save_overlay
from keras_med.models import ImageClassifier

from helpers import assert_overlay_shows_a_heat_map, read_png

SIZE = 48


def _blob_images(n, seed):
    """Class 1: a bright blob at a random place on noise; class 0: noise only. Returns images, labels, centres."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(40, 110, (n, SIZE, SIZE, 3)).astype(np.float32)
    labels = np.arange(n) % 2
    centres = rng.integers(10, SIZE - 10, (n, 2))
    rows, cols = np.mgrid[:SIZE, :SIZE]
    for index in np.flatnonzero(labels):
        row, col = centres[index]
        blob = 150 * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * 3.0 ** 2))
        images[index] = np.clip(images[index] + blob[..., None], 0, 255)
    return images, labels, centres


def _tiny_cnn(n_outputs=2, task="multiclass"):
    """An `ImageClassifier` whose backbone is three convolutions with max poolings between them.

    Two poolings: the head averages a 12x12 map, where one blob is a large enough share to be learnt
    in a few epochs (on the 24x24 map of a single pooling it was not).
    """
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv3")(x)
    backbone = keras.Model(inputs, x, name="blob_backbone")
    return ImageClassifier(backbone, output_units=n_outputs, image_size=SIZE, task=task,
                           preprocessing=keras.layers.Rescaling(1 / 255.0), name="blob_cnn")


@pytest.fixture(scope="module")
def blob_model():
    keras.utils.set_random_seed(0)
    images, labels, _ = _blob_images(240, 0)
    model = _tiny_cnn()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images, labels, epochs=12, batch_size=24, verbose=0)
    test_images, test_labels, centres = _blob_images(40, 1)
    accuracy = np.mean(model.predict(test_images, verbose=0).argmax(axis=1) == test_labels)
    assert accuracy >= 0.9, f"fixture model did not learn the blob (accuracy {accuracy:.2f})"
    return model, test_images, test_labels, centres


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_heatmap_has_image_size_and_peaks_on_the_blob(blob_model, method):
    model, images, labels, centres = blob_model
    positives = np.flatnonzero(labels == 1)[:8]
    heatmaps = compute_gradcam(model, images[positives], class_index=1, method=method)
    assert heatmaps.shape == (len(positives), SIZE, SIZE)
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    peaks = np.array([np.unravel_index(np.argmax(h), h.shape) for h in heatmaps])
    distances = np.linalg.norm(peaks - centres[positives], axis=1)
    assert np.median(distances) <= 6, f"{method} peaks {peaks.tolist()} far from blobs {centres[positives].tolist()}"


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_keras_ops_gradcam_agrees_with_tf_keras_vis(blob_model, method):
    """The project's one Grad-CAM (keras.ops) against the reference library, on a trained model
    (both classes) and an untrained binary one (the negated logit for its negative class)."""
    model, images, _, _ = blob_model
    classes = np.arange(6) % 2
    binary = _tiny_cnn(1, "binary")
    for net in (model, binary):
        ours = np.asarray(GradcamModel(net).logits_and_maps(images[:6], classes.astype(np.int32), method)[1])
        reference = reference_gradcam(net, images[:6], classes, method, feature_map_layer_name(net))
        assert reference.max() > 0.5  # the maps are not flat, so the comparison can fail
        np.testing.assert_allclose(ours, reference, atol=1e-4)


@pytest.mark.parametrize("source, target", [(1, 32), (3, 7), (6, 48), (5, 5)])
def test_corner_aligned_resize_is_scipy_zoom_order_1(source, target):
    from scipy.ndimage import zoom

    values = np.random.default_rng(source).uniform(size=(source, source)).astype(np.float32)
    weights = corner_aligned_resize_matrix(source, target)
    np.testing.assert_allclose(weights @ values @ weights.T, zoom(values, target / source, order=1,
                                                                   grid_mode=False), atol=1e-5)


def test_binary_model_explains_both_classes():
    model = _tiny_cnn(1, "binary")
    images, _, _ = _blob_images(2, 3)
    heatmaps = compute_gradcam(model, images, class_index=[0, 1])
    assert heatmaps.shape == (2, SIZE, SIZE)
    with pytest.raises(ValueError, match="class_index"):
        compute_gradcam(model, images, class_index=2)
    with pytest.raises(ValueError, match="method"):
        compute_gradcam(model, images, method="lime")


def test_overlays_are_written(blob_model, tmp_path):
    """Each overlay is a PNG of the image beside its heat map in colour; the heat map is not flat, and a
    different map gives a different picture."""
    model, images, _, _ = blob_model
    paths = save_overlays(model, images[:2], tmp_path, names=["a", "b"])
    assert [p.name for p in paths] == ["a.png", "b.png"]
    for path in paths:
        assert_overlay_shows_a_heat_map(path)
    heatmaps = compute_gradcam(model, images[:2])
    assert all(np.ptp(heatmap) > 0.5 for heatmap in heatmaps)
    flat = save_overlay(tmp_path / "flat.png", images[0], np.zeros_like(heatmaps[0]))
    assert read_png(flat).shape == read_png(paths[0]).shape
    assert np.abs(read_png(flat).astype(int) - read_png(paths[0]).astype(int)).max() > 50


def test_explain_files_reads_class_names_from_the_run_dir(blob_model, tmp_path):
    model, images, _, _ = blob_model
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    model.save(run_dir / "checkpoints" / "best.keras")
    (run_dir / "class_names.json").write_text(json.dumps({"class_names": ["clear", "blob"], "task": "multiclass"}))
    image_path = tmp_path / "lesion.png"
    Image.fromarray(images[1].astype(np.uint8)).save(image_path)
    written = explain_files(run_dir / "checkpoints" / "best.keras", [image_path], tmp_path / "out",
                            method="gradcam++", class_name="blob")
    assert [p.name for p in written] == ["lesion_gradcampp.png"] and written[0].is_file()
    with pytest.raises(ValueError, match="class_name"):
        explain_files(run_dir / "checkpoints" / "best.keras", [image_path], tmp_path / "out", class_name="mel")


def test_evaluate_run_adds_gradcam_examples_to_the_report(blob_model, tmp_path):
    model, images, labels, _ = blob_model
    probabilities = model.predict(images, verbose=0)
    metrics = evaluate_run(tmp_path, class_names=["clear", "blob"], task="multiclass", y_true_test=labels,
                           y_prob_test=probabilities, y_true_val=labels, y_prob_val=probabilities,
                           test_images=images, model=model, n_bootstrap=50, explain=2)
    assert 1 <= len(metrics["gradcam"]) <= 4
    report = (tmp_path / "report.md").read_text()
    for path in metrics["gradcam"]:
        assert (tmp_path / path).is_file() and path in report
