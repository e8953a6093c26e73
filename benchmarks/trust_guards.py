"""Out-of-distribution scores and conformal sets of a trained run, measured on real images.

Usage:
    python benchmarks/trust_guards.py --run-dir runs/ham10000/<stamp> [--features pooled] \
        --other ../shared/data/kermany_pneumonia_224 --other-name "Kermany chest X-rays" --out ham_trust.json

For the run's model (checkpoints/best.keras) and its own split (split.csv), every candidate score is
fitted on the training split (on the features the run's guard reads, `keras_med.models.features`, or
`--features`) with its threshold at 95% of the validation split, and measured on the test split
(pass rate) against: real images of another modality (`--other`, a folder searched recursively,
`--max-other` of them at random), and the synthetic outsiders every run's report uses (another
modality drawn in numpy, blank/constant, noise, tiny, corrupted test images). Candidates:
Mahalanobis (LedoitWolf) and kNN on those features, maximum softmax probability, and the energy
and maximum logit of the output layer's logits (computed here only; they are not served). Every
candidate's "flagged" includes the guard's pixel-spread check (a constant image is always flagged),
its AUROC is the score's alone. Then the conformal sets, marginal and Mondrian, at 90% coverage:
test coverage with a bootstrap interval by group, average set size overall and per class.
Prints Markdown tables and writes everything to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import keras
import numpy as np

from keras_med.config import RecipeConfig
from keras_med.data import load_split
from keras_med.data.decode import load_image
from keras_med.data.files import IMAGE_SUFFIXES
from keras_med.evaluation.arrays import canonical_arrays
from keras_med.evaluation.conformal import calibrate_conformal, evaluate_sets
from keras_med.evaluation.metrics import compute_metrics
from keras_med.evaluation.ood import choose_threshold, fit_ood_guard, pixel_spread, separation
from keras_med.evaluation.trust import outsider_images, served_probabilities
from keras_med.engine.trust import evaluation_pipeline
from keras_med.models.classifier import ImageClassifier
from keras_med.models.features import features_and_predictions_model

logger = logging.getLogger("benchmarks.trust_guards")
SCORED = ("mahalanobis", "knn", "max_softmax")


def forward(model, batches, features=None):
    """Probabilities, the guard's features, logits and pixel spread per image.

    The features are those the run's guard scores (`features_and_predictions_model`: the backbone's
    middle block, or the pooled features of a backbone without one). The output layer's linear
    scores (for energy and maximum logit) are computed here from its input and weights, tapped
    through the parts the `ImageClassifier` names.
    """
    if not isinstance(model, ImageClassifier):
        raise SystemExit(f"{model.name}: expected a keras_med ImageClassifier checkpoint")
    output_layer = model.output_dense
    guarded = features_and_predictions_model(model, features)
    head_input = keras.Model(model.inputs, output_layer.input)
    kernel, bias = (np.asarray(weight) for weight in output_layer.get_weights())
    parts = {"raw": [], "features": [], "logits": [], "spread": []}
    for batch in batches:
        batch = np.asarray(batch, np.float32)
        raw, features = guarded.predict_on_batch(batch)
        hidden = head_input.predict_on_batch(batch)
        parts["raw"].append(np.asarray(raw, np.float32))
        parts["features"].append(np.asarray(features, np.float32))
        parts["logits"].append(np.asarray(hidden, np.float32) @ kernel + bias)
        parts["spread"].append(keras.ops.convert_to_numpy(pixel_spread(batch)))
    return {key: np.concatenate(value) for key, value in parts.items()}


def logit_scores(logits: np.ndarray, binary: bool) -> dict[str, np.ndarray]:
    """Energy (-logsumexp of the logits) and minus the maximum logit; higher = more unusual."""
    if binary:
        logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
    top = logits.max(axis=1)
    energy = -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))
    return {"energy": energy, "max_logit": -top}


def array_batches(images: np.ndarray, size: int = 32):
    return (images[start:start + size] for start in range(0, len(images), size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--other", required=True, help="Folder of images of another modality (searched recursively).")
    parser.add_argument("--other-name", default="another modality, real images")
    parser.add_argument("--max-other", type=int, default=1000)
    parser.add_argument("--pass-rate", type=float, default=0.95)
    parser.add_argument("--coverage", type=float, default=0.9)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", required=True)
    parser.add_argument("--features", choices=["middle_block", "pooled"], default=None,
                        help="Which model features the scores read (default: what the run's guard reads).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = time.time()

    run_dir = Path(args.run_dir)
    config = RecipeConfig.load(run_dir / "config.toml")
    names = json.loads((run_dir / "class_names.json").read_text())
    class_names, task = names["class_names"], names["task"]
    table = load_split(run_dir / "split.csv", class_names, task, names.get("long_names"))
    model = keras.saving.load_model(run_dir / "checkpoints" / "best.keras", compile=False)
    size = config.data.image_size
    parts = {name: table.subset(name) for name in ("train", "val", "test")}
    passes = {}
    for name, part in parts.items():
        logger.info("forward pass over %s (%d images)", name, len(part.frame))
        passes[name] = forward(model, (images for images, _ in evaluation_pipeline(part, config)), args.features)
    labels = {name: canonical_arrays(task, parts[name].targets(), passes[name]["raw"], class_names)[0] for name in parts}
    probabilities = {name: served_probabilities(task, passes[name]["raw"]) for name in parts}

    rng = np.random.default_rng(0)
    files = sorted(str(path) for path in Path(args.other).rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
    files = list(rng.choice(files, size=min(args.max_other, len(files)), replace=False))
    logger.info("decoding %d images of %s", len(files), args.other_name)
    other = np.stack([load_image(path, size, config.data.resize).numpy() for path in files]).astype(np.float32)
    test_paths = parts["test"].paths
    outsiders = {args.other_name: other,
                 **outsider_images(size, config.recipe, lambda i: load_image(test_paths[i], size, config.data.resize).numpy(),
                                   len(test_paths), seed=0)}
    outsider_passes = {kind: forward(model, array_batches(images), args.features) for kind, images in outsiders.items()}

    results = {"run_dir": str(run_dir), "image_size": size, "task": task, "n_other": len(files), "methods": {}}
    headline = compute_metrics(task, parts["test"].targets(), passes["test"]["raw"], class_names,
                               groups=parts["test"].frame["group"].to_numpy(), n_bootstrap=args.bootstrap)
    results["test_metrics"] = {key: value for key, value in headline.items() if isinstance(value, dict) and "ci95" in value}
    train_labels = None if task == "multilabel" else labels["train"]
    for method in SCORED + ("energy", "max_logit"):
        if method in SCORED:
            guard = fit_ood_guard(passes["train"]["features"], train_labels, passes["val"]["features"], probabilities["val"],
                                  method=method, pass_rate=args.pass_rate, train_spread=passes["train"]["spread"],
                                  val_spread=passes["val"]["spread"])
            score = lambda p, probs: guard.score(p["features"], probs)  # noqa: E731
            threshold, floor = guard.threshold, guard.min_pixel_spread
        else:
            score = lambda p, probs: logit_scores(p["logits"], task == "binary")[method]  # noqa: E731
            threshold = choose_threshold(score(passes["val"], probabilities["val"]), args.pass_rate)
            floor = 0.5 * float(passes["train"]["spread"].min())
        test_scores = score(passes["test"], probabilities["test"])
        entry = {"threshold": float(threshold),
                 "validation_pass_rate": float(np.mean((score(passes["val"], probabilities["val"]) <= threshold)
                                                       & (passes["val"]["spread"] >= floor))),
                 "test_pass_rate": float(np.mean((test_scores <= threshold) & (passes["test"]["spread"] >= floor))),
                 "sets": {}}
        for kind, result in outsider_passes.items():
            out_scores = score(result, served_probabilities(task, result["raw"]))
            passed = (out_scores <= threshold) & (result["spread"] >= floor)
            entry["sets"][kind] = separation(test_scores, out_scores, threshold, passed)
        results["methods"][method] = entry

    if task != "multilabel":
        groups = parts["test"].frame["group"].to_numpy()
        results["conformal"] = {}
        for mode in ("marginal", "mondrian"):
            sets = calibrate_conformal(probabilities["val"], labels["val"], args.coverage, mode)
            results["conformal"][mode] = evaluate_sets(sets, probabilities["test"], labels["test"], class_names, groups,
                                                       args.bootstrap)
    results["seconds"] = time.time() - started
    Path(args.out).write_text(json.dumps(results, indent=2))
    print_tables(results)


def print_tables(results: dict) -> None:
    print(", ".join(f"test {key} {value['value']:.3f} ({value['ci95'][0]:.3f}-{value['ci95'][1]:.3f})"
                    for key, value in results["test_metrics"].items() if value.get("ci95")))
    methods = results["methods"]
    kinds = list(next(iter(methods.values()))["sets"])
    print("| score | val pass | test pass | " + " | ".join(kinds) + " |")
    print("|---" * (3 + len(kinds)) + "|")
    for method, entry in methods.items():
        cells = [f"{100 * entry['sets'][k]['flagged_rate']:.1f}% ({entry['sets'][k]['auroc']:.3f})" for k in kinds]
        print(f"| {method} | {100 * entry['validation_pass_rate']:.1f}% | {100 * entry['test_pass_rate']:.1f}% | "
              + " | ".join(cells) + " |")
    for mode, entry in (results.get("conformal") or {}).items():
        low, high = entry["coverage"]["ci95"]
        print(f"\nconformal {mode}: coverage {entry['coverage']['value']:.3f} ({low:.3f}-{high:.3f}), "
              f"average set size {entry['average_set_size']:.2f}, empty {entry['empty_set_rate']:.3f}")
        for name, item in entry["per_class"].items():
            print(f"  {name}: n={item['n']} coverage={item['coverage']:.3f} size={item['average_set_size']:.2f}")


if __name__ == "__main__":
    main()
