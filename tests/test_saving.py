"""`import keras_med` is all a fresh interpreter needs before `keras.saving.load_model` reads a keras_med file."""

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

from keras_med.models import create_model
from keras_med.training.compile import build_loss, build_metrics

ROOT = Path(__file__).resolve().parents[1]


def test_a_fresh_interpreter_loads_a_compiled_checkpoint_after_import_keras_med(tmp_path):
    model = create_model("custom_cnn", num_classes=3, image_size=32, task="multiclass", head_units=0, width=0.25)
    # A registered loss and metric in the compile config: Keras must find both to compile it back.
    model.compile(optimizer="adam", loss=build_loss("multiclass", logit_adjustment=1.0, class_priors=(0.5, 0.3, 0.2)),
                  metrics=build_metrics("multiclass", 3))
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    path = tmp_path / "best.keras"
    model.save(path)
    expected = model.predict(images, verbose=0)
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np, keras_med, keras\n"
        f"model = keras.saving.load_model({str(path)!r})\n"
        f"results = model.evaluate(np.load({str(tmp_path / 'images.npy')!r}), np.eye(3)[[0, 1]], return_dict=True, verbose=0)\n"
        "print(type(model).__name__, type(model.loss).__name__, sorted(results))\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, model.predict(np.load({str(tmp_path / 'images.npy')!r}), verbose=0))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "KERAS_BACKEND": keras.backend.backend()},
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    name, loss, metrics = result.stdout.strip().splitlines()[-1].split(" ", 2)
    assert (name, loss) == ("ImageClassifier", "LogitAdjustedCrossentropy")
    assert "balanced_accuracy" in metrics
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5)


def test_import_keras_med_does_not_import_keras():
    # The backend is chosen by a command's --backend after the package is imported (keras_med.backend).
    result = subprocess.run([sys.executable, "-c", "import sys, keras_med; print('keras' in sys.modules)"],
                            capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr[-2000:]
