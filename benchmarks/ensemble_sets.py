"""Prediction sets of a seed ensemble: member 1's sets (what `--cv-export` and `keras-med export --model A
--model B` serve) against sets calibrated on the ensemble's own answer (what `--members K` serves).

Both are split-conformal at the same target coverage, calibrated on the shared validation split and
measured on the shared test split of runs that were trained on one split (a `--members K` run
directory's `member<k>/`, or `benchmarks/recipe_quality.py`'s `split1/seed<s>/`). Reported per kind:
test coverage (95% bootstrap interval), average set size, the share of empty sets, and the share of
images whose served top class (the ensemble's argmax) is inside the served set, and the share whose
set is the served answer's k most probable classes (what a reader of the served probabilities
expects a set to be).

    PYTHONPATH=. python benchmarks/ensemble_sets.py RUN_A RUN_B [RUN_C ...] --out sets.json

No training and no model: it reads each run's `predictions.npz` (raw probabilities, before any
decision rule; HAM10000's default rule is none).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from keras_med.evaluation.conformal import calibrate_conformal, evaluate_sets
from keras_med.evaluation.run_predictions import load_run_predictions


def class_indices(targets) -> np.ndarray:
    targets = np.asarray(targets)
    return targets.argmax(axis=1) if targets.ndim == 2 else targets.astype(np.int64)


def measure(sets, test_probabilities, y_test, served_probabilities, names, n_bootstrap: int) -> dict:
    """The sets' figures on test, and how they agree with the served answer's probabilities."""
    served_top = served_probabilities.argmax(axis=1)
    figures = evaluate_sets(sets, test_probabilities, y_test, names, n_bootstrap=n_bootstrap)
    members = sets.predict(test_probabilities)
    return {"coverage": figures["coverage"], "average_set_size": figures["average_set_size"],
            "empty_set_rate": figures["empty_set_rate"],
            "top_class_in_set": float(members[np.arange(len(served_top)), served_top].mean()),
            "set_follows_served_ranking": float(np.mean(follows_ranking(members, served_probabilities))),
            "thresholds": figures["thresholds"]}


def follows_ranking(members: np.ndarray, served_probabilities: np.ndarray) -> np.ndarray:
    """Per image: whether the set is the served answer's k most probable classes (k = its size), i.e.
    no class outside the set is shown with a higher served probability than a class inside it."""
    order = np.argsort(-served_probabilities, axis=1)
    ranked = np.take_along_axis(members, order, axis=1)
    sizes = members.sum(axis=1)
    return np.array([ranked[row, :size].all() for row, size in enumerate(sizes)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="Run directories trained on one split (member 1 first).")
    parser.add_argument("--coverage", type=float, default=0.9)
    parser.add_argument("--mode", default="marginal", choices=["marginal", "mondrian"])
    parser.add_argument("--tta", default="none", choices=["none", "flips"])
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    runs = [load_run_predictions(run) for run in args.runs]
    missing = [str(run) for run, arrays in zip(args.runs, runs) if not arrays]
    if missing:
        parser.error(f"no predictions.npz in {', '.join(missing)}")
    y_val, y_test = class_indices(runs[0]["y_val"]), class_indices(runs[0]["y_test"])
    if any(not np.array_equal(class_indices(run["y_test"]), y_test) or
           not np.array_equal(class_indices(run["y_val"]), y_val) for run in runs[1:]):
        parser.error("the runs do not share one validation and test split")
    names = json.loads((args.runs[0] / "class_names.json").read_text(encoding="utf-8"))["class_names"]
    key = args.tta
    first_val, first_test = runs[0]["p_val_none"], runs[0]["p_test_none"]
    mean_val = np.mean([run[f"p_val_{key}"] for run in runs], axis=0)
    mean_test = np.mean([run[f"p_test_{key}"] for run in runs], axis=0)
    served_top = mean_test.argmax(axis=1)
    member_sets = calibrate_conformal(first_val, y_val, args.coverage, args.mode, applies_to="model")
    answer_sets = calibrate_conformal(mean_val, y_val, args.coverage, args.mode, applies_to="answer")
    result = {
        "runs": [str(run) for run in args.runs], "coverage_target": args.coverage, "mode": args.mode,
        "tta": args.tta, "n_val": int(len(y_val)), "n_test": int(len(y_test)),
        "ensemble_balanced_accuracy": float(np.mean([np.mean(served_top[y_test == k] == k)
                                                     for k in range(len(names)) if np.any(y_test == k)])),
        "member1_sets": measure(member_sets, first_test, y_test, mean_test, names, args.bootstrap),
        "ensemble_sets": measure(answer_sets, mean_test, y_test, mean_test, names, args.bootstrap),
    }
    print(f"{len(runs)} runs, {len(y_val)} validation / {len(y_test)} test images, target {args.coverage:.0%} "
          f"({args.mode}), ensemble balanced accuracy {result['ensemble_balanced_accuracy']:.3f}")
    print("| sets | test coverage (95% CI) | average size | empty | served top class in the set | "
          "set = the served k most probable |")
    print("|---|---|---|---|---|---|")
    for label, name in (("member 1's, on its own probabilities", "member1_sets"),
                        ("the ensemble's, on the served answer", "ensemble_sets")):
        row = result[name]
        low, high = row["coverage"]["ci95"] or (float("nan"), float("nan"))
        print(f"| {label} | {row['coverage']['value']:.3f} ({low:.3f}-{high:.3f}) | {row['average_set_size']:.2f} | "
              f"{row['empty_set_rate']:.1%} | {row['top_class_in_set']:.1%} | {row['set_follows_served_ranking']:.1%} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
