"""The HAM10000 demo recipe end to end on the JAX backend, checked from this (TensorFlow) process.

One subprocess (about 60-90 s on two busy cores) runs the tiny demo with `--backend jax`: training
with callbacks and checkpoints, evaluation, Grad-CAM through `jax.grad`, and the export through
jax2tf; then it writes the JAX model's probabilities on fixed pixels. This process checks the run
directory, and that the SavedModel answers like the JAX model and like its `.keras` file reloaded
under TensorFlow.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from keras_med.backend import select_backend
from keras_med.errors import ConfigError

from helpers import tiny_cnn

REPO = Path(__file__).resolve().parent.parent
PIXELS_SEED = 7

JAX_RUN = textwrap.dedent("""
    import sys
    import numpy as np
    from keras_med.recipes import ham10000
    from keras_med.engine.command import main

    root, run_dir = sys.argv[1], sys.argv[2]
    code = main(ham10000.SPEC, ["--backend", "jax", "--demo", "--demo-size", "112", "--image-size", "32",
                                "--epochs", "2", "--batch-size", "16", "--bootstrap", "20", "--explain", "1",
                                "--output-dir", root + "/runs", "--run-dir", run_dir,
                                "--saved-models", root + "/saved_models"])
    import keras
    assert code == 0 and keras.backend.backend() == "jax"
    model = keras.saving.load_model(run_dir + "/checkpoints/best.keras")
    pixels = np.random.default_rng({seed}).integers(0, 256, size=(3, 32, 32, 3)).astype("float32")
    np.save(run_dir + "/jax_probabilities.npy", np.asarray(model.predict(pixels, verbose=0)))
""").format(seed=PIXELS_SEED)


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("jax")
    run_dir = root / "runs" / "ham10000" / "jax"
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("KERAS_BACKEND", None)
    result = subprocess.run([sys.executable, "-c", JAX_RUN, str(root), str(run_dir)], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, run_dir


@pytest.mark.system
def test_jax_run_writes_every_output_and_records_its_backend(jax_run):
    from keras_med.config import RecipeConfig

    _, run_dir = jax_run
    for name in ["checkpoints/best.keras", "history.csv", "training_done.json", "metrics.json", "report.md"]:
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "gradcam").glob("*.png")), "no Grad-CAM overlays from the JAX model"
    assert RecipeConfig.load(run_dir / "config.toml").train.backend == "jax"
    assert "train.backend = 'jax'" in (run_dir / "report.md").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["balanced_accuracy"]["value"] <= 1.0


@pytest.mark.system
def test_savedmodel_of_a_jax_model_answers_like_it(jax_run):
    import keras
    import tensorflow as tf

    root, run_dir = jax_run
    pixels = np.random.default_rng(PIXELS_SEED).integers(0, 256, size=(3, 32, 32, 3)).astype("float32")
    served = tf.saved_model.load(str(root / "saved_models" / "ham10000" / "1"))
    probabilities = served.signatures["predict_pixels"](pixels=tf.constant(pixels))["probabilities"].numpy()
    from keras_med.evaluation.decision_rule import read_decision_rule

    # The run's decision rule, when it has one (--decision-rule), is inside the served model.
    rule = read_decision_rule(run_dir / "checkpoints" / "best.keras")
    decide = rule.apply if rule is not None else np.asarray
    np.testing.assert_allclose(probabilities, decide(np.load(run_dir / "jax_probabilities.npy")), atol=1e-4)
    # The .keras file a JAX run writes is the same format: it reloads and answers under TensorFlow.
    model = keras.saving.load_model(run_dir / "checkpoints" / "best.keras", compile=False)
    np.testing.assert_allclose(decide(model.predict(pixels, verbose=0)), probabilities, atol=1e-4)


def test_backend_flag_refuses_a_backend_keras_was_not_started_with():
    import keras

    assert select_backend("auto") == keras.backend.backend()
    other = "jax" if keras.backend.backend() != "jax" else "tensorflow"
    with pytest.raises(ConfigError, match=f"--backend {other}: Keras was already imported"):
        select_backend(other)
    with pytest.raises(ConfigError, match="--backend: expected one of"):
        select_backend("theano")


JAX_GRADCAM = textwrap.dedent("""
    import sys
    import keras
    import numpy as np
    from keras_med.explain import compute_gradcam

    assert keras.backend.backend() == "jax"
    model = keras.saving.load_model(sys.argv[1])
    images = np.load(sys.argv[2])
    for method in ("gradcam", "gradcam++"):
        np.save(sys.argv[3] + method + ".npy", compute_gradcam(model, images, class_index=[0, 1, 2], method=method))
""")


def test_jax_gradcam_agrees_with_tf_keras_vis(tmp_path):
    """The keras.ops Grad-CAM with jax.grad answers what tf-keras-vis answers under TensorFlow."""
    from keras_med.explain.gradcam import reference_gradcam

    model = tiny_cnn(size=24, seed=0, convs=((8, 2),), rescale="unit")
    model.save(tmp_path / "tiny.keras")
    images = np.random.default_rng(PIXELS_SEED).integers(0, 256, size=(3, 24, 24, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "KERAS_BACKEND": "jax"}
    result = subprocess.run([sys.executable, "-c", JAX_GRADCAM, str(tmp_path / "tiny.keras"),
                             str(tmp_path / "images.npy"), str(tmp_path / "jax_")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for method in ("gradcam", "gradcam++"):
        reference = reference_gradcam(model, images, np.array([0, 1, 2]), method, "feature_map")
        assert reference.max() > 0.5
        np.testing.assert_allclose(np.load(tmp_path / f"jax_{method}.npy"), reference, atol=1e-4)
