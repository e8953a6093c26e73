"""`--cv K`: K models on group-wise folds, each reported, their mean and spread, pooled out-of-fold predictions.

The test split is held out first (as a plain run holds it out, or from `--split-file`); the other
images are cut into K folds by group (`keras_med.data.kfold_by_group`: no lesion or patient in two
folds). Fold k trains on the other folds and validates on fold k, as a full recipe run of its own
in `RUN_DIR/fold<k>/` (report, checkpoint, guards; `--split-file` of its fold), so a killed
cross-validation resumes fold by fold and a finished fold is not trained again.

Afterwards, in `RUN_DIR/`:
- `cv_summary.json`: each fold's test and validation figures, their mean and spread (sample
  standard deviation), and the pooled out-of-fold figures (every non-test image predicted once,
  by the model that did not train on it);
- `ensemble/`: the K models averaged on the test split, evaluated like a run (metrics.json,
  report), with its thresholds and decision rule chosen on the pooled out-of-fold predictions;
- with `--cv-export`, the K models as one SavedModel that averages their probabilities
  (`keras_med.export.combined`; the guard and the prediction sets are fold 1's: no validation
  split was left out by every fold).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from keras_med.atomic import write_text_atomic
from keras_med.errors import ConfigError

log = logging.getLogger("keras_med")

SUMMARY_FILE = "cv_summary.json"
HEADLINES = {"multiclass": ("balanced_accuracy", "accuracy", "macro_auc"),
             "binary": ("roc_auc", "balanced_accuracy", "sensitivity", "specificity"),
             "multilabel": ("mean_auc", "mean_pr_auc")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--cv K` and `--cv-export` flags of a recipe."""
    group = parser.add_argument_group("cross-validation")
    group.add_argument("--cv", type=int, default=0, metavar="K",
                       help="Train K models on group-wise folds of the non-test images and report each, their mean "
                            "and spread and the pooled out-of-fold predictions; 0: one run, no folds.")
    group.add_argument("--cv-export", action="store_true",
                       help="With --cv: export the K models as one SavedModel that averages their probabilities.")


def check_arguments(args: argparse.Namespace) -> None:
    if args.cv == 1 or args.cv < 0:
        raise ConfigError(f"--cv: expected 0 (no cross-validation) or at least 2 folds, got {args.cv}")
    if args.cv_export and not args.cv:
        raise ConfigError("--cv-export: needs --cv K")


def run_cross_validation(spec, config, n_folds: int, run_dir: str | None = None, export: bool = False) -> dict:
    """Train and evaluate `n_folds` models on group-wise folds; returns the summary (also `cv_summary.json`).

    Args:
        spec: the recipe (`keras_med.recipes.base.RecipeSpec`).
        config: the resolved `RecipeConfig`; each fold runs it with its fold's split and no export.
        n_folds: K, at least 2.
        run_dir: the cross-validation's directory (default: `<output-dir>/<recipe>/cv-<timestamp>`).
        export: export the K models as one averaged SavedModel.
    """
    from keras_med.recipes.base import run_recipe, stage

    if n_folds < 2:
        raise ConfigError(f"--cv: expected at least 2 folds, got {n_folds}")
    if config.train.strategy == "multiworker":
        # Every worker would write the folds' splits and the summary into the shared folder, and
        # only the chief's fold runs write metrics (docs/scale.md).
        raise ConfigError("--cv: not with --strategy multiworker; run the cross-validation on one machine")
    out = group_run_dir(config, spec, run_dir)
    fold_dirs = []
    for fold, split_path in enumerate(write_fold_splits(spec, config, out, n_folds), start=1):
        fold_dir = out / f"fold{fold}"
        fold_dirs.append(fold_dir)
        if run_finished(fold_dir):
            stage("cross-validation fold %d of %d: finished before, reused", fold, n_folds)
            continue
        stage("cross-validation fold %d of %d in %s", fold, n_folds, fold_dir)
        fold_config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, split_file=str(split_path)),
            export=dataclasses.replace(config.export, export=False))
        run_recipe(spec, fold_config, run_dir=str(fold_dir))
    summary = summarise_folds(fold_dirs, config)
    ensemble = evaluate_ensemble(fold_dirs, out / "ensemble", config)
    summary["ensemble"] = {key: ensemble[key]["value"] for key in HEADLINES[ensemble["task"]] if key in ensemble}
    summary["ensemble"]["decision_rule"] = ensemble.get("decision_rule")
    if export:
        summary["export"] = str(export_folds(spec, config, fold_dirs, out / "ensemble", ensemble))
    write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2))
    for line in summary_lines(summary):
        log.info("%s", line)
    return summary


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
    from keras_med.evaluation.run_predictions import load_run_predictions

    return (fold_dir / "metrics.json").is_file() and bool(load_run_predictions(fold_dir))


def write_fold_splits(spec, config, out: Path, n_folds: int) -> list[Path]:
    """`fold<k>/fold_split.csv` for each fold (kept when they exist, so a resumed run trains the same folds)."""
    from keras_med import data as kdata
    from keras_med.recipes.base import load_split_table

    paths = [out / f"fold{fold}" / "fold_split.csv" for fold in range(1, n_folds + 1)]
    if all(path.is_file() for path in paths):
        return paths
    table = load_split_table(spec, config)
    for path, fold_table in zip(paths, kdata.kfold_by_group(table, n_folds, seed=config.train.seed)):
        kdata.save_split(fold_table, path)
    return paths


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


def summarise_folds(fold_dirs: list[Path], config) -> dict:
    """Each fold's test figures, their mean and spread, and the pooled out-of-fold figures."""
    from keras_med.evaluation.metrics import compute_metrics
    from keras_med.evaluation.run_predictions import load_run_predictions

    folds, oof_true, oof_prob = [], [], []
    tta = config.evaluation.tta
    for fold_dir in fold_dirs:
        metrics = json.loads((fold_dir / "metrics.json").read_text(encoding="utf-8"))
        entry = {"run_dir": str(fold_dir), "test": headline_values(metrics)}
        if metrics.get("decision_rule"):
            entry["test"]["balanced_accuracy_without_rule"] = metrics["decision_rule"]["test_balanced_accuracy_without"]
        if metrics["task"] != "multilabel":
            entry["test_recall"] = {name: item.get("recall") for name, item in metrics["per_class"].items()}
        folds.append(entry)
        arrays = load_run_predictions(fold_dir)
        oof_true.append(arrays["y_val"])
        oof_prob.append(arrays[f"p_val_{tta}"])
    task, class_names = metrics["task"], metrics["class_names"]
    oof = compute_metrics(task, np.concatenate(oof_true), np.concatenate(oof_prob), class_names, n_bootstrap=0)
    keys = sorted({key for fold in folds for key in fold["test"]})
    return {"folds": folds, "task": task, "class_names": class_names,
            "test_mean_std": {key: mean_and_sd([fold["test"].get(key) for fold in folds]) for key in keys},
            "out_of_fold": {"n_images": int(sum(len(y) for y in oof_true)),
                            **{key: oof[key]["value"] for key in HEADLINES[task] if isinstance(oof.get(key), dict)},
                            "note": "raw probabilities of the fold models, no decision rule"}}


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
    first = fold_dirs[0]
    names = json.loads((first / "class_names.json").read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    # The ensemble's export takes its class names and example images from here.
    for name in ("class_names.json", "split.csv"):
        shutil.copyfile(first / name, out / name)
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

    checkpoints = [fold_dir / "checkpoints" / "best.keras" for fold_dir in fold_dirs]
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


def summary_lines(summary: dict) -> list[str]:
    """The summary as log lines: one per fold, mean and spread, out-of-fold, ensemble."""
    lines = ["", f"cross-validation: {len(summary['folds'])} folds",
             *run_lines("fold", summary["folds"], summary["test_mean_std"])]
    oof = summary["out_of_fold"]
    lines.append(f"  out-of-fold ({oof['n_images']} images) " + ", ".join(
        f"{k} {oof[k]:.3f}" for k in HEADLINES[summary["task"]] if oof.get(k) is not None))
    lines.append("  ensemble test " + ", ".join(f"{k} {v:.3f}" for k, v in summary["ensemble"].items()
                                                 if isinstance(v, float)))
    if summary.get("export"):
        lines.append(f"  SavedModel    {summary['export']}")
    return lines
