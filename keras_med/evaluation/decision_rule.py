"""The multiclass decision rule: per-class logit biases fitted on validation to maximise balanced accuracy.

Balanced accuracy (the ISIC 2018 score) rewards equal recall per class; argmax over the softmax
favours the classes seen most in training. Adding a bias per class to the log-probabilities and
taking the softmax again (a logit adjustment; a Bayes rule under a uniform prior when the biases
are `-log prior`) moves decisions towards the rare classes at no training cost. Two variants:

- `"balanced"`: biases fitted on the validation split by coordinate ascent over a grid
  (balanced accuracy is piecewise constant in the biases, so gradient methods see no slope). A
  class with few validation images (HAM10000's `df` has about 16) may move its bias only a
  proportionally smaller distance, and a small penalty on the biases breaks ties towards zero, so
  a handful of images cannot drive the rule.
- `"prior"`: `-tau * log prior` from the validation class frequencies (the split is stratified by
  group, so they are the training ones); `tau = 1` is the uniform-prior Bayes rule.

The adjusted probabilities are the model's answer everywhere: evaluation scores them, and the
exported SavedModel computes them in its graph (`keras_med.export.combined`), so a served
prediction equals the scored one. The rule is stored in the run's `metrics.json`
(`decision_rule`).

`python -m keras_med.evaluation.decision_rule RUN_DIR` reloads a run's best checkpoint, predicts
its validation and test splits (with and without flip TTA; cached in `RUN_DIR/predictions.npz`,
`keras_med.evaluation.run_predictions`)
and prints balanced accuracy with and without each rule.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DECISION_RULES = ("balanced", "prior", "none")
# Probabilities are clipped before the log so a softmax that underflowed to 0 keeps a finite logit.
_FLOOR = 1e-12


@dataclasses.dataclass(frozen=True)
class LogitAdjustment:
    """Per-class biases added to the log-probabilities of a multiclass model.

    Args:
        biases: one bias per class, in output order (softmax ignores a common shift).
        method: "balanced" (fitted on validation) or "prior" (`-tau * log prior`).
        tau: the prior variant's exponent; None for "balanced".
        fitted_on: how many validation images chose the biases.
    """

    biases: tuple[float, ...]
    method: str
    tau: float | None = None
    fitted_on: int = 0

    def apply(self, probabilities) -> np.ndarray:
        """`softmax(log p + biases)` of `(N, C)` probabilities, as float64 numpy."""
        return adjust_probabilities(probabilities, self.biases)

    def to_dict(self, class_names=None) -> dict:
        """JSON-able form; with `class_names`, the biases are also given by name for the card."""
        data = {"method": self.method, "biases": list(self.biases), "tau": self.tau, "fitted_on": self.fitted_on}
        if class_names is not None:
            data["bias_by_class"] = {str(name): round(value, 4) for name, value in zip(class_names, self.biases)}
        return data

    @classmethod
    def from_dict(cls, data: dict | None) -> LogitAdjustment | None:
        """The adjustment stored by `to_dict` (e.g. `metrics.json`'s `decision_rule`), or None."""
        if not data or not data.get("biases"):
            return None
        return cls(tuple(float(b) for b in data["biases"]), str(data.get("method", "balanced")),
                   data.get("tau"), int(data.get("fitted_on", 0)))


def adjust_probabilities(probabilities, biases) -> np.ndarray:
    """`softmax(log p + biases)` row by row (numpy, float64).

    Args:
        probabilities: `(N, C)` probabilities.
        biases: `(C,)` biases.
    """
    logits = np.log(np.clip(np.asarray(probabilities, np.float64), _FLOOR, None)) + np.asarray(biases, np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def balanced_accuracy(y_true, predicted, n_classes: int) -> float:
    """Mean recall over the classes present in `y_true` (sklearn's `balanced_accuracy_score`)."""
    y_true = np.asarray(y_true)
    recalls = [np.mean(predicted[y_true == k] == k) for k in range(n_classes) if np.any(y_true == k)]
    return float(np.mean(recalls))


def fit_balanced_biases(y_true, probabilities, *, max_bias: float = 2.0, step: float = 0.05,
                        min_support: int = 50, penalty: float = 0.01, passes: int = 4) -> LogitAdjustment:
    """Biases that maximise validation balanced accuracy, regularised for small classes.

    Coordinate ascent: each pass tries, for one class at a time, every grid value of its bias and
    keeps the best objective `balanced accuracy - penalty * mean(bias^2)` (ties: the smaller bias).

    Args:
        y_true: `(N,)` class indices (or one-hot `(N, C)`) of the validation images.
        probabilities: `(N, C)` validation probabilities.
        max_bias: largest |bias| (in log-probability units; 2.0 multiplies a class's odds by 7.4).
        step: grid step of the biases.
        min_support: a class with fewer validation images than this may move only
            `max_bias * count / min_support`; a class with none keeps 0, and so does the largest
            class, the reference the others move against.
        penalty: weight of the mean squared bias in the objective.
        passes: coordinate-ascent passes over the classes.

    Returns:
        A `LogitAdjustment` with `method="balanced"`.

    Example:
    >>> rule = fit_balanced_biases(val_labels, val_probabilities)
    >>> test_decisions = rule.apply(test_probabilities).argmax(axis=1)
    """
    probabilities = np.asarray(probabilities, np.float64)
    y_true = _indices(y_true)
    n, n_classes = probabilities.shape
    logp = np.log(np.clip(probabilities, _FLOOR, None))
    counts = np.bincount(y_true, minlength=n_classes)
    limits = max_bias * np.minimum(1.0, counts / float(min_support))
    # The largest class is the reference (bias 0): a class's shift against it is then bounded by
    # its own limit, which other classes moving down cannot widen.
    limits[np.argmax(counts)] = 0.0
    grid = np.round(np.arange(-max_bias, max_bias + step / 2, step), 10)
    biases = np.zeros(n_classes)

    def objective(values: np.ndarray) -> float:
        predicted = np.argmax(logp + values, axis=1)
        return balanced_accuracy(y_true, predicted, n_classes) - penalty * float(np.mean(values ** 2))

    best = objective(biases)
    for _ in range(passes):
        improved = False
        for k in range(n_classes):
            candidates = grid[np.abs(grid) <= limits[k] + 1e-12]
            # smaller |bias| first, so a tie keeps the smaller move
            for value in candidates[np.argsort(np.abs(candidates), kind="stable")]:
                trial = biases.copy()
                trial[k] = value
                score = objective(trial)
                if score > best + 1e-12:
                    best, biases, improved = score, trial, True
        if not improved:
            break
    return LogitAdjustment(tuple(float(b) for b in biases), "balanced", None, int(n))


def prior_biases(y_true, n_classes: int, tau: float = 1.0) -> LogitAdjustment:
    """`-tau * log prior` with the prior from the class frequencies of `y_true` (add-one smoothed).

    Args:
        y_true: `(N,)` class indices (or one-hot) whose frequencies are the prior.
        n_classes: number of classes.
        tau: 1.0 is the Bayes rule under a uniform prior; 0 changes nothing.
    """
    counts = np.bincount(_indices(y_true), minlength=n_classes) + 1.0
    biases = -tau * np.log(counts / counts.sum())
    biases -= biases.mean()
    return LogitAdjustment(tuple(float(b) for b in biases), "prior", float(tau), int(counts.sum() - n_classes))


def fit_decision_rule(method: str, y_true, probabilities) -> LogitAdjustment | None:
    """The rule `method` names ("balanced", "prior", "none") fitted on validation; None for "none"."""
    if method not in DECISION_RULES:
        raise ValueError(f"decision_rule: expected one of {list(DECISION_RULES)}, got {method!r}")
    if method == "none":
        return None
    n_classes = np.asarray(probabilities).shape[1]
    return fit_balanced_biases(y_true, probabilities) if method == "balanced" else prior_biases(y_true, n_classes)


def read_decision_rule(model_path: str | Path) -> LogitAdjustment | None:
    """The rule stored in the run of `model_path` (its metrics.json's `decision_rule`), or None."""
    from keras_med.run_directory import RunDirectory

    return LogitAdjustment.from_dict(RunDirectory.of_model(model_path).read_decision_rule_dict())


def members_thresholds_and_rule(members, use_rule: bool = True):
    """The thresholds and decision rule an export (or evaluation) of `members` applies.

    One member: its run's. Several: the mean of the members' thresholds and of their decision-rule
    biases, each chosen on its own validation split (an approximation, logged), or None when a
    member has none.

    Args:
        members: `keras_med.run_directory.TrainedModel`s.
        use_rule: False leaves the decision rule out.

    Returns:
        `(thresholds or None, LogitAdjustment or None)`.
    """
    stored = [member.run.thresholds for member in members]
    thresholds = None
    if all(t is not None for t in stored):
        thresholds = np.mean(np.asarray(stored, dtype=np.float64), axis=0).tolist()
    rules = [read_decision_rule(member.path) for member in members] if use_rule else [None]
    rule = None
    if all(r is not None for r in rules):
        rule = rules[0] if len(rules) == 1 else LogitAdjustment(
            tuple(np.mean([r.biases for r in rules], axis=0).tolist()), rules[0].method,
            rules[0].tau, sum(r.fitted_on for r in rules))
    if len(members) > 1:
        logger.warning(
            "ensemble of %d: thresholds and decision-rule biases are the means of the members' own", len(members))
    return thresholds, rule


def _indices(y_true) -> np.ndarray:
    y_true = np.asarray(y_true)
    return (y_true.argmax(axis=1) if y_true.ndim == 2 else y_true).astype(np.int64)


# --- measuring the rules on a finished run ------------------------------------------------------

def compare_rules(y_val, p_val, y_test, p_test) -> list[dict]:
    """Test balanced accuracy without a rule and with each variant, all fitted on validation.

    Args:
        y_val, y_test: class indices (or one-hot) of the validation and test images.
        p_val, p_test: their probabilities `(N, C)`.

    Returns:
        Rows `{"rule", "val_balanced_accuracy", "test_balanced_accuracy", "test_accuracy"}`.
    """
    y_val, y_test = _indices(y_val), _indices(y_test)
    n_classes = np.asarray(p_val).shape[1]
    rules = {"none": None, "balanced (fitted)": fit_balanced_biases(y_val, p_val),
             "prior tau=1": prior_biases(y_val, n_classes, 1.0), "prior tau=0.5": prior_biases(y_val, n_classes, 0.5)}
    rows = []
    for name, rule in rules.items():
        val = p_val if rule is None else rule.apply(p_val)
        test = p_test if rule is None else rule.apply(p_test)
        predicted = test.argmax(axis=1)
        rows.append({"rule": name,
                     "val_balanced_accuracy": balanced_accuracy(y_val, val.argmax(axis=1), n_classes),
                     "test_balanced_accuracy": balanced_accuracy(y_test, predicted, n_classes),
                     "test_accuracy": float(np.mean(predicted == y_test))})
    return rows


def format_table(rows: list[dict], title: str) -> str:
    lines = [title, f"  {'rule':<20}{'val bal.acc':>12}{'test bal.acc':>14}{'test acc':>10}"]
    lines += [f"  {row['rule']:<20}{row['val_balanced_accuracy']:>12.4f}{row['test_balanced_accuracy']:>14.4f}"
              f"{row['test_accuracy']:>10.4f}" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m keras_med.evaluation.decision_rule RUN_DIR [RUN_DIR ...]`: the rules' table per run,
    and for several runs the same for the mean of their probabilities (an ensemble; same split needed)."""
    from keras_med.command_line import CommandParser, add_verbose_flag, run_command
    from keras_med.evaluation.run_predictions import run_predictions

    parser = CommandParser(prog="python -m keras_med.evaluation.decision_rule", description=main.__doc__)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="A finished run directory.")
    parser.add_argument("--tta", nargs="+", default=["none", "flips"], choices=["none", "flips"])
    add_verbose_flag(parser)

    def body(rest):
        args = parser.parse_args(rest)
        runs = [run_predictions(run_dir, args.tta) for run_dir in args.run_dirs]
        for arrays in runs:
            arrays["y_val"], arrays["y_test"] = _indices(arrays["y_val"]), _indices(arrays["y_test"])
        for tta in args.tta:
            for run_dir, arrays in zip(args.run_dirs, runs):
                rows = compare_rules(arrays["y_val"], arrays[f"p_val_{tta}"], arrays["y_test"], arrays[f"p_test_{tta}"])
                sys.stdout.write(format_table(rows, f"{run_dir} (tta={tta})") + "\n")
            if len(runs) > 1:
                first = runs[0]
                if any(not np.array_equal(r["y_test"], first["y_test"]) for r in runs[1:]):
                    sys.stdout.write("(runs have different test splits: no ensemble row)\n")
                    continue
                rows = compare_rules(first["y_val"], np.mean([r[f"p_val_{tta}"] for r in runs], axis=0),
                                     first["y_test"], np.mean([r[f"p_test_{tta}"] for r in runs], axis=0))
                sys.stdout.write(format_table(rows, f"ensemble of {len(runs)} runs (tta={tta})") + "\n")
        return 0

    return run_command(parser.prog, body, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
