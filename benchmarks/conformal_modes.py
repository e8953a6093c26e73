"""Marginal against class-conditional (Mondrian) conformal sets on a finished run's own predictions.

Calibrates both kinds on the run's validation probabilities (`predictions.npz`, as the recipe
stores them) at 90% and prints each one's test coverage, mean set size and per-class coverage.

    PYTHONPATH=. python benchmarks/conformal_modes.py runs/ham10000/<stamp>
"""
import json, sys
import numpy as np
from keras_med.evaluation.conformal import calibrate_conformal, evaluate_sets
d = np.load(sys.argv[1] + "/predictions.npz")
names = json.load(open(sys.argv[1] + "/class_names.json"))["class_names"]
yv, yt = d["y_val"].argmax(1), d["y_test"].argmax(1)
for mode in ("marginal", "mondrian"):
    sets = calibrate_conformal(d["p_val_none"], yv, 0.9, mode=mode)
    r = evaluate_sets(sets, d["p_test_none"], yt, names)
    per = {k: round(v["coverage"], 2) for k, v in r["per_class"].items()}
    print(mode, "coverage", round(r["coverage"]["value"], 3), "size", round(r["average_set_size"], 2), "min class", min(per.values()), per)
