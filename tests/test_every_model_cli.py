"""Every registered model trains, exports, predicts, evaluates and explains through the CLI.

Each model is trained for one step at 32 px from random weights on a tiny synthetic HAM10000 set,
then its checkpoint goes through `keras-med export`, `predict`, `evaluate` and `explain`, all in
this process. resnet50 and vgg16 carry the custom layer `ReverseChannels`, which every command
must find when it loads the `.keras` file (keras_med.run_directory).

Cost: well above the ~90 s this was sized for. Each model traces its graph in every command
(train step, validation, SavedModel signatures and their reload check, prediction, Grad-CAM), so
a deep backbone costs minutes even at 32 px. Wall time per model on the shared 2-core development
machine at a load average of ~10 (2026-11-30): vgg16 3 min, mobilenetv2 4 min, resnet50 8 min,
efficientnetb0 10 min, efficientnetb1-b4 4-8 min each, densenet121 11 min (about 3 min of CPU);
all ten about an hour. Hence the `slow` marker (CI still runs it).
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
    assert capsys.readouterr().out.split() == available_models()


@pytest.mark.slow
@pytest.mark.parametrize("name", available_models())
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

    capsys.readouterr()
    assert cli_main(["predict", "--model", model, "--json", *map(str, images)]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [answer["valid"] for answer in answers] == [True, True]
    assert abs(sum(answers[0]["probabilities"].values()) - 1.0) < 1e-4

    assert cli_main(["evaluate", "--model", model, "--labels", str(root / "labels.csv"), "--images", str(demo),
                     "--out", str(tmp_path / "external"), "--bootstrap", "0", "--explain", "0"]) == 0
    assert json.loads((tmp_path / "external" / "metrics.json").read_text())["n_samples"] == 4

    assert cli_main(["explain", "--model", model, str(images[0]), "--out", str(tmp_path / "cam")]) == 0
    assert (tmp_path / "cam" / f"{images[0].stem}_gradcam.png").stat().st_size > 0
