"""The served model's trust outputs: in_distribution, ood_score and prediction_set, from the SavedModel."""


import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_med.data.synthetic import HAM10000_SHARES, draw_chest, draw_lesion
from keras_med.errors import ConfigError
from keras_med.evaluation.conformal import calibrate_conformal
from keras_med.evaluation.ood import fit_ood_guard
from keras_med.evaluation.trust import predict_features
from keras_med.export import export_for_serving

from helpers import CLASSES, SIZE, png_bytes as png, tiny_cnn



def small_model():
    """A random (untrained) two-convolution classifier; its guard reads the pooled features."""
    return tiny_cnn(convs=((16, 1), (16, 2)))


def lesions(count, seed):
    rng = np.random.default_rng(seed)
    return np.stack([draw_lesion(label, rng, SIZE) for label in rng.choice(list(HAM10000_SHARES), count)]).astype(np.float32)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    model = small_model()
    train, val = lesions(240, seed=0), lesions(120, seed=1)
    train_raw, train_features, train_std = predict_features(model, train)
    val_raw, val_features, val_std = predict_features(model, val)
    guard = fit_ood_guard(train_features, train_raw.argmax(axis=1), val_features, val_raw,
                          train_spread=train_std, val_spread=val_std)
    assert guard.min_pixel_spread > 1.0
    sets = calibrate_conformal(val_raw, val_raw.argmax(axis=1), coverage=0.9)
    path = export_for_serving(model, name="skin", base_dir=tmp_path_factory.mktemp("saved_models"),
                              class_names=CLASSES, task="multiclass", ood_guard=guard, conformal_sets=sets)
    return model, guard, sets, tf.saved_model.load(str(path)), path


def test_blank_one_pixel_and_noise_images_are_not_in_distribution(guarded):
    _, _, _, served, _ = guarded
    rng = np.random.default_rng(5)
    images = [np.zeros((SIZE, SIZE, 3)), np.full((SIZE, SIZE, 3), 255), rng.integers(0, 256, (1, 1, 3)),
              rng.integers(0, 256, (SIZE, SIZE, 3)), rng.integers(0, 256, (64, 48, 3))]
    answer = served.signatures["serving_default"](image_bytes=tf.constant([png(image) for image in images]))
    # The 1x1 image is below the model's minimum size: refused as invalid before the guard sees it.
    assert answer["valid"].numpy().tolist() == [True, True, False, True, True]
    assert answer["reason"].numpy()[2].decode().startswith("too_small")
    assert not answer["in_distribution"].numpy().any()
    assert not answer["decisions"].numpy().any(), "a row out of distribution must decide nothing"
    valid = answer["valid"].numpy()
    assert answer["probabilities"].numpy()[valid].sum(axis=1) == pytest.approx(np.ones(valid.sum()), abs=1e-4)
    pixels = served.signatures["predict_pixels"](pixels=tf.constant(np.zeros((1, 1, 1, 3), np.float32)))
    assert not pixels["in_distribution"].numpy()[0]


def test_the_guard_flags_another_modality_and_passes_its_own(guarded):
    model, guard, sets, served, _ = guarded
    rng = np.random.default_rng(6)
    chests = np.stack([np.repeat(draw_chest([], rng, SIZE)[..., None], 3, axis=-1) for _ in range(40)]).astype(np.float32)
    own = lesions(200, seed=7)
    chest_answer = served.signatures["predict_pixels"](pixels=tf.constant(chests))
    own_answer = served.signatures["predict_pixels"](pixels=tf.constant(own))
    assert np.mean(chest_answer["in_distribution"].numpy()) == 0.0
    assert np.mean(own_answer["in_distribution"].numpy()) > 0.85
    # The served score and set are the report's: same function, same arrays.
    raw, features, spread = predict_features(model, own)
    np.testing.assert_allclose(own_answer["ood_score"].numpy(), guard.score(features, raw), rtol=1e-3, atol=1e-2)
    np.testing.assert_array_equal(own_answer["prediction_set"].numpy(), sets.predict(raw))
    passed = own_answer["in_distribution"].numpy()
    clear = np.abs(guard.score(features, raw) - guard.threshold) > 1e-3 * guard.threshold
    np.testing.assert_array_equal(passed[clear], guard.in_distribution(features, raw, spread)[clear])
    np.testing.assert_array_equal(own_answer["decisions"].numpy()[~passed], False)


def test_metadata_stores_the_guard_and_the_coverage(guarded):
    _, guard, sets, served, _ = guarded
    stored = served.signatures["metadata"]()
    assert stored["ood_method"].numpy().decode() == guard.method == "mahalanobis"
    assert stored["ood_threshold"].numpy() == pytest.approx(guard.threshold, rel=1e-6)
    assert stored["ood_pass_rate"].numpy() == pytest.approx(guard.validation_pass_rate)
    assert stored["conformal_coverage"].numpy() == pytest.approx(0.9)
    np.testing.assert_allclose(stored["conformal_thresholds"].numpy(), sets.thresholds, rtol=1e-6)


def test_a_model_exported_without_guards_still_answers_the_trust_outputs(tmp_path):
    model = small_model()
    path = export_for_serving(model, name="plain", base_dir=tmp_path, class_names=CLASSES, task="multiclass")
    answer = tf.saved_model.load(str(path)).signatures["predict_pixels"](pixels=tf.constant(lesions(2, seed=3)))
    assert answer["in_distribution"].numpy().all() and (answer["ood_score"].numpy() == 0).all()
    np.testing.assert_array_equal(answer["prediction_set"].numpy(), answer["decisions"].numpy())


def test_predict_shows_the_flag_the_set_and_the_tta_spread(guarded, tmp_path, capsys):
    import argparse
    import json

    from keras_med.export import command_predict
    from keras_med.export.predictor import load_predictor

    *_, path = guarded
    blank = tmp_path / "blank.png"
    blank.write_bytes(png(np.zeros((40, 40, 3))))
    lesion = tmp_path / "lesion.png"
    lesion.write_bytes(png(lesions(1, seed=9)[0]))
    flagged = load_predictor(path).predict_files([str(blank)])[0]
    assert flagged.valid and flagged.in_distribution is False and flagged.decisions == []
    assert "OUT OF DISTRIBUTION" in flagged.to_text()

    parser = argparse.ArgumentParser()
    command_predict.add_arguments(parser)
    assert command_predict.run(parser.parse_args(["--model", str(path), "--json", "--tta-spread", "5", str(lesion)])) == 0
    answer = json.loads(capsys.readouterr().out)[0]
    assert set(answer["tta_spread"]) == set(CLASSES) and all(value >= 0 for value in answer["tta_spread"].values())
    assert isinstance(answer["in_distribution"], bool) and set(answer["prediction_set"]) <= set(CLASSES)
    with pytest.raises(ConfigError, match="--tta-spread"):
        command_predict.run(parser.parse_args(["--model", str(path), "--tta-spread", "1", str(lesion)]))


def test_augmented_copies_are_the_original_its_flips_and_shifts():
    from keras_med.export.tta import augmented_copies

    image = np.random.default_rng(0).uniform(0, 255, (20, 30, 3)).astype(np.float32)
    copies = augmented_copies(image, 7)
    assert copies.shape == (7, 20, 30, 3)
    np.testing.assert_array_equal(copies[0], image)
    np.testing.assert_array_equal(copies[1], image[:, ::-1])
    np.testing.assert_array_equal(copies[2], image[::-1])
    np.testing.assert_array_equal(copies[3][1:], image[:-1])  # shifted down by 4% of 20 px = 1 px


def test_an_image_classifier_serves_the_score_of_its_middle_block_features(tmp_path):
    """The guard of an ImageClassifier reads the backbone's middle block, in the report and as served;
    a guard recording other features than it was fitted on is refused at export, in one line."""
    import dataclasses

    from keras_med.models import create_model
    from keras_med.models.features import guard_features_source

    keras.utils.set_random_seed(0)
    model = create_model("custom_cnn", num_classes=3, image_size=SIZE, weights=None, head_units=8)
    source = guard_features_source(model)
    assert source == "middle_block"
    (train_raw, train_features, _), (val_raw, val_features, _) = (predict_features(model, lesions(count, seed=seed))
                                                                  for count, seed in ((120, 0), (60, 1)))
    assert train_features.shape[1] == model.middle_block_output().shape[-1] != model.pooled_features.shape[-1]
    guard = fit_ood_guard(train_features, train_raw.argmax(axis=1), val_features, val_raw, features=source)
    path = export_for_serving(model, name="skin", base_dir=tmp_path, class_names=CLASSES, task="multiclass",
                              ood_guard=guard)
    own = lesions(20, seed=7)
    answer = tf.saved_model.load(str(path)).signatures["predict_pixels"](pixels=tf.constant(own))
    raw, features, _ = predict_features(model, own)
    np.testing.assert_allclose(answer["probabilities"].numpy(), raw, atol=1e-5)
    np.testing.assert_allclose(answer["ood_score"].numpy(), guard.score(features, raw), rtol=1e-3, atol=1e-2)
    mislabelled = dataclasses.replace(guard, features="pooled")
    with pytest.raises(ValueError, match="fitted on 128 features but the model's 'pooled' features have 256"):
        export_for_serving(model, name="wrong", base_dir=tmp_path, class_names=CLASSES, task="multiclass",
                           ood_guard=mislabelled)
