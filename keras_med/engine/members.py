"""`--members K`: K runs of one configuration on one split, averaged into one model (a seed ensemble).

Member k is a full recipe run of its own in `RUN_DIR/member<k>/` with seed `seed + k - 1`: member 1
splits the data as a plain run does (or reads `--split-file`), the others reuse its `split.csv`, so
every member validates and is tested on the same images and differs only in initialisation,
augmentation and batch order. A killed ensemble resumes member by member; a finished member is not
trained again. Members are not exported on their own, and members 2..K fit no guard and draw no
Grad-CAM examples (the ensemble serves member 1's).

Afterwards, in `RUN_DIR/`:
- `members_summary.json`: each member's test figures, their mean and spread;
- `ensemble/`: the members' mean probabilities, evaluated like a run (metrics.json, report), its
  thresholds, decision rule and prediction sets (`trust/conformal.json`) fitted on the mean of the
  members' validation probabilities;
- the SavedModel (unless `--no-export`): one graph averaging the members
  (`keras_med.export.combined`) with the ensemble's thresholds, rule and prediction sets; its
  out-of-distribution guard is member 1's (docs/serving.md), and so are its figures in the
  ensemble's report.

Averaging two HAM10000 runs gained +0.014 to +0.025 test balanced accuracy over their mean;
the cost is K trainings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from keras_med.atomic import write_text_atomic
from keras_med.data.preparation import stage
from keras_med.engine.ensemble import (HEADLINES, ensemble_predictions, evaluate_ensemble, export_folds, group_run_dir,
                                       headline_values, mean_and_sd, run_finished, run_lines)
from keras_med.engine.run import run_recipe
from keras_med.errors import ConfigError
from keras_med.evaluation.decision_rule import fit_decision_rule
from keras_med.evaluation.trust import TrustResult, save_trust
from keras_med.run_directory import RunDirectory

log = logging.getLogger("keras_med")

SUMMARY_FILE = "members_summary.json"


def member_configs(spec, config, out: Path) -> list:
    """Each member's configuration: seed + k - 1, member 1's split (and demo data) for the others, no export."""
    n_members = config.train.members
    first_dir = out / "member1"
    configs = []
    for k in range(1, n_members + 1):
        data, evaluation = config.data, config.evaluation
        if k > 1:
            # Member 1 wrote the split (or read --split-file); with --demo it also wrote the images,
            # which a member with another seed would write differently.
            data = dataclasses.replace(data, split_file=data.split_file or str(RunDirectory(first_dir).split_file))
            if data.demo:
                data = dataclasses.replace(
                    data, demo=False, data_dir=str(Path(config.output_dir) / spec.name / "demo_data"))
            # The ensemble serves member 1's guard and explains with member 1's Grad-CAM: fitting a
            # guard on the others' training features and drawing their examples would be unused work
            # (a few minutes a member on a CPU).
            evaluation = dataclasses.replace(evaluation, ood="none", explain=0)
        configs.append(dataclasses.replace(
            config, data=data, evaluation=evaluation,
            train=dataclasses.replace(config.train, seed=config.train.seed + k - 1, members=1),
            export=dataclasses.replace(config.export, export=False)))
    return configs


def run_members(spec, config, run_dir: str | None = None) -> dict:
    """Train `config.train.members` runs on one split, evaluate and export their average.

    Args:
        spec: the recipe (`keras_med.engine.spec.RecipeSpec`).
        config: the resolved `RecipeConfig`, `train.members` >= 2.
        run_dir: the ensemble's directory (default: `<output-dir>/<recipe>/members-<timestamp>`).

    Returns:
        The summary (also `members_summary.json`).
    """
    if config.train.members < 2:
        raise ConfigError(f"--members: expected at least 2 for an ensemble, got {config.train.members}")
    if config.train.strategy == "multiworker":
        # As with --cv: every worker would write the members' splits and the summary (docs/scale.md).
        raise ConfigError("--members: not with --strategy multiworker; train the ensemble on one machine")
    out = group_run_dir(config, spec, run_dir, prefix="members")
    member_dirs = []
    for k, member_config in enumerate(member_configs(spec, config, out), start=1):
        member_dir = out / f"member{k}"
        member_dirs.append(member_dir)
        if run_finished(member_dir):
            stage("ensemble member %d of %d: finished before, reused", k, config.train.members)
            continue
        stage("ensemble member %d of %d (seed %d) in %s", k, config.train.members, member_config.train.seed,
              member_dir)
        run_recipe(spec, member_config, run_dir=str(member_dir))
    summary = summarise_members(member_dirs)
    predictions = ensemble_predictions(member_dirs, config, validation="mean")
    rule = ensemble_rule(predictions, summary["task"], config)
    sets, trust = ensemble_trust(member_dirs, predictions, rule, config)
    ensemble = evaluate_ensemble(
        member_dirs, out / "ensemble", config, trust=trust, predictions=predictions, decision_rule=rule,
        title=f"Model card: ensemble of {len(member_dirs)} {spec.name} runs (seeds {config.train.seed}.."
              f"{config.train.seed + len(member_dirs) - 1}) in {out.name}")
    if sets is not None:
        save_trust(TrustResult(None, sets, {}), out / "ensemble")
    summary["ensemble"] = {key: ensemble[key]["value"] for key in HEADLINES[ensemble["task"]] if key in ensemble}
    if config.export.export:
        summary["export"] = str(export_folds(spec, config, member_dirs, out / "ensemble", ensemble,
                                             conformal_sets=sets))
    write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2))
    for line in summary_lines(summary):
        log.info("%s", line)
    return summary


def summarise_members(member_dirs: list[Path]) -> dict:
    """Each member's test figures, and their mean and spread (sample standard deviation)."""
    members = []
    for member_dir in member_dirs:
        metrics = RunDirectory(member_dir).read_metrics()
        members.append({"run_dir": str(member_dir), "test": headline_values(metrics)})
    keys = sorted({key for member in members for key in member["test"]})
    return {"members": members, "task": metrics["task"],
            "test_mean_std": {key: mean_and_sd([member["test"].get(key) for member in members]) for key in keys}}


def ensemble_rule(predictions: dict, task: str, config):
    """The `[evaluation] decision_rule` fitted on the mean of the members' validation probabilities
    (multiclass; None otherwise or for "none"), fitted here because the prediction sets are
    calibrated on the probabilities it serves."""
    if task != "multiclass":
        return None
    y_val, p_val = predictions["y_val"], np.asarray(predictions["p_val"], np.float64)
    labels = y_val.argmax(axis=1) if np.ndim(y_val) == 2 else np.asarray(y_val)
    rule = fit_decision_rule(config.evaluation.decision_rule, labels, p_val)
    if rule is not None:
        log.info("ensemble decision rule %s fitted on %d validation images: biases %s", rule.method,
                 rule.fitted_on, np.round(rule.biases, 3).tolist())
    return rule


def ensemble_trust(member_dirs: list[Path], predictions: dict, rule, config) -> tuple:
    """The ensemble's prediction sets and its guard and set figures for the report.

    The out-of-distribution guard is member 1's (the served graph scores member 1's features,
    docs/serving.md), and so are its figures. The prediction sets are the ensemble's own: the
    members share one validation split that none of them trained on, so split-conformal
    calibration on the ensemble's served answer there (mean probabilities, flips when
    `[evaluation] tta` says so, then the decision rule) keeps its coverage guarantee, and a set is
    read off the probabilities the client is shown (with member 1's sets, 2% of HAM10000 test sets
    left out a class shown as more probable than one they held).

    Returns:
        `(ConformalSets or None (multi-label), {"ood": ..., "conformal": ...})`.
    """
    from keras_med.evaluation.arrays import canonical_arrays
    from keras_med.evaluation.conformal import calibrate_conformal, evaluate_sets
    from keras_med.evaluation.trust import served_probabilities

    metrics = RunDirectory(member_dirs[0]).read_metrics()
    trust = {key: metrics[key] for key in ("ood", "conformal") if metrics.get(key)}
    task, names = metrics["task"], metrics["class_names"]
    if task == "multilabel" or not trust.get("conformal"):
        return None, trust
    answer = {}
    for split in ("val", "test"):
        labels, _ = canonical_arrays(task, predictions[f"y_{split}"], predictions[f"p_{split}"], names, f"_{split}")
        served = served_probabilities(task, predictions[f"p_{split}"])
        answer[split] = (labels, served if rule is None else rule.apply(served))
    evaluation = config.evaluation
    sets = calibrate_conformal(answer["val"][1], answer["val"][0], evaluation.coverage, evaluation.conformal,
                               applies_to="answer")
    trust["conformal"] = {"applicable": True, **evaluate_sets(sets, answer["test"][1], answer["test"][0], names,
                                                              n_bootstrap=evaluation.bootstrap,
                                                              seed=config.train.seed)}
    log.info("ensemble prediction sets (%s, target %.0f%%): test coverage %.3f, average size %.2f", sets.mode,
             100 * evaluation.coverage, trust["conformal"]["coverage"]["value"], trust["conformal"]["average_set_size"])
    return sets, trust


def summary_lines(summary: dict) -> list[str]:
    """The summary as log lines: one per member, their mean and spread, the ensemble."""
    lines = ["", f"ensemble of {len(summary['members'])} members",
             *run_lines("member", summary["members"], summary["test_mean_std"])]
    lines.append("  ensemble test " + ", ".join(f"{k} {v:.3f}" for k, v in summary["ensemble"].items()
                                                 if isinstance(v, float)))
    if summary.get("export"):
        lines.append(f"  SavedModel    {summary['export']}")
    return lines
