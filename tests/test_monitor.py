"""`keras-med monitor`: logs of training-kind images, then a run of another kind; the shift is found in its window."""

import json

import numpy as np
import pytest
import tensorflow as tf

from keras_med.cli import main
from keras_med.data.synthetic import draw_chest
from keras_med.monitoring.drift import psi
from test_export_guards import CLASSES, lesions, png, small_model
from helpers import export_with_trust

DAYS = ("2026-03-01T10:00:00+00:00", "2026-03-02T10:00:00+00:00", "2026-03-03T10:00:00+00:00")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = small_model()
    return export_with_trust(model, lesions(240, seed=0), lesions(120, seed=1),
                             tmp_path_factory.mktemp("saved_models"), CLASSES)


def write_files(folder, pictures, stem):
    folder.mkdir(exist_ok=True)
    paths = []
    for index, picture in enumerate(pictures):
        path = folder / f"{stem}{index:03d}.png"
        path.write_bytes(png(picture))
        paths.append(str(path))
    return paths


def json_log(model_dir, tmp_path):
    """Two days of lesions (the training kind) and a few unreadable files, as `predict --log` writes them."""
    from keras_med.export.prediction_log import PredictionLog
    from keras_med.export.predictor import load_predictor

    predictor = load_predictor(model_dir / "1")
    log = PredictionLog(tmp_path / "answers.jsonl")
    for day, seed in zip(DAYS[:2], (11, 12)):
        paths = write_files(tmp_path / f"day{seed}", lesions(80, seed=seed), "lesion")
        (tmp_path / f"day{seed}" / "notes.txt").write_text("not an image")
        log.write(predictor.predict_files(paths + [str(tmp_path / f"day{seed}" / "notes.txt")]), "skin", 1)
        lines = (tmp_path / "answers.jsonl").read_text().splitlines()
        # PredictionLog stamps "now"; the test spreads the answers over days.
        retimed = [line if json.loads(line)["time"].startswith("2026-03") else
                   json.dumps({**json.loads(line), "time": day}) for line in lines]
        (tmp_path / "answers.jsonl").write_text("\n".join(retimed) + "\n")
    return tmp_path / "answers.jsonl"


def serving_log(model_dir, tmp_path):
    """A third day of chest X-rays, as TF Serving's request logging writes it (PredictionLog TFRecords)."""
    from tensorflow_serving.apis import logging_pb2, model_pb2, predict_pb2, prediction_log_pb2

    served = tf.saved_model.load(str(model_dir / "1"))
    rng = np.random.default_rng(5)
    chests = [np.repeat(draw_chest([], rng, 32)[..., None], 3, axis=-1) for _ in range(60)]
    path = tmp_path / "serving_requests.tfrecord"
    timestamp = int(np.datetime64(DAYS[2][:19]).astype("datetime64[s]").astype(int))
    with tf.io.TFRecordWriter(str(path)) as writer:
        for start in range(0, len(chests), 20):
            data = [png(image) for image in chests[start:start + 20]]
            outputs = served.signatures["serving_default"](image_bytes=tf.constant(data))
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="skin"))
            request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(data))
            response = predict_pb2.PredictResponse()
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            writer.write(prediction_log_pb2.PredictionLog(
                log_metadata=logging_pb2.LogMetadata(model_spec=model_pb2.ModelSpec(name="skin"),
                                                     timestamp_secs=timestamp + start),
                predict_log=prediction_log_pb2.PredictLog(request=request, response=response)).SerializeToString())
    return path


def test_monitor_finds_the_shift_in_its_window_and_not_before(model_dir, tmp_path):
    logs = [json_log(model_dir, tmp_path), serving_log(model_dir, tmp_path)]
    out = tmp_path / "report"
    # the export's own warm-up file is a PredictionLog too: requests without responses, read and skipped
    warmup = model_dir / "1" / "assets.extra" / "tf_serving_warmup_requests"
    assert main(["monitor", *map(str, logs), str(warmup), "--model", str(model_dir), "--out", str(out)]) == 1
    report = json.loads((out / "monitor.json").read_text())
    windows = report["windows"]
    assert [row["window"][:10] for row in windows] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    assert [bool(row["alerts"]) for row in windows] == [False, False, True]
    assert [row["requests"] for row in windows] == [81, 81, 60]
    assert windows[0]["invalid_by_reason"] == {"not a JPEG, PNG, GIF or BMP image, nor a TIFF, WebP or DICOM file": 1}
    for row in windows[:2]:
        assert row["ood_rate"] < 0.15 and row["psi"] < 0.2 and row["ood_p_value"] > 1e-3
    assert windows[2]["ood_rate"] > 0.9 and windows[2]["ood_p_value"] < 1e-6
    assert "out-of-distribution rate" in windows[2]["alerts"][0]
    assert all(0 < row["mean_top_probability"] <= 1 and row["mean_set_size"] >= 0 for row in windows)
    assert report["reference"]["expected_ood_rate"] == pytest.approx(0.05, abs=0.02)
    assert (out / "monitor.png").stat().st_size > 10_000
    assert "| 2026-03-03" in (out / "monitor.md").read_text() and "data:image/png" in (out / "monitor.html").read_text()

    # the first two days alone raise nothing
    assert main(["monitor", str(logs[0]), "--model", str(model_dir), "--out", str(tmp_path / "calm")]) == 0


def test_psi_is_zero_for_the_same_mix_and_grows_with_the_shift():
    same = np.array([0.2, 0.3, 0.5])
    assert psi(same, same) == 0.0
    assert 0 < psi([0.25, 0.3, 0.45], same) < psi([0.6, 0.3, 0.1], same)


def test_a_changed_class_mix_alerts_on_psi_alone():
    import pandas as pd

    from keras_med.monitoring.drift import Reference, window_rows

    reference = Reference(["a", "b", "c"], 0.05, np.array([0.2, 0.3, 0.5]), 0.8, 1.2)
    rng = np.random.default_rng(0)
    days = np.repeat(pd.to_datetime(["2026-03-01", "2026-03-02"], utc=True), 200)
    top = np.r_[rng.choice(["a", "b", "c"], 200, p=[0.2, 0.3, 0.5]), rng.choice(["a", "b", "c"], 200, p=[0.6, 0.3, 0.1])]
    table = pd.DataFrame({"time": days, "valid": True, "reason": "", "in_distribution": rng.random(400) > 0.05,
                          "ood_score": 1.0, "top_class": top, "top_probability": 0.8, "set_size": 1.0, "source": "x"})
    first, second = window_rows(table, reference)
    assert not first["alerts"] and first["chi2_p_value"] > 0.01
    assert second["alerts"] == [f"class-mix PSI {second['psi']:.2f} > 0.2"] and second["chi2_p_value"] < 1e-6


def test_monitor_refuses_a_file_that_is_no_log(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"no": "time"}\n')
    assert main(["monitor", str(bad), "--model", str(model_dir), "--out", str(tmp_path / "r")]) == 2
    assert "bad.jsonl, line 1" in capsys.readouterr().err
