"""Re-fit a served model's out-of-distribution guard (and conformal sets) on a site's own images.

`keras-med calibrate --model saved_models/ham10000 --images SITE_DIR [--labels SITE.csv] [--name NEW]`
writes the next version of the model (or version 1 of NEW) whose thresholds are fitted on the
site's images, and prints the pass rate before and after (with labels: accuracy on passed and
flagged images, coverage per class). See `keras_med.export.site_calibration`.
"""

from __future__ import annotations

import argparse
import json
import sys

from keras_med.atomic import write_text_atomic
from keras_med.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `keras-med calibrate` flags to `parser`."""
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="saved_models/<name> (its newest version) or saved_models/<name>/<version>.")
    parser.add_argument("--images", required=True, metavar="DIR",
                        help="The site's own in-scope images (searched at any depth).")
    parser.add_argument("--labels", metavar="CSV", default=None,
                        help="Their labels (columns path,label; matched by file name): also re-fits the "
                             "conformal sets and reports accuracy and coverage.")
    parser.add_argument("--name", default=None,
                        help="Write the calibrated model as saved_models/<NAME>/ instead of a new version of --model.")
    parser.add_argument("--pass-rate", type=float, default=None,
                        help="Share of the site's images the guard passes (default: the export's own, e.g. 0.95).")
    parser.add_argument("--coverage", type=float, default=None,
                        help="Conformal coverage with --labels (default: the export's own, e.g. 0.9).")
    parser.add_argument("--out", metavar="FILE", default=None, help="Also write the report as JSON to FILE.")


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def report_lines(result) -> list[str]:
    """The before/after table printed on stdout."""
    before, after = result.before, result.after
    lines = [f"calibrated on {result.record['images']} images ({result.record['in_scope']} valid), "
             f"sha256 {result.record['sha256'][:12]}: wrote {result.version_dir}",
             f"{'':<28}{'before':>10}{'after':>10}",
             f"{'guard pass rate':<28}{_percent(before['pass_rate']):>10}{_percent(after['pass_rate']):>10}"]
    if "coverage" in after:
        for key, label in (("accuracy_passed", "accuracy on passed"), ("accuracy_flagged", "accuracy on flagged"),
                           ("coverage", "set coverage")):
            lines.append(f"{label:<28}{_percent(before[key]):>10}{_percent(after[key]):>10}")
        lines.append(f"{'mean set size':<28}{before['mean_set_size']:>10.2f}{after['mean_set_size']:>10.2f}")
        for name in after["per_class_coverage"]:
            lines.append(f"{'  coverage ' + name:<28}{_percent(before['per_class_coverage'][name]):>10}"
                         f"{_percent(after['per_class_coverage'][name]):>10}")
    return lines


def run(args: argparse.Namespace) -> int:
    """Calibrate, print the table, optionally write it as JSON; 0 on success."""
    from keras_med.export.site_calibration import calibrate_site

    for flag, value in (("--pass-rate", args.pass_rate), ("--coverage", args.coverage)):
        if value is not None and not 0.0 < value < 1.0 + (flag == "--pass-rate"):
            raise UserError(f"{flag} {value}: expected a share in (0, 1)")
    result = calibrate_site(args.model, args.images, args.labels, args.name, args.pass_rate, args.coverage)
    sys.stdout.write("\n".join(report_lines(result)) + "\n")
    if args.out:
        write_text_atomic(args.out, json.dumps({"version_dir": str(result.version_dir), "record": result.record,
                                                "before": result.before, "after": result.after}, indent=2))
    return 0
