"""Assemble the model card (report.md / report.html) from the metrics dictionary and the plots.

The card reads like a published model card: what a reader needs first comes first. Its sections
follow Hugging Face's model card template (model details, uses and out-of-scope use, bias, risks and
limitations, evaluation results) and Google's Model Card Toolkit (`model_details`,
`quantitative_analysis`, `considerations`: users, use cases, limitations, trade-offs, ethical
considerations), narrowed to what a run knows about itself:

1. a "no better than chance" warning as the first line, and "Training diverged", when they apply;
2. model details, intended and out-of-scope use;
3. the data and its split, the headline metrics with intervals, per-class recall (and the rest);
4. the training health check, calibration, operating points (the trade-off each threshold makes);
5. limits (named from the metrics) and ethical considerations;
6. trust: unfamiliar inputs and prediction sets; then plots and Grad-CAM examples;
7. the full configuration, folded.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from importlib import metadata

import pandas as pd

import keras_med
from keras_med.evaluation.metrics import HEADLINES
from keras_med.evaluation.report import Bullets, Card, Collapsed, Heading, Image, Paragraph, Table
from keras_med.evaluation.trust_report import trust_blocks, warning_blocks

# A class with fewer test images than this gets a "few test images" limit.
FEW_TEST_IMAGES = 30
# A class whose AUC 95% interval is at least this wide gets a "wide interval" limit: at 0.2 the
# interval spans the distance between a fair and a good discriminator (say 0.7 and 0.9).
WIDE_INTERVAL = 0.2

TASK_WORDS = {"multiclass": "one class per image", "binary": "a binary decision",
              "multilabel": "each label present or absent, independently"}

ETHICS = ("Ethical considerations: a model learns whatever its training data over- or under-represents (skin "
          "types, ages, sexes, devices, hospitals); the figures here are averages over one test split and can be "
          "worse for a group it saw little of, so measure them on the people it would serve before any use, and "
          "leave every decision about a patient to a clinician.")


def _interval(entry: dict) -> str:
    if not entry.get("ci95"):
        return "n/a"
    low, high = entry["ci95"]
    return f"[{low:.3f}, {high:.3f}]"


def _or_undefined(entry: dict, key: str):
    """A per-class figure, or "undefined" when the test set cannot measure it (see metrics.py)."""
    value = entry.get(key)
    return "undefined" if value is None and entry.get("undefined") else value


def _settings(config) -> dict:
    """The run's configuration as nested plain data (`RecipeConfig.to_dict()`), or {} without one."""
    if config is None:
        return {}
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def _config_items(settings: dict) -> list[str]:
    items = []
    for key, value in settings.items():
        if isinstance(value, dict):
            items += [f"{key}.{name} = {item!r}" for name, item in value.items()]
        else:
            items.append(f"{key} = {value!r}")
    return items


def _summary_table(data_summary) -> Table:
    frame = data_summary if isinstance(data_summary, pd.DataFrame) else pd.DataFrame(data_summary)
    frame = frame.rename_axis(frame.index.name or "class").reset_index()
    return Table([str(c) for c in frame.columns], frame.astype(object).where(frame.notna(), None).values.tolist())


def _trained_on(settings: dict) -> str | None:
    data = settings.get("data") or {}
    if "data_dir" not in data:
        return None
    where = data["data_dir"] or "the synthetic demo dataset"
    return where + (" (synthetic demo data: not a medical model)" if data.get("demo") else "")


def _weights_text(weights: str) -> str:
    if str(weights).lower().endswith(".keras"):
        return f"fine-tuned from an earlier model: the backbone weights came from {weights}"
    if str(weights).lower() == "none":
        return "none (trained from scratch)"
    return str(weights)


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _backend(name: str) -> str:
    """The Keras backend a run used; "auto" is resolved only where Keras is already imported (metrics need none)."""
    keras_module = sys.modules.get("keras")
    return keras_module.backend.backend() if name == "auto" and keras_module is not None else name


def _model_details(metrics: dict, settings: dict, long_names: dict) -> list:
    task, class_names = metrics["task"], metrics["class_names"]
    names = ", ".join(f"{name} ({long_names[name]})" if name in long_names else name for name in class_names)
    kind = "labels" if task == "multilabel" else "classes"
    items = [f"Task: {task} ({TASK_WORDS.get(task, task)}) over {len(class_names)} {kind}: {names}."]
    # A config given as a partial dict names only what it holds.
    model, data, train = settings.get("model") or {}, settings.get("data") or {}, settings.get("train") or {}
    if "model" in model:
        width = f", width {model['width']}" if model.get("width", 1.0) != 1.0 else ""
        items += [f"Architecture: {model['model']}{width}, head Dense({model.get('head_units')}) with dropout "
                  f"{model.get('dropout')}.",
                  f"Backbone weights: {_weights_text(model.get('weights'))}."]
    if "image_size" in data:
        colour = (", after Shades-of-Gray colour constancy (each image's colour cast removed)"
                  if model.get("colour_constancy", "none") != "none" else "")
        items.append(f"Input: {data['image_size']} x {data['image_size']} RGB images ({data.get('resize', 'resize')} "
                     f"to that side), pixel values 0..255; the normalisation is inside the model{colour}.")
    if "epochs" in train:
        items.append(f"Training: recipe {settings.get('recipe')}, {train.get('plan')} plan, up to {train['epochs']} "
                     f"epochs, {train.get('optimizer')} at learning rate {train.get('learning_rate')}, seed "
                     f"{train.get('seed')}; Keras {_package_version('keras')}, backend "
                     f"{_backend(train.get('backend', 'auto'))}.")
    items.append(f"Card written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by keras_med {keras_med.__version__}.")
    return [Heading("Model details"), Bullets(items)]


def _intended_use(metrics: dict, settings: dict) -> list:
    trained_on = _trained_on(settings)
    like = f"images like its training data ({trained_on})" if trained_on else "images like its training data"
    kind = "labels" if metrics["task"] == "multilabel" else "classes"
    return [Heading("Intended use"), Bullets([
        f"Intended use: research and development in medical image analysis: telling apart the {kind} above on {like}.",
        "Intended users: ML engineers and researchers in medical imaging, reading the figures below with their "
        "intervals.",
        "Out of scope: diagnosing, triaging or treating a patient (not a medical device, not a substitute for a "
        f"clinician); images of anything but these {kind}; images from other devices, sites, populations or "
        "modalities than the training data until the model has been scored on such a test set (`keras-med evaluate`).",
    ])]


def _data_blocks(metrics: dict, settings: dict, data_summary) -> list:
    blocks = [Heading("Data")]
    trained_on = _trained_on(settings)
    if trained_on:
        blocks.append(Paragraph(f"Trained on: {trained_on}."))
    blocks.append(Paragraph(f"Test images: {metrics['n_samples']}."))
    boot = metrics.get("bootstrap", {})
    if boot.get("groups") is not None:
        blocks.append(Paragraph(f"The test images come from {boot['groups']} groups (lesions or patients); intervals "
                                "resample whole groups."))
    if data_summary is not None:
        blocks.append(_summary_table(data_summary))
    bad = metrics.get("bad_images")
    if bad:
        reasons = ", ".join(f"{count} {reason}" for reason, count in bad.get("reasons", {}).items())
        blocks.append(Paragraph(f"{bad['count']} image(s) were skipped as bad ({reasons}; --on-bad-image skip): "
                                f"each is listed with its metadata line and reason in {bad['file']}."))
    return blocks


def _metric_blocks(metrics: dict, long_names: dict) -> list:
    task, boot = metrics["task"], metrics.get("bootstrap", {})
    blocks = [Heading("Metrics (test split, 95% bootstrap intervals)"),
              Table(["metric", "value", "95% CI"],
                    [[name.replace("_", " "), metrics[name]["value"], _interval(metrics[name])]
                     for name in HEADLINES[task]]),
              Paragraph(f"Intervals from {boot.get('n', 0)} bootstrap resamples"
                        f"{' by group' if boot.get('groups') else ''}.")]
    # Recall first: the figure an accuracy hides for a minority class.
    columns = ["support", "recall", "precision", "f1", "auc"]
    blocks += [Heading("Per class", 3),
               Table(["class"] + columns + ["AUC 95% CI", "pr_auc"],
                     [[f"{name} ({long_names[name]})" if name in long_names else name]
                      + [_or_undefined(entry, c) for c in columns]
                      + ["undefined" if entry.get("undefined") else _interval({"ci95": entry.get("auc_ci95")}),
                         _or_undefined(entry, "pr_auc")]
                      for name, entry in metrics["per_class"].items()])]
    undefined = (metrics.get("undefined_labels") or {}).get("test") or []
    if undefined:
        reasons = ", ".join(f"{name} ({metrics['per_class'][name]['undefined']})" for name in undefined)
        blocks.append(Paragraph(f"Undefined on this test set: {reasons}. "
                                "Their figures that need such images are undefined, not 0, and the means are over the "
                                f"other {len(metrics['per_class']) - len(undefined)} "
                                f"{'labels' if task == 'multilabel' else 'classes'}."))
    return blocks


def _decision_rule_blocks(metrics: dict) -> list:
    rule = metrics.get("decision_rule")
    if not rule:
        return []
    # The decision rule is inside the exported model too (keras_med.evaluation.decision_rule).
    return [Paragraph(f"Decision rule '{rule['method']}' (per-class logit biases fitted on {rule['fitted_on']} "
                      f"validation images, also applied by the served model): {rule['bias_by_class']}. "
                      f"Test balanced accuracy without it: {rule['test_balanced_accuracy_without']:.3f}.")]


def _health_blocks(metrics: dict) -> list:
    health = metrics["health"]
    blocks = [Heading("Training health check"), Paragraph(health["summary"])]
    if health["findings"]:
        blocks.append(Bullets([f"{f['kind']}: {f['message']} Suggested fix: {f['fix']}" for f in health["findings"]]))
    return blocks


def _calibration_blocks(metrics: dict) -> list:
    calibration = metrics["calibration"]
    if calibration.get("temperature") is None:
        text = (f"Expected calibration error on test: {calibration['ece_before']:.3f} "
                "(no validation predictions, so no temperature scaling).")
    else:
        text = (f"Expected calibration error on test: {calibration['ece_before']:.3f} before and "
                f"{calibration['ece_after']:.3f} after temperature scaling (T = {calibration['temperature']:.2f}, "
                f"fitted on validation). NLL {calibration['nll_before']:.3f} -> {calibration['nll_after']:.3f}.")
    return [Heading("Calibration"), Paragraph(text)]


def _operating_point_blocks(metrics: dict) -> list:
    point = metrics.get("operating_point", {})
    target = (f" (target {point.get('target')})" if point.get("method") in ("sensitivity", "specificity") else "")
    return [Heading("Operating points"),
            Paragraph(f"Thresholds chosen on {point.get('chosen_on', 'n/a')} by '{point.get('method')}'{target} and "
                      "applied unchanged to test (one-vs-rest: a class is flagged when its probability reaches the "
                      "threshold)."),
            Table(["class", "threshold", "test sensitivity", "test specificity"],
                  [[name, entry.get("threshold"), _or_undefined(entry, "sensitivity_at_threshold"),
                    _or_undefined(entry, "specificity_at_threshold")]
                   for name, entry in metrics["per_class"].items() if "sensitivity_at_threshold" in entry])]


def _limits(metrics: dict, settings: dict) -> list[str]:
    class_names, per_class = metrics["class_names"], metrics["per_class"]
    limits = [f"It only knows the classes {', '.join(class_names)}; an image of any other condition will be "
              "forced into one of them.",
              "The figures hold for images like the training data (same devices, sites, population); check them "
              "on an external test set before any other use."]
    small = [name for name, entry in per_class.items() if (entry.get("support") or 0) < FEW_TEST_IMAGES]
    if small:
        limits.append(f"Few test images for {', '.join(small)} (under {FEW_TEST_IMAGES}): their figures are uncertain.")
    wide = [f"{name} [{entry['auc_ci95'][0]:.2f}, {entry['auc_ci95'][1]:.2f}]" for name, entry in per_class.items()
            if entry.get("auc_ci95") and entry["auc_ci95"][1] - entry["auc_ci95"][0] >= WIDE_INTERVAL]
    if wide:
        limits.append(f"Wide intervals: the AUC of {', '.join(wide)} is known only within these 95% bounds; more test "
                      "images of them would narrow it.")
    data = settings.get("data") or {}
    if (settings.get("recipe") == "classify" and data.get("layout") in ("folder", "table")
            and not data.get("group_column") and not data.get("group_pattern")):
        limits.append("NO PATIENT GROUPS: each image was its own group in the split, so images of one patient "
                      "may sit in both training and test and the test figures may be too good.")
    limits.append("Research use only: not a medical device and not a substitute for a clinician.")
    return limits


def build_model_card(metrics: dict, title: str, config=None, data_summary=None, long_names=None,
                     plots: dict | None = None, gradcam: list[dict] | None = None,
                     environment: dict | None = None) -> Card:
    """The model card's blocks, in reading order (see the module's docstring).

    Args:
        metrics: the dictionary `evaluate_run` writes to metrics.json.
        title: the card's title.
        config: a RecipeConfig (anything with `to_dict()`) or its dict, or None (an external evaluation).
        data_summary: counts per class and split (DataFrame or dict of dicts), or None.
        long_names: optional `{class name: long name}` used in the model details and per-class table.
        plots: `{caption: relative PNG path}`.
        gradcam: `[{"path", "caption"}]` Grad-CAM overlays, relative paths.
        environment: the run's environment.json (`keras_med.training.environment.read_environment`),
            shown as "Ran on"; None leaves the section out.

    Returns:
        A `Card`; `keras_med.evaluation.report.write_card` renders it.

    Example:

    ```python
    card = build_model_card(metrics, "Model card: ham10000", config=config)
    write_card(card, run_dir)  # report.md and report.html
    ```
    """
    settings, long_names = _settings(config), long_names or {}
    card = Card(title)
    card.add(*warning_blocks(metrics))
    if metrics.get("diverged"):
        message = metrics["diverged"]["message"]
        card.add(Heading("Training diverged"), Paragraph(message[:1].upper() + message[1:] + "."))
    card.add(*_model_details(metrics, settings, long_names), *_intended_use(metrics, settings))
    if environment:
        from keras_med.training.environment import environment_summary

        card.add(Heading("Ran on", 3), Bullets(environment_summary(environment)))
    card.add(*_data_blocks(metrics, settings, data_summary), *_metric_blocks(metrics, long_names),
             *_decision_rule_blocks(metrics))
    card.add(*_health_blocks(metrics), *_calibration_blocks(metrics), *_operating_point_blocks(metrics))
    card.add(Heading("Limits of this model"), Bullets(_limits(metrics, settings)), Paragraph(ETHICS))
    card.add(*trust_blocks(metrics))
    if plots:
        card.add(Heading("Plots"), *[Image(path, caption) for caption, path in plots.items()])
    if gradcam:
        card.add(Heading("Grad-CAM examples"), *[Image(item["path"], item["caption"]) for item in gradcam])
    if settings:
        card.add(Collapsed("Configuration (every setting of the run, as in its config.toml)",
                           [Bullets(_config_items(settings))]))
    return card
