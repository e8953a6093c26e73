"""Fault injection on the serving side (issue 10, items 4, 5 and 10): a bad image in a served batch
is flagged on its own row with a reason, never fails the others; tiny images are refused; the
format is read from the bytes, not the file name; `keras-med predict` names each bad file in one line."""

import io
import json
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_med.export import command_predict, export_for_serving
from keras_med.export.metadata import ServingMetadata
from keras_med.export.predictor import load_predictor, one_line_error
from keras_med.export.rest_client import RestPredictor
from keras_med.image_format import sniff_image_format
from helpers import CXR_CLASSES as CLASSES, FakeTFServing, parse_command_args, tiny_cnn

ROOT = Path(__file__).resolve().parents[1]


def encode(pixels, image_format):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def random_pixels(seed, width=48, height=40):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny exported model, its .keras run directory, and good and bad image files."""
    root = tmp_path_factory.mktemp("faults_serving")
    model = tiny_cnn(rescale="unit")
    saved = export_for_serving(model, name="cxr", base_dir=root / "saved_models", class_names=CLASSES)
    run_dir = root / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    model.save(run_dir / "checkpoints" / "best.keras")
    (run_dir / "class_names.json").write_text(json.dumps({"class_names": CLASSES, "task": "multiclass"}))

    jpeg, png = encode(random_pixels(1), "JPEG"), encode(random_pixels(2), "PNG")
    contents = {
        "good.jpg": jpeg,
        "truncated.jpg": jpeg[:len(jpeg) // 2],           # valid header, cut mid-scan
        "good.png": png,
        "header_only.png": png[:33],                      # signature and IHDR, nothing else
        "one_pixel.png": encode(np.full((1, 1, 3), 200, np.uint8), "PNG"),
        "png_named.jpg": png,                             # a PNG under a .jpg name
        "gif_named.jpg": encode(random_pixels(3), "GIF"),
        "real.gif": encode(random_pixels(3), "GIF"),
    }
    images = root / "images"
    images.mkdir()
    for name, data in contents.items():
        (images / name).write_bytes(data)
    return {"model": model, "saved": saved, "keras": run_dir / "checkpoints" / "best.keras", "images": images,
            "bytes": contents, "loaded": tf.saved_model.load(str(saved))}


@pytest.fixture(scope="module")
def server(served):
    handler = type("Handler", (FakeTFServing,), {"loaded": served["loaded"], "name": "cxr", "posts": []})
    original = handler.do_POST

    def counting_post(self):
        handler.posts.append(self.path)
        original(self)

    handler.do_POST = counting_post
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.posts
    httpd.shutdown()
    httpd.server_close()


BATCH = ["good.jpg", "truncated.jpg", "good.png", "header_only.png", "one_pixel.png"]
EXPECTED_VALID = [True, False, True, False, False]
EXPECTED_REASONS = ["", "truncated: the JPEG ends before its end-of-image marker", "",
                    "truncated: the PNG ends before its IEND chunk",
                    "too_small: 1x1 pixels; the model needs at least 32 on the short side"]


def test_a_bad_row_is_flagged_and_the_good_rows_answer_as_alone(served):
    signature = served["loaded"].signatures["serving_default"]
    batch = signature(image_bytes=tf.constant([served["bytes"][name] for name in BATCH]))
    assert batch["valid"].numpy().tolist() == EXPECTED_VALID
    assert [reason.decode() for reason in batch["reason"].numpy()] == EXPECTED_REASONS
    for row, name in enumerate(BATCH):
        if EXPECTED_VALID[row]:
            alone = signature(image_bytes=tf.constant([served["bytes"][name]]))
            np.testing.assert_array_equal(batch["probabilities"].numpy()[row], alone["probabilities"].numpy()[0])
            assert batch["top_class_name"].numpy()[row] == alone["top_class_name"].numpy()[0] != b""
        else:
            assert batch["top_class_index"].numpy()[row] == -1 and batch["top_class_name"].numpy()[row] == b""
            assert not batch["probabilities"].numpy()[row].any() and not batch["decisions"].numpy()[row].any()


def test_a_corrupt_body_behind_a_good_header_and_ending_is_caught_by_the_decoder(served):
    png = bytearray(served["bytes"]["good.png"])
    png[len(png) // 2] ^= 0xFF                           # breaks the IDAT's CRC and zlib stream
    huge = served["bytes"]["good.png"][:16] + (100_000).to_bytes(4, "big") * 2 + served["bytes"]["good.png"][24:]
    answer = served["loaded"].signatures["serving_default"](
        image_bytes=tf.constant([bytes(png), served["bytes"]["good.png"], huge,
                                 b"GIF89a" + (64).to_bytes(2, "little") * 2 + b"\x00" * 40]))
    assert answer["valid"].numpy().tolist() == [False, True, False, False]
    reasons = [reason.decode() for reason in answer["reason"].numpy()]
    assert reasons[0] == "corrupt: the PNG decoder could not read it"
    assert reasons[2].startswith("too_large: 100000x100000 pixels")
    assert reasons[3] == "truncated: the GIF ends before its trailer"


def test_minimum_size_is_stored_with_the_model_and_applies_to_pixels(served, tmp_path):
    metadata = served["loaded"].signatures["metadata"]()
    assert int(metadata["min_image_size"].numpy()) == 32
    stored = json.loads((served["saved"] / "assets.extra" / "keras_med.json").read_text())
    assert stored["min_image_size"] == 32
    assert ServingMetadata(("a", "b"), "binary", 16).min_image_size == 16   # never above the model's own size
    with pytest.raises(ValueError, match="min_image_size"):
        ServingMetadata(("a", "b"), "binary", 64, min_image_size=0)

    pixels = served["loaded"].signatures["predict_pixels"]
    small = pixels(pixels=tf.fill([2, 31, 40, 3], 100.0))
    assert not small["valid"].numpy().any()
    assert small["reason"].numpy()[0] == b"too_small: 40x31 pixels; the model needs at least 32 on the short side"
    assert pixels(pixels=tf.fill([1, 32, 32, 3], 100.0))["valid"].numpy().all()
    edge = served["loaded"].signatures["serving_default"](
        image_bytes=tf.constant([encode(random_pixels(4, 32, 31), "PNG"), encode(random_pixels(4, 32, 32), "PNG")]))
    assert edge["valid"].numpy().tolist() == [False, True]


def test_format_is_read_from_the_bytes_not_the_name(served):
    assert sniff_image_format(served["bytes"]["png_named.jpg"]) == "png"
    assert sniff_image_format(served["bytes"]["gif_named.jpg"]) == "gif"
    assert sniff_image_format(b"BM\x00\x00") == "bmp" and sniff_image_format(b"<html>") is None
    images = served["images"]
    for predictor in (load_predictor(served["saved"]), load_predictor(served["keras"])):
        png_named, png, gif_named, gif = predictor.predict_files(
            [images / "png_named.jpg", images / "good.png", images / "gif_named.jpg", images / "real.gif"])
        assert png_named.valid and gif_named.valid and gif.valid
        assert png_named.probabilities == png.probabilities
        assert gif_named.probabilities == gif.probabilities
    # The PNG under a .jpg name reaches the model as its exact pixels (PNG is lossless; the
    # 48x40 image is resized to 32x32 as the training pipeline does).
    served_probabilities = served["loaded"].signatures["serving_default"](
        image_bytes=tf.constant([served["bytes"]["png_named.jpg"]]))["probabilities"].numpy()
    by_pixels = served["loaded"].signatures["predict_pixels"](
        pixels=tf.constant(random_pixels(2)[None].astype(np.float32)))["probabilities"].numpy()
    np.testing.assert_array_equal(served_probabilities, by_pixels)
    bmp_named = served["loaded"].signatures["serving_default"](image_bytes=tf.constant([encode(random_pixels(2), "BMP")]))
    assert bmp_named["valid"].numpy().all()
    np.testing.assert_array_equal(bmp_named["probabilities"].numpy(), by_pixels)
    gif_pixels = np.asarray(Image.open(images / "gif_named.jpg").convert("RGB"), np.float32)
    gif_served = served["loaded"].signatures["predict_pixels"](pixels=tf.constant(gif_pixels[None]))
    np.testing.assert_allclose(gif_named.probabilities["normal"], gif_served["probabilities"].numpy()[0, 0], atol=1e-6)


@pytest.mark.parametrize("client", ["saved_model", "keras", "rest"])
def test_every_client_answers_the_good_files_in_one_request_and_names_the_bad(served, server, client):
    url, posts = server
    predictor = {"saved_model": lambda: load_predictor(served["saved"]), "keras": lambda: load_predictor(served["keras"]),
                 "rest": lambda: RestPredictor(url, "cxr")}[client]()
    before = len(posts)
    answers = predictor.predict_files([served["images"] / name for name in BATCH], batch_size=len(BATCH))
    if client == "rest":
        assert len(posts) == before + 1                   # no image-by-image retry was needed
    assert [answer.valid for answer in answers] == EXPECTED_VALID
    assert [answer.error for answer in answers] == EXPECTED_REASONS
    for answer, name in zip(answers, BATCH):
        if answer.valid:
            alone = predictor.predict_files([served["images"] / name])[0]
            np.testing.assert_allclose([answer.probabilities[c] for c in CLASSES],
                                       [alone.probabilities[c] for c in CLASSES], atol=1e-6)
            assert answer.top_class == alone.top_class and answer.error == ""


def test_predict_command_prints_good_rows_and_one_line_per_bad_file(served, server, capsys):
    url, _ = server
    files = [str(served["images"] / name) for name in BATCH]
    for source in (["--model", str(served["saved"])], ["--model", str(served["keras"])], ["--server", url, "--name", "cxr"]):
        assert command_predict.run(parse_command_args(command_predict, [*source, *files])) == 2
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == len(files)
        for line, path, valid, reason in zip(lines, files, EXPECTED_VALID, EXPECTED_REASONS):
            assert line.startswith(path + ": ")
            assert (line == f"{path}: ERROR {reason}") != valid


@pytest.mark.system
def test_predict_command_line_exits_2_without_a_traceback(served):
    files = [str(served["images"] / name) for name in ("good.png", "truncated.jpg")]
    result = subprocess.run([sys.executable, "-m", "keras_med.cli", "predict", "--model", str(served["saved"]), *files],
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 2, result.stderr
    assert result.stdout.splitlines()[0].startswith(files[0] + ": ")
    assert result.stdout.splitlines()[1] == f"{files[1]}: ERROR truncated: the JPEG ends before its end-of-image marker"
    assert "Traceback" not in result.stdout + result.stderr
    assert "Graph execution error" not in result.stdout + result.stderr


def test_a_refused_request_is_reported_in_one_line():
    """What a model exported before the per-row checks raises, as the client retries and reports it."""
    decode = tf.function(lambda data: tf.io.decode_jpeg(data), input_signature=[tf.TensorSpec([], tf.string)])
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        decode(tf.constant(b"\xff\xd8\xff\xe0garbage"))
    assert "\n" in caught.value.message
    assert one_line_error(caught.value).startswith("jpeg::Uncompress failed")
