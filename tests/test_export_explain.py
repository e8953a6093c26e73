"""The `explain` signature (Grad-CAM in the SavedModel) and the TF Serving warm-up file of every export."""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_med.explain.gradcam import compute_gradcam
from keras_med.explain.overlay import blend_heatmap
from keras_med.export import export_for_serving
from keras_med.export.guards import ServingGuards
from keras_med.export.metadata import ServingMetadata
from keras_med.export.saved_model import write_saved_model

from helpers import CLASSES, SIZE, png_bytes as png, gradcam_cnn, random_images, tiny_cnn

# The report and the signature run the same keras.ops Grad-CAM, eagerly and traced: float32 rounding only.
TOLERANCE = 1e-4


def images(count, seed=1):
    return random_images(count, seed=seed, patch=True)


def explain(loaded, pictures, class_index):
    return loaded.signatures["explain"](image_bytes=tf.constant([png(p) for p in pictures]),
                                        class_index=tf.constant(class_index, tf.int32))


@pytest.mark.parametrize("task", ["multiclass", "binary"])
def test_served_heat_map_is_the_reports(task, tmp_path):
    model = gradcam_cnn(task)
    names = CLASSES if task == "multiclass" else ["normal", "covid"]
    path = export_for_serving(model, name="m", base_dir=tmp_path, class_names=names, task=task)
    loaded = tf.saved_model.load(str(path))
    pictures = images(3)
    for requested in ([0, 1, 0], [-1, -1, -1]):
        answer = explain(loaded, pictures, requested)
        explained = answer["explained_class_index"].numpy()
        top = answer["top_class_index"].numpy()
        assert list(explained) == [t if r < 0 else r for r, t in zip(requested, top)]
        reference = compute_gradcam(model, pictures, class_index=explained, method="gradcam")
        heatmap = answer["heatmap"].numpy()
        assert heatmap.shape == (3, SIZE, SIZE)
        assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0 + 1e-6
        np.testing.assert_allclose(heatmap, reference, atol=TOLERANCE)
        assert [n.decode() for n in answer["explained_class_name"].numpy()] == [names[i] for i in explained]
        assert set(answer["feature_layer"].numpy()) == {b"feature_map"}
        overlays = [np.asarray(Image.open(io.BytesIO(data))) for data in answer["overlay_png_bytes"].numpy()]
        expected = [blend_heatmap(picture, m) for picture, m in zip(pictures.round(), heatmap)]
        # the graph's blend is the project's overlay; a level may differ where the map sits on a boundary
        assert max(np.abs(o.astype(int) - e.astype(int)).max() for o, e in zip(overlays, expected)) <= 3
    # the prediction outputs come with the map, equal to serving_default's
    default = loaded.signatures["serving_default"](image_bytes=tf.constant([png(p) for p in pictures]))
    np.testing.assert_allclose(answer["probabilities"].numpy(), default["probabilities"].numpy(), atol=1e-6)


def test_explain_flags_bad_rows_and_bad_class_index(tmp_path):
    model = gradcam_cnn()
    path = export_for_serving(model, name="m", base_dir=tmp_path, class_names=CLASSES)
    loaded = tf.saved_model.load(str(path))
    good = png(images(1)[0])
    answer = loaded.signatures["explain"](image_bytes=tf.constant([good, b"not an image", good]),
                                          class_index=tf.constant([-1, -1, 7], tf.int32))
    assert answer["valid"].numpy().tolist() == [True, False, False]
    reasons = [r.decode() for r in answer["reason"].numpy()]
    assert reasons[0] == "" and reasons[1].startswith("unknown_format")
    assert reasons[2].startswith("bad_class_index: 7; expected -1 (the top class) or 0..2")
    assert answer["explained_class_index"].numpy().tolist()[1:] == [-1, -1]
    assert float(np.abs(answer["heatmap"].numpy()[1:]).max()) == 0.0
    assert answer["overlay_png_bytes"].numpy().tolist()[1:] == [b"", b""]
    empty = loaded.signatures["explain"](image_bytes=tf.constant([], tf.string),
                                         class_index=tf.constant([], tf.int32))
    assert empty["heatmap"].shape == (0, SIZE, SIZE)


@pytest.mark.slow
def test_explain_takes_gradients_through_the_guarded_model(tmp_path):
    """With the OOD guard the prediction signatures call a wrapped model; the map is the plain model's."""
    from keras_med.evaluation.ood import fit_ood_guard
    from keras_med.models.features import features_and_predictions_model

    model = gradcam_cnn()
    pictures = images(8, seed=3)
    probabilities, features = (np.asarray(a) for a in features_and_predictions_model(model).predict(pictures, verbose=0))
    guard = fit_ood_guard(features, probabilities.argmax(axis=1), features, probabilities)
    metadata = ServingMetadata(class_names=tuple(CLASSES), task="multiclass", image_size=SIZE)
    path = write_saved_model(model, metadata, tmp_path / "guarded", ServingGuards(guard))
    answer = explain(tf.saved_model.load(str(path)), pictures[:2], [2, -1])
    reference = compute_gradcam(model, pictures[:2], class_index=answer["explained_class_index"].numpy())
    np.testing.assert_allclose(answer["heatmap"].numpy(), reference, atol=TOLERANCE)


@pytest.mark.slow
def test_every_export_has_warmup_requests_tf_serving_can_replay(tmp_path):
    from keras_med.export.warmup import read_warmup_requests, run_example_images

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    rows = ["path,label,group,split"]
    for index, (label, split) in enumerate([("mel", "train"), ("bcc", "test"), ("mel", "test"), ("akiec", "val")]):
        picture = run_dir / f"img{index}.png"
        picture.write_bytes(png(images(1, seed=index)[0]))
        rows.append(f"{picture},{label},g{index},{split}")
    rows.append(f"{run_dir / 'gone.png'},bcc,g9,test")
    (run_dir / "split.csv").write_text("\n".join(rows) + "\n")
    examples = run_example_images(run_dir / "checkpoints" / "best.keras", count=3)
    # held-out images first, one per label first: bcc (test), mel (test), akiec (val)
    assert [name for name, _ in examples] == ["img1.png", "img2.png", "img3.png"]

    (run_dir / "report.md").write_text("# Model card\n")
    path = export_for_serving(gradcam_cnn(), name="ham", base_dir=tmp_path / "saved", class_names=CLASSES,
                              run_dir=run_dir / "checkpoints" / "best.keras")
    assert (path / "assets.extra" / "report.md").read_text() == "# Model card\n"
    assert sorted(p.name for p in (path / "assets.extra" / "examples").iterdir()) == \
        ["0_img1.png", "1_img2.png", "2_img3.png"]
    logs = read_warmup_requests(path / "assets.extra" / "tf_serving_warmup_requests")
    signatures = [log.predict_log.request.model_spec.signature_name for log in logs]
    assert signatures == ["serving_default", "explain"] * 3 + ["predict_pixels"]
    assert {log.predict_log.request.model_spec.name for log in logs} == {"ham"}
    loaded = tf.saved_model.load(str(path))
    for log in logs:
        request = log.predict_log.request
        inputs = {key: tf.constant(tf.make_ndarray(proto)) for key, proto in request.inputs.items()}
        answer = loaded.signatures[request.model_spec.signature_name](**inputs)
        assert answer["valid"].numpy().all()

    bare = export_for_serving(gradcam_cnn(), name="bare", base_dir=tmp_path / "saved", class_names=CLASSES)
    assert not (bare / "assets.extra" / "examples").exists()
    assert len(read_warmup_requests(bare / "assets.extra" / "tf_serving_warmup_requests")) == 5


@pytest.mark.slow
def test_explain_under_mixed_precision(tmp_path):
    """float16 feature maps (the GPU default): the map still agrees with tf-keras-vis."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_cnn(seed=0, convs=((8, 2),))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    path = export_for_serving(model, name="m", base_dir=tmp_path, class_names=CLASSES, tolerance=1e-2)
    pictures = images(2)
    answer = explain(tf.saved_model.load(str(path)), pictures, [0, 2])
    reference = compute_gradcam(model, pictures, class_index=np.array([0, 2]))
    np.testing.assert_allclose(answer["heatmap"].numpy(), reference, atol=1e-3)
