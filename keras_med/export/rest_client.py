"""Client of TF Serving's REST API (``POST /v1/models/<name>:predict``), with the standard library only."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import numpy as np

from keras_med.export.predictions import ServingError
from keras_med.export.predictor import Predictor
from keras_med.export.explain_signature import CLASS_INDEX_INPUT
from keras_med.export.signatures import EXPLAIN_SIGNATURE, IMAGE_INPUT, IMAGE_SIGNATURE, PIXELS_SIGNATURE


class RestPredictor(Predictor):
    """Sends the serving signatures' requests to a TF Serving REST endpoint.

    Requests use TF Serving's row format: ``{"signature_name": ..., "instances": [...]}`` with
    each encoded image as ``{"b64": ...}``; the answer is ``{"predictions": [{output: value}]}``.

    Args:
        server: Base URL, e.g. ``http://localhost:8501``.
        name: Served model name.
        version: Version to ask for; None for the latest the server has.
        timeout: Seconds to wait for each answer.
    """

    def __init__(self, server: str, name: str, version: int | None = None, timeout: float = 30.0):
        if not server.startswith(("http://", "https://")):
            raise ValueError(f"server must be an http:// or https:// URL, got {server!r}")
        if not name:
            raise ValueError("the served model name is required (--name)")
        self.server = server.rstrip("/")
        self.name = name
        self.version = version
        self.timeout = timeout
        self._model_url = f"{self.server}/v1/models/{name}" + (f"/versions/{version}" if version else "")

    def served_version(self) -> int | None:
        """The version the server answers with: the asked one, else its highest AVAILABLE version."""
        status = self._request(self._model_url, None)
        available = [int(entry["version"]) for entry in status.get("model_version_status", [])
                     if entry.get("state") == "AVAILABLE"]
        return max(available) if available else None

    def answer_image_bytes(self, images: list[bytes]) -> list[dict]:
        instances = [{"b64": base64.b64encode(data).decode("ascii")} for data in images]
        return self._predict(IMAGE_SIGNATURE, instances)

    def answer_pixels(self, pixels: np.ndarray) -> list[dict]:
        return self._predict(PIXELS_SIGNATURE, np.asarray(pixels, np.float32).tolist())

    def answer_explain(self, images: list[bytes], class_indices: list[int]) -> list[dict]:
        instances = [{IMAGE_INPUT: {"b64": base64.b64encode(data).decode("ascii")}, CLASS_INDEX_INPUT: int(index)}
                     for data, index in zip(images, class_indices, strict=True)]
        rows = self._predict(EXPLAIN_SIGNATURE, instances)
        # TF Serving sends string outputs named *_bytes as {"b64": ...}; give back bytes as a local model does.
        for row in rows:
            overlay = row.get("overlay_png_bytes")
            if isinstance(overlay, dict):
                row["overlay_png_bytes"] = base64.b64decode(overlay["b64"])
            if "heatmap" in row:
                row["heatmap"] = np.asarray(row["heatmap"], np.float32)
        return rows

    def _predict(self, signature: str, instances: list) -> list[dict]:
        answer = self._request(f"{self._model_url}:predict", {"signature_name": signature, "instances": instances})
        if "predictions" not in answer:
            raise ServingError(f"{self._model_url}:predict answered without 'predictions': {str(answer)[:200]}")
        return answer["predictions"]

    def _request(self, url: str, body: dict | None) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                         method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode("utf-8", "replace")
            return json.loads(text)
        except json.JSONDecodeError as error:
            # e.g. a web page (a proxy's, or the gRPC port's) instead of TF Serving's REST API
            raise ServingError(f"{url}: the answer is not JSON (it starts {' '.join(text.split())[:60]!r}); "
                               "expected TF Serving's REST API (port 8501) at --server") from error
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except (json.JSONDecodeError, AttributeError):
                pass
            raise ServingError(f"{url}: HTTP {error.code}: {detail}", bad_request=error.code == 400) from error
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            raise ServingError(f"{url}: cannot reach the model server: {getattr(error, 'reason', error)}") from error
