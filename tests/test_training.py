"""Tests of keras_med.training: metric, compile pieces, fit plans, resume, runtime, LR finder."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import balanced_accuracy_score

import keras_med.training.fit as fit_module
from keras_med.config import TrainConfig
from keras_med.engine.run import fit_arguments
from keras_med.models import create_model
from keras_med.training import (BalancedAccuracy, build_loss, build_optimizer, compile_model, find_learning_rate,
                                fit_model, monitor_mode, read_history, resolve_plan, setup_runtime)


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)


# --- balanced accuracy ---------------------------------------------------------------------------
def test_balanced_accuracy_matches_sklearn_multiclass_over_batches():
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.zeros(50, int), np.ones(10, int), np.full(5, 2)])
    predicted = np.where(rng.uniform(size=65) < 0.7, labels, rng.integers(0, 4, 65))
    metric = BalancedAccuracy(num_classes=4)
    for part in np.array_split(np.arange(65), 3):
        metric.update_state(np.eye(4)[labels[part]] * 0.9 + 0.025, np.eye(4)[predicted[part]] * 0.8 + 0.05)
    # class 3 never occurs in the targets: left out of the mean, as in scikit-learn
    with pytest.warns(UserWarning):
        expected = balanced_accuracy_score(labels, predicted)
    assert float(metric.result()) == pytest.approx(expected, abs=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_balanced_accuracy_binary_and_multilabel_average_sensitivity_and_specificity():
    rng = np.random.default_rng(1)
    truth = (rng.uniform(size=(40, 3)) < 0.3).astype("float32")
    scores = np.clip(truth * 0.6 + rng.uniform(0, 0.5, (40, 3)), 0, 1).astype("float32")
    multilabel = BalancedAccuracy(num_classes=3, task="multilabel")
    multilabel.update_state(truth, scores)
    per_label = [balanced_accuracy_score(truth[:, k], scores[:, k] >= 0.5) for k in range(3)]
    assert float(multilabel.result()) == pytest.approx(np.mean(per_label), abs=1e-6)
    binary = BalancedAccuracy(num_classes=1, task="binary")
    binary.update_state(truth[:, :1], scores[:, :1])
    assert float(binary.result()) == pytest.approx(per_label[0], abs=1e-6)
    assert BalancedAccuracy.from_config(binary.get_config()).task == "binary"


def test_balanced_accuracy_exposes_majority_class_collapse():
    metric = BalancedAccuracy(num_classes=2)
    metric.update_state(np.eye(2)[[0] * 9 + [1]], np.eye(2)[[0] * 10])
    assert float(metric.result()) == pytest.approx(0.5)


# --- compile pieces ------------------------------------------------------------------------------
def test_losses_optimizers_and_monitor_modes(toy_training):
    assert isinstance(build_loss("multiclass", 0.1), keras.losses.CategoricalCrossentropy)
    assert isinstance(build_loss("multiclass", focal=True), keras.losses.CategoricalFocalCrossentropy)
    assert isinstance(build_loss("binary"), keras.losses.BinaryCrossentropy)
    assert isinstance(build_loss("multilabel", focal=True), keras.losses.BinaryFocalCrossentropy)
    sgd = build_optimizer(TrainConfig(optimizer="sgd", clipnorm=1.0, accumulate=4), 0.01)
    assert (sgd.momentum, sgd.nesterov, sgd.clipnorm, sgd.gradient_accumulation_steps) == (0.9, True, 1.0, 4)
    assert isinstance(build_optimizer(TrainConfig(), 1e-3), keras.optimizers.AdamW)
    assert monitor_mode("val_loss") == "min" and monitor_mode("val_balanced_accuracy") == "max"
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        build_optimizer(TrainConfig(optimizer="rmsprop"), 1e-3)
    with pytest.raises(ValueError, match="task: a binary model has 1 output unit"):
        compile_model(toy_training.model(), TrainConfig(), "binary")


def test_resolve_plan_auto():
    assert resolve_plan("auto", "custom_cnn", "none") == "scratch"
    assert resolve_plan("auto", "mobilenetv2", "imagenet") == "finetune"
    assert resolve_plan("auto", "mobilenetv2", "none") == "scratch"
    assert resolve_plan("finetune", "mobilenetv2", "none") == "finetune"


# --- runtime -------------------------------------------------------------------------------------
def test_setup_runtime_seeds_and_sets_precision(toy_training):
    try:
        strategy = setup_runtime(TrainConfig(seed=3, mixed_precision="on"))
        with strategy.scope():
            first = toy_training.model()
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        assert first.backbone.get_layer("block1_conv").compute_dtype == "float16"
        assert first.get_layer("predictions").compute_dtype == "float32"
        setup_runtime(TrainConfig(seed=3, mixed_precision="off"))
        assert keras.mixed_precision.global_policy().name == "float32"
        setup_runtime(TrainConfig(seed=3, mixed_precision="auto"))
        assert keras.mixed_precision.global_policy().name == "float32"  # no GPU here
        second = toy_training.model(seed=None)  # seeded by setup_runtime alone
        setup_runtime(TrainConfig(seed=3))
        third = toy_training.model(seed=None)
        for a, b in zip(second.get_weights(), third.get_weights()):
            np.testing.assert_array_equal(a, b)
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --- fit plans -----------------------------------------------------------------------------------
def test_scratch_plan_learns_and_writes_history_and_best_checkpoint(tmp_path, toy_training):
    # 8 updates of 16 images per epoch: enough steps for BatchNorm's moving statistics to follow
    train, images, labels = toy_training.data(batch=8)
    val, val_images, val_labels = toy_training.data(32, seed=1)
    config = toy_training.config(epochs=5, accumulate=2)
    model = toy_training.model()
    history = fit_model(model, train, val, tmp_path, **fit_arguments(config), class_weight={0: 1.0, 1: 2.0})
    assert list(history["epoch"]) == [0, 1, 2, 3, 4]
    assert {"phase", "learning_rate", "val_balanced_accuracy", "val_auc"} <= set(history.columns)
    assert (history["phase"] == 1).all() and history["learning_rate"].iloc[0] == pytest.approx(3e-3)
    best = keras.models.load_model(tmp_path / "checkpoints" / "best.keras")
    predicted = best.predict(val_images, verbose=0).argmax(axis=1)
    assert (predicted == val_labels).mean() >= 0.9
    np.testing.assert_allclose(model.predict(val_images, verbose=0), best.predict(val_images, verbose=0), atol=1e-5)
    assert not (tmp_path / "backup").exists()


def test_weight_averaging_validates_and_checkpoints_the_averaged_weights(tmp_path, toy_training):
    train, _, _ = toy_training.data(batch=8)
    val, val_images, val_labels = toy_training.data(32, seed=1)
    # The averaged weights lag the raw ones by about 1 / (1 - momentum) steps: give them epochs.
    config = toy_training.config(epochs=7, ema=0.9)
    model = toy_training.model()
    history = fit_model(model, train, val, tmp_path, **fit_arguments(config))
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == pytest.approx(0.9)
    best = keras.models.load_model(tmp_path / "checkpoints" / "best.keras")
    assert (best.predict(val_images, verbose=0).argmax(axis=1) == val_labels).mean() >= 0.9
    # The model left by fit is the best checkpoint, whose weights are the averaged ones.
    np.testing.assert_allclose(model.predict(val_images, verbose=0), best.predict(val_images, verbose=0), atol=1e-5)
    assert history["val_balanced_accuracy"].max() >= 0.9
    with pytest.raises(ValueError, match="ema"):
        build_optimizer(toy_training.config(ema=1.5).train, 1e-3)


def test_finetune_plan_trains_head_then_top_with_batchnorm_frozen(tmp_path, toy_training):
    train, _, _ = toy_training.data(32)
    config = toy_training.config(plan="finetune", head_epochs=1, epochs=2, unfreeze=2, steps_per_epoch=1)
    model = toy_training.model()
    block = model.backbone.get_layer
    initial = block("block1_conv").get_weights()[0].copy()
    history = fit_model(model, train, train, tmp_path, **fit_arguments(config))
    assert list(history["epoch"]) == [0, 1, 2] and list(history["phase"]) == [1, 2, 2]
    assert list(history["learning_rate"]) == pytest.approx([3e-3, 1e-4, 1e-4])
    # unfreeze=2: the custom CNN's top two Conv-BN-ReLU-MaxPool blocks
    assert block("block4_conv").trainable and block("block3_conv").trainable
    assert not block("block4_bn").trainable and not block("block2_conv").trainable
    np.testing.assert_array_equal(block("block1_conv").get_weights()[0], initial)


def test_killed_finetune_run_resumes_in_phase_two_without_repeating_epochs(tmp_path, monkeypatch, toy_training):
    train, _, _ = toy_training.data(32)
    config = toy_training.config(plan="finetune", head_epochs=2, epochs=2, steps_per_epoch=1)
    toy_training.extra_callbacks(monkeypatch, toy_training.KillAfterEpoch(2), phase=2)
    with pytest.raises(KeyboardInterrupt):
        fit_model(toy_training.model(), train, train, tmp_path, **fit_arguments(config))
    monkeypatch.undo()
    assert list(read_history(tmp_path)["epoch"]) == [0, 1, 2]
    assert (tmp_path / "backup" / "phase1_done.weights.h5").is_file()

    counter = toy_training.EpochCounter()
    toy_training.extra_callbacks(monkeypatch, counter)
    history = fit_model(toy_training.model(), train, train, tmp_path, **fit_arguments(config))
    assert counter.epochs == [3]
    assert list(history["epoch"]) == [0, 1, 2, 3] and list(history["phase"]) == [1, 1, 2, 2]


# --- learning-rate finder ------------------------------------------------------------------------
def test_find_learning_rate_sweeps_suggests_plots_and_leaves_model_unchanged(tmp_path, toy_training):
    train, _, _ = toy_training.data(32)
    model = compile_model(toy_training.model(), TrainConfig(), "multiclass")
    before = [weights.copy() for weights in model.get_weights()]
    result = find_learning_rate(model, train, min_lr=1e-6, max_lr=10.0, steps=40, plot_path=tmp_path / "lr.png")
    assert 2 <= len(result.lrs) <= 40 and np.all(np.diff(result.lrs) > 0)
    assert result.lrs[0] == pytest.approx(1e-6)
    assert 1e-6 <= result.suggested_lr <= 10.0
    assert (tmp_path / "lr.png").stat().st_size > 1000
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="compile it first"):
        find_learning_rate(toy_training.model(), train)


class RecordLearningRate(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_linear_warm_up_ramps_over_the_first_epoch_then_holds_the_target(toy_training):
    from keras_med.training.callbacks import LinearWarmUp

    dataset, _, _ = toy_training.data(n=64, batch=16)  # 4 batches per epoch
    model = toy_training.model()
    compile_model(model, TrainConfig(), "multiclass", 1e-3)
    recorder = RecordLearningRate()
    model.fit(dataset, epochs=3, initial_epoch=1, verbose=0,
              callbacks=[LinearWarmUp(1e-3, 1, first_epoch=1), recorder])
    np.testing.assert_allclose(recorder.rates[:4], [2.5e-4, 5e-4, 7.5e-4, 1e-3], rtol=1e-5)
    np.testing.assert_allclose(recorder.rates[4:], [1e-3] * 4, rtol=1e-5)


def test_finetune_plan_warms_up_the_unfrozen_phase(tmp_path, monkeypatch, toy_training):
    from keras_med.training.callbacks import LinearWarmUp

    seen = []
    original = fit_module._fit_phase

    def spy(*args, **kwargs):
        seen.append((kwargs["phase"], kwargs.get("warmup_epochs", 0.0)))
        return original(*args, **kwargs)

    monkeypatch.setattr(fit_module, "_fit_phase", spy)
    dataset, _, _ = toy_training.data()
    model = toy_training.model()
    config = toy_training.config(plan="finetune", head_epochs=1, epochs=1, unfreeze=2, warmup_epochs=0.5)
    history = fit_model(model, dataset, dataset, tmp_path, **fit_arguments(config))
    assert seen == [(1, 0.0), (2, 0.5)]
    assert len(history) == 2 and np.isfinite(history["loss"]).all()
    with pytest.raises(ValueError, match="warmup_epochs"):
        LinearWarmUp(1e-3, -1)


def test_cosine_schedule_decays_the_fine_tuning_rate_after_its_warm_up(tmp_path, monkeypatch, toy_training):
    from keras_med.training.callbacks import cosine_learning_rate

    dataset, _, _ = toy_training.data(n=64, batch=16)  # 4 batches per epoch
    model = toy_training.model()
    config = toy_training.config(plan="finetune", head_epochs=1, epochs=5, unfreeze=2, warmup_epochs=1,
                                 learning_rate=1e-3, finetune_learning_rate=4e-4, lr_schedule="cosine",
                                 patience=10)
    recorder = RecordLearningRate()
    original = fit_module.build_callbacks
    monkeypatch.setattr(fit_module, "build_callbacks", lambda *a, **k: [*original(*a, **k), recorder])
    history = fit_model(model, dataset, dataset, tmp_path, **fit_arguments(config))
    rates = np.array(recorder.rates).reshape(6, 4)  # head epoch, then five fine-tuning epochs
    np.testing.assert_allclose(rates[0], 1e-3, rtol=1e-5)  # a one-epoch phase: cosine starts at its rate
    np.testing.assert_allclose(rates[1], [1e-4, 2e-4, 3e-4, 4e-4], rtol=1e-5)  # warm-up ramp
    expected = [4e-4 * 0.5 * (1 + np.cos(np.pi * k / 4)) for k in range(4)]  # 4e-4, ..., then small
    np.testing.assert_allclose(rates[2:, 0], expected, rtol=1e-5)
    assert rates[-1, 0] < 0.2 * 4e-4 and np.all(np.diff(rates[2:, 0]) < 0)
    assert list(history["learning_rate"].round(8)[-4:]) == [round(value, 8) for value in expected]
    assert cosine_learning_rate(1.0, 10, 4) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        original(tmp_path, monitor="val_loss", patience=3, lr_schedule="step")


# --- per-label weighted binary cross-entropy (multilabel) -----------------------------------------
def test_balanced_label_weights_balance_each_label_and_name_an_empty_one():
    from keras_med.data import DataError, balanced_label_weights

    targets = np.array([[1, 0], [0, 1], [0, 1], [0, 1]], dtype="float32")
    positive, negative = balanced_label_weights(targets)
    np.testing.assert_allclose(positive, [2.0, 4 / 6])
    np.testing.assert_allclose(negative, [4 / 6, 2.0])
    # each label's positives and negatives carry the same total weight
    np.testing.assert_allclose(targets.sum(0) * positive, (1 - targets).sum(0) * negative)
    with pytest.raises(DataError, match=r"label index\(es\) \[1\]"):
        balanced_label_weights(np.array([[1, 1], [0, 1]], dtype="float32"))


def test_weighted_binary_crossentropy_matches_the_formula_and_keras_when_unweighted():
    from keras_med.training.losses import WeightedBinaryCrossentropy

    rng = np.random.default_rng(0)
    y_true = (rng.uniform(size=(6, 3)) < 0.3).astype("float32")
    y_pred = rng.uniform(0.05, 0.95, size=(6, 3)).astype("float32")
    w_pos, w_neg = [3.0, 1.0, 0.5], [0.6, 1.0, 2.0]
    expected = -(np.array(w_pos) * y_true * np.log(y_pred) + np.array(w_neg) * (1 - y_true) * np.log(1 - y_pred))
    loss = WeightedBinaryCrossentropy(w_pos, w_neg)
    np.testing.assert_allclose(float(loss(y_true, y_pred)), expected.mean(), rtol=1e-5)
    plain = WeightedBinaryCrossentropy([1.0] * 3, [1.0] * 3)
    np.testing.assert_allclose(float(plain(y_true, y_pred)),
                               float(keras.losses.BinaryCrossentropy()(y_true, y_pred)), rtol=1e-5)
    with pytest.raises(ValueError, match="one weight per label"):
        WeightedBinaryCrossentropy([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="only for the multilabel task"):
        build_loss("multiclass", label_weights=([1.0], [1.0]))


def test_multilabel_fit_with_label_weights_trains_and_its_checkpoint_reloads(tmp_path, toy_training):
    from keras_med.training.losses import WeightedBinaryCrossentropy

    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=(48, 3)) < [0.5, 0.2, 0.1]).astype("float32")
    # label j lights up its own third of the image, so the labels are learnable independently
    images = rng.uniform(0, 40, (48, toy_training.size, toy_training.size, 3)).astype("float32")
    for j in range(3):
        images[:, :, j * 10:(j + 1) * 10, :] += 200 * labels[:, j, None, None, None]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    model = create_model("custom_cnn", num_classes=3, image_size=toy_training.size, weights=None, head_units=16,
                         task="multilabel")
    config = toy_training.config(epochs=2, monitor="val_loss")
    history = fit_model(model, dataset, dataset, tmp_path, **fit_arguments(config), label_weights=([1.0, 4.0, 9.0], [1.0, 0.6, 0.55]))
    assert isinstance(model.loss, WeightedBinaryCrossentropy) and np.isfinite(history["loss"]).all()
    reloaded = keras.saving.load_model(tmp_path / "checkpoints" / "best.keras")
    assert reloaded.loss.positive_weights == [1.0, 4.0, 9.0]
    np.testing.assert_allclose(reloaded.predict(images[:4], verbose=0), model.predict(images[:4], verbose=0),
                               atol=1e-6)


# --- logit-adjusted cross-entropy (multi-class long tails) ---------------------------------------
def test_logit_adjusted_crossentropy_is_cross_entropy_on_shifted_logits_and_plain_when_priors_are_equal():
    from keras_med.training.losses import LogitAdjustedCrossentropy

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 4)).astype("float32")
    y_true = np.eye(4, dtype="float32")[rng.integers(0, 4, 8)]
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    priors = np.array([0.7, 0.2, 0.06, 0.04])
    for tau in (1.0, 0.5):
        shifted = logits + tau * np.log(priors)
        expected = -(y_true * (shifted - np.log(np.exp(shifted).sum(1, keepdims=True)))).sum(1).mean()
        # frequencies need not sum to 1: they are normalised
        loss = LogitAdjustedCrossentropy(priors * 10, tau=tau)
        np.testing.assert_allclose(float(loss(y_true, probabilities)), expected, rtol=1e-5)
    np.testing.assert_allclose(float(LogitAdjustedCrossentropy([1, 1, 1, 1])(y_true, probabilities)),
                               float(keras.losses.CategoricalCrossentropy()(y_true, probabilities)), rtol=1e-5)
    restored = LogitAdjustedCrossentropy.from_config(LogitAdjustedCrossentropy(priors, tau=0.5).get_config())
    assert restored.tau == 0.5 and restored.class_priors == pytest.approx(list(priors))
    with pytest.raises(ValueError, match="positive frequency"):
        LogitAdjustedCrossentropy([0.9, 0.0, 0.1])
    with pytest.raises(ValueError, match="only for the multiclass task"):
        build_loss("binary", class_priors=(0.5, 0.5), logit_adjustment=1.0)
    # tau 0: the priors are ignored and the loss is Keras's own
    assert isinstance(build_loss("multiclass", class_priors=(0.5, 0.5)), keras.losses.CategoricalCrossentropy)


@pytest.mark.slow
def test_logit_adjustment_makes_an_uninformative_image_equally_likely_to_be_any_class():
    """With nothing in the input to go by, cross-entropy learns the training prior and the
    adjusted loss learns equal odds: the balanced posterior a balanced-accuracy decision wants."""
    from keras_med.data import class_priors

    labels = np.repeat([0, 1, 2], [80, 15, 5])
    targets = np.eye(3, dtype="float32")[labels]
    inputs = np.ones((100, 2), dtype="float32")
    priors = class_priors(targets)
    assert priors == pytest.approx((0.8, 0.15, 0.05))
    outputs = {}
    for tau in (0.0, 1.0):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(0.05),
                      loss=build_loss("multiclass", class_priors=priors, logit_adjustment=tau))
        model.fit(inputs, targets, epochs=150, batch_size=100, verbose=0)
        outputs[tau] = model.predict(inputs[:1], verbose=0)[0]
    np.testing.assert_allclose(outputs[0.0], priors, atol=0.02)
    np.testing.assert_allclose(outputs[1.0], [1 / 3] * 3, atol=0.02)


def test_class_priors_need_one_hot_targets_with_every_class():
    from keras_med.data import DataError, class_priors

    with pytest.raises(DataError, match=r"class index\(es\) \[2\]"):
        class_priors(np.eye(3, dtype="float32")[[0, 1, 1]])
    with pytest.raises(DataError, match="one-hot"):
        class_priors(np.array([[1.0], [0.0]]))


def test_fit_with_logit_adjustment_compiles_the_adjusted_loss_and_its_checkpoint_reloads(tmp_path, toy_training):
    from keras_med.training.losses import LogitAdjustedCrossentropy

    data = toy_training.data(48, seed=0, batch=16)
    config = toy_training.config(epochs=1, logit_adjustment=1.0)
    model = toy_training.model()
    history = fit_model(model, data.dataset, data.dataset, tmp_path, **fit_arguments(config),
                        class_priors=(0.7, 0.3))
    assert isinstance(model.loss, LogitAdjustedCrossentropy) and np.isfinite(history["loss"]).all()
    reloaded = keras.saving.load_model(tmp_path / "checkpoints" / "best.keras")
    assert reloaded.loss.class_priors == pytest.approx([0.7, 0.3]) and reloaded.loss.tau == 1.0
