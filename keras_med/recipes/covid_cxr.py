"""Binary chest X-ray screening (COVID-19 or pneumonia vs the rest): small, imbalanced sets, MobileNetV2.

Run: `python -m keras_med.recipes.covid_cxr --data-dir DIR` (real data) or `--demo` (a synthetic
ieee8023-layout set, a couple of minutes on a CPU). `--data-dir` may be:
- the ieee8023 covid-chestxray-dataset (`metadata.csv` + `images/`): X-ray frontal views
  (`--views`, default PA, AP, AP Supine), positive = a finding containing "COVID-19", negative =
  every other finding or only "No Finding" (`--negatives no_finding`), grouped by `patientid`;
- folder per class: `COVID/` and `NORMAL/`, or Kermany's `train/NORMAL`, `train/PNEUMONIA`,
  `test/...` (its splits kept, patients read from the file names);
- a MedMNIST `.npz` such as `pneumoniamnist.npz` (official splits kept).

Defaults follow the source, where MobileNetV2 was the only model that neither collapsed onto the
majority class nor overfit at once: MobileNetV2 from ImageNet, one sigmoid, balanced class
weights, the head trained first and then the last blocks fine-tuned (BatchNorm frozen), the best
epoch by validation AUC, and the decision threshold chosen on validation for 90% sensitivity.
"""

from __future__ import annotations

import sys
from pathlib import Path

from keras_med.config import DataConfig, EvaluationConfig, ModelConfig, RecipeConfig, TrainConfig
from keras_med.data.detection import binary_class_folders, choose_positive_class
from keras_med.engine.command import main
from keras_med.engine.spec import RecipeSpec
from keras_med.recipes.registry import register_recipe

DATA_HELP = """
No chest X-ray set here. Point the recipe at one, or try the pipeline on synthetic data first:

  python -m keras_med.recipes.covid_cxr --demo
  python -m keras_med.recipes.covid_cxr --data-dir /path/to/covid-chestxray-dataset --weights PATH
  python -m keras_med.recipes.covid_cxr --data-dir /path/to/chest_xray   (Kermany: train/NORMAL, train/PNEUMONIA, test/...)
  python -m keras_med.recipes.covid_cxr --data-dir /path/to/pneumoniamnist.npz

The ieee8023 COVID-19 image data collection (Cohen et al., arXiv:2006.11988) is at
https://github.com/ieee8023/covid-chestxray-dataset (metadata.csv plus images/). Kermany et al.'s
pediatric pneumonia set (Cell 2018, CC BY 4.0) is at https://data.mendeley.com/datasets/rscbjbr9sj;
PneumoniaMNIST (MedMNIST v2) at https://medmnist.com.
""".strip()

# Top backbone blocks unfrozen for fine-tuning: MobileNetV2's last three inverted residual blocks
# (block_14..block_16, with the final 1x1 convolution that follows them): the same 20 layers with
# weights the recipe unfroze when it counted layers.
MOBILENETV2_LAST_BLOCKS = 3


def default_config() -> RecipeConfig:
    """MobileNetV2 at 224 px as in the source; `recipes/covid_cxr_cpu.toml` is a CPU-sized variant."""
    return RecipeConfig(
        recipe="covid_cxr",
        data=DataConfig(image_size=224, batch_size=32, augment="xray", class_weights=True),
        model=ModelConfig(model="mobilenetv2", weights="imagenet", dropout=0.3, head_units=128),
        train=TrainConfig(plan="finetune", head_epochs=3, epochs=10, learning_rate=1e-3,
                          finetune_learning_rate=1e-4, unfreeze=MOBILENETV2_LAST_BLOCKS, monitor="val_auc",
                          patience=5),
        evaluation=EvaluationConfig(operating_point="sensitivity", target=0.9),
    )


def load_table(data_dir, config: RecipeConfig):
    """Detect the layout of `data_dir` (ieee8023, folder per class, MedMNIST npz) and load it as binary;
    `--positive-class` names the positive class (default: COVID-19, PNEUMONIA, the non-NORMAL folder)."""
    from keras_med.data import KERMANY_GROUP_PATTERN, load_covid_chestxray, load_image_folder, load_medmnist

    path = Path(data_dir)
    positive_class = config.data.positive_class
    if path.suffix.lower() == ".npz":
        names = ["normal", "pneumonia"] if "pneumonia" in path.name.lower() else None
        table = load_medmnist(path, class_names=names, task="binary")
    elif config.data.metadata or (path / "metadata.csv").is_file():
        table = load_covid_chestxray(path, views=config.data.views.split(","), negatives=config.data.negatives,
                                     metadata=config.data.metadata or "metadata.csv",
                                     on_bad_image=config.data.on_bad_image)
    else:
        return load_image_folder(path, KERMANY_GROUP_PATTERN, class_names=binary_class_folders(path, positive_class),
                                 task="binary")
    return choose_positive_class(table, positive_class) if positive_class else table


def write_demo(out_dir, config: RecipeConfig):
    from keras_med.data.sources.covid_chestxray import write_covid_chestxray_demo

    return write_covid_chestxray_demo(out_dir, n_images=config.data.demo_size, seed=config.train.seed,
                                      image_size=max(64, config.data.image_size))


SPEC = register_recipe(RecipeSpec(
    name="covid_cxr",
    description="Train, evaluate, explain and export a binary chest X-ray screening model (COVID-19 / pneumonia).",
    defaults=default_config(),
    load_table=load_table,
    write_demo=write_demo,
    data_help=DATA_HELP,
    group_name="patient",
    options=("metadata", "views", "negatives", "positive_class"),
    demo_overrides={
        "data": {"image_size": 64, "batch_size": 32, "demo_size": 300},
        "model": {"model": "custom_cnn", "weights": "none", "dropout": 0.3, "head_units": 64},
        "train": {"plan": "scratch", "epochs": 15, "learning_rate": 2e-3, "patience": 6},
        "evaluation": {"bootstrap": 300},
    },
))

if __name__ == "__main__":
    sys.exit(main(SPEC))
