"""SavedModel export for TF Serving: layout, versions, models.config, signatures, bad input."""

import io
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_med.data.decode import decode_image, resize_image
from keras_med.export import ServingMetadata, describe_signatures, export_for_serving, next_version
from keras_med.export.saved_model import ExportVerificationError, keras_probabilities

from helpers import CLASSES, SIZE, png_bytes, random_images, tiny_cnn



def tiny_model(task="multiclass", num_classes=3, seed=0):
    return tiny_cnn(task=task, classes=num_classes, seed=seed)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("saved_models")
    model = tiny_model()
    path = export_for_serving(model, name="ham10000", base_dir=base, class_names=CLASSES, task="multiclass",
                              thresholds=[0.5, 0.4, 0.2])
    return model, base, path, tf.saved_model.load(str(path))


def test_layout_version_and_models_config(exported, tmp_path):
    model, base, path, _ = exported
    assert path == base / "ham10000" / "1"
    assert (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
    assert not [p for p in (base / "ham10000").iterdir() if p.name.startswith(".partial")]
    assert next_version(base / "ham10000") == 2

    config = (base / "models.config").read_text()
    assert 'name: "ham10000"' in config and 'base_path: "/models/ham10000"' in config
    assert 'model_platform: "tensorflow"' in config and config.startswith("model_config_list {")
    assert json.loads((path / "assets.extra" / "keras_med.json").read_text())["class_names"] == CLASSES


@pytest.mark.slow
def test_versions_increment_and_config_lists_every_model(tmp_path):
    model = tiny_model("binary")
    first = export_for_serving(model, name="covid", base_dir=tmp_path, class_names=["normal", "covid"])
    second = export_for_serving(model, name="covid", base_dir=tmp_path, class_names=["normal", "covid"])
    other = export_for_serving(tiny_model(num_classes=2), name="xray", base_dir=tmp_path, version=7,
                               class_names=["a", "b"], container_base="/srv")
    assert (first.name, second.name, other.name) == ("1", "2", "7")
    config = (tmp_path / "models.config").read_text()
    assert config.count("config {") == 2
    assert 'base_path: "/srv/covid"' in config and 'base_path: "/srv/xray"' in config
    with pytest.raises(FileExistsError, match="xray/7 already exists"):
        export_for_serving(model, name="xray", base_dir=tmp_path, version=7, class_names=["a", "b"])


def test_both_signatures_match_keras_and_carry_metadata(exported):
    model, _, _, loaded = exported
    images = random_images(5)
    expected = keras_probabilities(model, images, "multiclass")

    pixels = loaded.signatures["predict_pixels"](pixels=tf.constant(images))
    np.testing.assert_allclose(pixels["probabilities"].numpy(), expected, atol=1e-5)
    encoded = tf.constant([png_bytes(image) for image in images])
    served = loaded.signatures["serving_default"](image_bytes=encoded)
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)

    top = expected.argmax(axis=1)
    np.testing.assert_array_equal(served["top_class_index"].numpy(), top)
    assert [name.decode() for name in served["top_class_name"].numpy()] == [CLASSES[i] for i in top]
    np.testing.assert_array_equal(served["decisions"].numpy(), expected >= np.array([0.5, 0.4, 0.2]))
    assert served["valid"].numpy().all()
    assert served["class_names"].numpy().shape == (5, 3)

    metadata = loaded.signatures["metadata"]()
    assert [n.decode() for n in metadata["class_names"].numpy()] == CLASSES
    assert int(metadata["image_size"]) == SIZE and metadata["task"].numpy() == b"multiclass"
    np.testing.assert_allclose(metadata["thresholds"].numpy(), [0.5, 0.4, 0.2])


def test_other_sizes_are_prepared_like_the_training_pipeline(exported):
    model, _, _, loaded = exported
    big = random_images(2, size=64)
    via_graph = loaded.signatures["predict_pixels"](pixels=tf.constant(big))["probabilities"].numpy()
    prepared = resize_image(big, SIZE, "resize").numpy().astype(np.float32)
    np.testing.assert_allclose(via_graph, keras_probabilities(model, prepared, "multiclass"), atol=1e-5)

    buffer = io.BytesIO()
    Image.fromarray(big[0].astype(np.uint8)).convert("L").save(buffer, format="JPEG")
    served = loaded.signatures["serving_default"](image_bytes=tf.constant([buffer.getvalue()]))
    trained_on = decode_image(tf.constant(buffer.getvalue()), SIZE, "resize").numpy().astype(np.float32)
    assert served["valid"].numpy().all()
    np.testing.assert_allclose(served["probabilities"].numpy(), keras_probabilities(model, trained_on[None], "multiclass"),
                               atol=1e-5)


def test_garbage_bytes_and_bad_pixels_are_flagged_not_fatal(exported):
    _, _, _, loaded = exported
    good = png_bytes(random_images(1)[0])
    served = loaded.signatures["serving_default"](image_bytes=tf.constant([b"", b"not an image", good]))
    np.testing.assert_array_equal(served["valid"].numpy(), [False, False, True])
    assert [reason.split(b":")[0] for reason in served["reason"].numpy()] == [b"empty", b"unknown_format", b""]
    corrupt_jpeg = b"\xff\xd8\xff\xe0" + b"garbage" * 10
    mixed = loaded.signatures["serving_default"](image_bytes=tf.constant([corrupt_jpeg, good]))
    np.testing.assert_array_equal(mixed["valid"].numpy(), [False, True])
    empty = loaded.signatures["serving_default"](image_bytes=tf.constant([], tf.string))
    assert empty["probabilities"].shape == (0, 3)
    np.testing.assert_array_equal(served["top_class_index"].numpy()[:2], [-1, -1])
    assert served["top_class_name"].numpy()[0] == b"" and not served["decisions"].numpy()[:2].any()
    assert (served["probabilities"].numpy()[:2] == 0).all()

    pixels = random_images(2)
    pixels[0, 0, 0, 0] = 300.0
    answer = loaded.signatures["predict_pixels"](pixels=tf.constant(pixels))
    np.testing.assert_array_equal(answer["valid"].numpy(), [False, True])
    assert answer["reason"].numpy()[0].startswith(b"bad_pixels:") and answer["reason"].numpy()[1] == b""
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        loaded.signatures["predict_pixels"](pixels=tf.constant(pixels[..., :1]))
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        loaded.signatures["predict_pixels"](pixels=tf.constant(pixels.astype(np.int32)))


def test_binary_model_answers_with_the_threshold(tmp_path):
    model = tiny_model("binary", seed=3)
    images = random_images(8, seed=4)
    positive = keras.ops.convert_to_numpy(model(images))[:, 0]
    threshold = float(np.median(positive))
    path = export_for_serving(model, name="covid", base_dir=tmp_path, class_names=["normal", "covid"],
                              thresholds=threshold, verify_images=images)
    answer = tf.saved_model.load(str(path)).signatures["predict_pixels"](pixels=tf.constant(images))
    np.testing.assert_allclose(answer["probabilities"].numpy()[:, 1], positive, atol=1e-5)
    np.testing.assert_array_equal(answer["top_class_index"].numpy(), (positive >= threshold).astype(int))
    np.testing.assert_array_equal(answer["decisions"].numpy()[:, 1], positive >= threshold)
    np.testing.assert_array_equal(answer["decisions"].numpy()[:, 0], positive < threshold)
    stored = tf.saved_model.load(str(path)).signatures["metadata"]()["thresholds"].numpy()
    np.testing.assert_allclose(stored, [threshold])
    with pytest.raises(ValueError, match="one value, on the positive class"):
        export_for_serving(model, name="covid", base_dir=tmp_path, class_names=["normal", "covid"],
                           thresholds=[0.5, 0.5])


def test_describe_signatures_lists_inputs_and_outputs(exported):
    text = describe_signatures(exported[2])
    assert "signature_def['serving_default']" in text and "inputs['image_bytes']" in text
    assert "dtype: DT_STRING" in text and "inputs['pixels']" in text and "shape: (-1, -1, -1, 3)" in text
    assert "outputs['probabilities']" in text and "outputs['top_class_name']" in text


@pytest.mark.parametrize("kwargs, message", [
    ({"class_names": ["a", "b"]}, "3 units"),
    ({"class_names": CLASSES, "task": "binary"}, "binary task needs"),
    ({"class_names": CLASSES, "thresholds": [0.5]}, "one value per class"),
    ({"class_names": CLASSES, "name": "../evil"}, "model name"),
    ({"class_names": CLASSES, "version": 0}, "positive integer"),
])
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    arguments = {"name": "m", "base_dir": tmp_path, **kwargs}
    with pytest.raises(ValueError, match=message):
        export_for_serving(tiny_model(), **arguments)


def test_verification_failure_leaves_nothing_behind(tmp_path):
    with pytest.raises(ExportVerificationError, match="tolerance"):
        export_for_serving(tiny_model(), name="m", base_dir=tmp_path, class_names=CLASSES, tolerance=-1.0)
    assert list((tmp_path / "m").iterdir()) == []


def test_metadata_rejects_bad_values():
    with pytest.raises(ValueError, match="unique"):
        ServingMetadata(class_names=("a", "a"), task="multiclass", image_size=32)
    with pytest.raises(ValueError, match="0..1"):
        ServingMetadata(class_names=("a", "b"), task="multilabel", image_size=32, thresholds=(0.5, 1.5))
