"""What every recipe does, once: files on disk -> split -> pipelines -> model -> fit -> evaluate -> export.

A recipe module (`ham10000.py`, `chexnet.py`, ...) is a `RecipeSpec`, registered by name
(`keras_med.recipes.registry`): its default configuration, the recipe options it takes, how to
load its data into an `ImageTable`, how to make its demo data, and where the real data is
published. `resolve_run_config` is the one way every recipe-level command (train, lr-find,
prepare) turns defaults, demo overrides, a TOML file and flags into a validated configuration;
`run_recipe` composes the rooms of the package, handing each its own arguments; it holds no
training loop of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

from keras_med.atomic import write_text_atomic
from keras_med.command_line import CommandParser, HelpFormatter, add_verbose_flag, run_command
from keras_med.config import RecipeConfig, add_config_arguments, check_recipe_options, config_from_arguments
from keras_med.errors import ConfigError, RunDivergedError
from keras_med.recipes import cross_validation
from keras_med.tasks import Task, monitor_mode

log = logging.getLogger("keras_med")


@dataclass
class RecipeSpec:
    """A recipe: configuration plus the few things that differ between problems.

    Args:
        name: recipe name; also the served model's name and the run folder.
        description: one line for `--help` and `keras-med recipes`.
        defaults: the recipe's default configuration.
        options: the recipe options (`keras_med.config.RECIPE_OPTIONS`: `views`, `label_column`,
            ...) its loader reads; only these become its flags, and a TOML file's others are
            ignored with a warning.
        load_table: `(data_dir, config) -> ImageTable` for the real layout.
        write_demo: `(out_dir, config) -> data_dir` writing synthetic data in the real layout.
        data_help: where the real data is published and how to point at it.
        group_name: what a group is (lesion, patient), for messages and reports.
        demo_overrides: configuration sections that `--demo` changes (a small model that learns the
            synthetic set in minutes on a CPU, with no weights to download); flags still win.
        extra_evaluation: optional `(run_dir, metrics, data, model, y_prob, config) -> None` for
            recipe-specific tables and plots; `data` is the `PreparedData`, `y_prob` the
            `{"val", "test"}` probabilities the metrics came from.
        resolve_auto_values: optional `config -> config` run before anything else, turning the
            recipe's `auto` values into ones that fit the data and the machine (classify).
    """

    name: str
    description: str
    defaults: RecipeConfig
    load_table: Callable
    write_demo: Callable
    data_help: str
    group_name: str = "group"
    demo_overrides: dict = field(default_factory=dict)
    extra_evaluation: Callable | None = None
    resolve_auto_values: Callable | None = None
    options: tuple[str, ...] = ()

    def __post_init__(self):
        self.options = check_recipe_options(self.options)


def build_parser(spec: RecipeSpec, parser: argparse.ArgumentParser | None = None, *,
                 sections: dict | None = None, cross_validation_flags: bool = True) -> argparse.ArgumentParser:
    """The recipe's flags (one per configuration field, `--config`, `--run-dir`, `--verbose`) on `parser`.

    Args:
        spec: the recipe; its own `options` get flags, other recipes' do not.
        parser: the parser to add to (default: `python -m keras_med.recipes.<name>`'s).
        sections: only these configuration fields (see `keras_med.config.add_config_arguments`),
            and no `--run-dir`, for a command that trains nothing (`keras-med prepare`).
        cross_validation_flags: add `--cv K` and `--cv-export` (commands that train and evaluate
            models; not `keras-med lr-find` or `prepare`).
    """
    parser = parser or CommandParser(
        prog=f"python -m keras_med.recipes.{spec.name}", description=spec.description,
        formatter_class=HelpFormatter)
    add_config_arguments(parser, spec.defaults, spec.options, sections)
    if sections is None:
        parser.add_argument("--run-dir", help="Exact run directory to use; re-running with the same one resumes "
                            "a killed run from its last finished epoch (default: <output-dir>/<recipe>/<timestamp>).")
    add_verbose_flag(parser)
    if cross_validation_flags and sections is None:
        cross_validation.add_arguments(parser)
    return parser


def main(spec: RecipeSpec, argv: list[str] | None = None) -> int:
    """`python -m keras_med.recipes.<name>`: parse, validate, train; a user's mistake is one line, exit 2."""
    parser = build_parser(spec)
    return run_command(parser.prog, lambda rest: run_from_arguments(spec, parser.parse_args(rest)),
                       sys.argv[1:] if argv is None else argv)


def resolve_run_config(spec: RecipeSpec, args: argparse.Namespace, *, prepared_allowed: bool = True) -> RecipeConfig:
    """The run's configuration: the recipe's defaults (and demo overrides), `--config`, flags; validated.

    Every recipe-level command (train, lr-find, prepare) resolves its configuration here, before
    touching any data, in this order: defaults -> demo overrides (`--demo`) -> the TOML file ->
    flags -> validation -> the recipe's `resolve_auto_values` (then validated again).

    Args:
        spec: the recipe.
        args: the parsed flags of `build_parser`.
        prepared_allowed: whether `--prepared DIR` is a data source for this command.

    Raises:
        ConfigError: a bad value, or no data source (after printing where the recipe's data is).
    """
    from keras_med.backend import select_backend

    detects = spec.resolve_auto_values is not None
    config = config_from_arguments(args, spec.defaults, spec.demo_overrides, spec.options)
    # Before validation imports Keras (the model registry): Keras fixes its backend when imported.
    select_backend(config.train.backend)
    config = config.validate(allow_auto=detects)
    if not config.data.data_dir and not config.data.demo and not (prepared_allowed and config.data.prepared):
        sys.stderr.write(spec.data_help.strip() + "\n")
        sources = "--data-dir DIR, --demo" + (" or --prepared DIR" if prepared_allowed else "")
        raise ConfigError(f"no data: expected {sources}")
    config = dataclasses.replace(config, recipe=spec.name)
    if detects:
        # The recipe's detection step looks at the data's layout (not its pixels) and the machine.
        config = spec.resolve_auto_values(config).validate()
    return config


def run_from_arguments(spec: RecipeSpec, args: argparse.Namespace) -> int:
    """Resolve and validate the configuration, then run the recipe; returns the exit status."""
    # --- cross-validation hook (keras_med.recipes.cross_validation) ---
    cross_validation.check_arguments(args)
    config = resolve_run_config(spec, args)
    if args.cv:
        if config.train.members > 1:
            raise ConfigError("--members: not with --cv (each fold would be an ensemble); use one of them")
        cross_validation.run_cross_validation(spec, config, args.cv, run_dir=args.run_dir, export=args.cv_export)
        return 0
    # --- end of the cross-validation hook ---
    if config.train.members > 1:
        from keras_med.recipes.members import run_members

        run_members(spec, config, run_dir=args.run_dir)
        return 0
    run_recipe(spec, config, run_dir=args.run_dir)
    return 0


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
    (path / "checkpoints").mkdir(parents=True, exist_ok=True)
    return path


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


def stage(message: str, *args) -> None:
    log.info("== " + message, *args)


@dataclass
class PreparedData:
    """The split table, its parts and their pipelines, ready for a model."""

    table: object
    parts: dict
    train_ds: object
    eval_ds: dict
    class_weight: dict | None
    summary: object
    label_weights: tuple | None = None
    class_priors: tuple | None = None


def load_source_table(spec: RecipeSpec, config: RecipeConfig):
    """The recipe's table from --data-dir (or freshly written demo data), subsampled by --max-images."""
    data_dir = config.data.data_dir
    if config.data.demo:
        demo_dir = Path(config.output_dir) / spec.name / "demo_data"
        stage("writing the synthetic %s demo dataset to %s", spec.name, demo_dir)
        data_dir = str(spec.write_demo(demo_dir, config))
    # Absolute, so that split.csv and the report name the same files from any working directory.
    data_dir = str(Path(data_dir).expanduser().resolve())
    stage("loading %s from %s", spec.name, data_dir)
    table = spec.load_table(data_dir, config)
    if config.data.max_images and len(table.frame) > config.data.max_images:
        table = dataclasses.replace(table, frame=table.frame.sample(
            config.data.max_images, random_state=config.train.seed).reset_index(drop=True))
    return table



def load_split_table(spec: RecipeSpec, config: RecipeConfig):
    """The recipe's table with its `split` column: `--split-file`'s split, else split by group
    (`keras-med prepare` and `--cv`; a training run checks the images before it splits, `prepare_data`)."""
    from keras_med import data as kdata

    table = load_source_table(spec, config)
    if config.data.split_file:
        return kdata.load_split(config.data.split_file, table.class_names, table.task, table.long_names)
    return kdata.split_by_group(table, val_fraction=config.data.val_fraction,
                                test_fraction=config.data.test_fraction, seed=config.train.seed)

def prepare_data(spec: RecipeSpec, config: RecipeConfig, out: Path) -> PreparedData:
    """Load the recipe's table, split it by group (or reuse a split), and build the pipelines."""
    from keras_med import data as kdata
    from keras_med.training.runtime import augment_on_device

    prepared_dir = config.data.prepared
    if prepared_dir:
        stage("loading the table of the prepared shards in %s", prepared_dir)
        table = kdata.load_prepared_table(prepared_dir)
    else:
        table = load_source_table(spec, config)
    if config.train.logit_adjustment > 0 and table.task != Task.MULTICLASS:
        # Refused as soon as the task is known, before every image is decoded.
        raise ConfigError(f"--logit-adjustment: only for single-label tasks with 3 or more classes; this "
                          f"table is {table.task}. Leave it at 0 (class weights balance it instead).")
    if config.data.split_file:
        stage("reusing the split in %s", config.data.split_file)
        table = kdata.load_split(config.data.split_file, table.class_names, table.task, table.long_names)
        if prepared_dir:
            table = kdata.attach_prepared_records(table, prepared_dir)
    if prepared_dir:
        # Shards yield images in record order; evaluation lines predictions up with this order.
        table = kdata.sort_by_record(table)
        if config.data.cache == "memory":
            stage("reading %d prepared images into memory", len(table))
            table = kdata.read_prepared_pixels(prepared_dir, table, config.data.image_size, config.data.resize)
    elif config.data.cache == "memory":
        # Decode every image once, at the model's size: bad files are found (and, with
        # --on-bad-image skip, listed in bad_images.csv) before any training starts.
        stage("decoding %d images at %d px", len(table), config.data.image_size)
        table = kdata.check_table_images(table, config.data.on_bad_image, report_dir=out,
                                         image_size=config.data.image_size, resize=config.data.resize)
    else:
        # The pipelines will stream the files; one decode pass now still names a bad file with its
        # metadata line (or, with --on-bad-image skip, lists it) before any training starts.
        table = kdata.check_table_images(table, config.data.on_bad_image, report_dir=out)
    if not config.data.split_file:
        table = kdata.split_by_group(table, val_fraction=config.data.val_fraction,
                                     test_fraction=config.data.test_fraction, seed=config.train.seed)
    kdata.save_split(table, out / "split.csv")
    write_text_atomic(out / "class_names.json", json.dumps(
        {"class_names": table.class_names, "task": table.task, "long_names": table.long_names,
         "image_size": config.data.image_size, "recipe": spec.name}, indent=2))
    summary = table.split_counts()
    log.info("images per split and class (multilabel: positives per label):\n%s", summary.to_string())

    parts = {name: table.subset(name) for name in ("train", "val", "test")}
    options = dict(image_size=config.data.image_size, batch_size=config.data.batch_size,
                   resize=config.data.resize, seed=config.train.seed, cache=config.data.cache)
    stage("building input pipelines (%d train, %d val, %d test images)",
          *(len(parts[name].frame) for name in ("train", "val", "test")))

    def pipeline(part, **kwargs):
        if prepared_dir and part.pixels is None:
            return kdata.build_prepared_pipeline(prepared_dir, part, **kwargs, **options)
        # every file was decoded once above (check_table_images), so the pipeline need not check again
        return kdata.build_image_pipeline(part.images(), part.targets(), check=False, **kwargs, **options)

    if augment_on_device(config.data):
        # The training step augments and mixes (--augment-on device): the host only decodes and batches.
        train_ds = pipeline(parts["train"], training=True, augment="none", oversample=config.data.oversample)
    else:
        train_ds = pipeline(parts["train"], training=True, augment=config.data.augment, mixup=config.data.mixup,
                            cutmix=config.data.cutmix, oversample=config.data.oversample)
    eval_ds = {name: pipeline(parts[name], training=False, augment="none") for name in ("val", "test")}
    class_weight = label_weights = priors = None
    if config.train.logit_adjustment > 0:
        # The adjusted loss balances the classes by itself; weights on top would count the prior twice.
        priors = kdata.class_priors(parts["train"].targets())
        log.info("logit adjustment tau=%g with class priors %s (class weights not applied)",
                 config.train.logit_adjustment, {name: round(prior, 3) for name, prior in zip(table.class_names, priors)})
    elif config.data.class_weights and not config.data.oversample:
        if table.task == Task.MULTILABEL:
            # Keras's class_weight needs one class per row; multi-hot rows get a weighted loss instead.
            label_weights = kdata.balanced_label_weights(parts["train"].targets())
            log.info("label weights (positive): %s", dict(zip(table.class_names, np.round(label_weights[0], 2))))
        else:
            class_weight = kdata.balanced_class_weights(parts["train"].targets())
            log.info("class weights: %s", {key: round(float(value), 3) for key, value in class_weight.items()})
    return PreparedData(table, parts, train_ds, eval_ds, class_weight, summary, label_weights, priors)


def test_image_source(part, config: RecipeConfig):
    """The test images for the grid of mistakes and Grad-CAM: in memory, or read one at a time."""
    from keras_med.data import load_image

    if part.pixels is not None:
        # In-memory sources such as MedMNIST keep their own size and channels (28 px gray).
        from keras_med.data.pipeline import fit_pixels

        return fit_pixels(part.pixels, config.data.image_size, config.data.resize)
    if config.data.prepared:
        from keras_med.data import prepared_image_source

        return prepared_image_source(config.data.prepared, part, config.data.image_size, config.data.resize)
    paths = part.paths
    return lambda index: load_image(paths[index], config.data.image_size, config.data.resize).numpy()


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
    from keras_med.evaluation import evaluate_run, predict_with_tta
    from keras_med.evaluation.run_predictions import save_run_predictions
    from keras_med.export import export_for_serving
    from keras_med.recipes.trust import assess_run_trust
    from keras_med.training import check_training_settings, fit_model, read_training_outcome, setup_runtime
    from keras_med.training.outcome import training_settings
    from keras_med.training.runtime import augment_on_device

    if spec.resolve_auto_values is not None:
        config = spec.resolve_auto_values(config)
    runtime = setup_runtime(config.train)
    announce_device()
    out = make_run_dir(config, run_dir, runtime)
    finished = read_training_outcome(out)
    if finished is not None:
        # Before config.toml is rewritten: it must keep describing the model in the run directory.
        check_training_settings(finished, training_settings(config), out)
    config.save(out / "config.toml")
    config = scale_to_replicas(config, runtime.num_replicas_in_sync)
    config = private_worker_outputs(config, runtime)
    prepared = prepare_data(spec, config, out)
    table, parts = prepared.table, prepared.parts
    model = build_model(config, table, runtime)
    fitting = fit_arguments(config)
    stage("training (%s plan)", fitting["plan"])
    history = fit_model(model, prepared.train_ds, prepared.eval_ds["val"], out, **fitting,
                        class_weight=prepared.class_weight, class_names=table.class_names,
                        label_weights=prepared.label_weights, class_priors=prepared.class_priors,
                        augment_in_step=config.data if augment_on_device(config.data) else None)
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
        from keras_med.run_directory import load_keras_model

        model = load_keras_model(out / "checkpoints" / "best.keras")

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

            export_path = export_checkpoint_in_tensorflow(out / "checkpoints" / "best.keras",
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
        f"  best model      {out / 'checkpoints' / 'best.keras'}",
        f"  report          {out / 'report.html'}",
        f"  TensorBoard     tensorboard --logdir {config.output_dir}",
    ]
    if export_path:
        lines.append(f"  SavedModel      {export_path}")
    for line in lines:
        log.info("%s", line)
