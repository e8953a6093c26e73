"""Tests of keras_med.models.ImageClassifier: parts, blocks and freezing, Grad-CAM layer, KerasHub, other models refused."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from keras_med.errors import ConfigError
from keras_med.explain import compute_gradcam, feature_map_layer_name
from keras_med.models import ImageClassifier, WeightsUnavailableError, create_model
from keras_med.models.blocks import backbone_blocks
from keras_med.models.features import features_and_predictions_model
from keras_med.models.saving import load_keras_model

SIZE = 32


def pictures(count=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, SIZE, SIZE, 3)).astype("float32")


def trainable_blocks(model):
    """Names of the backbone blocks holding a trainable weight."""
    return [block.name for block in backbone_blocks(model.backbone)
            if any(layer.trainable_weights for layer in block.layers)]


def test_mobilenetv2_unfreezes_its_top_inverted_residual_blocks_with_batchnorm_frozen():
    model = create_model("mobilenetv2", num_classes=3, image_size=SIZE, weights=None, width=0.35, head_units=8)
    blocks = backbone_blocks(model.backbone)
    assert [block.name for block in blocks] == ["stem"] + [f"block_{n}" for n in range(1, 17)]
    model.freeze_backbone()
    assert trainable_blocks(model) == [] and model.output_dense.trainable
    # covid_cxr's 3 blocks: block_14..16 and the final Conv_1 (the 20 layers with weights it used to count)
    assert model.unfreeze_top(3) == 10
    assert trainable_blocks(model) == ["block_14", "block_15", "block_16"]
    top = [layer for block in blocks[-3:] for layer in block.layers if layer.weights]
    assert len(top) == 20 and "Conv_1" in [layer.name for layer in top]
    assert all(not layer.trainable for layer in top if isinstance(layer, keras.layers.BatchNormalization))
    assert model.backbone.get_layer("block_13_expand").trainable is False
    assert model.unfreeze_top(-1) == 52 and len(trainable_blocks(model)) == 17  # every conv layer
    assert not any(layer.trainable for layer in model.backbone.layers
                   if isinstance(layer, keras.layers.BatchNormalization))


@pytest.mark.parametrize("name, first, last, count", [
    ("resnet50", "conv2_block1", "conv5_block3", 16), ("efficientnetb0", "block1a", "block7a", 16),
    ("vgg16", "block1", "block5", 5), ("custom_cnn", "block1", "block4", 4)])
def test_blocks_follow_each_architecture(name, first, last, count):
    model = create_model(name, num_classes=2, image_size=SIZE, weights=None, head_units=0)
    names = [block.name for block in backbone_blocks(model.backbone)]
    assert names[-count:][0] == first and names[-1] == last and len([n for n in names if n != "stem"]) == count
    model.unfreeze_top(1)
    assert trainable_blocks(model) == [last]


def test_grad_cam_layer_is_the_backbone_output_and_features_are_the_pooled_map():
    keras.utils.set_random_seed(0)
    model = create_model("custom_cnn", num_classes=3, image_size=SIZE, weights=None, head_units=8)
    assert feature_map_layer_name(model) == "feature_map"
    images = pictures()
    feature_map = model.backbone.predict(model.preprocessing(images), verbose=0)
    probabilities, pooled = features_and_predictions_model(model, "pooled").predict(images, verbose=0)
    np.testing.assert_allclose(pooled, feature_map.mean(axis=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(probabilities, model.predict(images, verbose=0), atol=1e-6)
    # the map is taken on the classifier's feature map: the serving graph's Grad-CAM on the same layer agrees
    from keras_med.export.explain_signature import InGraphGradcam

    classes = np.array([0, 1, 2, 0])
    heatmaps = compute_gradcam(model, images, class_index=classes)
    in_graph = InGraphGradcam(model)
    assert in_graph.layer_name == "feature_map"
    reference = in_graph.logits_and_maps(tf.constant(images), tf.constant(classes, tf.int32))[1].numpy()
    assert heatmaps.shape == (4, SIZE, SIZE)
    np.testing.assert_allclose(heatmaps, reference, atol=1e-4)


@pytest.mark.parametrize("name, middle", [("mobilenetv2", "block_8_add"), ("custom_cnn", "block3_pool"),
                                          pytest.param("resnet50", "conv4_block1_out", marks=pytest.mark.slow)])
def test_guard_features_are_the_mean_of_the_backbone_middle_block(name, middle, tmp_path):
    """The OOD guard reads the middle of the backbone (a fine-tuned model's last layer stops telling
    another modality apart); the predictions of that view are the model's own, also after a reload."""
    keras.utils.set_random_seed(0)
    kwargs = {"width": 0.35} if name == "mobilenetv2" else {}
    model = create_model(name, num_classes=3, image_size=SIZE, weights=None, head_units=8, **kwargs)
    assert model.guard_features_source() == "middle_block"
    assert model.middle_block_output() is model.backbone.get_layer(middle).output
    images = pictures()
    inner = keras.Model(model.backbone.inputs, model.backbone.get_layer(middle).output)
    preprocessed = model.preprocessing(images) if model.preprocessing is not None else images
    expected = np.asarray(inner.predict(preprocessed, verbose=0)).mean(axis=(1, 2))
    path = tmp_path / "model.keras"
    model.save(path)
    for candidate in (model, load_keras_model(path)):
        probabilities, features = features_and_predictions_model(candidate).predict(images, verbose=0)
        np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(probabilities, model.predict(images, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="expected one of"):
        model.features_and_predictions_model("last")


def flat_model():
    """A functional model that is not an ImageClassifier: it names none of the parts keras_med asks for."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="images")
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(x), name="flat")


def test_a_model_that_is_not_an_image_classifier_is_refused_in_one_line(tmp_path):
    from keras_med.models.features import guard_features_source
    from keras_med.training import freeze_backbone

    model = flat_model()
    for ask in (feature_map_layer_name, guard_features_source, features_and_predictions_model):
        with pytest.raises(ValueError, match="expected a keras_med ImageClassifier.*'flat'"):
            ask(model)
    with pytest.raises(ConfigError, match="'flat' is not a keras_med ImageClassifier"):
        freeze_backbone(model)
    path = tmp_path / "flat.keras"
    model.save(path)
    with pytest.raises(ValueError, match="flat.keras holds a Functional; expected a keras_med ImageClassifier"):
        create_model("custom_cnn", num_classes=2, image_size=SIZE, task="binary", weights=str(path))


# --- KerasHub --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    """A tiny random KerasHub ResNet and its image converter, saved as a local preset folder."""
    import keras_hub

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("preset") / "tiny_resnet"
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 64],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block")
    backbone.save_to_preset(str(folder))
    keras_hub.layers.ResNetImageConverter(image_size=(224, 224), scale=1 / 255.0).save_to_preset(str(folder))
    return folder


@pytest.mark.slow
def test_kerashub_preset_folder_trains_exports_and_explains(tiny_preset, tmp_path):
    from keras_med.config import RecipeConfig
    from keras_med.engine.run import fit_arguments
    from keras_med.export import export_for_serving
    from keras_med.training import fit_model

    name = f"kerashub:{tiny_preset}"
    model = create_model(name, num_classes=3, image_size=SIZE, weights="imagenet", head_units=8)
    assert isinstance(model, ImageClassifier) and model.name == "kerashub_tiny_resnet"
    assert "ImageConverter" in type(model.preprocessing).__name__ and model.preprocessing.image_size is None
    assert [block.name for block in backbone_blocks(model.backbone)] == ["stem", "stack0_block0", "stack1_block0"]

    config = RecipeConfig()
    config.model.model, config.model.weights = name, "imagenet"
    # the fine-tuning phase only (head_epochs=0): each phase traces the model again, seconds each
    for key, value in {"plan": "finetune", "head_epochs": 0, "epochs": 1, "steps_per_epoch": 1, "unfreeze": 1,
                       "monitor": "val_loss"}.items():
        setattr(config.train, key, value)
    images = pictures(8)
    targets = np.eye(3, dtype="float32")[np.arange(8) % 3]
    data = tf.data.Dataset.from_tensor_slices((images, targets)).batch(4)
    history = fit_model(model, data, data, tmp_path / "run", **fit_arguments(config))
    assert list(history["phase"]) == [2]
    assert trainable_blocks(model) == ["stack1_block0"]

    reloaded = load_keras_model(tmp_path / "run" / "checkpoints" / "best.keras")
    assert isinstance(reloaded, ImageClassifier) and type(reloaded.backbone).__name__ == "ResNetBackbone"
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)

    heatmaps = compute_gradcam(reloaded, images[:2], class_index=[0, 2])
    assert heatmaps.shape == (2, SIZE, SIZE)
    path = export_for_serving(reloaded, name="hub", base_dir=tmp_path / "saved", class_names=["a", "b", "c"])
    served = tf.saved_model.load(str(path)).signatures["predict_pixels"](pixels=tf.constant(images[:2]))
    np.testing.assert_allclose(served["probabilities"].numpy(), reloaded.predict(images[:2], verbose=0), atol=1e-4)


def test_named_kerashub_preset_offline_says_where_to_put_it(monkeypatch):
    import keras_hub

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
    with pytest.raises(WeightsUnavailableError, match=r"efficientnet_b0_ra_imagenet.*kerashub:/path/to/that/folder"):
        create_model("kerashub:efficientnet_b0_ra_imagenet", num_classes=2, image_size=SIZE, weights="imagenet")


@pytest.mark.parametrize("kwargs, message", [
    ({"weights": "imagenet", "width": 0.5}, "no width multiplier"),
    ({"name": "kerashub:/nonexistent/preset"}, "not a KerasHub preset folder")])
def test_kerashub_bad_arguments(kwargs, message):
    arguments = {"name": "kerashub:some_preset", "num_classes": 2, "image_size": SIZE, "weights": None} | kwargs
    with pytest.raises(ConfigError, match=message):
        create_model(arguments.pop("name"), **arguments)
