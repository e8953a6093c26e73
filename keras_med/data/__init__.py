"""keras_med.data: sources -> ImageTable -> leakage-proof splits -> tf.data pipeline.

Example:
    >>> from keras_med import data                                          # doctest: +SKIP
    >>> table = data.load_ham10000("data/ham10000")                          # doctest: +SKIP
    >>> table = data.split_by_group(table, val_fraction=0.15, test_fraction=0.15, seed=42)  # doctest: +SKIP
    >>> data.save_split(table, "runs/x/split.csv")                           # doctest: +SKIP
    >>> train = table.subset("train")                                        # doctest: +SKIP
    >>> train_ds = data.build_image_pipeline(train.images(), train.targets(), image_size=128,
    ...     batch_size=32, training=True, augment="dermoscopy")              # doctest: +SKIP
    >>> class_weight = data.balanced_class_weights(train.targets())          # doctest: +SKIP

The names below are imported from their modules on first use (PEP 562): importing one data module
(`keras_med.data.detection`, `keras_med.data.table`, ...) does not start TensorFlow through the
pipelines, and a recipe's `--help` stays fast.
"""

import importlib

_HOMES = {
    "attach_prepared_records": "keras_med.data.tfrecords",
    "AUGMENT_PRESETS": "keras_med.data.augment",
    "BadImageError": "keras_med.data.errors",
    "balanced_class_weights": "keras_med.data.balance",
    "balanced_label_weights": "keras_med.data.balance",
    "build_augmenter": "keras_med.data.augment",
    "build_image_pipeline": "keras_med.data.pipeline",
    "build_mixers": "keras_med.data.augment",
    "build_prepared_pipeline": "keras_med.data.tfrecords",
    "check_images": "keras_med.data.decode",
    "check_split": "keras_med.data.splits",
    "check_table_images": "keras_med.data.decode",
    "CheckResult": "keras_med.data.decode",
    "class_priors": "keras_med.data.balance",
    "COVID_DEFAULT_VIEWS": "keras_med.data.sources.covid_chestxray",
    "DataError": "keras_med.data.errors",
    "decode_image": "keras_med.data.decode",
    "EmptyClassError": "keras_med.data.errors",
    "encode_labels": "keras_med.data.table",
    "HAM10000_CLASSES": "keras_med.data.sources.ham10000",
    "HAM10000_LONG_NAMES": "keras_med.data.sources.ham10000",
    "ImageTable": "keras_med.data.table",
    "KERMANY_GROUP_PATTERN": "keras_med.data.sources.image_folder",
    "kfold_by_group": "keras_med.data.splits",
    "load_chestxray14": "keras_med.data.sources.chestxray14",
    "load_covid_chestxray": "keras_med.data.sources.covid_chestxray",
    "load_external_test": "keras_med.data.sources.external",
    "load_ham10000": "keras_med.data.sources.ham10000",
    "load_image": "keras_med.data.decode",
    "load_image_folder": "keras_med.data.sources.image_folder",
    "load_medmnist": "keras_med.data.sources.medmnist",
    "load_prepared_table": "keras_med.data.tfrecords",
    "load_split": "keras_med.data.splits",
    "MissingColumnError": "keras_med.data.errors",
    "MissingImageError": "keras_med.data.errors",
    "prepared_image_source": "keras_med.data.tfrecords",
    "read_manifest": "keras_med.data.tfrecords",
    "read_prepared_pixels": "keras_med.data.tfrecords",
    "save_split": "keras_med.data.splits",
    "sort_by_record": "keras_med.data.tfrecords",
    "split_by_group": "keras_med.data.splits",
    "UnknownLabelError": "keras_med.data.errors",
    "UnsafePathError": "keras_med.data.errors",
    "write_prepared_shards": "keras_med.data.tfrecords",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'keras_med.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__():
    return __all__
