"""Any image classification problem: point at the data, get a trained, evaluated, explained, served model.

Run: `python -m keras_med.recipes.classify --data-dir DATA` or `keras-med train --data-dir DATA`
(no `--recipe` needed when the layout is recognised), or `--demo` (a synthetic four-class folder set).

Layouts (detected and logged; `--layout` forces one):
- `folder`: `DATA/<class>/*` or pre-split `DATA/{train,val,test}/<class>/*` (splits kept; a missing
  val is carved out of train by group); 2 classes = binary (one sigmoid), more = softmax;
- `table`: a CSV or Parquet (`DATA` itself, or the one metadata file in `DATA`, or `--metadata`)
  with an image column, a label column and optionally a group column; multi-label when labels
  hold a separator (`|` detected, or `--label-separator`);
- `npz`: a MedMNIST `.npz` of any 2D set (binary, multi-class, ChestMNIST's multi-label), its
  official splits kept.
Images may be JPEG, PNG or DICOM (`.dcm`, read with pydicom). Without a group column the group is
`--group-pattern`'s match in the file name, else each image is its own group, with a warning in the
log and in the model card: images of one patient could then sit in two splits.

Defaults follow the data and the machine, every one overridable: the `--modality` picks the
augmentation preset; on a CPU MobileNetV2 from ImageNet at 160 px (less for small images), on a
GPU DenseNet121 at 224 px with mixed precision; `--weights runs/<run>/checkpoints/best.keras`
starts from an earlier run's backbone with a new head.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys

from keras_med.config import TABLE_OPTIONS, DataConfig, EvaluationConfig, ModelConfig, RecipeConfig, TrainConfig
# The recipe's reading of the data is keras_med.data.detection's; its names stay reachable from here.
from keras_med.data.detection import detect_layout  # noqa: F401
from keras_med.data.detection import load_detected_table as load_table
from keras_med.data.detection import native_image_side, resolve_data
from keras_med.engine.command import main
from keras_med.engine.spec import RecipeSpec
from keras_med.recipes.registry import register_recipe

log = logging.getLogger("keras_med")

DATA_HELP = """
No data given. Point the recipe at your images, or try it on synthetic data first:

  python -m keras_med.recipes.classify --demo
  python -m keras_med.recipes.classify --data-dir DIR           (DIR/<class>/*.jpg, or DIR/train/<class>/...)
  python -m keras_med.recipes.classify --data-dir labels.csv --image-column file --label-column grade \\
      [--group-column patient] [--label-separator '|']
  python -m keras_med.recipes.classify --data-dir bloodmnist.npz
  keras-med train --data-dir DIR                                (the same, when the layout is recognised)

Images may be JPEG, PNG or DICOM. See README.md, "Your own data".
""".strip()

MODALITY_AUGMENT = {"dermoscopy": "dermoscopy", "xray": "xray", "fundus": "fundus", "histology": "histology",
                    "other": "light"}
# Sizes by machine: a 2-core CPU fine-tunes MobileNetV2 at 160 px in tens of
# minutes on a few thousand images; a GPU affords DenseNet121 at 224 px (CheXNet's setting).
CPU_MODEL, CPU_IMAGE_SIZE = "mobilenetv2", 160
GPU_MODEL, GPU_IMAGE_SIZE = "densenet121", 224
SMALLEST_SIDE = 64


def default_config() -> RecipeConfig:
    """`auto` model, 0 (auto) image size and `auto` augmentation are resolved from the data and machine."""
    return RecipeConfig(
        recipe="classify",
        data=DataConfig(image_size=0, batch_size=32, augment="auto", cache="memory", no_finding="keep"),
        model=ModelConfig(model="auto", weights="imagenet", dropout=0.3, head_units=128),
        train=TrainConfig(plan="auto", head_epochs=2, epochs=10, learning_rate=1e-3, finetune_learning_rate=1e-4,
                          monitor="val_loss", patience=4),
        evaluation=EvaluationConfig(operating_point="youden"),
    )


def resolve_auto_values(config: RecipeConfig) -> RecipeConfig:
    """Replace `auto` values by what fits the data and the machine (each choice is logged).

    - the layout, table columns and groups: `resolve_data`;
    - `augment = "auto"`: the `--modality`'s preset;
    - `model = "auto"`: DenseNet121 on a GPU, MobileNetV2 on a CPU (the checkpoint's own with
      `--weights file.keras`); a model without an ImageNet backbone gets `weights = "none"`;
    - `image_size = 0`: 224 px on a GPU, 160 on a CPU, less for small images (the images' own side
      rounded up to 32, at least 64), the checkpoint's side with `--weights file.keras`.
    """
    from keras_med.models import model_spec
    from keras_med.models.transfer import is_checkpoint
    from keras_med.training.runtime import gpu_available

    if config.data.data_dir and not config.data.prepared:
        config = resolve_data(config)
    data, model = config.data, config.model
    gpu = gpu_available()
    if data.augment == "auto":
        data = dataclasses.replace(data, augment=MODALITY_AUGMENT[data.modality])
        log.info("augmentation: %s (modality %s)", data.augment, data.modality)
    # A checkpoint to fine-tune from is loaded once, for its name and its input side.
    checkpoint = _load_checkpoint(model.weights) if is_checkpoint(model.weights) else None
    if model.model == "auto":
        name = checkpoint.name if checkpoint else GPU_MODEL if gpu else CPU_MODEL
        model = dataclasses.replace(model, model=name)
        log.info("model: %s (%s)", name, "from --weights" if checkpoint else "GPU" if gpu else "CPU")
    if not checkpoint and model.weights == "imagenet" and not model_spec(model.model).pretrained:
        model = dataclasses.replace(model, weights="none")
    if data.image_size == 0:
        if checkpoint:
            size = int(checkpoint.input_shape[1])
        else:
            size = GPU_IMAGE_SIZE if gpu else CPU_IMAGE_SIZE
            native = native_image_side(config)
            if native and native < size:
                size = max(SMALLEST_SIDE, 32 * math.ceil(native / 32))
        data = dataclasses.replace(data, image_size=size)
        log.info("image size: %d px", size)
    return dataclasses.replace(config, data=data, model=model)


def _load_checkpoint(path: str):
    from keras_med.models.saving import load_keras_model

    return load_keras_model(path)


def write_demo(out_dir, config: RecipeConfig):
    from keras_med.data.synthetic import write_classes_demo

    return write_classes_demo(out_dir, n_images=config.data.demo_size, seed=config.train.seed,
                              image_size=max(64, config.data.image_size))


SPEC = register_recipe(RecipeSpec(
    name="classify",
    description="Train, evaluate, explain and export a classifier for any image folder, table or MedMNIST file.",
    defaults=default_config(),
    load_table=load_table,
    write_demo=write_demo,
    data_help=DATA_HELP,
    group_name="patient",
    demo_overrides={
        "data": {"image_size": 64, "batch_size": 32, "demo_size": 240, "group_pattern": r"^(patient\d+)_"},
        "model": {"model": "custom_cnn", "weights": "none", "dropout": 0.2, "head_units": 64},
        "train": {"plan": "scratch", "epochs": 10, "learning_rate": 2e-3, "patience": 5},
        "evaluation": {"bootstrap": 200},
    },
    resolve_auto_values=resolve_auto_values,
    options=(*TABLE_OPTIONS, "layout", "modality", "label_separator", "group_pattern", "dicom_tags",
             "positive_class"),
))

if __name__ == "__main__":
    sys.exit(main(SPEC))
