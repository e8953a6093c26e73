"""Prediction: local SavedModel and .keras, the REST client against a TF-Serving-like test server,
prediction logging, bad input, and the `keras-med export` / `predict` command functions."""

import json
import sys
import threading
from http.server import ThreadingHTTPServer

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_med.errors import ConfigError, RunFileError
from keras_med.export import command_export, command_predict, export_for_serving
from keras_med.export.predictions import ImageInputError, ServingError, check_pixels
from keras_med.export.predictor import load_predictor
from keras_med.export.rest_client import RestPredictor
from keras_med.export.saved_model import keras_probabilities

from helpers import CXR_CLASSES as CLASSES, SIZE, FakeTFServing, parse_command_args, tiny_cnn



def tiny_model(seed=0):
    return tiny_cnn(rescale="unit", seed=seed)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    model = tiny_model()
    images = np.random.default_rng(2).integers(0, 256, size=(3, SIZE, SIZE, 3)).astype(np.uint8)
    files = []
    for index, image in enumerate(images):
        path = root / f"image{index}.png"
        Image.fromarray(image).save(path)
        files.append(str(path))
    (root / "notes.txt").write_text("not an image")
    saved = export_for_serving(model, name="cxr", base_dir=root / "saved_models", class_names=CLASSES,
                               thresholds=[0.3, 0.3, 0.3])
    expected = keras_probabilities(model, images.astype(np.float32), "multiclass")
    return {"root": root, "model": model, "files": files, "saved": saved, "expected": expected,
            "text_file": str(root / "notes.txt")}


@pytest.fixture(scope="module")
def server(setup):
    handler = type("Handler", (FakeTFServing,), {"loaded": tf.saved_model.load(str(setup["saved"])), "name": "cxr"})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _check_answers(predictions, setup):
    assert [p.source for p in predictions] == setup["files"]
    for prediction, expected in zip(predictions, setup["expected"]):
        assert prediction.valid and prediction.error == ""
        np.testing.assert_allclose([prediction.probabilities[name] for name in CLASSES], expected, atol=1e-5)
        assert prediction.top_class == CLASSES[int(expected.argmax())]
        assert prediction.decisions == [name for name, p in zip(CLASSES, expected) if p >= 0.3]
        assert len(prediction.input_sha256) == 64


def test_local_saved_model_predicts_files_and_pixels(setup):
    predictor = load_predictor(setup["saved"])
    assert (predictor.name, predictor.version) == ("cxr", 1)
    _check_answers(predictor.predict_files(setup["files"], batch_size=2), setup)
    pixels = np.stack([np.asarray(Image.open(path)) for path in setup["files"]])
    by_pixels = predictor.predict_pixels(pixels)
    np.testing.assert_allclose([[p.probabilities[n] for n in CLASSES] for p in by_pixels], setup["expected"], atol=1e-5)


def test_keras_file_reads_class_names_from_its_run_directory(setup):
    run_dir = setup["root"] / "runs" / "cxr" / "stamp"
    (run_dir / "checkpoints").mkdir(parents=True)
    setup["model"].save(run_dir / "checkpoints" / "best.keras")
    with pytest.raises(FileNotFoundError, match="class_names.json"):
        load_predictor(run_dir / "checkpoints" / "best.keras")
    (run_dir / "class_names.json").write_text(json.dumps({"class_names": CLASSES, "task": "multiclass"}))
    (run_dir / "metrics.json").write_text(json.dumps({"thresholds": [0.3, 0.3, 0.3]}))
    predictor = load_predictor(run_dir / "checkpoints" / "best.keras")
    assert predictor.name == "stamp"
    _check_answers(predictor.predict_files(setup["files"]), setup)


def test_bad_files_are_named_and_others_still_answered(setup, server, tmp_path):
    predictor = load_predictor(setup["saved"])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = str(tmp_path / "missing.jpg")
    answers = predictor.predict_files([setup["text_file"], setup["files"][0], str(empty), missing])
    assert [a.valid for a in answers] == [False, True, False, False]
    assert "notes.txt: not a JPEG, PNG, GIF or BMP image, nor a TIFF, WebP or DICOM file" in answers[0].error
    assert "empty input" in answers[2].error and "no such file" in answers[3].error

    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    for client in (predictor, RestPredictor(server, "cxr")):
        answers = client.predict_files([setup["files"][0], str(corrupt), setup["files"][1]])
        assert [a.valid for a in answers] == [True, False, True]
        assert answers[1].error == "truncated: the PNG ends before its IEND chunk"


@pytest.mark.parametrize("pixels, message", [
    (np.zeros((2, 8, 8, 1), np.uint8), "shape"),
    (np.zeros((8, 3), np.uint8), "shape"),
    (np.zeros((1, 8, 8, 3), np.int64), "dtype"),
    (np.full((1, 8, 8, 3), 300.0), "0..255"),
    (np.full((1, 8, 8, 3), np.nan), "finite"),
])
def test_bad_pixels_are_rejected_before_sending(pixels, message):
    with pytest.raises(ImageInputError, match=message):
        check_pixels(pixels)


def test_rest_client_speaks_tf_serving_protocol(setup, server):
    client = RestPredictor(server, "cxr")
    assert client.served_version() == 1
    _check_answers(client.predict_files(setup["files"], batch_size=2), setup)
    pixels = np.stack([np.asarray(Image.open(path)) for path in setup["files"]])
    by_pixels = client.predict_pixels(pixels)
    np.testing.assert_allclose([[p.probabilities[n] for n in CLASSES] for p in by_pixels], setup["expected"], atol=1e-5)
    answers = client.predict_files([setup["text_file"]])
    assert not answers[0].valid and "nor a TIFF, WebP or DICOM file" in answers[0].error

    with pytest.raises(ServingError, match="HTTP 404: Servable not found"):
        RestPredictor(server, "nope").predict_files(setup["files"][:1])
    with pytest.raises(ValueError, match="http"):
        RestPredictor("localhost:8501", "cxr")


def test_rest_client_names_an_unreachable_server(setup):
    with pytest.raises(ServingError, match="cannot reach"):
        RestPredictor("http://127.0.0.1:9", "cxr", timeout=5).predict_files(setup["files"][:1])


def test_grpc_client_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_serving", None)
    monkeypatch.setitem(sys.modules, "tensorflow_serving.apis", None)
    from keras_med.export.grpc_client import GrpcPredictor

    with pytest.raises(ImportError, match="pip install tensorflow-serving-api"):
        GrpcPredictor("localhost:8500", "cxr")


def test_predict_command_prints_json_and_logs(setup, server, tmp_path, capsys):
    log = tmp_path / "logs" / "predictions.jsonl"
    code = command_predict.run(parse_command_args(command_predict, ["--server", server, "--name", "cxr", "--json",
                                                        "--log", str(log), *setup["files"], setup["text_file"]]))
    assert code == 2
    printed = json.loads(capsys.readouterr().out)
    assert [item["valid"] for item in printed] == [True, True, True, False]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 4 and records[0]["model"] == "cxr" and records[0]["version"] == 1
    assert records[0]["input"] == setup["files"][0] and len(records[0]["input_sha256"]) == 64
    assert records[0]["output"]["top_class"] == printed[0]["top_class"] and "time" in records[0]

    assert command_predict.run(parse_command_args(command_predict, ["--model", str(setup["saved"]), setup["files"][0]])) == 0
    assert capsys.readouterr().out.startswith(setup["files"][0] + ": ")
    with pytest.raises(ConfigError, match="--server needs --name"):
        command_predict.run(parse_command_args(command_predict, ["--server", server, setup["files"][0]]))


def test_export_command_writes_next_version_and_prints_signatures(setup, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    setup["model"].save(run_dir / "checkpoints" / "best.keras")
    (run_dir / "class_names.json").write_text(json.dumps(CLASSES))
    argv = ["--model", str(run_dir / "checkpoints" / "best.keras"), "--name", "cxr", "--base-dir", str(tmp_path / "sm")]
    assert command_export.run(parse_command_args(command_export, argv)) == 0
    assert command_export.run(parse_command_args(command_export, argv)) == 0
    out = capsys.readouterr().out
    assert "signature_def['serving_default']" in out and "inputs['image_bytes']" in out
    assert sorted(p.name for p in (tmp_path / "sm" / "cxr").iterdir()) == ["1", "2"]
    # A user's mistake is raised; keras_med.command_line.run_command turns it into one line and exit 2.
    with pytest.raises(RunFileError, match="nope.keras"):
        command_export.run(parse_command_args(command_export, ["--model", str(tmp_path / "nope.keras"), "--name", "x"]))


def _keras_run(setup, tta="none"):
    """The setup's model as `runs/cxr/stamp/checkpoints/best.keras` with its class names, thresholds and tta."""
    run_dir = setup["root"] / "runs" / "cxr" / f"stamp_{tta}"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    setup["model"].save(run_dir / "checkpoints" / "best.keras")
    (run_dir / "class_names.json").write_text(json.dumps({"class_names": CLASSES, "task": "multiclass"}))
    (run_dir / "metrics.json").write_text(json.dumps({"thresholds": [0.3, 0.3, 0.3]}))
    (run_dir / "config.toml").write_text(f'[evaluation]\ntta = "{tta}"\n')
    return run_dir / "checkpoints" / "best.keras"


def test_one_predictor_for_a_keras_file_a_saved_model_and_a_server(setup, server):
    """The same abstraction answers for the three sources, with the same description and probabilities."""
    from keras_med.export.connect import open_predictor

    pixels = np.stack([np.asarray(Image.open(path), np.float32) for path in setup["files"]])
    sources = {"keras": open_predictor(model=_keras_run(setup)), "saved": open_predictor(model=setup["saved"]),
               "server": open_predictor(server=server, name="cxr")}
    for kind, predictor in sources.items():
        np.testing.assert_allclose(predictor.predict(pixels), setup["expected"], atol=1e-5, err_msg=kind)
        _check_answers(predictor.predict_files(setup["files"]), setup)
    for kind in ("keras", "saved"):
        described = sources[kind].describe()
        assert (described.run.class_names, described.run.task, described.image_size) == (CLASSES, "multiclass", SIZE)
        assert sources[kind].input_shape == (None, SIZE, SIZE, 3)
    with pytest.raises(ServingError, match="refused some images"):
        sources["saved"].predict(np.zeros((1, 4, 4, 3), np.float32))  # smaller than the smallest image side
    with pytest.raises(ConfigError, match="--model PATH or --server URL"):
        open_predictor()


def test_tta_is_a_mode_in_predict_and_the_copy_count_has_its_own_flag(setup, server, capsys):
    from keras_med.export.connect import open_predictor

    pixels = np.stack([np.asarray(Image.open(path), np.float32) for path in setup["files"]])
    # flips on a .keras file: the mean over the original and the two flipped images, as the export serves it
    flipped = open_predictor(model=_keras_run(setup), tta="flips").predict(pixels)
    views = [pixels, pixels[:, :, ::-1], pixels[:, ::-1]]
    expected = np.mean([keras_probabilities(setup["model"], view, "multiclass") for view in views], axis=0)
    np.testing.assert_allclose(flipped, expected, atol=1e-5)
    assert not np.allclose(flipped, setup["expected"], atol=1e-4)  # the flips change the answer here
    # the run's own setting is the default
    np.testing.assert_allclose(open_predictor(model=_keras_run(setup, "flips")).predict(pixels), expected, atol=1e-5)
    # an exported model applies its own: another mode is refused, not ignored
    with pytest.raises(ConfigError, match="--tta flips: the SavedModel"):
        open_predictor(model=setup["saved"], tta="flips")
    open_predictor(model=setup["saved"], tta="none")
    with pytest.raises(ConfigError, match="drop --tta"):
        open_predictor(server=server, name="cxr", tta="flips")
    # the former copy count names its new flag
    with pytest.raises(SystemExit):
        parse_command_args(command_predict, ["--model", str(setup["saved"]), "--tta", "8", setup["files"][0]])
    assert "--tta-spread 8" in capsys.readouterr().err
    args = parse_command_args(command_predict, ["--model", str(setup["saved"]), "--tta-spread", "3", "--json", setup["files"][0]])
    assert command_predict.run(args) == 0
    assert set(json.loads(capsys.readouterr().out)[0]["tta_spread"]) == set(CLASSES)
