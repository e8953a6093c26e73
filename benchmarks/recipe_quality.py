"""Recipe quality across seeds: mean and spread of the test figures, the K-seed ensemble, the decision rule.

A configuration is better only when it is better across seeds (single HAM10000 runs differ by 0.03
in test balanced accuracy from noise alone). This trains a recipe configuration with several
seeds on one fixed split (the first seed's run makes it, the others reuse its `split.csv`;
`--splits N` repeats that on N splits, split j made by seed j), skips seeds whose run finished
before (resumable), and reports per run and as mean (sd):
test balanced accuracy with and without the decision rule, accuracy, macro AUC, per-class
recall, training minutes; then the same for the mean of the runs' probabilities (the K-seed
ensemble, its decision rule fitted on the mean of their validation probabilities), plain and with
flip TTA when the runs' predictions hold it.

    # a quick check on the demo data (minutes on a CPU)
    PYTHONPATH=. python benchmarks/recipe_quality.py --demo --out runs/quality/demo
    # a configuration on the real data, three seeds, extra recipe flags after --
    PYTHONPATH=. python benchmarks/recipe_quality.py --recipe ham10000 --out runs/quality/cosine \\
        -- --data-dir ../shared/data/ham10000_200x150 --weights WEIGHTS.h5
    # only score runs that exist (e.g. trained elsewhere on one split); predicts val/test once
    # (plain and flips) into each run's predictions.npz when it is missing
    PYTHONPATH=. python benchmarks/recipe_quality.py --score /work/hamruns/base_s42 /work/hamruns/base_s1 ...
    # a `--members K` run directory is scored as its members (and their ensemble)
    PYTHONPATH=. python benchmarks/recipe_quality.py --score runs/ham10000/members-20261201-120000

Writes `OUT/quality.json` and `OUT/quality.md` (the Markdown table, also printed).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from keras_med.evaluation.decision_rule import balanced_accuracy, compare_rules
from keras_med.evaluation.run_predictions import run_predictions

TIME_FILE = "quality_time.json"
DEMO_FLAGS = ["--demo", "--demo-size", "400", "--image-size", "48", "--epochs", "4", "--explain", "0",
              "--bootstrap", "200", "--no-export"]


def train_seeds(recipe: str, out: Path, seeds: list[int], splits: int, flags: list[str]) -> list[list[Path]]:
    """Train every (split, seed) run that has not finished; returns the run directories per split."""
    groups = []
    for split_index in range(splits):
        maker = seeds[split_index]
        order = [maker] + [seed for seed in seeds if seed != maker]
        runs = []
        for seed in order:
            run_dir = out / f"split{split_index + 1}" / f"seed{seed}"
            runs.append(run_dir)
            if (run_dir / "metrics.json").is_file() and (run_dir / TIME_FILE).is_file():
                logging.info("%s finished before: skipped", run_dir)
                continue
            command = [sys.executable, "-m", "keras_med.cli", "train", "--recipe", recipe, "--seed", str(seed),
                       "--run-dir", str(run_dir), "--output-dir", str(out / "runs"), *flags]
            if seed != maker:
                command += ["--split-file", str(runs[0] / "split.csv")]
            logging.info("training: %s", " ".join(command))
            started = time.time()
            result = subprocess.run(command)
            if result.returncode != 0:
                raise SystemExit(f"the run {run_dir} failed ({result.returncode}); fix it and run again to resume")
            (run_dir / TIME_FILE).write_text(json.dumps({"minutes": (time.time() - started) / 60}))
        groups.append(runs)
    return groups


def expand_members(run_dirs: list[Path]) -> list[Path]:
    """A `--members K` run directory stands for its member<k>/ runs (one split), in member order."""
    expanded = []
    for run_dir in run_dirs:
        members = sorted(run_dir.glob("member[0-9]*"), key=lambda path: int(path.name.removeprefix("member")))
        expanded.extend(members if members and not (run_dir / "predictions.npz").is_file() else [run_dir])
    return expanded


def training_minutes(run_dir: Path) -> float | None:
    """Minutes the run took: as timed here, else from its split.csv (written before training) to training_done.json."""
    timed = run_dir / TIME_FILE
    if timed.is_file():
        return json.loads(timed.read_text())["minutes"]
    start, end = run_dir / "split.csv", run_dir / "training_done.json"
    if start.is_file() and end.is_file():
        return (end.stat().st_mtime - start.stat().st_mtime) / 60
    return None


def figures(y_test, p_test, y_val, p_val, class_names) -> dict:
    """Test figures of one set of probabilities, plain and with the balanced decision rule fitted on validation."""
    from sklearn.metrics import roc_auc_score

    rows = {row["rule"]: row for row in compare_rules(y_val, p_val, y_test, p_test)}
    plain = p_test.argmax(axis=1)
    recall = {name: float(np.mean(plain[y_test == k] == k)) if np.any(y_test == k) else None
              for k, name in enumerate(class_names)}
    present = np.unique(y_test)
    auc = roc_auc_score(np.eye(len(class_names))[y_test][:, present], p_test[:, present], average="macro")
    return {"balanced_accuracy": balanced_accuracy(y_test, plain, len(class_names)),
            "balanced_accuracy_rule": rows["balanced (fitted)"]["test_balanced_accuracy"],
            "balanced_accuracy_prior": rows["prior tau=1"]["test_balanced_accuracy"],
            "accuracy": float(np.mean(plain == y_test)), "macro_auc": float(auc), "recall": recall}


def score_runs(run_dirs: list[Path], tta_modes: list[str]) -> dict:
    """Per-run figures, their mean and sd, and the ensemble of the runs (same split needed)."""
    class_names = json.loads((run_dirs[0] / "class_names.json").read_text())["class_names"]
    arrays = [run_predictions(run_dir, tta_modes) for run_dir in run_dirs]
    for run in arrays:
        for key in ("y_val", "y_test"):
            run[key] = run[key].argmax(axis=1) if run[key].ndim == 2 else run[key].astype(int)
    result = {"class_names": class_names, "runs": [], "ensemble": {}}
    for run_dir, run in zip(run_dirs, arrays):
        entry = {"run_dir": str(run_dir), "minutes": training_minutes(run_dir)}
        for tta in tta_modes:
            entry[tta] = figures(run["y_test"], run[f"p_test_{tta}"], run["y_val"], run[f"p_val_{tta}"], class_names)
        result["runs"].append(entry)
    same_split = all(np.array_equal(run["y_test"], arrays[0]["y_test"]) for run in arrays[1:])
    if len(arrays) > 1 and same_split:
        for tta in tta_modes:
            result["ensemble"][tta] = figures(arrays[0]["y_test"], np.mean([r[f"p_test_{tta}"] for r in arrays], axis=0),
                                              arrays[0]["y_val"], np.mean([r[f"p_val_{tta}"] for r in arrays], axis=0),
                                              class_names)
    return result


def _mean_sd(values) -> str:
    values = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if values.size == 0:
        return "n/a"
    sd = values.std(ddof=1) if values.size > 1 else 0.0
    return f"{values.mean():.3f} ({sd:.3f})"


def markdown(result: dict, tta_modes: list[str], title: str) -> str:
    keys = [("balanced_accuracy", "bal. acc."), ("balanced_accuracy_rule", "bal. acc. + rule"),
            ("balanced_accuracy_prior", "bal. acc. + prior"), ("accuracy", "acc."), ("macro_auc", "macro AUC")]
    names = result["class_names"]
    header = ["run", "TTA", *[label for _, label in keys], *[f"recall {n}" for n in names], "minutes"]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for tta in tta_modes:
        for run in result["runs"]:
            f = run[tta]
            minutes = "n/a" if run["minutes"] is None else f"{run['minutes']:.1f}"
            lines.append("| " + " | ".join([Path(run["run_dir"]).name, tta, *[f"{f[k]:.3f}" for k, _ in keys],
                                            *["n/a" if f["recall"][n] is None else f"{f['recall'][n]:.2f}" for n in names],
                                            minutes]) + " |")
        runs = [run[tta] for run in result["runs"]]
        lines.append("| " + " | ".join([f"**mean (sd) of {len(runs)}**", tta,
                                        *[_mean_sd([f[k] for f in runs]) for k, _ in keys],
                                        *[_mean_sd([f["recall"][n] for f in runs]) for n in names],
                                        _mean_sd([run["minutes"] for run in result["runs"]])]) + " |")
        if tta in result["ensemble"]:
            f = result["ensemble"][tta]
            lines.append("| " + " | ".join([f"**ensemble of {len(runs)}**", tta, *[f"{f[k]:.3f}" for k, _ in keys],
                                            *["n/a" if f["recall"][n] is None else f"{f['recall'][n]:.2f}"
                                              for n in names], ""]) + " |")
    lines += ["", "bal. acc.: argmax; + rule: per-class logit biases fitted on validation "
              "(keras_med.evaluation.decision_rule); + prior: -log prior of the validation classes. "
              "Recall per class: argmax. sd: sample standard deviation over the runs."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Recipe flags for every run go after --.")
    parser.add_argument("--recipe", default="ham10000")
    parser.add_argument("--out", default="runs/quality", help="Where the runs and the tables go.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--splits", type=int, default=1, help="Fixed splits to repeat the seeds on (at most the "
                                                              "number of seeds; split j is made by seed j).")
    parser.add_argument("--demo", action="store_true", help="Small demo runs: a quick check of the machinery.")
    parser.add_argument("--score", nargs="+", metavar="RUN_DIR", default=None,
                        help="Only score these finished runs (one split); train nothing.")
    parser.add_argument("--tta", nargs="+", default=["none", "flips"], choices=["none", "flips"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not 1 <= args.splits <= len(args.seeds):
        parser.error(f"--splits: expected 1..{len(args.seeds)} (one seed makes each split), got {args.splits}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.score:
        groups = [expand_members([Path(run_dir) for run_dir in args.score])]
    else:
        groups = train_seeds(args.recipe, out, args.seeds, args.splits, (DEMO_FLAGS if args.demo else []) + extra)
    results, tables = [], []
    for index, runs in enumerate(groups, start=1):
        result = score_runs(runs, args.tta)
        results.append(result)
        tables.append(markdown(result, args.tta, f"split {index} of {len(groups)}: {len(runs)} runs"))
    text = "\n".join(tables)
    (out / "quality.json").write_text(json.dumps(results, indent=2))
    (out / "quality.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
