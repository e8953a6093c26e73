"""A recipe's data made ready for a model: its table loaded (or demo data written), checked, split
by group (or a split reused), `split.csv` and `class_names.json` written, and the pipelines built.

Shared by every recipe, `--cv`, `keras-med prepare` and the trust step. `spec` arguments are a
`keras_med.engine.spec.RecipeSpec` (its `name`, `load_table` and `write_demo`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_med.config import RecipeConfig
from keras_med.errors import ConfigError
from keras_med.run_directory import RunDirectory
from keras_med.tasks import Task

log = logging.getLogger("keras_med")


def stage(message: str, *args) -> None:
    """One progress line of a run (`== message`)."""
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


def load_source_table(spec, config: RecipeConfig):
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



def load_split_table(spec, config: RecipeConfig):
    """The recipe's table with its `split` column: `--split-file`'s split, else split by group
    (`keras-med prepare` and `--cv`; a training run checks the images before it splits, `prepare_data`)."""
    from keras_med import data as kdata

    table = load_source_table(spec, config)
    if config.data.split_file:
        return kdata.load_split(config.data.split_file, table.class_names, table.task, table.long_names)
    return kdata.split_by_group(table, val_fraction=config.data.val_fraction,
                                test_fraction=config.data.test_fraction, seed=config.train.seed)

def prepare_data(spec, config: RecipeConfig, out: Path) -> PreparedData:
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
    run = RunDirectory(out)
    kdata.save_split(table, run.split_file)
    run.write_class_names(table.class_names, table.task, table.long_names, config.data.image_size, spec.name)
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
        train_ds = pipeline(parts["train"], training=True, augment="none", oversample=config.data.oversample,
                            split="train")
    else:
        train_ds = pipeline(parts["train"], training=True, augment=config.data.augment, mixup=config.data.mixup,
                            cutmix=config.data.cutmix, oversample=config.data.oversample, split="train")
    eval_ds = {name: pipeline(parts[name], training=False, augment="none", split=name) for name in ("val", "test")}
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
