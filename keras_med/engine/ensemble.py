"""What `--cv` folds and `--members` share: a group's directory, its runs' figures (mean and spread),
their averaged predictions evaluated like a run, and one SavedModel averaging their models.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from keras_med.errors import ConfigError
from keras_med.run_directory import RunDirectory

log = logging.getLogger("keras_med")

HEADLINES = {"multiclass": ("balanced_accuracy", "accuracy", "macro_auc"),
             "binary": ("roc_auc", "balanced_accuracy", "sensitivity", "specificity"),
             "multilabel": ("mean_auc", "mean_pr_auc")}


def group_run_dir(config, spec, run_dir, prefix: str = "cv") -> Path:
    """The directory of a group of runs (folds or members): `run_dir`, or `<output>/<recipe>/<prefix>-<time>`."""
    if run_dir:
        path = Path(run_dir)
    else:
        from datetime import datetime

        path = Path(config.output_dir) / spec.name / f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_finished(fold_dir: Path) -> bool:
    """Whether a run of the group finished: its metrics and its saved predictions are written."""
    return RunDirectory(fold_dir).is_finished()


def headline_values(metrics: dict) -> dict:
    """The task's headline test figures (`HEADLINES`) of a run's metrics, as plain numbers."""
    return {key: metrics[key]["value"] for key in HEADLINES[metrics["task"]]
            if isinstance(metrics.get(key), dict)}


def mean_and_sd(values: list[float]) -> dict:
    """`{"mean", "std"}` (sample standard deviation) of the values that are not None."""
    values = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if values.size == 0:
        return {"mean": None, "std": None}
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if values.size > 1 else 0.0}


def ensemble_predictions(fold_dirs: list[Path], config, validation: str = "pooled") -> dict:
    """The runs' mean test probabilities and the validation predictions the ensemble is fitted on.

    The runs' test splits are the same images in the same order (one held-out test split).

    Args:
        fold_dirs: the runs (cross-validation folds or seed members).
        config: the resolved configuration (`[evaluation] tta` picks the saved predictions).
        validation: "pooled": the folds' validation predictions concatenated (out-of-fold, each
            image once); "mean": the runs share one validation split, averaged like the test split.

    Returns:
        `{"y_val", "p_val", "y_test", "p_test"}` in the pipeline's encoding.
    """
    from keras_med.evaluation.run_predictions import load_run_predictions

    tta = config.evaluation.tta
    runs = [load_run_predictions(fold_dir) for fold_dir in fold_dirs]
    where = fold_dirs[0].parent
    if any(not np.array_equal(run["y_test"], runs[0]["y_test"]) for run in runs[1:]):
        raise ConfigError(f"the runs in {where} have different test splits; delete their split files "
                          "and run them again")
    if validation == "pooled":
        y_val = np.concatenate([run["y_val"] for run in runs])
        p_val = np.concatenate([run[f"p_val_{tta}"] for run in runs])
    else:
        if any(not np.array_equal(run["y_val"], runs[0]["y_val"]) for run in runs[1:]):
            raise ConfigError(f"the runs in {where} have different validation splits; expected one split")
        y_val, p_val = runs[0]["y_val"], np.mean([run[f"p_val_{tta}"] for run in runs], axis=0)
    return {"y_val": y_val, "p_val": p_val, "y_test": runs[0]["y_test"],
            "p_test": np.mean([run[f"p_test_{tta}"] for run in runs], axis=0)}


def evaluate_ensemble(fold_dirs: list[Path], out: Path, config, *, validation: str = "pooled",
                      title: str | None = None, trust: dict | None = None, predictions: dict | None = None,
                      decision_rule=None) -> dict:
    """The models' mean on the test split, evaluated like a run.

    Args:
        fold_dirs: the runs (cross-validation folds or seed members).
        out: where the ensemble's metrics and report go.
        config: the resolved configuration (evaluation settings).
        validation: see `ensemble_predictions`.
        title: the report's title.
        trust: guard and prediction-set figures (`assess_trust`'s report) for its metrics and report.
        predictions: `ensemble_predictions`' answer when the caller already has it; None reads the runs.
        decision_rule: a fitted `LogitAdjustment` to apply; None fits `[evaluation] decision_rule`
            on the validation predictions.
    """
    from keras_med.evaluation import evaluate_run

    predictions = predictions or ensemble_predictions(fold_dirs, config, validation)
    first, ensemble = RunDirectory(fold_dirs[0]), RunDirectory(out)
    names = first.read_class_names()
    out.mkdir(parents=True, exist_ok=True)
    # The ensemble's export takes its class names and example images from here.
    shutil.copyfile(first.class_names_file, ensemble.class_names_file)
    shutil.copyfile(first.split_file, ensemble.split_file)
    return evaluate_run(
        out, class_names=names["class_names"], task=names["task"], long_names=names.get("long_names"),
        y_true_test=predictions["y_test"], y_prob_test=predictions["p_test"],
        y_true_val=predictions["y_val"], y_prob_val=predictions["p_val"],
        config=config, explain=0, seed=config.train.seed, n_bootstrap=config.evaluation.bootstrap,
        operating_point=config.evaluation.operating_point, target=config.evaluation.target,
        decision_rule=decision_rule or config.evaluation.decision_rule, trust=trust,
        title=title or f"Model card: ensemble of the {len(fold_dirs)} cross-validation folds of {out.parent.name}")


def export_folds(spec, config, fold_dirs: list[Path], ensemble_dir: Path, ensemble: dict,
                 conformal_sets=None) -> Path | None:
    """Export the fold models as one SavedModel averaging them, with the ensemble's thresholds and rule.

    The guard is the first run's; so are the prediction sets unless `conformal_sets` (calibrated on
    the ensemble's served answer) are given.
    """
    from keras_med.backend import select_backend
    from keras_med.evaluation.trust import load_run_trust
    from keras_med.export import export_for_serving
    from keras_med.run_directory import load_trained_model

    checkpoints = [RunDirectory(fold_dir).best_checkpoint for fold_dir in fold_dirs]
    if select_backend(config.train.backend) != "tensorflow":
        log.warning("the serving graph is TensorFlow: export the folds from a TensorFlow process with "
                    "keras-med export %s --name NAME", " ".join(f"--model {path}" for path in checkpoints))
        return None
    members = [load_trained_model(path) for path in checkpoints]
    trust = load_run_trust(checkpoints[0])
    if conformal_sets is not None:
        trust["conformal_sets"] = conformal_sets
    return export_for_serving(
        [member.model for member in members], name=config.export.name or spec.name,
        base_dir=config.export.saved_models, class_names=ensemble["class_names"], task=ensemble["task"],
        image_size=config.data.image_size, thresholds=ensemble.get("thresholds"), resize=config.data.resize,
        tta=config.evaluation.tta, decision_rule=ensemble.get("decision_rule"), run_dir=ensemble_dir, **trust)


def run_lines(kind: str, runs: list[dict], test_mean_std: dict) -> list[str]:
    """One log line per run (fold or member) with its test figures, then their mean and spread."""
    lines = [f"  {kind} {index} test ".ljust(15) + ", ".join(f"{k} {v:.3f}" for k, v in run["test"].items()
                                                          if v is not None)
             for index, run in enumerate(runs, start=1)]
    lines.append("  mean (sd)     " + ", ".join(
        f"{k} {v['mean']:.3f} ({v['std']:.3f})" for k, v in test_mean_std.items() if v["mean"] is not None))
    return lines
