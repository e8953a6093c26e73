"""Marginal against class-conditional (Mondrian) conformal sets on a finished run's own predictions.

Calibrates both kinds on the run's validation probabilities (`predictions.npz`, as the recipe
stores them) at 90% and prints each one's test coverage, mean set size and per-class coverage.

    PYTHONPATH=. python benchmarks/conformal_modes.py runs/ham10000/<stamp>
"""
import json
import sys

import numpy as np

from keras_med.evaluation.conformal import CONFORMAL_MODES, calibrate_conformal, evaluate_sets


def main(run_dir: str, coverage: float = 0.9) -> None:
    predictions = np.load(f"{run_dir}/predictions.npz")
    names = json.load(open(f"{run_dir}/class_names.json"))["class_names"]
    val_labels, test_labels = predictions["y_val"].argmax(1), predictions["y_test"].argmax(1)
    for mode in CONFORMAL_MODES:
        sets = calibrate_conformal(predictions["p_val_none"], val_labels, coverage, mode=mode)
        report = evaluate_sets(sets, predictions["p_test_none"], test_labels, names)
        per_class = {name: round(entry["coverage"], 2) for name, entry in report["per_class"].items()}
        print(f"{mode}: test coverage {report['coverage']['value']:.3f}, {report['average_set_size']:.2f} classes "
              f"per set, per class {per_class}")


if __name__ == "__main__":
    main(sys.argv[1])
