"""Grad-CAM / Grad-CAM++ overlays for image files with a trained model.

`keras-med explain --model runs/x/checkpoints/best.keras IMAGE... [--method gradcam++] [--class mel]`
"""

from __future__ import annotations

import argparse

from keras_med.explain.files import explain_files
from keras_med.explain.gradcam import METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `keras-med explain` flags to `parser`."""
    parser.add_argument("--model", required=True, metavar="PATH", help="A .keras model in its run directory.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG or PNG files to explain.")
    parser.add_argument("--method", default="gradcam", choices=list(METHODS), help="Explanation method.")
    parser.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                        help="Class to explain (default: each image's predicted class).")
    parser.add_argument("--out", default="explanations", metavar="DIR", help="Where the overlays go.")


def run(args: argparse.Namespace) -> int:
    """Write the overlays the parsed flags describe; returns the exit status."""
    explain_files(args.model, args.images, args.out, method=args.method, class_name=args.class_name)
    return 0
