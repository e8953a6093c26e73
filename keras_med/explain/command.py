"""Grad-CAM / Grad-CAM++ overlays for image files with a trained model.

`keras-med explain --model runs/x/checkpoints/best.keras IMAGE... [--method gradcam++] [--class mel]`
`keras-med explain --server http://localhost:8501 --name ham10000 IMAGE... [--class mel]` (the served model's
Grad-CAM, from its `explain` signature; a SavedModel folder as --model answers the same way)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from keras_med.errors import UserError
from keras_med.explain.files import explain_files
from keras_med.explain.gradcam import METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `keras-med explain` flags to `parser`."""
    parser.add_argument("--model", default=None, metavar="PATH",
                        help="A .keras model in its run directory, or an exported SavedModel folder.")
    parser.add_argument("--server", default=None, metavar="URL",
                        help="TF Serving REST address (http://HOST:8501) whose model answers the explain signature.")
    parser.add_argument("--name", default=None, help="Served model name (with --server).")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG or PNG files to explain.")
    parser.add_argument("--method", default="gradcam", choices=list(METHODS), help="Explanation method.")
    parser.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                        help="Class to explain (default: each image's predicted class).")
    parser.add_argument("--out", default="explanations", metavar="DIR", help="Where the overlays go.")


def run(args: argparse.Namespace) -> int:
    """Write the overlays the parsed flags describe; returns the exit status."""
    if args.server or (args.model and Path(args.model).is_dir()):
        return _run_served(args)
    if not args.model:
        raise UserError("keras-med explain: expected --model PATH or --server URL --name NAME")
    explain_files(args.model, args.images, args.out, method=args.method, class_name=args.class_name)
    return 0


def _run_served(args: argparse.Namespace) -> int:
    """Grad-CAM from the model's `explain` signature (TF Serving, or a SavedModel folder in-process)."""
    from keras_med.explain.served import explain_files_served

    if args.method != "gradcam":
        raise UserError(f"--method {args.method}: the served explain signature computes gradcam only")
    from keras_med.export.connect import open_predictor

    if args.server and args.model:
        raise UserError("keras-med explain: expected --model PATH or --server URL, not both")
    predictor = open_predictor(model=None if args.server else args.model, server=args.server, name=args.name)
    explain_files_served(predictor, args.images, args.out, class_name=args.class_name)
    return 0
