"""`run_recipe`: one model trained, evaluated and exported, composed from the package's rooms.

It hands each room its own arguments and holds no training loop of its own; data preparation is
`keras_med.data.preparation`, the trust step `keras_med.engine.trust`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from keras_med.config import RecipeConfig
from keras_med.data.preparation import prepare_data, stage, test_image_source
from keras_med.engine.spec import RecipeSpec
from keras_med.errors import RunDivergedError
from keras_med.run_directory import RunDirectory
from keras_med.tasks import Task, monitor_mode

log = logging.getLogger("keras_med")


def announce_device() -> None:
    """One plain line when there is no GPU (TensorFlow's own start-up lines are hidden: keras_med.backend)."""
    from keras_med.training.runtime import gpu_available

    if not gpu_available():
        log.info("no GPU found: training on the CPU")


def make_run_dir(config: RecipeConfig, run_dir: str | None, runtime=None) -> Path:
    if run_dir:
        path = Path(run_dir)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path(config.output_dir) / config.recipe / stamp
    if runtime is not None:
        # Several workers: only the chief writes the run directory (docs/scale.md).
        path = runtime.output_directory(path)
    RunDirectory(path).create()
    return path


def image_names(table) -> list[str]:
    """The table's images relative to the folder that holds them all (in-memory images: their ids),
    so that the same data gives the same `environment.json` hash on any machine."""
    paths = [str(path) for path in table.paths]
    if not paths:
        return []
    base = os.path.commonpath([os.path.dirname(path.split("#", 1)[0]) for path in paths])
    return [os.path.relpath(path, base) for path in paths]


def private_worker_outputs(config: RecipeConfig, runtime) -> RecipeConfig:
    """`config` with `output_dir` moved into a private folder of this process
    (`Runtime.output_directory`) on a non-chief worker of `--strategy multiworker`; unchanged on
    the chief.

    Each worker writes its own `--demo` data there: two processes writing the same JPEGs on shared
    storage would read each other's half-written files. (A non-chief worker stops after training,
    so it never writes under `saved_models`.)
    """
    if runtime.is_chief:
        return config
    return dataclasses.replace(config, output_dir=str(runtime.output_directory(config.output_dir)))


def build_model(config: RecipeConfig, table, runtime):
    from keras_med.models import create_model

    stage("building %s (%s, weights=%s) at %d px", config.model.model, table.task, config.model.weights,
          config.data.image_size)
    with runtime.scope():
        return create_model(config.model.model, num_classes=len(table.class_names),
                            image_size=config.data.image_size, task=table.task,
                            weights=config.model.weights, dropout=config.model.dropout,
                            head_units=config.model.head_units, width=config.model.width,
                            colour_constancy=config.model.colour_constancy)


def scale_to_replicas(config: RecipeConfig, replicas: int) -> RecipeConfig:
    """With `train.scale_to_replicas`, each replica keeps `data.batch_size` and the learning rates
    grow with the global batch; otherwise `config` unchanged (the batch is split across replicas).

    The linear scaling rule (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): a global batch
    k times larger takes a learning rate k times larger; pair it with `warmup_epochs` for large k.

    Args:
        config: The recipe configuration.
        replicas: `runtime.num_replicas_in_sync`.

    Returns:
        The configuration to train with.
    """
    if not config.train.scale_to_replicas or replicas == 1:
        return config
    data = dataclasses.replace(config.data, batch_size=config.data.batch_size * replicas)
    train = dataclasses.replace(config.train, learning_rate=config.train.learning_rate * replicas,
                                finetune_learning_rate=config.train.finetune_learning_rate * replicas)
    log.info("scale_to_replicas: global batch %d (%d per replica), learning rates x%d (%g, %g)",
                data.batch_size, config.data.batch_size, replicas, train.learning_rate,
                train.finetune_learning_rate)
    return dataclasses.replace(config, data=data, train=train)


def fit_arguments(config: RecipeConfig) -> dict:
    """`fit_model`'s settings from a recipe configuration: `train`, the resolved `plan`, and `settings`.

    Example:
        >>> fit_model(model, train_ds, val_ds, run_dir, **fit_arguments(config), class_weight=weights)
    """
    from keras_med.training import resolve_plan
    from keras_med.training.outcome import training_settings

    return {"train": config.train, "plan": resolve_plan(config.train.plan, config.model.model, config.model.weights),
            "settings": training_settings(config)}


def run_recipe(spec: RecipeSpec, config: RecipeConfig, run_dir: str | None = None) -> dict:
    """Train, evaluate and export one model; returns the test metrics (`{}` on a non-chief worker
    of `--strategy multiworker`, which stops after training: docs/scale.md).

    Writes `config.toml`, `split.csv`, `class_names.json`, `checkpoints/best.keras`, `logs/`,
    `history.csv`, `training_done.json`, `metrics.json`, plots and the report into the run
    directory, each atomically. Re-run with the same `run_dir`, it resumes a killed training from
    its last finished epoch, or skips a finished one and goes on to evaluation and export.

    Raises:
        RunDivergedError: Training diverged (exit status 3). With good epochs before it, the best
            of them is evaluated (metrics.json and the report say the run diverged) but not
            exported; without, nothing is evaluated or exported.
    """
    from keras_med.backend import select_backend

    started = time.time()
    # Before anything imports Keras; the backend actually used is what config.toml records.
    backend = select_backend(config.train.backend)
    config = dataclasses.replace(config, recipe=spec.name,
                                 train=dataclasses.replace(config.train, backend=backend))
    # Imported here, after the backend is chosen, so that `--help` and the missing-data message
    # do not wait for TensorFlow.
    from keras_med.disk_space import check_writable
    from keras_med.run_lock import guarded_run_directory
    from keras_med.training import setup_runtime

    runtime = setup_runtime(config.train)
    announce_device()
    check_writable(config.output_dir, "--output-dir")
    out = make_run_dir(config, run_dir, runtime)
    exports = config.export.export and runtime.is_chief
    # Held to the end: a second process on this run directory is refused in one line, and an
    # unwritable --saved-models or --cache is refused now, not after the training.
    with guarded_run_directory(out, cache=config.data.cache,
                               saved_models=(Path(config.export.saved_models) / (config.export.name or spec.name)
                                             if exports else None)):
        return _run_in_directory(spec, config, out, runtime, started)


def _run_in_directory(spec: RecipeSpec, config: RecipeConfig, out: Path, runtime, started: float) -> dict:
    """`run_recipe`'s work once its run directory is made and locked."""
    from keras_med.engine.trust import assess_run_trust
    from keras_med.evaluation import evaluate_run, predict_with_tta
    from keras_med.evaluation.run_predictions import save_run_predictions
    from keras_med.export import export_for_serving
    from keras_med.training import check_training_settings, fit_model, read_training_outcome
    from keras_med.training.environment import run_environment, write_environment
    from keras_med.training.fit import StepAugmentation
    from keras_med.training.hparams import log_run_hparams
    from keras_med.training.outcome import training_settings
    from keras_med.training.runtime import augment_on_device

    finished = read_training_outcome(out)
    if finished is not None:
        # Before config.toml is rewritten: it must keep describing the model in the run directory.
        check_training_settings(finished, training_settings(config), out)
    config.save(RunDirectory(out).config_file)
    config = scale_to_replicas(config, runtime.num_replicas_in_sync)
    config = private_worker_outputs(config, runtime)
    prepared = prepare_data(spec, config, out)
    table, parts = prepared.table, prepared.parts
    if runtime.is_chief:
        # What this run ran on and which data it read: whether a repeat is comparable (model card: "Ran on").
        write_environment(out, run_environment(RunDirectory(out).split_file, image_names(table),
                                               deterministic=config.train.deterministic))
    model = build_model(config, table, runtime)
    fitting = fit_arguments(config)
    stage("training (%s plan)", fitting["plan"])
    history = fit_model(model, prepared.train_ds, prepared.eval_ds["val"], out, **fitting,
                        class_weight=prepared.class_weight, class_names=table.class_names,
                        label_weights=prepared.label_weights, class_priors=prepared.class_priors,
                        augment_in_step=(StepAugmentation(config.data.augment, config.data.mixup, config.data.cutmix)
                                         if augment_on_device(config.data) else None))
    divergence = read_training_outcome(out).divergence
    diverged, good_history = None, history
    if divergence is not None:
        # The diverged epoch's row stays in the history (the health check reports it) but was
        # never checkpointed, so it cannot be the best epoch.
        good_history = history[history["epoch"] < divergence.epoch - 1]
        diverged = {**divergence.to_dict(),
                    "message": divergence.describe(kept=best_epoch_text(good_history, config.train.monitor))}
    if runtime.is_multi_worker:
        # Every collective operation of a multi-worker run is inside fit_model. After it, only the
        # chief goes on, with a copy of the best model loaded outside the strategy's scope: a model
        # not built under MultiWorkerMirroredStrategy runs no collective operation, so the chief's
        # predictions, trust step, Grad-CAM and export need no other worker, none can wait for it,
        # and its figures are those of one process. Under the strategy, every worker would have to
        # make the same sequence of predict calls, and a worker failing in between (a full disk)
        # would leave the others waiting in a collective for ever.
        if not runtime.is_chief:
            stage("training finished: the chief evaluates and exports (docs/scale.md)")
            if diverged is not None:
                raise RunDivergedError(diverged["message"])
            return {}
        from keras_med.models.saving import load_keras_model

        model = load_keras_model(RunDirectory(out).best_checkpoint)

    stage("evaluating on the validation and test splits")
    # With --tta flips the reported figures are those of flip-averaged predictions, and the
    # exported model averages the same flips in its graph, so report and service stay identical.
    y_prob = {name: predict_with_tta(model, prepared.eval_ds[name], config.evaluation.tta)
              for name in ("val", "test")}
    # Kept for ensembles, cross-validation and the decision-rule table (keras_med.evaluation.run_predictions).
    save_run_predictions(out, {name: parts[name].targets() for name in y_prob}, y_prob, config.evaluation.tta)
    # The guard and the prediction sets are fitted before the report is written, which shows them.
    trust = assess_run_trust(out, model, prepared, config, spec.name)
    metrics = evaluate_run(
        out, class_names=table.class_names, task=table.task, long_names=table.long_names,
        y_true_test=parts["test"].targets(), y_prob_test=y_prob["test"],
        y_true_val=parts["val"].targets(), y_prob_val=y_prob["val"],
        groups_test=parts["test"].frame["group"].to_numpy(), history=history, config=config,
        data_summary=prepared.summary,
        test_images=test_image_source(parts["test"], config),
        model=model, n_bootstrap=config.evaluation.bootstrap,
        operating_point=config.evaluation.operating_point, target=config.evaluation.target,
        explain=config.evaluation.explain, seed=config.train.seed, diverged=diverged,
        trust=trust.report, decision_rule=config.evaluation.decision_rule)
    if spec.extra_evaluation is not None:
        spec.extra_evaluation(out, metrics, prepared, model, y_prob, config)
    # Every run's settings and test figures side by side in TensorBoard's HParams dashboard.
    log_run_hparams(out, config, metrics)

    export_path = None
    if config.export.export and diverged is None:
        stage("exporting for TF Serving")
        if config.train.backend == "tensorflow":
            export_path = export_for_serving(
                model, name=config.export.name or spec.name, base_dir=config.export.saved_models,
                class_names=table.class_names, image_size=config.data.image_size, task=table.task,
                thresholds=metrics.get("thresholds"), resize=config.data.resize,
                ood_guard=trust.guard, conformal_sets=trust.sets, run_dir=out,
                tta=config.evaluation.tta, decision_rule=metrics.get("decision_rule"))
        else:
            from keras_med.export.command_export import export_checkpoint_in_tensorflow

            export_path = export_checkpoint_in_tensorflow(RunDirectory(out).best_checkpoint,
                                                          name=config.export.name or spec.name,
                                                          base_dir=config.export.saved_models)
    print_summary(spec, config, out, good_history, metrics, export_path, time.time() - started)
    if diverged is not None:
        raise RunDivergedError(diverged["message"])
    return metrics


def _headline(metrics: dict, key: str) -> str:
    item = metrics.get(key)
    if not isinstance(item, dict) or item.get("value") is None:
        return "n/a"
    # ci95 is None with --bootstrap 0
    lo, hi = item.get("ci95") or [np.nan, np.nan]
    return f"{item['value']:.3f} (95% CI {lo:.3f}-{hi:.3f})"


def best_epoch_text(history, monitor: str) -> str:
    """'epoch 4, val_balanced_accuracy 0.612': the best epoch of `history` by `monitor`, or 'n/a'."""
    if history is None or monitor not in history or history[monitor].dropna().empty:
        return "n/a"
    column = history[monitor]
    best = column.idxmin() if monitor_mode(monitor) == "min" else column.idxmax()
    return f"epoch {int(history.loc[best, 'epoch']) + 1}, {monitor} {column[best]:.3f}"


def tensorboard_logdir(out: Path, output_dir: str) -> Path:
    """The folder to give `tensorboard --logdir` for the run in `out`: `--output-dir` when the run
    is inside it (every run of it compares), else the run directory's parent (a `--run-dir`
    elsewhere: its sibling runs compare)."""
    out, output_dir = Path(out).resolve(), Path(output_dir).resolve()
    return Path(output_dir) if out.is_relative_to(output_dir) else out.parent


def print_summary(spec, config, out: Path, history, metrics: dict, export_path, seconds: float) -> None:
    from keras_med.evaluation.trust import summary_lines

    best_epoch = best_epoch_text(history, config.train.monitor)
    keys = {Task.MULTICLASS: ["balanced_accuracy", "accuracy", "macro_auc"],
            Task.BINARY: ["roc_auc", "sensitivity", "specificity", "accuracy"],
            Task.MULTILABEL: ["mean_auc"]}[Task(metrics.get("task", Task.MULTICLASS))]
    lines = [
        "",
        *[f"WARNING: {finding['message']}" for finding in metrics["health"]["findings"] if finding["kind"] == "no_skill"],
        f"{spec.name}: finished in {seconds / 60:.1f} min",
        f"  best            {best_epoch}",
        *[f"  test {key + ' ':<18}{_headline(metrics, key)}" for key in keys],  # a space even after the longest name
        *summary_lines(metrics),
        f"  run directory   {out}",
        f"  best model      {RunDirectory(out).best_checkpoint}",
        f"  report          {out / 'report.html'}",
        f"  TensorBoard     tensorboard --logdir {tensorboard_logdir(out, config.output_dir)}",
    ]
    if export_path:
        lines.append(f"  SavedModel      {export_path}")
    for line in lines:
        log.info("%s", line)
