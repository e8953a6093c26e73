"""Score trained model(s) on a labelled external test set, with optional flip TTA and ensembling.

The set was never part of the models' split, so its figures estimate how the model travels to
new data. Several models average their probabilities (an ensemble). The thresholds and the
decision rule stored with the model (its run's metrics.json) are applied unchanged, as in
deployment. An exported SavedModel folder is scored through the project's one predictor
(`keras_med.export.predictor`, its `predict_pixels` signature), with what it carries (ensemble,
flips, decision rule, thresholds), so the figures of a checkpoint and of its export can be compared.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from keras_med.evaluation.decision_rule import members_thresholds_and_rule
from keras_med.evaluation.evaluate import evaluate_run
from keras_med.errors import ConfigError
from keras_med.evaluation.tta import TTA_MODES, predict_with_tta  # noqa: F401  (TTA_MODES: re-exported)
from keras_med.comparison.runs import save_test_predictions
from keras_med.run_directory import RunDirectory, TrainedModel, load_trained_model

logger = logging.getLogger(__name__)


def load_scored_model(path) -> tuple[TrainedModel, bool]:
    """`(TrainedModel, is_saved_model)` for a `.keras` file or an exported SavedModel folder.

    A SavedModel is the project's one predictor (`keras_med.export.predictor.load_predictor`), whose
    `predict` answers its `predict_pixels` signature as a Keras model's `predict` would, with what
    the export carries (ensemble, flips, decision rule, thresholds).
    """
    path = Path(path)
    if path.is_dir():
        from keras_med.export.predictor import load_predictor

        predictor = load_predictor(path)
        return TrainedModel(predictor, predictor.describe().run, path), True
    return load_trained_model(path), False


def evaluate_external(model_paths, labels_csv, image_dir, out_dir, tta: str | None = None, batch_size: int = 32,
                      n_bootstrap: int = 1000, explain: int = 4, seed: int = 0) -> dict:
    """Evaluate one model, or the average of several, on an external labelled set.

    Writes the same metrics.json, plots and report as a training run into `out_dir`.

    Args:
        model_paths: one `.keras` path or a list of them (an ensemble); each in its run directory
            (class_names.json or metrics.json beside it or one level up); or an exported SavedModel
            folder (scored as served: its own ensemble, flips, decision rule and thresholds).
        labels_csv: the external labels (`image_id,label` or one-hot columns; see
            `keras_med.data.load_external_test`).
        image_dir: the folder holding the images.
        out_dir: directory for the results.
        tta: "none" or "flips" (mean over original, horizontal and vertical flips); None: what the
            export serves: the first model's run setting (`[evaluation] tta`) for `.keras` models, and
            none on top of a SavedModel, whose graph applies its own.
        batch_size: images per prediction batch.
        n_bootstrap: bootstrap resamples for the intervals.
        explain: Grad-CAM overlays for this many right and wrong images (single model only).
        seed: bootstrap seed.

    Returns:
        The metrics dictionary (also in `out_dir/metrics.json`).
    """
    # Imported here: the data layer starts TensorFlow, which the metrics alone do not need.
    from keras_med import data as kdata

    paths = [Path(model_paths)] if isinstance(model_paths, (str, Path)) else [Path(p) for p in model_paths]
    if not paths:
        raise ValueError("model_paths: expected at least one .keras model path, got none")
    if tta is not None and tta not in TTA_MODES:
        raise ValueError(f"tta: expected one of {list(TTA_MODES)}, got {tta!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive number of images, got {batch_size}")
    loaded = [load_scored_model(path) for path in paths]
    trained = [member for member, _ in loaded]
    served = any(is_saved for _, is_saved in loaded)
    if served and len(paths) > 1:
        raise ConfigError("--model: score one SavedModel at a time (export an ensemble as one SavedModel with "
                          "keras-med export --model A --model B)")
    if served and tta == "flips":
        # Flips on top of a graph that may average flips already would score another model than the served one.
        raise ConfigError(f"--tta flips: the SavedModel {paths[0]} is scored as served, with the test-time "
                          "augmentation inside its graph (assets.extra/keras_med.json 'tta'); drop --tta")
    if tta is None:
        from keras_med.export.combined import read_run_tta

        tta = "none" if served else read_run_tta(paths[0])
    first = trained[0].run
    for path, other in zip(paths[1:], trained[1:]):
        if other.run.class_names != first.class_names or other.run.task != first.task:
            raise ConfigError(f"--model {path} predicts {other.run.task} {other.run.class_names}, but {paths[0]} "
                              f"predicts {first.task} {first.class_names}; an ensemble needs the same classes")
    class_names, task = first.class_names, first.task
    table = kdata.load_external_test(labels_csv, image_dir, class_names, task=task)
    targets = table.targets()

    probabilities = []
    for path, member in zip(paths, trained):
        dataset = kdata.build_image_pipeline(table.images(), targets, image_size=member.image_size,
                                             batch_size=batch_size, training=False, augment="none",
                                             resize=member.run.resize, cache="none")
        probabilities.append(predict_with_tta(member.model, dataset, tta))
        logger.info("Predicted %d external images with %s (tta=%s)", len(targets), path, tta)
    y_prob = np.mean(probabilities, axis=0)
    # Per-image predictions, as a training run keeps them: `keras-med compare` reads two such folders.
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    save_test_predictions(out_dir, table, targets, y_prob, tta)

    if served:
        # The SavedModel's probabilities already carry its decision rule.
        thresholds, rule = first.thresholds, "none"
    else:
        # An ensemble's members each chose their thresholds and decision rule on their own
        # validation split; their means are an approximation (logged), the same the export serves.
        thresholds, rule = members_thresholds_and_rule(trained)
        rule = "none" if rule is None or task != "multiclass" else rule
    model, image_size, resize = trained[0].model, trained[0].image_size, first.resize
    image_paths = table.paths

    def load_test_image(index: int) -> np.ndarray:
        return np.asarray(kdata.load_image(image_paths[index], image_size, resize), dtype=np.float32)

    summary = table.frame.groupby("label").size().rename("external test").to_frame()
    names = ", ".join(str(p) for p in paths)
    metrics = evaluate_run(
        out_dir, class_names=class_names, task=task, y_true_test=targets, y_prob_test=y_prob,
        groups_test=table.frame["group"].to_numpy(), data_summary=summary, test_images=load_test_image,
        model=model if len(paths) == 1 and not served else None, long_names=first.long_names,
        n_bootstrap=n_bootstrap, explain=explain, thresholds=thresholds, seed=seed, decision_rule=rule,
        title=f"External evaluation of {names} on {Path(labels_csv).name}" + (" (flip TTA)" if tta == "flips" else ""))
    metrics["external"] = {"models": [str(p) for p in paths], "labels_csv": str(labels_csv),
                           "image_dir": str(image_dir), "tta": tta}
    RunDirectory(out_dir).write_metrics(metrics)
    return metrics
