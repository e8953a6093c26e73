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
    parser.add_argument("--tta", type=tta_mode, default=None, metavar="{none,flips}",
                        help="Test-time augmentation of the answer, as in train/evaluate/export: 'flips' averages "
                             "the original and flipped images. A .keras file: default its run's [evaluation] tta; "
                             "a SavedModel or a server applies what it was exported with.")
    parser.add_argument("--tta-spread", type=int, default=0, metavar="N",
                        help="Also send N augmented copies of each image (flips, small shifts) and report the "
                             "spread of each class's probability over them (0: off). The answer itself stays the "
                             "served model's own.")


def tta_mode(value: str) -> str:
    """`--tta`'s type: a mode; a number names the former meaning (copies), now `--tta-spread`."""
    # Imported here: the module's own imports stay light for the command line's start-up.
    from keras_med.evaluation.tta import TTA_MODES

    if value.isdigit():
        raise argparse.ArgumentTypeError(f"expected none or flips, got {value}; the spread over N augmented "
                                         f"copies is --tta-spread {value}")
    if value not in TTA_MODES:
        raise argparse.ArgumentTypeError(f"expected one of {list(TTA_MODES)}, got {value!r}")
    return value


def make_predictor(args: argparse.Namespace):
    """The predictor the flags ask for (local model, REST or gRPC client; `keras_med.export.connect`)."""
    from keras_med.export.connect import open_predictor

    predictor = open_predictor(model=args.model, server=args.server, name=args.name, version=args.version,
                               timeout=args.timeout, tta=args.tta)
    if args.log and predictor.version is None and hasattr(predictor, "served_version"):
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
    if args.tta_spread < 0 or args.tta_spread == 1:
        raise ConfigError(f"--tta-spread: expected 0 (off) or at least 2 copies, got {args.tta_spread}")
    try:
        predictor = make_predictor(args)
        predictions = predictor.predict_files(args.images, batch_size=args.batch_size)
        if args.tta_spread:
            from keras_med.export.tta import probability_spread

            for prediction in predictions:
                if prediction.valid:
                    prediction.tta_spread = probability_spread(predictor, prediction.source, args.tta_spread)
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
