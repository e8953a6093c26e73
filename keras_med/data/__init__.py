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
"""

from keras_med.data.augment import AUGMENT_PRESETS, build_augmenter, build_mixers
from keras_med.data.balance import balanced_class_weights, balanced_label_weights, class_priors
from keras_med.data.decode import CheckResult, check_images, check_table_images, decode_image, load_image
from keras_med.data.errors import (BadImageError, DataError, EmptyClassError, MissingColumnError, MissingImageError,
                                   UnknownLabelError, UnsafePathError)
from keras_med.data.pipeline import build_image_pipeline
from keras_med.data.sources.chestxray14 import load_chestxray14
from keras_med.data.sources.external import load_external_test
from keras_med.data.sources.ham10000 import HAM10000_CLASSES, HAM10000_LONG_NAMES, load_ham10000
from keras_med.data.sources.image_folder import KERMANY_GROUP_PATTERN, load_image_folder
from keras_med.data.sources.medmnist import load_medmnist
from keras_med.data.splits import check_split, kfold_by_group, load_split, save_split, split_by_group
from keras_med.data.table import ImageTable, encode_labels

__all__ = [
    "AUGMENT_PRESETS", "BadImageError", "CheckResult", "DataError", "EmptyClassError", "HAM10000_CLASSES",
    "HAM10000_LONG_NAMES", "ImageTable", "KERMANY_GROUP_PATTERN", "MissingColumnError", "MissingImageError", "UnknownLabelError",
    "UnsafePathError", "balanced_class_weights", "balanced_label_weights", "class_priors", "build_augmenter",
    "build_image_pipeline", "build_mixers",
    "check_images", "check_split", "check_table_images", "decode_image", "encode_labels", "kfold_by_group",
    "load_chestxray14", "load_external_test", "load_ham10000", "load_image", "load_image_folder",
    "load_medmnist", "load_split", "save_split", "split_by_group",
]

from keras_med.data.sources.covid_chestxray import COVID_DEFAULT_VIEWS, load_covid_chestxray  # noqa: E402
from keras_med.data.tfrecords import (attach_prepared_records, build_prepared_pipeline,  # noqa: E402
                                      load_prepared_table, prepared_image_source, read_manifest,
                                      read_prepared_pixels, sort_by_record, write_prepared_shards)

__all__ += ["COVID_DEFAULT_VIEWS", "attach_prepared_records", "build_prepared_pipeline", "load_covid_chestxray",
            "load_prepared_table", "prepared_image_source", "read_manifest", "read_prepared_pixels",
            "sort_by_record", "write_prepared_shards"]
