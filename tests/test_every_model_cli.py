"""Every registered model loads through the one loading module; one model of each builder goes
through the CLI (train, export, explain; predict and evaluate too for a model with a custom layer).

resnet50 and vgg16 carry the custom layer `ReverseChannels`, which every command must find when it
loads the `.keras` file (keras_med.run_directory), so they go through all five commands. The whole
CLI round costs minutes per deep backbone even at 32 px, because each command traces the model's
graph (train step, validation, SavedModel signatures and their reload check, prediction, Grad-CAM):
at a load average of ~10 on the 2-core development machine (2026-11-30) vgg16 took 3 min,
mobilenetv2 4, resnet50 8, efficientnetb0 10, densenet121 11, efficientnetb1-b4 4-8 each, all ten
about an hour. EfficientNetB1-B4 are EfficientNetB0's builder at other depth/width scales
(keras.applications, the same layer types, the same loading path), so the CLI round takes one model
per builder and every model is saved and reloaded through `load_trained_model`.

What `predict` and `evaluate` would add for a family without a custom layer is already proven
for it: both load the `.keras` file with the same `load_trained_model` as `export` and `explain`
(and the reload test below), `predict` runs the serving functions that `export` traces for that
family and checks against the Keras model after reload, and `evaluate` scores with the same
`model.predict` the `train` command scored the validation and test splits with. So those two
commands run for the families with a custom layer, which is checked, not assumed
(`test_every_model_reloads_through_the_loading_module`); they cost up to a minute per deep
backbone under load (BENCHMARKS.md, "Test suite time").
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from keras_med.cli import main as cli_main
from keras_med.models import available_models


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


# One model per architecture family (EfficientNetB1-B4 share EfficientNetB0's keras.applications module).
CLI_ROUND_MODELS = ["custom_cnn", "densenet121", "efficientnetb0", "mobilenetv2", "resnet50", "vgg16"]


def architecture_family(name: str) -> str:
    """The keras.applications module a backbone model is built from (the model's own name otherwise)."""
    from keras_med.models.backbones import BACKBONES

    return BACKBONES[name].application.__module__ if name in BACKBONES else name


# The models whose preprocessing holds a layer of keras_med's own (ReverseChannels): they also go
# through `predict` and `evaluate` (see the module docstring). keras_med's BatchNormalization, in
# every family but vgg16 when trained from scratch (keras_med.models.batch_norm), is in resnet50's
# backbone too, so it goes through all five commands there.
CUSTOM_LAYER_MODELS = {"resnet50", "vgg16"}


def test_cli_round_covers_one_model_of_every_architecture_family():
    assert {architecture_family(name) for name in available_models()} == \
        {architecture_family(name) for name in CLI_ROUND_MODELS}
    assert CUSTOM_LAYER_MODELS <= set(CLI_ROUND_MODELS)


def own_layer_classes(layer) -> set[str]:
    """Names of the keras_med layer classes inside `layer` (nested models included), but its own."""
    found = set()
    for sublayer in getattr(layer, "layers", []):
        if type(sublayer).__module__.startswith("keras_med."):
            found.add(type(sublayer).__name__)
        found |= own_layer_classes(sublayer)
    return found


@pytest.mark.parametrize("name", available_models())
def test_every_model_reloads_through_the_loading_module(tmp_path, name):
    import numpy as np

    from keras_med.models import create_model
    from keras_med.run_directory import load_trained_model

    classes = ["a", "b", "c"]
    model = create_model(name, num_classes=3, image_size=32, weights=None)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "class_names.json").write_text(json.dumps({"class_names": classes, "task": "multiclass",
                                                           "image_size": 32}))
    model.save(tmp_path / "checkpoints" / "best.keras")
    trained = load_trained_model(tmp_path / "checkpoints" / "best.keras")
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert trained.run.class_names == classes
    np.testing.assert_allclose(trained.model(images, training=False), model(images, training=False), atol=1e-5)
    if name in CLI_ROUND_MODELS:
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
    assert (tmp_path / "cam" / f"{images[0].stem}_gradcam.png").stat().st_size > 0
    if name not in CUSTOM_LAYER_MODELS:
        return

    capsys.readouterr()
    assert cli_main(["predict", "--model", model, "--json", *map(str, images)]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [answer["valid"] for answer in answers] == [True, True]
    assert abs(sum(answers[0]["probabilities"].values()) - 1.0) < 1e-4

    assert cli_main(["evaluate", "--model", model, "--labels", str(root / "labels.csv"), "--images", str(demo),
                     "--out", str(tmp_path / "external"), "--bootstrap", "0", "--explain", "0"]) == 0
    assert json.loads((tmp_path / "external" / "metrics.json").read_text())["n_samples"] == 4
