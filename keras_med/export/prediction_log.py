"""Prediction logging as JSON lines: one record per input, for audit and drift monitoring."""

from __future__ import annotations

import datetime
import json
import threading
from pathlib import Path

from keras_med.export.predictions import Prediction


class PredictionLog:
    """Appends one JSON object per prediction to a file.

    Each line has ``time`` (UTC, ISO 8601), ``input`` (source name), ``input_sha256``, ``model``,
    ``version`` and ``output`` (validity, top class, probabilities, decisions, error).

    Args:
        path: The ``.jsonl`` file; created with its folder when missing, appended to otherwise.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, predictions: list[Prediction], model: str, version: int | None) -> None:
        """Append the records of ``predictions`` made by ``model`` at ``version``."""
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        lines = []
        for prediction in predictions:
            output = {key: value for key, value in prediction.to_dict().items() if key not in ("source", "input_sha256")}
            lines.append(json.dumps({"time": now, "input": prediction.source, "input_sha256": prediction.input_sha256,
                                     "model": model, "version": version, "output": output}))
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
