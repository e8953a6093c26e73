"""Assemble the model card (report.md / report.html) from the metrics dictionary and the plots."""

from __future__ import annotations

import pandas as pd

from keras_med.evaluation.metrics import HEADLINES
from keras_med.evaluation.report import Bullets, Card, Heading, Image, Paragraph, Table
from keras_med.evaluation.trust_report import trust_blocks, warning_blocks


def _interval(entry: dict) -> str:
    if not entry.get("ci95"):
        return "n/a"
    low, high = entry["ci95"]
    return f"[{low:.3f}, {high:.3f}]"


def _or_undefined(entry: dict, key: str):
    """A per-class figure, or "undefined" when the test set cannot measure it (see metrics.py)."""
    value = entry.get(key)
    return "undefined" if value is None and entry.get("undefined") else value


def _config_items(config) -> list[str]:
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    items = []
    for key, value in values.items():
        if isinstance(value, dict):
            items += [f"{key}.{name} = {item!r}" for name, item in value.items()]
        else:
            items.append(f"{key} = {value!r}")
    return items


def _summary_table(data_summary) -> Table:
    frame = data_summary if isinstance(data_summary, pd.DataFrame) else pd.DataFrame(data_summary)
    frame = frame.reset_index()
    return Table([str(c) for c in frame.columns], frame.astype(object).where(frame.notna(), None).values.tolist())


def build_model_card(metrics: dict, title: str, config=None, data_summary=None, long_names=None,
                     plots: dict | None = None, gradcam: list[dict] | None = None) -> Card:
    """The model card's blocks, in reading order.

    Args:
        metrics: the dictionary `evaluate_run` writes to metrics.json.
        title: the card's title.
        config: a RecipeConfig (anything with `to_dict()`) or a dict, or None.
        data_summary: counts per class and split (DataFrame or dict of dicts), or None.
        long_names: optional `{class name: long name}` used in the per-class table.
        plots: `{caption: relative PNG path}`.
        gradcam: `[{"path", "caption"}]` Grad-CAM overlays, relative paths.
    """
    task, class_names = metrics["task"], metrics["class_names"]
    long_names = long_names or {}
    card = Card(title)
    if metrics.get("diverged"):
        message = metrics["diverged"]["message"]
        card.add(Heading("Training diverged"), Paragraph(message[:1].upper() + message[1:] + "."))
    card.add(*warning_blocks(metrics))

    card.add(Heading("Data"))
    card.add(Paragraph(f"Task: {task}; classes: {', '.join(class_names)}. Test images: {metrics['n_samples']}."))
    boot = metrics.get("bootstrap", {})
    if boot.get("groups") is not None:
        card.add(Paragraph(f"The test images come from {boot['groups']} groups (lesions or patients); intervals "
                           "resample whole groups."))
    if data_summary is not None:
        card.add(_summary_table(data_summary))
    bad = metrics.get("bad_images")
    if bad:
        reasons = ", ".join(f"{count} {reason}" for reason, count in bad.get("reasons", {}).items())
        card.add(Paragraph(f"{bad['count']} image(s) were skipped as bad ({reasons}; --on-bad-image skip): "
                           f"each is listed with its metadata line and reason in {bad['file']}."))

    if config is not None:
        card.add(Heading("Configuration"), Bullets(_config_items(config)))

    card.add(Heading("Metrics (test split, 95% bootstrap intervals)"))
    card.add(Table(["metric", "value", "95% CI"],
                   [[name.replace("_", " "), metrics[name]["value"], _interval(metrics[name])]
                    for name in HEADLINES[task]]))
    card.add(Paragraph(f"Intervals from {boot.get('n', 0)} bootstrap resamples"
                       f"{' by group' if boot.get('groups') else ''}."))
    columns = ["precision", "recall", "f1", "support", "auc", "pr_auc"]
    card.add(Heading("Per class", 3))
    card.add(Table(["class"] + columns + ["AUC 95% CI"],
                   [[f"{name} ({long_names[name]})" if name in long_names else name]
                    + [_or_undefined(entry, c) for c in columns]
                    + ["undefined" if entry.get("undefined") else _interval({"ci95": entry.get("auc_ci95")})]
                    for name, entry in metrics["per_class"].items()]))
    undefined = (metrics.get("undefined_labels") or {}).get("test") or []
    if undefined:
        reasons = ", ".join(f"{name} ({metrics['per_class'][name]['undefined']})" for name in undefined)
        card.add(Paragraph(f"Undefined on this test set: {reasons}. "
                           "Their figures that need such images are undefined, not 0, and the means are over the "
                           f"other {len(metrics['per_class']) - len(undefined)} "
                           f"{'labels' if task == 'multilabel' else 'classes'}."))

    rule = metrics.get("decision_rule")
    if rule:
        # The decision rule is inside the exported model too (keras_med.evaluation.decision_rule).
        card.add(Paragraph(f"Decision rule '{rule['method']}' (per-class logit biases fitted on "
                           f"{rule['fitted_on']} validation images, also applied by the served model): "
                           f"{rule['bias_by_class']}. Test balanced accuracy without it: "
                           f"{rule['test_balanced_accuracy_without']:.3f}."))

    point = metrics.get("operating_point", {})
    card.add(Heading("Operating points"))
    card.add(Paragraph(f"Thresholds chosen on {point.get('chosen_on', 'n/a')} by '{point.get('method')}'"
                       f"{' (target ' + str(point.get('target')) + ')' if point.get('method') in ('sensitivity', 'specificity') else ''}"
                       " and applied unchanged to test (one-vs-rest: a class is flagged when its probability "
                       "reaches the threshold)."))
    card.add(Table(["class", "threshold", "test sensitivity", "test specificity"],
                   [[name, entry.get("threshold"), _or_undefined(entry, "sensitivity_at_threshold"),
                     _or_undefined(entry, "specificity_at_threshold")]
                    for name, entry in metrics["per_class"].items() if "sensitivity_at_threshold" in entry]))

    calibration = metrics["calibration"]
    card.add(Heading("Calibration"))
    if calibration.get("temperature") is None:
        card.add(Paragraph(f"Expected calibration error on test: {calibration['ece_before']:.3f} "
                           "(no validation predictions, so no temperature scaling)."))
    else:
        card.add(Paragraph(f"Expected calibration error on test: {calibration['ece_before']:.3f} before and "
                           f"{calibration['ece_after']:.3f} after temperature scaling (T = "
                           f"{calibration['temperature']:.2f}, fitted on validation). NLL "
                           f"{calibration['nll_before']:.3f} -> {calibration['nll_after']:.3f}."))

    health = metrics["health"]
    card.add(Heading("Training health check"), Paragraph(health["summary"]))
    if health["findings"]:
        card.add(Bullets([f"{f['kind']}: {f['message']} Suggested fix: {f['fix']}" for f in health["findings"]]))

    card.add(*trust_blocks(metrics))

    if plots:
        card.add(Heading("Plots"))
        card.add(*[Image(path, caption) for caption, path in plots.items()])
    if gradcam:
        card.add(Heading("Grad-CAM examples"))
        card.add(*[Image(item["path"], item["caption"]) for item in gradcam])

    card.add(Heading("Limits of this model"))
    limits = [f"It only knows the classes {', '.join(class_names)}; an image of any other condition will be "
              "forced into one of them.",
              "The figures hold for images like the training data (same devices, sites, population); check them "
              "on an external test set before any other use."]
    small = [name for name, entry in metrics["per_class"].items() if (entry.get("support") or 0) < 30]
    if small:
        limits.append(f"Few test images for {', '.join(small)} (under 30): their figures are uncertain.")
    if config is not None and hasattr(config, "data"):
        limits.append(f"Trained on: {config.data.data_dir or 'the synthetic demo dataset'}"
                      f"{' (synthetic demo data: not a medical model)' if config.data.demo else ''}.")
        if str(config.model.weights).lower().endswith(".keras"):
            limits.append(f"Fine-tuned from an earlier model: the backbone weights came from {config.model.weights}.")
        if (config.recipe == "classify" and getattr(config.data, "layout", "") in ("folder", "table")
                and not config.data.group_column and not config.data.group_pattern):
            limits.append("NO PATIENT GROUPS: each image was its own group in the split, so images of one patient "
                          "may sit in both training and test and the test figures may be too good.")
    limits.append("Research use only: not a medical device and not a substitute for a clinician.")
    card.add(Bullets(limits))
    return card
