"""evaluate_run end to end: metrics.json, plots and a model card whose every image exists."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from keras_med.config import RecipeConfig
from keras_med.evaluation import evaluate_run


def _predictions(n, n_classes, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    p = rng.dirichlet(np.ones(n_classes), n)
    p[np.arange(n), y] += 0.5
    return y, p / p.sum(axis=1, keepdims=True)


def _referenced_images(markdown):
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_multiclass_run_writes_metrics_plots_and_card(tmp_path):
    y_test, p_test = _predictions(120, 3, 0)
    y_val, p_val = _predictions(90, 3, 1)
    history = pd.DataFrame({"epoch": range(6), "loss": np.linspace(1, 0.5, 6), "val_loss": np.linspace(1.1, 0.6, 6),
                            "balanced_accuracy": np.linspace(0.4, 0.8, 6), "learning_rate": [1e-3] * 6})
    images = np.random.default_rng(2).uniform(0, 255, (120, 16, 16, 3)).astype(np.float32)
    summary = pd.DataFrame({"train": [50, 30, 20], "test": [40, 40, 40]}, index=["nv", "mel", "bcc"])
    metrics = evaluate_run(tmp_path, class_names=["nv", "mel", "bcc"], task="multiclass", y_true_test=y_test,
                           y_prob_test=p_test, y_true_val=y_val, y_prob_val=p_val,
                           groups_test=np.arange(120) // 2, history=history, config=RecipeConfig(),
                           data_summary=summary, test_images=lambda i: images[i],
                           long_names={"mel": "Melanoma"}, n_bootstrap=100)
    stored = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_auc"):
        assert set(stored[key]) == {"value", "ci95"}
    assert stored["bootstrap"] == {"n": 100, "groups": 60}
    assert len(stored["thresholds"]) == 3 and stored["operating_point"]["chosen_on"] == "validation"
    assert set(stored["per_class"]["mel"]) >= {"precision", "recall", "f1", "support", "auc"}
    assert stored["calibration"]["temperature"] is not None and "summary" in stored["health"]
    markdown = (tmp_path / "report.md").read_text()
    images_in_card = _referenced_images(markdown)
    assert "plots/confident_mistakes.png" in images_in_card and "plots/training_curves.png" in images_in_card
    assert all((tmp_path / path).is_file() for path in images_in_card)
    assert "Melanoma" in markdown and "Limits of this model" in markdown
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(images_in_card) and "<img src='plots" not in html


def test_binary_run_uses_given_thresholds(tmp_path):
    y, p = _predictions(80, 2, 3)
    metrics = evaluate_run(tmp_path, class_names=["normal", "pneumonia"], task="binary", y_true_test=y[:, None],
                           y_prob_test=p[:, 1:], thresholds=[0.3], n_bootstrap=50)
    assert metrics["thresholds"] == [0.3] and metrics["operating_point"]["method"] == "given"
    assert metrics["calibration"]["temperature"] is None
    assert all((tmp_path / path).is_file() for path in _referenced_images((tmp_path / "report.md").read_text()))


def test_multilabel_run_has_a_confusion_matrix_per_label(tmp_path):
    rng = np.random.default_rng(4)
    y = (rng.random((100, 3)) < 0.4).astype(int)
    p = np.clip(0.5 * y + 0.5 * rng.random((100, 3)), 0, 1)
    metrics = evaluate_run(tmp_path, class_names=["effusion", "mass", "nodule"], task="multilabel", y_true_test=y,
                           y_prob_test=p, y_true_val=y, y_prob_val=p, operating_point="sensitivity", target=0.9,
                           n_bootstrap=50)
    assert metrics["mean_auc"]["ci95"][0] <= metrics["mean_auc"]["value"] <= metrics["mean_auc"]["ci95"][1]
    assert all(metrics["per_class"][name]["sensitivity_at_threshold"] >= 0.9 for name in ("effusion", "mass"))
    assert (tmp_path / "plots" / "confusion_matrices.png").is_file()


def test_mismatched_inputs_are_rejected(tmp_path):
    y, p = _predictions(20, 3, 5)
    with pytest.raises(ValueError, match="y_true_test and y_prob_test"):
        evaluate_run(tmp_path, class_names=["a", "b", "c"], task="multiclass", y_true_test=y[:10], y_prob_test=p)
    with pytest.raises(ValueError, match="y_prob_val"):
        evaluate_run(tmp_path, class_names=["a", "b", "c"], task="multiclass", y_true_test=y, y_prob_test=p,
                     y_true_val=y, y_prob_val=p[:, :2])


# --- the card's layout, from a hand-written metrics dictionary (no model, no plots computed) ------
def _tiny_metrics(no_skill=False):
    def headline(value, low, high):
        return {"value": value, "ci95": [low, high]}

    def per_class(support, recall, auc_ci95):
        return {"support": support, "recall": recall, "precision": 0.7, "f1": 0.7, "auc": 0.8, "auc_ci95": auc_ci95,
                "pr_auc": 0.6, "threshold": 0.4, "sensitivity_at_threshold": 0.8, "specificity_at_threshold": 0.7}

    finding = {"kind": "no_skill", "message": "The model is no better than chance: balanced accuracy 0.34 "
               "[0.25, 0.43] contains 0.33.", "evidence": {}, "fix": "More data."}
    return {
        "task": "multiclass", "class_names": ["nv", "mel"], "n_samples": 80,
        "accuracy": headline(0.8, 0.7, 0.9), "balanced_accuracy": headline(0.75, 0.6, 0.85),
        "macro_auc": headline(0.8, 0.7, 0.9), "weighted_auc": headline(0.81, 0.7, 0.9),
        "per_class": {"nv": per_class(68, 0.9, [0.75, 0.85]), "mel": per_class(12, 0.35, [0.55, 0.95])},
        "operating_point": {"method": "youden", "target": 0.9, "chosen_on": "validation"},
        "bootstrap": {"n": 200, "groups": 40},
        "calibration": {"n_bins": 15, "ece_before": 0.1, "temperature": None},
        "health": {"healthy": not no_skill, "summary": "One finding.", "findings": [finding] if no_skill else []},
        "ood": {"method": "knn", "threshold": 1.5, "pass_rate": 0.95, "validation_pass_rate": 0.95, "n_fit": 100,
                "test_pass_rate": 0.94, "sets": []},
        "conformal": {"applicable": False},
    }


def _plot(tmp_path):
    from PIL import Image

    (tmp_path / "plots").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "plots" / "roc.png")
    return {"ROC curves": "plots/roc.png"}


def test_the_card_reads_like_a_model_card_in_order_with_the_configuration_folded_last(tmp_path):
    from keras_med.evaluation.model_card import build_model_card
    from keras_med.evaluation.report import write_card

    config = RecipeConfig()
    config.model.model, config.train.backend = "densenet121", "jax"
    card = build_model_card(_tiny_metrics(), "Model card: tiny", config=config, plots=_plot(tmp_path),
                            long_names={"mel": "Melanoma"})
    headings = card.headings()
    expected = ["Model details", "Intended use", "Data", "Metrics (test split, 95% bootstrap intervals)", "Per class",
                "Training health check", "Calibration", "Operating points", "Limits of this model",
                "Unfamiliar inputs", "Prediction sets", "Plots"]
    assert headings[:len(expected)] == expected
    assert len(headings) == len(expected) + 1 and headings[-1].startswith("Configuration")
    markdown_path, html_path = write_card(card, tmp_path)
    markdown = markdown_path.read_text()
    details = markdown[markdown.index("<details>"):]
    assert details.startswith("<details>\n<summary>Configuration") and details.rstrip().endswith("</details>")
    assert "- model.model = 'densenet121'" in details and "model.model" not in markdown[:markdown.index("<details>")]
    html = html_path.read_text()
    assert html.index("<h2>Plots</h2>") < html.index("<details><summary>Configuration") < html.index("</details>")
    # model details, intended use and the limits the metrics name
    assert "Architecture: densenet121" in markdown and "backend jax" in markdown and "mel (Melanoma)" in markdown
    assert "Out of scope: diagnosing" in markdown and "Ethical considerations:" in markdown
    assert "Few test images for mel (under 30)" in markdown and "the AUC of mel [0.55, 0.95]" in markdown
    assert "nv [0.75" not in markdown
    # the per-class table leads with support and recall
    assert "| class | support | recall |" in markdown and "| mel (Melanoma) | 12 | 0.350 |" in markdown


def test_the_card_says_when_the_model_removes_colour_casts():
    from keras_med.evaluation.model_card import build_model_card
    from keras_med.evaluation.report import render_markdown

    config = RecipeConfig()
    texts = {}
    for method in ("none", "shades_of_gray"):
        config.model.colour_constancy = method
        texts[method] = render_markdown(build_model_card(_tiny_metrics(), "card", config=config, plots={}))
    assert "after Shades-of-Gray colour constancy" in texts["shades_of_gray"]
    assert "Shades-of-Gray" not in texts["none"]


def test_a_model_with_no_skill_is_named_in_the_cards_first_line_in_both_formats(tmp_path):
    from keras_med.evaluation.model_card import build_model_card
    from keras_med.evaluation.report import write_card

    metrics = _tiny_metrics(no_skill=True)
    metrics["diverged"] = {"message": "training diverged at epoch 3"}
    markdown_path, html_path = write_card(build_model_card(metrics, "Model card: tiny"), tmp_path)
    blocks = markdown_path.read_text().split("\n\n")
    assert blocks[0] == "# Model card: tiny"
    assert blocks[1].startswith("WARNING: The model is no better than chance") and blocks[2] == "## Training diverged"
    html = html_path.read_text()
    assert html[html.index("</h1>") + 5:].lstrip().startswith("<p>WARNING: The model is no better than chance")
    assert "<details>" not in html, "no configuration given, nothing folded"


def test_a_partial_config_dict_names_only_what_it_holds(tmp_path):
    from keras_med.evaluation.model_card import build_model_card
    from keras_med.evaluation.report import render_markdown

    markdown = render_markdown(build_model_card(_tiny_metrics(), "Model card", config={"model": {"model": "vgg16"}}))
    assert "Architecture: vgg16" in markdown and "Input:" not in markdown and "Training:" not in markdown
    assert "Trained on" not in markdown
    assert "- model.model = 'vgg16'" in markdown
