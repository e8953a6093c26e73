"""Read what a deployed model was asked: the project's JSON-lines prediction logs and TF Serving's request logs.

Both become one table, one row per answered image: `time` (UTC), `valid`, `reason` (the code before
the colon of an invalid row's reason), `in_distribution`, `ood_score`, `top_class`,
`top_probability` and `set_size`.
- JSON lines: `keras-med predict --log`, the page's `--log` and the REST client
  (`keras_med.export.prediction_log`).
- TF Serving's request logging writes `PredictionLog` protos to TFRecord files (the format of the
  export's warm-up file, `keras_med.export.warmup`); each logged `predict_log` with a response
  gives one row per image of the request, timed by `log_metadata.timestamp_secs`. A record without a
  response (a warm-up request) answers nothing and is skipped.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pandas as pd

from keras_med.errors import UserError

COLUMNS = ("time", "valid", "reason", "in_distribution", "ood_score", "top_class", "top_probability", "set_size",
           "source")


def _reason_code(error: str) -> str:
    """The reason's code (`unknown_format`, `too_small`, ...): a client-side message starts with the file's path."""
    for part in (error or "").split(": "):
        if part and all(char.islower() or char == "_" for char in part):
            return part
    # A client-side refusal has no code: its message, without the path in front or the detail in brackets.
    message = (error or "").split(": ", 1)[-1].split(" (", 1)[0].strip()
    return message or "unknown"


def _row(time, output: dict, source: str) -> dict:
    probabilities = output.get("probabilities") or {}
    valid = bool(output.get("valid"))
    in_distribution = output.get("in_distribution")
    return {"time": time, "valid": valid, "reason": "" if valid else _reason_code(output.get("error", "")),
            "in_distribution": None if in_distribution is None else bool(in_distribution),
            "ood_score": output.get("ood_score"), "top_class": output.get("top_class") if valid else None,
            "top_probability": max(probabilities.values()) if valid and probabilities else np.nan,
            "set_size": len(output.get("prediction_set") or []) if valid and in_distribution is not None else np.nan,
            "source": source}


def read_json_lines(path: Path) -> list[dict]:
    """Rows of a `PredictionLog` JSON-lines file; a line that is not such a record is refused, naming it."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                time = pd.Timestamp(record["time"])
                output = record["output"]
            except (ValueError, KeyError, TypeError) as error:
                raise UserError(f"{path}, line {number}: expected a prediction log record with 'time' and 'output' "
                                f"({type(error).__name__}: {error})") from error
            rows.append(_row(time.tz_convert("UTC") if time.tzinfo else time.tz_localize("UTC"), output, path.name))
    return rows


def read_prediction_log_records(path: Path) -> list[dict]:
    """Rows of a TF Serving `PredictionLog` TFRecord file (one per image of each logged response)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    rows = []
    try:
        records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    except tf.errors.OpError as error:
        raise UserError(f"{path}: expected JSON lines or a TFRecord file of PredictionLog protos "
                        f"({str(error).splitlines()[0]})") from error
    for number, data in enumerate(records):
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(data)
        except Exception as error:  # protobuf's DecodeError has no public import path
            raise UserError(f"{path}, record {number}: not a PredictionLog proto") from error
        outputs = log.predict_log.response.outputs
        if "probabilities" not in outputs:
            continue
        time = pd.Timestamp(datetime.datetime.fromtimestamp(log.log_metadata.timestamp_secs, datetime.timezone.utc))
        arrays = {key: tf.make_ndarray(outputs[key]) for key in outputs}
        class_names = None
        for index in range(len(arrays["probabilities"])):
            if class_names is None:
                names = arrays.get("class_names")
                class_names = [name.decode() for name in (names[index] if names is not None and names.ndim == 2 else
                                                          names if names is not None else [])]
            valid = bool(arrays["valid"][index]) if "valid" in arrays else True
            reason = arrays["reason"][index].decode() if "reason" in arrays else ""
            members = arrays["prediction_set"][index] if "prediction_set" in arrays else []
            probabilities = arrays["probabilities"][index]
            output = {"valid": valid, "error": reason,
                      "in_distribution": bool(arrays["in_distribution"][index]) if "in_distribution" in arrays else None,
                      "ood_score": float(arrays["ood_score"][index]) if "ood_score" in arrays else None,
                      "top_class": arrays["top_class_name"][index].decode() if "top_class_name" in arrays else None,
                      "probabilities": {str(k): float(p) for k, p in enumerate(probabilities)},
                      "prediction_set": [k for k, member in enumerate(members) if member]}
            rows.append(_row(time, output, path.name))
    return rows


def read_logs(paths) -> pd.DataFrame:
    """Every row of every log (JSON lines or PredictionLog TFRecords, told apart by content), sorted by time."""
    rows = []
    for path in [Path(p) for p in paths]:
        if not path.is_file():
            raise UserError(f"{path}: expected a prediction log file; it does not exist")
        with path.open("rb") as handle:
            head = handle.read(1).lstrip()
        rows.extend(read_json_lines(path) if head in (b"{", b"") else read_prediction_log_records(path))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.sort_values("time", kind="stable").reset_index(drop=True)
