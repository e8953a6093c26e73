"""Watch a deployed model's prediction logs for drift against its validation split; exit 1 on an alert.

`keras-med monitor LOG... --model saved_models/ham10000 [--out DIR] [--window day] [--alert-ood 0.15]
[--alert-psi 0.2]` reads JSON-lines prediction logs and TF Serving PredictionLog TFRecords and writes
`monitor.json`, `monitor.md` and `monitor.html` (with `monitor.png`) to DIR; the exit status is 1
when any window crossed a threshold, so a cron job or CI can page someone.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import sys
from pathlib import Path

from keras_med.atomic import write_bytes_atomic, write_text_atomic
from keras_med.errors import UserError

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `keras-med monitor` flags to `parser`."""
    from keras_med.monitoring.drift import WINDOWS

    parser.add_argument("logs", nargs="+", metavar="LOG",
                        help="Prediction logs: JSON lines (predict --log, app --log) or TF Serving PredictionLog "
                             "TFRecord files.")
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="saved_models/<name> (its newest version) or saved_models/<name>/<version>: the "
                             "reference the requests are compared with.")
    parser.add_argument("--out", default="monitor", metavar="DIR", help="Where the report goes (default: monitor/).")
    parser.add_argument("--window", choices=list(WINDOWS), default="day", help="Time window per row.")
    parser.add_argument("--alert-ood", type=float, default=0.15,
                        help="Alert when a window's out-of-distribution rate is above this (and significantly "
                             "above the guard's validation rate).")
    parser.add_argument("--alert-psi", type=float, default=0.2,
                        help="Alert when a window's class-mix population stability index is above this.")
    parser.add_argument("--min-requests", type=int, default=30,
                        help="Fewest valid requests in a window for a PSI alert.")


def _cell(value, kind: str = "") -> str:
    if value is None:
        return "-"
    if kind == "%":
        return f"{100 * value:.1f}%"
    if kind == "p":
        return f"{value:.2g}"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def table_lines(rows: list[dict]) -> list[str]:
    """The windows as a Markdown table."""
    lines = ["| window | requests | invalid | OOD rate | OOD p | PSI | chi2 p | mean top p | mean set size | alerts |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        invalid = ", ".join(f"{reason} {count}" for reason, count in row["invalid_by_reason"].items()) or "0"
        lines.append(f"| {row['window'][:16]} | {row['requests']} | {invalid} | {_cell(row['ood_rate'], '%')} | "
                     f"{_cell(row['ood_p_value'], 'p')} | {_cell(row['psi'])} | {_cell(row['chi2_p_value'], 'p')} | "
                     f"{_cell(row['mean_top_probability'])} | {_cell(row['mean_set_size'])} | "
                     f"{'; '.join(row['alerts']) or 'none'} |")
    return lines


def plot(rows: list[dict], reference, alert_ood: float, alert_psi: float, path: Path) -> None:
    """Four panels over the windows: requests, OOD rate, class-mix PSI, mean top probability and set size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [row["window"][:16] for row in rows]
    x = range(len(rows))
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    axes[0, 0].bar(x, [row["requests"] for row in rows], label="requests")
    axes[0, 0].bar(x, [row["requests"] - row["valid"] for row in rows], label="invalid", color="tab:red")
    axes[0, 0].set_title("requests per window")
    axes[0, 0].legend()
    axes[0, 1].plot(x, [row["ood_rate"] for row in rows], marker="o", label="observed")
    if reference.expected_ood_rate is not None:
        axes[0, 1].axhline(reference.expected_ood_rate, color="grey", linestyle="--", label="expected (validation)")
    axes[0, 1].axhline(alert_ood, color="tab:red", linestyle=":", label="alert")
    axes[0, 1].set_title("out-of-distribution rate")
    axes[0, 1].legend()
    axes[1, 0].plot(x, [row["psi"] for row in rows], marker="o")
    axes[1, 0].axhline(alert_psi, color="tab:red", linestyle=":")
    axes[1, 0].set_title("class-mix PSI against validation")
    axes[1, 1].plot(x, [row["mean_top_probability"] for row in rows], marker="o", label="mean top probability")
    axes[1, 1].plot(x, [row["mean_set_size"] for row in rows], marker="s", label="mean set size")
    axes[1, 1].set_title("confidence and set size")
    axes[1, 1].legend()
    for axis in axes[1]:
        axis.set_xticks(list(x), labels, rotation=30, ha="right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run(args: argparse.Namespace) -> int:
    """Read the logs, compute the windows, write the report; 1 when a window raised an alert, else 0."""
    from keras_med.app.source import newest_version_folder
    from keras_med.monitoring.drift import Reference, window_rows
    from keras_med.monitoring.logs import read_logs

    for flag, value in (("--alert-ood", args.alert_ood), ("--alert-psi", args.alert_psi)):
        if value < 0:
            raise UserError(f"{flag} {value}: expected a non-negative number")
    version_dir = newest_version_folder(args.model)
    metadata_file = version_dir / "assets.extra" / "keras_med.json"
    if not metadata_file.is_file():
        raise UserError(f"--model {version_dir}: expected assets.extra/keras_med.json (an export of keras_med)")
    reference = Reference.from_metadata(json.loads(metadata_file.read_text(encoding="utf-8")))
    table = read_logs(args.logs)
    rows = window_rows(table, reference, args.window, args.alert_ood, args.alert_psi, args.min_requests)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    alerting = [row for row in rows if row["alerts"]]
    summary = {"model": str(version_dir), "logs": [str(path) for path in args.logs], "window": args.window,
               "reference": {"expected_ood_rate": reference.expected_ood_rate,
                             "class_shares": None if reference.class_shares is None else
                             dict(zip(reference.class_names, map(float, reference.class_shares))),
                             "mean_top_probability": reference.mean_top_probability,
                             "mean_set_size": reference.mean_set_size},
               "thresholds": {"alert_ood": args.alert_ood, "alert_psi": args.alert_psi},
               "windows": rows, "alert": bool(alerting)}
    write_text_atomic(out / "monitor.json", json.dumps(summary, indent=2))
    if rows:
        plot(rows, reference, args.alert_ood, args.alert_psi, out / "monitor.png")
    missing = [] if reference.class_shares is not None else ["the export stores no validation class mix (exported "
                                                            "before it was kept): no PSI or chi-square"]
    lines = [f"# Monitoring {version_dir.parent.name} version {version_dir.name}", "",
             f"{len(table)} answers from {len(args.logs)} log file(s), per {args.window}. Expected out-of-distribution "
             f"rate (validation): {_cell(reference.expected_ood_rate, '%')}.", *[f"Note: {note}." for note in missing],
             "", *table_lines(rows), "", "![monitor](monitor.png)" if rows else "No answers in the logs.", "",
             ("**Alert** in " + ", ".join(row["window"][:16] for row in alerting)) if alerting else "No alert."]
    write_text_atomic(out / "monitor.md", "\n".join(lines) + "\n")
    picture = ("<img alt='monitor' src='data:image/png;base64," + base64.b64encode((out / "monitor.png").read_bytes())
               .decode() + "'>") if rows else ""
    write_text_atomic(out / "monitor.html", "<!doctype html><meta charset='utf-8'><title>keras_med monitor</title>"
                      f"<pre>{html.escape(chr(10).join(lines[:-3]))}</pre>{picture}<p>{html.escape(lines[-1])}</p>")
    sys.stdout.write("\n".join(table_lines(rows)) + "\n")
    for row in alerting:
        logger.warning("ALERT %s: %s", row["window"][:16], "; ".join(row["alerts"]))
    return 1 if alerting else 0
