"""Trust at the point of use, for one trained model: fit the out-of-distribution guard, calibrate the
conformal prediction sets, and measure both, so the report and the served model say when the model
does not know.

Every split keeps its role: the guard's score is fitted on the training split and its threshold
chosen on validation; the conformal sets are calibrated on validation; the test split only measures
(pass rate, coverage). The outsiders the guard is measured against are made here, in memory: images
of another modality (synthetic, from keras_med.data.synthetic), blank, constant, noise and tiny
images, and badly corrupted test images. `benchmarks/trust_guards.py` makes the same measurement with
real images of the other modality.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from keras_med.evaluation.arrays import canonical_arrays
from keras_med.evaluation.conformal import ConformalSets, calibrate_conformal, evaluate_sets
from keras_med.evaluation.ood import DEFAULT_OOD_METHOD, OODGuard, fit_ood_guard, pixel_spread, separation
from keras_med.evaluation.predictions import fetch_images
from keras_med.run_directory import RunDirectory, run_directory_of

logger = logging.getLogger(__name__)

# Which synthetic modality is "another modality" for a recipe's model; other problems get both.
OTHER_MODALITY = {"ham10000": ("chest",), "covid_cxr": ("skin",), "chexnet": ("skin",)}
MODALITY_NAMES = {"chest": "chest X-rays", "skin": "dermoscopy lesions"}
OUTSIDERS_PER_KIND = 32
CORRUPTED_IMAGES = 64


@dataclass
class TrustResult:
    """What `assess_trust` fitted and measured.

    Attributes:
        guard: The fitted out-of-distribution guard, or None when turned off.
        sets: The calibrated conformal sets, or None (multi-label models).
        report: `{"ood": ..., "conformal": ...}` for metrics.json and the report.
    """

    guard: OODGuard | None
    sets: ConformalSets | None
    report: dict = field(default_factory=dict)


def served_probabilities(task: str, raw) -> np.ndarray:
    """Model outputs laid out as the served `probabilities` (binary: `[1 - p, p]`)."""
    raw = np.asarray(raw, np.float32)
    return np.concatenate([1.0 - raw, raw], axis=-1) if task == "binary" else raw


def predict_features(model, images, batch_size: int = 32, features: str | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(raw model outputs, guard features, pixel spread)` per image (`keras_med.evaluation.ood.pixel_spread`).

    Args:
        model: A Keras model to the contract.
        images: A `(images, targets)` dataset, or a float32 array `(N, S, S, 3)` in 0..255.
        batch_size: Images per batch for an array.
        features: `middle_block` or `pooled` (`keras_med.models.features`); None: the model's default.
    """
    from keras_med.models.features import features_and_predictions_model

    return _predict_with(features_and_predictions_model(model, features), images, batch_size)


def _predict_with(both, images, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`predict_features` through an already built `[predictions, features]` model."""
    if isinstance(images, np.ndarray):
        batches = (images[start:start + batch_size] for start in range(0, len(images), batch_size))
    else:
        batches = (np.asarray(batch) for batch, _ in images)
    outputs, features, spread = [], [], []
    for batch in batches:
        batch = np.asarray(batch, np.float32)
        raw, pooled = both.predict_on_batch(batch)
        outputs.append(np.asarray(raw, np.float32))
        features.append(np.asarray(pooled, np.float32))
        spread.append(keras.ops.convert_to_numpy(pixel_spread(batch)))
    return np.concatenate(outputs), np.concatenate(features), np.concatenate(spread)


def outsider_images(image_size: int, recipe: str | None, test_images=None, n_test: int = 0,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Images the guard should flag, float32 `(N, S, S, 3)` in 0..255, by kind.

    Args:
        image_size: Side S of the model input.
        recipe: The recipe name, which decides the "other modality" (both kinds when unknown).
        test_images: The test images (array or `index -> image`), to corrupt; or None.
        n_test: Number of test images.
        seed: Random seed.
    """
    from keras_med.data.synthetic import CHEST_FINDINGS, HAM10000_SHARES, draw_chest, draw_lesion

    rng = np.random.default_rng(seed)
    size, count = image_size, OUTSIDERS_PER_KIND
    sets = {}
    for kind in OTHER_MODALITY.get(recipe, ("chest", "skin")):
        if kind == "chest":
            images = [np.repeat(draw_chest(list(rng.choice(CHEST_FINDINGS, size=rng.integers(0, 3), replace=False)),
                                           rng, size)[..., None], 3, axis=-1) for _ in range(count)]
        else:
            labels = rng.choice(list(HAM10000_SHARES), size=count)
            images = [draw_lesion(label, rng, size) for label in labels]
        sets[f"another modality: synthetic {MODALITY_NAMES[kind]}"] = np.stack(images).astype(np.float32)
    constant = np.concatenate([[0.0], [255.0], [128.0], rng.uniform(0, 255, count - 3)])
    colours = np.where(np.arange(count)[:, None] < 3, constant[:, None], rng.uniform(0, 255, (count, 3)))
    sets["blank and constant images"] = np.broadcast_to(colours[:, None, None, :], (count, size, size, 3)).astype(np.float32)
    half = count // 2
    sets["noise"] = np.concatenate([rng.uniform(0, 255, (half, size, size, 3)),
                                    np.clip(rng.normal(128, 60, (count - half, size, size, 3)), 0, 255)]).astype(np.float32)
    tiny = [keras.ops.convert_to_numpy(keras.ops.image.resize(rng.uniform(0, 255, (1, side, side, 3)), (size, size)))[0]
            for side in np.resize([1, 2, 3, 4], count)]
    sets["tiny images (1 to 4 px, scaled up)"] = np.clip(np.stack(tiny), 0, 255).astype(np.float32)
    if test_images is not None and n_test:
        originals = fetch_images(test_images, rng.choice(n_test, size=min(CORRUPTED_IMAGES, n_test), replace=False))
        small = max(2, size // 16)
        blurred = keras.ops.image.resize(keras.ops.image.resize(originals, (small, small)), (size, size))
        sets["corrupted: heavy blur"] = np.clip(keras.ops.convert_to_numpy(blurred), 0, 255).astype(np.float32)
        sets["corrupted: extreme brightness"] = np.clip(originals * 2.5 + 120.0, 0, 255).astype(np.float32)
        sets["corrupted: nearly black"] = (originals * 0.08).astype(np.float32)
    return sets


def assess_trust(model, *, task: str, class_names, datasets: dict, targets: dict, groups_test=None,
                 test_images=None, image_size: int, recipe: str | None = None, ood_method: str = DEFAULT_OOD_METHOD,
                 pass_rate: float = 0.95, coverage: float = 0.9, conformal_mode: str = "marginal",
                 n_bootstrap: int = 1000, seed: int = 0) -> TrustResult:
    """Fit the guard (train), choose its threshold and calibrate the sets (validation), measure both (test).

    Args:
        model: The trained Keras model.
        task: "multiclass", "binary" or "multilabel".
        class_names: Class names in output order.
        datasets: `{"train", "val", "test"}` `(images, targets)` datasets without augmentation.
        targets: `{"train", "val", "test"}` targets in the pipeline's encoding, in dataset order.
        groups_test: Group id per test image, for group bootstrap intervals; or None.
        test_images: Test images (array or `index -> image`) to corrupt; or None.
        image_size: Side S of the model input.
        recipe: Recipe name (decides the "other modality").
        ood_method: One of `keras_med.evaluation.ood.OOD_METHODS`, or "none".
        pass_rate: Share of validation images the guard passes.
        coverage: Target coverage of the conformal sets.
        conformal_mode: "marginal" or "mondrian".
        n_bootstrap: Resamples for the coverage interval.
        seed: Random seed.

    Returns:
        A `TrustResult`.
    """
    from keras_med.models.features import features_and_predictions_model, guard_features_source

    class_names = list(class_names)
    source = guard_features_source(model)
    # Built once: every split and outsider kind goes through the same model (and its traced predict step).
    both = features_and_predictions_model(model, source)
    raw, features, spread, labels = {}, {}, {}, {}
    for name in ("train", "val", "test"):
        raw[name], features[name], spread[name] = _predict_with(both, datasets[name])
        labels[name], _ = canonical_arrays(task, targets[name], raw[name], class_names, f"_{name}")
    probabilities = {name: served_probabilities(task, values) for name, values in raw.items()}
    report: dict = {}

    guard = None
    if ood_method != "none":
        guard = fit_ood_guard(features["train"], None if task == "multilabel" else labels["train"],
                              features["val"], probabilities["val"], method=ood_method, pass_rate=pass_rate, seed=seed,
                              train_spread=spread["train"], val_spread=spread["val"], features=source)
        test_scores = guard.score(features["test"], probabilities["test"])
        test_passed = guard.in_distribution(features["test"], probabilities["test"], spread["test"])
        rows = []
        outsiders = outsider_images(image_size, recipe, test_images, len(labels["test"]), seed)
        for kind, images in outsiders.items():
            out_raw, out_features, out_spread = _predict_with(both, images)
            out_probabilities = served_probabilities(task, out_raw)
            rows.append({"name": kind, **separation(
                test_scores, guard.score(out_features, out_probabilities), guard.threshold,
                guard.in_distribution(out_features, out_probabilities, out_spread))})
        report["ood"] = {**guard.summary(), "test_pass_rate": float(np.mean(test_passed)),
                         "sets": rows}
        logger.info("out-of-distribution guard (%s): passes %.1f%% of validation, %.1f%% of test; flags %s",
                    guard.method, 100 * guard.validation_pass_rate, 100 * report["ood"]["test_pass_rate"],
                    ", ".join(f"{row['name']} {row['flagged_rate']:.0%}" for row in rows))

    sets = None
    if task == "multilabel":
        report["conformal"] = {"applicable": False}
    else:
        sets = calibrate_conformal(probabilities["val"], labels["val"], coverage, conformal_mode)
        report["conformal"] = {"applicable": True, **evaluate_sets(
            sets, probabilities["test"], labels["test"], class_names, groups_test, n_bootstrap, seed)}
        measured = report["conformal"]
        sets.measured = {"split": "test", "coverage": measured["coverage"]["value"],
                         "per_class": {name: entry["coverage"] for name, entry in measured["per_class"].items()}}
        logger.info("conformal sets (%s, target %.0f%%): test coverage %.3f, average size %.2f",
                    sets.mode, 100 * coverage, measured["coverage"]["value"], measured["average_set_size"])
    return TrustResult(guard, sets, report)


def save_trust(result: TrustResult, run_dir: str | Path) -> None:
    """Write the guard and the sets into `<run_dir>/trust/` so that a later export can reuse them."""
    run = RunDirectory(run_dir)
    run.trust_dir.mkdir(parents=True, exist_ok=True)
    if result.guard is not None:
        result.guard.save(run.ood_guard_file)
    if result.sets is not None:
        run.write_json(run.conformal_file, result.sets.summary())


def load_run_trust(model_path: str | Path) -> dict:
    """The guard and sets a run saved beside its checkpoint, as `export_for_serving` keyword arguments.

    Args:
        model_path: `<run_dir>/checkpoints/best.keras` (or a `.keras` file in the run directory).

    Returns:
        `{"ood_guard": OODGuard | None, "conformal_sets": ConformalSets | None}`; both None for a run
        trained before the guards existed.
    """
    run = RunDirectory(run_directory_of(model_path))
    guard = OODGuard.load(run.ood_guard_file) if run.ood_guard_file.is_file() else None
    sets = None
    stored = run.read_json(run.conformal_file)
    if stored is not None:
        sets = ConformalSets(coverage=stored["coverage"], mode=stored["mode"],
                             thresholds=np.asarray(stored["thresholds"], np.float64),
                             n_calibration=stored["n_calibration"], applies_to=stored["applies_to"],
                             mean_set_size=stored.get("mean_set_size"), measured=stored.get("measured"))
    return {"ood_guard": guard, "conformal_sets": sets}


def summary_lines(metrics: dict) -> list[str]:
    """Console summary lines for the guard and the sets (empty when the run has neither)."""
    lines = []
    ood = metrics.get("ood")
    if ood:
        flagged = ", ".join(f"{row['name']} {row['flagged_rate']:.0%}" for row in ood["sets"])
        lines.append(f"  unfamiliar      {ood['method']} guard passes {ood['test_pass_rate']:.1%} of test; flags {flagged}")
    conformal = metrics.get("conformal")
    if conformal and conformal.get("applicable"):
        interval = conformal["coverage"].get("ci95")
        lines.append(f"  prediction sets test coverage {conformal['coverage']['value']:.3f}"
                     + (f" (95% CI {interval[0]:.3f}-{interval[1]:.3f})" if interval else "")
                     + f" for target {conformal['target']:.2f}, {conformal['average_set_size']:.2f} classes on average")
    return lines
