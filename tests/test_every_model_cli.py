"""Every registered model trains a step, reloads through the one loading module and explains, in
process; two models go through the whole CLI (train, export, explain, predict, evaluate).

The in-process check covers what each command needs of an architecture: the compiled train step
(the graph traced as `fit` traces it), the `.keras` file reloaded by `load_trained_model` (which
every command uses, custom layers included) with the same answers, and Grad-CAM on the feature-map
layer the model names. The CLI round then proves the commands themselves end to end, for
custom_cnn (no layer of keras_med's own in its preprocessing) and vgg16 (`ReverseChannels`). Running
the CLI round for every family cost 1,417 s of the suite on the 2-core development machine (a deep
backbone's export and its reload check alone take minutes there) while repeating the same
model-agnostic command code; the per-model check costs one trace per model.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from keras_med.cli import main as cli_main
from keras_med.models import available_models

from helpers import assert_overlay_shows_a_heat_map


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """The smallest HAM10000 demo (112 images, 40x32 px) and a 4-image external label file."""
    from keras_med.data.synthetic import write_ham10000_demo

    root = tmp_path_factory.mktemp("every_model")
    demo = write_ham10000_demo(root / "demo", n_images=112, seed=0, size=(40, 32))
    labels = pd.read_csv(demo / "HAM10000_metadata.csv").drop_duplicates("dx").head(4)
    labels[["image_id", "dx"]].rename(columns={"dx": "label"}).to_csv(root / "labels.csv", index=False)
    images = [next(demo.rglob(f"{image_id}.jpg")) for image_id in labels["image_id"][:2]]
    return root, demo, images


def test_models_command_lists_every_registered_model(capsys):
    assert cli_main(["models"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == available_models()
    assert "kerashub:PRESET" in captured.err


# The whole CLI round: a model without and a model with a layer of keras_med's own in its preprocessing.
CLI_ROUND_MODELS = ["custom_cnn", "vgg16"]
# The models whose preprocessing holds a layer of keras_med's own (ReverseChannels); resnet50's backbone
# also holds keras_med's BatchNormalization (keras_med.models.batch_norm), checked at reload.
CUSTOM_LAYER_MODELS = {"resnet50", "vgg16"}


def own_layer_classes(layer) -> set[str]:
    """Names of the keras_med layer classes inside `layer` (nested models included), but its own."""
    found = set()
    for sublayer in getattr(layer, "layers", []):
        if type(sublayer).__module__.startswith("keras_med."):
            found.add(type(sublayer).__name__)
        found |= own_layer_classes(sublayer)
    return found


def _every_model_marked(fast: set[str]):
    """Every registered model; those outside `fast` marked slow (a deep backbone's first train step
    traces its whole graph, seconds to a minute each on two busy cores)."""
    return [pytest.param(name, marks=() if name in fast else pytest.mark.slow) for name in available_models()]


@pytest.mark.parametrize("name", _every_model_marked(fast={"custom_cnn"}))
def test_every_model_trains_reloads_and_explains(tmp_path, name):
    """Build at 32 px, one compiled train step (the recipe's optimizer, loss and metrics), save, reload
    through the loading module, and Grad-CAM on the feature-map layer the model names: what `train`,
    `export`, `predict` and `explain` each need of an architecture, without the commands' fixed costs."""
    import keras
    import numpy as np

    from keras_med.config import TrainConfig
    from keras_med.explain.gradcam import compute_gradcam
    from keras_med.models import create_model
    from keras_med.run_directory import load_trained_model
    from keras_med.training.compile import compile_model

    classes = ["a", "b", "c"]
    keras.utils.set_random_seed(0)
    model = create_model(name, num_classes=3, image_size=32, weights=None, head_units=8)
    compile_model(model, TrainConfig(), "multiclass", learning_rate=1e-2)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    images[:, 8:20, 8:20] = 255.0  # a bright patch, so the heat map has something to follow
    targets = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    before = [np.array(weight) for weight in model.trainable_weights]
    logs = model.train_on_batch(images, targets, return_dict=True)
    assert np.isfinite(logs["loss"]), logs
    after = [np.array(weight) for weight in model.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after)), "one train step changed no weight"

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "class_names.json").write_text(json.dumps({"class_names": classes, "task": "multiclass",
                                                           "image_size": 32}))
    model.save(tmp_path / "checkpoints" / "best.keras")
    trained = load_trained_model(tmp_path / "checkpoints" / "best.keras")
    assert trained.run.class_names == classes
    reloaded = np.asarray(trained.model(images, training=False))
    np.testing.assert_allclose(reloaded, model(images, training=False), atol=1e-5)
    np.testing.assert_allclose(reloaded.sum(axis=1), 1.0, atol=1e-5)

    heatmaps = compute_gradcam(trained.model, images[:2], class_index=0)
    assert heatmaps.shape == (2, 32, 32) and np.isfinite(heatmaps).all()
    assert 0.0 <= heatmaps.min() and heatmaps.max() <= 1.0 + 1e-6

    if name in CUSTOM_LAYER_MODELS | set(CLI_ROUND_MODELS):
        custom = own_layer_classes(model.preprocessing) if model.preprocessing is not None else set()
        assert bool(custom) == (name in CUSTOM_LAYER_MODELS), custom
        if name == "resnet50":
            assert "BatchNormalization" in own_layer_classes(model.backbone)


@pytest.mark.slow
@pytest.mark.parametrize("name", CLI_ROUND_MODELS)
def test_every_model_through_the_cli(tiny_data, tmp_path, capsys, name):
    root, demo, images = tiny_data
    run_dir = tmp_path / "run"
    assert cli_main(["train", "--recipe", "ham10000", "--data-dir", str(demo), "--model", name, "--weights", "none",
                     "--plan", "scratch", "--image-size", "32", "--batch-size", "16", "--epochs", "1",
                     "--steps-per-epoch", "1", "--bootstrap", "0", "--explain", "0", "--no-export",
                     "--output-dir", str(tmp_path), "--run-dir", str(run_dir)]) == 0
    model = str(run_dir / "checkpoints" / "best.keras")

    assert cli_main(["export", "--model", model, "--name", name, "--base-dir", str(tmp_path / "saved")]) == 0
    assert (tmp_path / "saved" / name / "1" / "saved_model.pb").is_file()

    assert cli_main(["explain", "--model", model, str(images[0]), "--out", str(tmp_path / "cam")]) == 0
    assert_overlay_shows_a_heat_map(tmp_path / "cam" / f"{images[0].stem}_gradcam.png")
    capsys.readouterr()
    assert cli_main(["predict", "--model", model, "--json", *map(str, images)]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [answer["valid"] for answer in answers] == [True, True]
    assert abs(sum(answers[0]["probabilities"].values()) - 1.0) < 1e-4

    assert cli_main(["evaluate", "--model", model, "--labels", str(root / "labels.csv"), "--images", str(demo),
                     "--out", str(tmp_path / "external"), "--bootstrap", "0", "--explain", "0"]) == 0
    assert json.loads((tmp_path / "external" / "metrics.json").read_text())["n_samples"] == 4
