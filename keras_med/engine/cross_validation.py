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
from pathlib import Path

import numpy as np

from keras_med.atomic import write_text_atomic
from keras_med.engine.ensemble import (HEADLINES, evaluate_ensemble, export_folds, group_run_dir, headline_values,
                                       mean_and_sd, run_finished, run_lines)
from keras_med.errors import ConfigError
from keras_med.run_directory import RunDirectory

log = logging.getLogger("keras_med")

SUMMARY_FILE = "cv_summary.json"


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
        spec: the recipe (`keras_med.engine.spec.RecipeSpec`).
        config: the resolved `RecipeConfig`; each fold runs it with its fold's split and no export.
        n_folds: K, at least 2.
        run_dir: the cross-validation's directory (default: `<output-dir>/<recipe>/cv-<timestamp>`).
        export: export the K models as one averaged SavedModel.
    """
    # Imported here: the parser's `add_arguments` must not start TensorFlow (`--help`).
    from keras_med.data.preparation import stage
    from keras_med.engine.run import run_recipe

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


def write_fold_splits(spec, config, out: Path, n_folds: int) -> list[Path]:
    """`fold<k>/fold_split.csv` for each fold (kept when they exist, so a resumed run trains the same folds)."""
    from keras_med import data as kdata
    from keras_med.data.preparation import load_split_table

    paths = [out / f"fold{fold}" / "fold_split.csv" for fold in range(1, n_folds + 1)]
    if all(path.is_file() for path in paths):
        return paths
    table = load_split_table(spec, config)
    for path, fold_table in zip(paths, kdata.kfold_by_group(table, n_folds, seed=config.train.seed)):
        kdata.save_split(fold_table, path)
    return paths


def summarise_folds(fold_dirs: list[Path], config) -> dict:
    """Each fold's test figures, their mean and spread, and the pooled out-of-fold figures."""
    from keras_med.evaluation.metrics import compute_metrics
    from keras_med.evaluation.run_predictions import load_run_predictions

    folds, oof_true, oof_prob = [], [], []
    tta = config.evaluation.tta
    for fold_dir in fold_dirs:
        metrics = RunDirectory(fold_dir).read_metrics()
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
