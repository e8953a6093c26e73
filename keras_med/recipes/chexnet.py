"""CheXNet: 14 thoracic pathologies on ChestX-ray14 (multi-label), DenseNet121 at 224 px.

Run: `python -m keras_med.recipes.chexnet --data-dir DIR` (real data), `--demo` (synthetic data in
the same layout, a couple of minutes on a CPU), or `--prepared DIR` (TFRecord shards written once
by `keras-med prepare --recipe chexnet`, the fast path for the 112,120 full-size PNGs).

Defaults follow Rajpurkar et al. 2017 (arXiv:1711.05225) and the source notebook: DenseNet121 from
ImageNet with one sigmoid per pathology, binary cross-entropy, Adam at 1e-4 for the whole network
(after one epoch training the new output layer alone), 224 px, the learning rate halved when the
validation loss plateaus, the best epoch by validation loss. Splits are by patient: the official
`train_val_list.txt` / `test_list.txt` when present (test from the list, validation carved
patient-wise from train_val), else a patient-wise split. The loss is not weighted per label:
keras_med's class weights are for single-label tasks and do not apply to multi-label targets.
The test report adds a per-label AUROC table beside the paper's figures (`chexnet_auroc.md`/`.csv`)
and Grad-CAM++ overlays of the most likely pathology on the most confident test images.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from keras_med.config import TABLE_OPTIONS, DataConfig, EvaluationConfig, ModelConfig, RecipeConfig, TrainConfig
from keras_med.engine.command import main
from keras_med.engine.spec import RecipeSpec
from keras_med.recipes.registry import register_recipe

log = logging.getLogger("keras_med")

DATA_HELP = """
ChestX-ray14 is not here. Point the recipe at it, or try the pipeline on synthetic data first:

  python -m keras_med.recipes.chexnet --demo
  python -m keras_med.recipes.chexnet --data-dir /path/to/ChestX-ray14 [--max-images 20000]
  keras-med prepare --recipe chexnet --data-dir /path/to/ChestX-ray14 --image-size 224 --out /fast/cxr14_224
  python -m keras_med.recipes.chexnet --prepared /fast/cxr14_224

ChestX-ray14 (Wang et al., CVPR 2017; NIH Clinical Center) is published at
https://nihcc.app.box.com/v/ChestXray-NIHCC. The directory must hold Data_Entry_2017.csv (or a
Parquet file: --metadata FILE, --label-column patologia) and the images, in images/ or the
release's images_001/images ... images_012/images; train_val_list.txt and test_list.txt, when
present, give the official patient-wise test split.
""".strip()

DEFAULT_METADATA = "Data_Entry_2017.csv"
TRAIN_VAL_LIST, TEST_LIST = "train_val_list.txt", "test_list.txt"
# Rajpurkar et al. 2017, Table 1 (CheXNet column); ChestX-ray14 spells the label Pleural_Thickening.
CHEXNET_PAPER_AUROC = {
    "Atelectasis": 0.8094, "Cardiomegaly": 0.9248, "Effusion": 0.8638, "Infiltration": 0.7345, "Mass": 0.8676,
    "Nodule": 0.7802, "Pneumonia": 0.7680, "Pneumothorax": 0.8887, "Consolidation": 0.7901, "Edema": 0.8878,
    "Emphysema": 0.9371, "Fibrosis": 0.8047, "Pleural Thickening": 0.8062, "Hernia": 0.9164,
}
CHEXNET_PAPER_MEAN_AUROC = 0.8414


def default_config() -> RecipeConfig:
    """CheXNet's settings; a GPU and prepared shards are what make the full set practical."""
    return RecipeConfig(
        recipe="chexnet",
        data=DataConfig(image_size=224, batch_size=32, augment="xray", cache="none", class_weights=False,
                        no_finding="drop"),
        model=ModelConfig(model="densenet121", weights="imagenet", dropout=0.0, head_units=0),
        train=TrainConfig(plan="finetune", optimizer="adam", head_epochs=1, learning_rate=1e-3,
                          finetune_learning_rate=1e-4, unfreeze=-1, epochs=12, monitor="val_loss", patience=4),
        evaluation=EvaluationConfig(operating_point="youden", explain=4),
    )


def find_metadata(data_dir: Path, config: RecipeConfig) -> Path:
    """The metadata file: `--metadata`, else Data_Entry_2017.csv, else the one Parquet file in the folder."""
    if config.data.metadata:
        path = Path(config.data.metadata)
        path = path if path.is_absolute() or path.is_file() else data_dir / path
        if not path.is_file():
            raise FileNotFoundError(f"--metadata {config.data.metadata}: no such file (also looked in {data_dir})")
        return path
    if (data_dir / DEFAULT_METADATA).is_file():
        return data_dir / DEFAULT_METADATA
    parquets = sorted(data_dir.glob("*.parquet"))
    if len(parquets) == 1:
        return parquets[0]
    raise FileNotFoundError(f"{data_dir}: no {DEFAULT_METADATA} and {len(parquets)} Parquet files; expected "
                            "the metadata file there, or name it with --metadata FILE")


def load_table(data_dir, config: RecipeConfig):
    """ChestX-ray14 as a multilabel table; the official test list, when present, fixes the test split."""
    from keras_med.data import load_chestxray14

    data_dir = Path(data_dir)
    table = load_chestxray14(
        find_metadata(data_dir, config), data_dir,
        image_column=config.data.image_column or "Image Index",
        label_column=config.data.label_column or "Finding Labels",
        group_column=config.data.group_column or "Patient ID",
        no_finding="keep" if config.data.no_finding == "keep" else "drop",
        on_bad_image=config.data.on_bad_image)
    return apply_official_split(table, data_dir)


def apply_official_split(table, data_dir: Path):
    """Mark `test` the images of test_list.txt and `train` those of train_val_list.txt (val is carved later).

    Args:
        table: the loaded table; images are matched by file name.
        data_dir: the folder that may hold the two lists; without them the table is returned as is.
    """
    lists = {name: data_dir / name for name in (TRAIN_VAL_LIST, TEST_LIST)}
    if not all(path.is_file() for path in lists.values()):
        return table
    names = table.frame["path"].map(lambda path: Path(path).name)
    test = set(lists[TEST_LIST].read_text().split())
    train_val = set(lists[TRAIN_VAL_LIST].read_text().split())
    split = np.where(names.isin(test), "test", np.where(names.isin(train_val), "train", ""))
    unlisted = split == ""
    if unlisted.any():
        log.warning("%d images are in neither %s nor %s and are left out", int(unlisted.sum()), TRAIN_VAL_LIST,
                    TEST_LIST)
    log.info("official split: %d test images (test_list.txt), %d train/val images", int((split == "test").sum()),
             int((split == "train").sum()))
    kept = table.select(~unlisted)
    return kept.with_frame(kept.frame.assign(split=split[~unlisted]))


def write_demo(out_dir, config: RecipeConfig):
    from keras_med.data.synthetic import write_chestxray14_demo

    return write_chestxray14_demo(out_dir, n_images=config.data.demo_size, seed=config.train.seed,
                                  image_size=max(64, config.data.image_size))


def auroc_comparison(metrics: dict) -> pd.DataFrame:
    """Per-label test AUROC with its 95% interval beside CheXNet's, plus the mean row.

    Args:
        metrics: `evaluate_run`'s metrics of a multilabel model (`per_class[name]["auc"]`).
    """
    rows = []
    for name, values in metrics["per_class"].items():
        low, high = values.get("auc_ci95") or (np.nan, np.nan)
        rows.append({"pathology": name, "auroc": values.get("auc"), "ci95_low": low, "ci95_high": high,
                     "chexnet_2017": CHEXNET_PAPER_AUROC.get(name.replace("_", " "), np.nan),
                     "undefined": values.get("undefined", "")})
    frame = pd.DataFrame(rows)
    frame["difference"] = frame["auroc"] - frame["chexnet_2017"]
    paper = frame["chexnet_2017"].dropna()
    mean_paper = CHEXNET_PAPER_MEAN_AUROC if len(paper) == len(CHEXNET_PAPER_AUROC) else paper.mean()
    mean = metrics.get("mean_auc") or {}
    low, high = mean.get("ci95") or (np.nan, np.nan)
    frame.loc[len(frame)] = {"pathology": "mean", "auroc": mean.get("value", frame["auroc"].mean()),
                             "ci95_low": low, "ci95_high": high, "chexnet_2017": mean_paper,
                             "difference": mean.get("value", np.nan) - mean_paper, "undefined": ""}
    return frame


def _markdown(frame: pd.DataFrame) -> str:
    def number(value) -> str:
        return "n/a" if value is None or pd.isna(value) else f"{value:.4f}"

    lines = ["| pathology | AUROC (ours) | 95% CI | CheXNet 2017 | difference |", "|---|---|---|---|---|"]
    for row in frame.itertuples():
        interval = "n/a" if pd.isna(row.ci95_low) else f"{row.ci95_low:.3f}-{row.ci95_high:.3f}"
        auroc = f"undefined ({row.undefined})" if row.undefined else number(row.auroc)
        lines.append(f"| {row.pathology} | {auroc} | {interval} | {number(row.chexnet_2017)} | "
                     f"{number(row.difference)} |")
    return "\n".join(lines)


def write_chexnet_evaluation(run_dir, metrics: dict, data, model, y_prob: dict, config: RecipeConfig) -> None:
    """`chexnet_auroc.md`/`.csv` (logged too) and Grad-CAM++ of the most likely pathology.

    The CheXNet figures are on the paper's own test set and at full scale: a demo or a subset is
    not comparable in level, only in shape (which labels are hard).
    """
    run_dir = Path(run_dir)
    table = auroc_comparison(metrics)
    table.to_csv(run_dir / "chexnet_auroc.csv", index=False)
    text = ("# Test AUROC per pathology beside CheXNet (Rajpurkar et al. 2017)\n\n"
            f"{len(data.parts['test'].frame)} test images; 95% intervals by patient bootstrap. CheXNet's figures "
            "are on its own test split of ChestX-ray14 (all 14 labels): compare levels only on that data.\n\n"
            + _markdown(table) + "\n")
    (run_dir / "chexnet_auroc.md").write_text(text, encoding="utf-8")
    log.info("AUROC per pathology beside CheXNet:\n%s", _markdown(table))
    count = config.evaluation.explain
    if count > 0:
        write_gradcam_plus_plus(run_dir, model, data, y_prob["test"], config, count)


def write_gradcam_plus_plus(run_dir: Path, model, data, probabilities: np.ndarray, config: RecipeConfig,
                            count: int) -> list[Path]:
    """Grad-CAM++ overlays of each image's most likely pathology, for the `count` most confident test images."""
    from keras_med.data.preparation import test_image_source
    from keras_med.evaluation.predictions import fetch_images
    from keras_med.explain import save_overlays

    names = data.table.class_names
    chosen = np.argsort(-probabilities.max(axis=1), kind="stable")[:count]
    top = probabilities[chosen].argmax(axis=1)
    truth = data.parts["test"].frame["label"].to_numpy()[chosen]
    images = fetch_images(test_image_source(data.parts["test"], config), chosen)
    return save_overlays(model, images, run_dir / "gradcam", names=[f"gradcampp_{i}" for i in chosen],
                         class_indices=top, method="gradcam++",
                         titles=[f"{names[k]} {probabilities[i, k]:.2f} (true: {t or 'none'})"
                                 for i, k, t in zip(chosen, top, truth)])


SPEC = register_recipe(RecipeSpec(
    name="chexnet",
    description="Train, evaluate, explain and export a CheXNet-style 14-pathology chest X-ray model.",
    defaults=default_config(),
    load_table=load_table,
    write_demo=write_demo,
    data_help=DATA_HELP,
    group_name="patient",
    demo_overrides={
        "data": {"image_size": 64, "batch_size": 32, "demo_size": 480, "cache": "memory", "no_finding": "keep"},
        "model": {"model": "custom_cnn", "weights": "none", "dropout": 0.2, "head_units": 128},
        "train": {"plan": "scratch", "optimizer": "adam", "epochs": 12, "learning_rate": 2e-3,
                  "monitor": "val_auc", "patience": 6},
        "evaluation": {"bootstrap": 300},
    },
    extra_evaluation=write_chexnet_evaluation,
    options=TABLE_OPTIONS,
))

if __name__ == "__main__":
    sys.exit(main(SPEC))
