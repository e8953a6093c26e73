"""Predict images with a SavedModel, a .keras file, or a TF Serving server (REST or gRPC).

Mounted by keras_med/cli.py as ``keras-med predict``; ``add_arguments`` and ``run`` are its parts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from keras_med.errors import ConfigError, UserError

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``keras-med predict`` flags to ``parser``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="SavedModel folder (saved_models/<name>/<version>) or .keras file.")
    source.add_argument("--server", help="TF Serving address: http://HOST:8501 (REST) or grpc://HOST:8500 "
                                         "(gRPC, needs tensorflow-serving-api).")
    parser.add_argument("images", nargs="+", help="Image files: JPEG, PNG, GIF or BMP (recognised by content).")
    parser.add_argument("--name", help="Served model name (with --server).")
    parser.add_argument("--version", type=int, default=None, help="Served model version (default: latest).")
    parser.add_argument("--json", action="store_true", help="Print a JSON list instead of one line per image.")
    parser.add_argument("--log", default=None, help="Append each prediction to this JSON-lines file.")
    parser.add_argument("--batch-size", type=int, default=32, help="Images per request.")
    parser.add_argument("--timeout", type=float, default=30.0, help="Seconds to wait for the server.")
    parser.add_argument("--tta", type=int, default=0, metavar="N",
                        help="Also send N augmented copies of each image (flips, small shifts) and report the "
                             "spread of each class's probability over them (0: off). The answer itself stays the "
                             "served model's own.")


def make_predictor(args: argparse.Namespace):
    """The predictor the flags ask for (local model, REST or gRPC client)."""
    if args.model:
        from keras_med.export.predictor import load_predictor

        return load_predictor(args.model)
    if not args.name:
        raise ConfigError("--server needs --name (the served model name)")
    if args.server.startswith("grpc://"):
        from keras_med.export.grpc_client import GrpcPredictor

        return GrpcPredictor(args.server.removeprefix("grpc://"), args.name, args.version, args.timeout)
    from keras_med.export.rest_client import RestPredictor

    predictor = RestPredictor(args.server, args.name, args.version, args.timeout)
    if args.log and predictor.version is None:
        predictor.version = predictor.served_version()
    return predictor


def run(args: argparse.Namespace) -> int:
    """Predict, print, log; the exit status is 0 when every image was answered, else 2.

    A bad image (unreadable, truncated, corrupt, too small, not an image) is a user's input
    mistake: its line says ``<file>: ERROR <reason>``, every good image is still printed (and
    logged), and the status is 2, as for any other user's mistake (keras_med.errors.UserError).
    """
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: expected an integer of at least 1, got {args.batch_size}")
    if args.tta < 0 or args.tta == 1:
        raise ConfigError(f"--tta: expected 0 (off) or at least 2 copies, got {args.tta}")
    try:
        predictor = make_predictor(args)
        predictions = predictor.predict_files(args.images, batch_size=args.batch_size)
        if args.tta:
            from keras_med.export.tta import probability_spread

            for prediction in predictions:
                if prediction.valid:
                    prediction.tta_spread = probability_spread(predictor, prediction.source, args.tta)
    except ImportError as error:
        # The gRPC client's optional package; every other failure is a KerasMedError (one line,
        # exit 2, a traceback with --verbose) or a bug.
        raise UserError(str(error)) from error
    if args.log:
        from keras_med.export.prediction_log import PredictionLog

        PredictionLog(args.log).write(predictions, predictor.name, predictor.version)
    if args.json:
        sys.stdout.write(json.dumps([prediction.to_dict() for prediction in predictions], indent=2) + "\n")
    else:
        sys.stdout.write("".join(prediction.to_text() + "\n" for prediction in predictions))
    failed = [prediction.source for prediction in predictions if not prediction.valid]
    if failed:
        logger.warning("%d of %d image(s) could not be predicted: %s", len(failed), len(predictions), ", ".join(failed))
    return UserError.exit_code if failed else 0
