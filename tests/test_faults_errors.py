"""Fault injection, a user's other mistakes: Ctrl-C in training, a damaged or Lambda `.keras` file, a web
page where the model server should be, and the lines a run prints (signatures, scikit-learn's warning).
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from keras_med.command_line import run_command
from keras_med.export.predictions import ServingError
from keras_med.models.saving import load_keras_model as load_keras_file
from keras_med.run_directory import RunContentError

REPO = Path(__file__).resolve().parents[1]

CTRL_C = textwrap.dedent("""
    import os, signal, sys, tempfile
    os.environ["KERAS_BACKEND"] = "jax"
    import keras, numpy as np
    from keras_med.command_line import run_command
    from keras_med.training.checkpoints import AtomicBackupAndRestore

    class PressCtrlC(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 1:
                os.kill(os.getpid(), signal.SIGINT)  # what the terminal sends on Ctrl-C
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    def body(argv):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        model.fit(np.zeros((32, 4)), np.zeros((32, 1)), batch_size=4, epochs=5, verbose=0,
                  callbacks=[AtomicBackupAndRestore(argv[0]), PressCtrlC()])
        print("finished")

    sys.exit(run_command("keras-med train", body, sys.argv[1:]))
""")


def test_ctrl_c_during_training_is_one_line_naming_the_epoch_and_exit_130(tmp_path):
    child = subprocess.run([sys.executable, "-c", CTRL_C, str(tmp_path / "backup")], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert child.returncode == 130, child.stderr[-2000:]
    assert "finished" not in child.stdout and "Traceback" not in child.stderr
    assert child.stderr.strip().splitlines()[-1] == \
        "keras-med train: stopped at epoch 3; re-run the same command to resume"
    # The two finished epochs are saved, so the re-run resumes after them.
    assert '"epoch": 2' in (tmp_path / "backup" / "training_metadata.json").read_text()


def _tiny_model(*layers):
    return keras.Sequential([keras.Input((4,)), *layers, keras.layers.Dense(2, activation="softmax",
                                                                             name="predictions")])


def test_damaged_keras_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "best.keras"
    _tiny_model(keras.layers.Dense(64)).save(path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)  # a few zeroed blocks, as a bad disk or an interrupted copy leaves
    path.write_bytes(bytes(data))
    with pytest.raises(RunContentError) as caught:
        load_keras_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "damaged or incomplete .keras file" in message or "Keras cannot load it" in message
    truncated = tmp_path / "torn.keras"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(RunContentError, match=f"^{truncated}: "):
        load_keras_file(truncated)


def test_keras_file_with_a_lambda_layer_is_one_line(tmp_path, capsys):
    path = tmp_path / "lambda.keras"
    _tiny_model(keras.layers.Lambda(lambda x: x * 2.0)).save(path)

    def body(argv):
        load_keras_file(argv[0])

    assert run_command("keras-med classify", body, [str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"keras-med classify: error: {path}: holds a Lambda layer")


class _HtmlPage(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        body = b"<!DOCTYPE html>\n<html><body>Welcome to nginx!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def test_server_answering_html_is_one_line(capsys):
    from keras_med.export.rest_client import RestPredictor

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HtmlPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        predictor = RestPredictor(f"http://127.0.0.1:{server.server_address[1]}", "ham")
        with pytest.raises(ServingError, match=r"the answer is not JSON \(it starts '<!DOCTYPE html> <html>"):
            predictor.answer_image_bytes([b"\x89PNG"])

        def body(argv):
            predictor.served_version()

        assert run_command("keras-med predict", body, []) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "expected TF Serving's REST API (port 8501)" in err[0]
    finally:
        server.shutdown()
        server.server_close()


def test_signature_summary_is_one_line_per_signature(tmp_path):
    import tensorflow as tf

    from keras_med.export.saved_model import summarize_signatures

    class Served(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            return {"probabilities": tf.zeros([tf.shape(image_bytes)[0], 3]), "top_class": tf.zeros_like(image_bytes)}

        @tf.function(input_signature=[])
        def metadata(self):
            return {"class_names": tf.constant(["a", "b", "c"])}

    module = Served()
    tf.saved_model.save(module, str(tmp_path / "1"),
                        signatures={"serving_default": module.serve, "metadata": module.metadata})
    assert summarize_signatures(tmp_path / "1").splitlines() == [
        "  metadata() -> class_names string[3]",
        "  serving_default(image_bytes string[?]) -> probabilities float[?,3], top_class string[?]",
    ]


def test_small_class_split_keeps_scikit_learns_warning_out_of_the_log():
    from keras_med.data import ImageTable, split_by_group

    rows = [{"path": f"/x/{i}.png", "group": f"p{i}", "label": "common|rare" if i < 3 else "common"}
            for i in range(60)]
    table = ImageTable(pd.DataFrame(rows), ["common", "rare"], "multilabel")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        split = split_by_group(table, 0.2, 0.2, seed=0)
    assert len(split.frame) == 60
    assert not [warning for warning in caught if "least populated class" in str(warning.message)]
    # The filter is scoped: scikit-learn's warning still reaches code of its own.
    from sklearn.model_selection import StratifiedGroupKFold

    with pytest.warns(UserWarning, match="least populated class"):
        next(StratifiedGroupKFold(5).split(np.zeros(60), np.r_[np.ones(3), np.zeros(57)], np.arange(60)))
