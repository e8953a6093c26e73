"""Open the predictor a command's flags name: a local model, or TF Serving over REST or gRPC.

Apart from `keras_med.export.predictor` so that the predictor does not import its clients (which
import it).
"""

from __future__ import annotations

from pathlib import Path

from keras_med.errors import ConfigError
from keras_med.evaluation.tta import TTA_MODES
from keras_med.export.predictor import Predictor, load_predictor


def open_predictor(model: str | Path | None = None, server: str | None = None, name: str | None = None,
                   version: int | None = None, timeout: float = 30.0, tta: str | None = None) -> Predictor:
    """The predictor for a local model (``.keras`` file or SavedModel folder) or a TF Serving server.

    Args:
        model: A ``.keras`` file or a SavedModel folder (``saved_models/<name>/<version>``).
        server: Instead of ``model``: ``http(s)://HOST:8501`` (REST) or ``grpc://HOST:8500`` (gRPC).
        name: The served model name (with ``server``).
        version: The served version (with ``server``); None: the newest the server has.
        timeout: Seconds to wait for each answer of a server.
        tta: Test-time augmentation, one of ``TTA_MODES``; None: what the model serves (a ``.keras``
            file: its run's ``[evaluation] tta``). A SavedModel or a server applies its own, so
            another mode there is refused rather than silently ignored.

    Raises:
        ConfigError: neither or both of ``model`` and ``server``, no ``name`` for a server, an
            unknown ``tta`` or one the exported model does not apply.
    """
    if tta is not None and tta not in TTA_MODES:
        raise ConfigError(f"--tta: expected one of {list(TTA_MODES)}, got {tta!r}")
    if (model is None) == (server is None):
        raise ConfigError("expected --model PATH or --server URL (one of them)")
    if model is not None:
        return load_predictor(model, tta=tta)
    if not name:
        raise ConfigError("--server needs --name (the served model name)")
    if tta is not None:
        raise ConfigError(f"--tta {tta}: a served model applies the test-time augmentation it was exported with "
                          "(keras-med export --tta); drop --tta")
    if server.startswith("grpc://"):
        from keras_med.export.grpc_client import GrpcPredictor

        return GrpcPredictor(server.removeprefix("grpc://"), name, version, timeout)
    from keras_med.export.rest_client import RestPredictor

    try:
        return RestPredictor(server, name, version, timeout)
    except ValueError as error:
        raise ConfigError(f"--server: {error}") from error
