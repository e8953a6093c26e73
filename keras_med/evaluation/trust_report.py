"""The model card's trust sections: the "no better than chance" warning, "Unfamiliar inputs", "Prediction sets"."""

from __future__ import annotations

from keras_med.evaluation.report import Heading, Paragraph, Table


def warning_blocks(metrics: dict) -> list:
    """The card's first lines when the health check found a model with no skill (else nothing)."""
    findings = (metrics.get("health") or {}).get("findings", [])
    return [Paragraph(f"WARNING: {finding['message']} What to try: {finding['fix']}")
            for finding in findings if finding["kind"] == "no_skill"]


def _percent(value) -> str | None:
    return None if value is None else f"{100 * value:.1f}%"


def trust_blocks(metrics: dict) -> list:
    """The "Unfamiliar inputs" and "Prediction sets" sections, from metrics["ood"] and metrics["conformal"]."""
    blocks = []
    ood = metrics.get("ood")
    if ood:
        blocks += [
            Heading("Unfamiliar inputs"),
            Paragraph(f"The served model flags an image as out of distribution (in_distribution=false, decisions all "
                      f"false) when its {ood['method']} score exceeds {ood['threshold']:.4g}, a threshold chosen to "
                      f"pass {_percent(ood['pass_rate'])} of validation images (it passes "
                      f"{_percent(ood['validation_pass_rate'])}; score fitted on {ood['n_fit']} training images). "
                      f"It passes {_percent(ood['test_pass_rate'])} of the test split. Below, the test split is "
                      "the in-distribution side: AUROC of the score, and the share of each kind of outsider flagged "
                      "and let through (false pass) at the threshold."),
            Table(["outsiders", "images", "AUROC", "flagged", "false pass"],
                  [[row["name"], row["n"], row["auroc"], _percent(row["flagged_rate"]), _percent(row["false_pass_rate"])]
                   for row in ood["sets"]]),
        ]
    conformal = metrics.get("conformal")
    if conformal and not conformal.get("applicable", True):
        blocks += [Heading("Prediction sets"),
                   Paragraph("Multi-label model: each label's thresholded decision is already a per-label answer, so "
                             "there is no conformal prediction set; see the operating points.")]
    elif conformal:
        coverage = conformal["coverage"]
        interval = coverage.get("ci95")
        interval_text = f" (95% CI {_percent(interval[0])}-{_percent(interval[1])})" if interval else ""
        blocks += [
            Heading("Prediction sets"),
            Paragraph(f"Split conformal sets ({conformal['mode']}), calibrated on {conformal['n_calibration']} "
                      f"validation images for a coverage of {_percent(conformal['target'])}: the served "
                      "prediction_set holds every class whose probability reaches its threshold. On the test split "
                      f"the sets hold the true class {_percent(coverage['value'])} of the time{interval_text}, with "
                      f"{conformal['average_set_size']:.2f} classes on average ({_percent(conformal['empty_set_rate'])} "
                      "empty)."
                      + (" The interval lies below the target: the test images are probably not exchangeable with the "
                         "validation images the sets were calibrated on (a shift between them); calibrate on images "
                         "from where the model will be used." if interval and interval[1] < conformal["target"] else "")),
            Table(["true class", "test images", "coverage", "average set size", "threshold"],
                  [[name, entry["n"], entry["coverage"], entry["average_set_size"], entry["threshold"]]
                   for name, entry in conformal["per_class"].items()]),
        ]
    return blocks
