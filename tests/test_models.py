"""Tests of keras_med.models: registry, every model's forward pass, preprocessing, weights, saving."""

import numpy as np
import pytest
import keras

import keras_med.models.backbones as backbones
from keras_med.models import WeightsUnavailableError, available_models, create_model
from keras_med.models import ImageClassifier
from keras_med.models.preprocessing import preprocessing_layer

ALL_MODELS = ["custom_cnn", "densenet121", "efficientnetb0", "efficientnetb1", "efficientnetb2",
              "efficientnetb3", "efficientnetb4", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
              "mobilenetv2", "resnet50", "vgg16"]


def test_registry_lists_every_model():
    assert available_models() == sorted(ALL_MODELS)


# A deep backbone takes seconds to build and trace even at 32 px: slow, beside custom_cnn and mobilenetv2.
DEEP = pytest.mark.slow


@pytest.mark.parametrize("name, task, num_classes, units", [
    ("custom_cnn", "multiclass", 7, 7), pytest.param("densenet121", "multilabel", 5, 5, marks=DEEP),
    pytest.param("efficientnetb0", "binary", 2, 1, marks=DEEP),
    pytest.param("efficientnetb1", "multiclass", 3, 3, marks=DEEP),
    pytest.param("efficientnetb2", "multiclass", 3, 3, marks=DEEP),
    pytest.param("efficientnetb3", "multiclass", 3, 3, marks=DEEP),
    pytest.param("efficientnetb4", "binary", 2, 1, marks=DEEP),
    ("mobilenetv2", "multiclass", 4, 4), pytest.param("resnet50", "multilabel", 3, 3, marks=DEEP),
    pytest.param("vgg16", "binary", 2, 1, marks=DEEP)])
def test_every_model_builds_and_predicts_probabilities(name, task, num_classes, units):
    model = create_model(name, num_classes=num_classes, image_size=32, task=task, weights="none",
                         head_units=8, width=0.35 if name == "mobilenetv2" else 1.0)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    probabilities = np.asarray(model.predict(images, verbose=0))
    assert probabilities.shape == (2, units)
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    assert isinstance(model, ImageClassifier) and model.task == task
    assert any(layer.name == "head_dense" for layer in model.head_layers)
    if task == "multiclass":
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all((probabilities >= 0) & (probabilities <= 1))


def test_classifier_knows_its_backbone_feature_map_and_pooled_features():
    model = create_model("mobilenetv2", num_classes=3, image_size=32, weights=None, width=0.35)
    assert isinstance(model.backbone.get_layer("Conv_1"), keras.layers.Conv2D)
    assert model.get_layer(model.backbone.name) is model.backbone
    assert tuple(model.feature_map.shape) == (None, 1, 1, 1280)
    assert tuple(model.pooled_features.shape) == (None, 1280)


@pytest.mark.parametrize("mode, reference", [
    ("tf", keras.applications.mobilenet_v2.preprocess_input),
    ("torch", keras.applications.densenet.preprocess_input),
    ("caffe", keras.applications.resnet50.preprocess_input)])
def test_in_model_preprocessing_matches_keras_preprocess_input(mode, reference):
    images = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    inputs = keras.Input((8, 8, 3))
    layer_model = keras.Model(inputs, preprocessing_layer(mode)(inputs))
    np.testing.assert_allclose(layer_model.predict(images, verbose=0), reference(images.copy()), atol=1e-4)


@pytest.mark.parametrize("name, kwargs", [("custom_cnn", {}), ("mobilenetv2", {"width": 0.35}),
                                          pytest.param("resnet50", {}, marks=DEEP)])
def test_saved_model_reloads_with_equal_predictions(tmp_path, name, kwargs):
    model = create_model(name, num_classes=3, image_size=32, weights=None, head_units=8, **kwargs)
    images = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded, ImageClassifier) and reloaded.backbone.name == model.backbone.name
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_weights_path_loads_into_the_backbone(tmp_path):
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35, input_shape=(64, 64, 3))
    reference.get_layer("Conv1").set_weights([np.full((3, 3, 3, 16), 0.5, "float32")])
    path = tmp_path / "backbone.weights.h5"
    reference.save_weights(path)
    model = create_model("mobilenetv2", num_classes=2, image_size=64, weights=str(path), width=0.35)
    np.testing.assert_array_equal(model.backbone.get_layer("Conv1").get_weights()[0], 0.5)
    np.testing.assert_array_equal(model.backbone.get_layer("Conv_1").get_weights()[0],
                                  reference.get_layer("Conv_1").get_weights()[0])


def test_imagenet_download_failure_says_which_file_to_place(monkeypatch):
    requested = []

    def offline(file_name, *args, **kwargs):
        requested.append(file_name)
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", offline)
    with pytest.raises(WeightsUnavailableError, match=r"~/.keras/models/mobilenet_v2_weights_tf_dim_ordering_"
                                                      r"tf_kernels_0.35_128_no_top.h5.*--weights PATH"):
        create_model("mobilenetv2", num_classes=2, image_size=128, weights="imagenet", width=0.35)
    assert requested == ["mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_128_no_top.h5"]
    assert backbones.BACKBONES["densenet121"].imagenet_file(128, 1.0) == \
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert backbones.BACKBONES["mobilenetv2"].imagenet_file(100, 1.0).endswith("_1.0_224_no_top.h5")


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "resnet18"}, "unknown model 'resnet18'"),
    ({"task": "regression"}, "task: expected one of"),
    ({"num_classes": 3, "task": "binary"}, "binary task has 2 classes"),
    ({"image_size": 16}, "image_size"),
    ({"weights": "/nonexistent/file.weights.h5", "name": "mobilenetv2"}, "is not a file"),
    ({"weights": "imagenet"}, "has no pretrained backbone"),
    ({"dropout": 1.5}, "dropout"),
    ({"name": "vgg16", "width": 0.5}, "has no width multiplier")])
def test_bad_arguments_get_clear_errors(kwargs, message):
    arguments = {"name": "custom_cnn", "num_classes": 2, "image_size": 32, "weights": None} | kwargs
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        create_model(arguments.pop("name"), **arguments)
