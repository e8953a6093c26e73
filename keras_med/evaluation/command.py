"""Score trained model(s) on a labelled external test set: metrics, plots and report in a directory of its own.

`keras-med evaluate --model runs/x/checkpoints/best.keras --labels labels.csv --images DIR [--tta flips]`;
several `--model` arguments average the models' probabilities (an ensemble); a SavedModel folder
is scored through its own serving signature.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from keras_med.errors import ConfigError
from keras_med.evaluation.external import TTA_MODES, evaluate_external

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `keras-med evaluate` flags to `parser`."""
    parser.add_argument("--model", action="append", required=True, metavar="PATH",
                        help="A .keras model in its run directory (repeat for an ensemble), or an exported "
                             "SavedModel folder saved_models/<name>/<version> (scored as served).")
    parser.add_argument("--labels", required=True, metavar="LABELS.csv",
                        help="Labels: image_id,label or one-hot class columns.")
    parser.add_argument("--images", required=True, metavar="DIR", help="Folder holding the images.")
    parser.add_argument("--out", default="runs/external", metavar="DIR", help="Where results go.")
    parser.add_argument("--tta", default=None, choices=TTA_MODES,
                        help="Test-time augmentation (default: what the export serves: the run's [evaluation] tta "
                             "for a .keras model; a SavedModel applies its own).")
    parser.add_argument("--batch-size", type=int, default=32, help="Images per prediction batch.")
    parser.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples for the intervals.")
    parser.add_argument("--explain", type=int, default=4,
                        help="Grad-CAM overlays for this many right and wrong images (single model).")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad counts and missing files before any model or image is read."""
    problems = []
    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--bootstrap", args.bootstrap, 0),
                             ("--explain", args.explain, 0)):
        if value < low:
            problems.append(f"{flag}: expected an integer of at least {low}, got {value}")
    if not Path(args.labels).is_file():
        problems.append(f"--labels {args.labels}: no such file; expected a CSV of image_id,label or one-hot columns")
    if not Path(args.images).is_dir():
        problems.append(f"--images {args.images}: no such directory")
    problems += [f"--model {path}: no such file; expected a .keras model in its run directory or a SavedModel folder"
                 for path in args.model if not Path(path).exists()]
    if problems:
        raise ConfigError("; ".join(problems))


def run(args: argparse.Namespace) -> int:
    """Run the evaluation the parsed flags describe; returns the exit status."""
    check_arguments(args)
    metrics = evaluate_external(args.model, args.labels, args.images, args.out, tta=args.tta,
                                batch_size=args.batch_size, n_bootstrap=args.bootstrap, explain=args.explain)
    headline = {key: round(value["value"], 4) for key, value in metrics.items()
                if isinstance(value, dict) and "ci95" in value and value["value"] is not None}
    logger.info("External evaluation in %s: %s", args.out, headline)
    return 0
