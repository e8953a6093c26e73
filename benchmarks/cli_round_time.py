"""Where the time of tests/test_every_model_cli.py's CLI round goes: each command, per model, and inside them.

Runs the test's round (train, export, predict, evaluate, explain on the 112-image 40x32 demo at
32 px) in this process for each `--models` name, as the test does, and prints the wall seconds of
each command, and this process's CPU seconds (all threads; on a shared machine they move less with
the load than the wall seconds). With `--profile`, each command runs under cProfile and the
cumulative wall seconds of the steps named in `STEPS` (model loading, tracing, SavedModel writing
and reloading, Grad-CAM, ...) are printed under it. The commands' own output goes to stdout too:
`grep -E "^[a-z0-9_]+ [a-z]+(:| \|)"` keeps the figures.

    nice -n 10 python benchmarks/cli_round_time.py --models custom_cnn densenet121 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import tempfile
import time
from pathlib import Path

# (file suffix, function name) -> label: the steps worth separating inside a command.
STEPS = {
    ("keras_med/run_directory.py", "load_trained_model"): "load the .keras model",
    ("keras_med/recipes/base.py", "prepare_data"): "prepare the data",
    ("keras_med/recipes/base.py", "build_model"): "build the model",
    ("keras_med/training/fit.py", "fit_model"): "fit",
    ("keras_med/evaluation/external.py", "predict_with_tta"): "predict val/test (or the external set)",
    ("keras_med/recipes/trust.py", "assess_run_trust"): "fit the guard and the conformal sets",
    ("keras_med/evaluation/evaluate.py", "evaluate_run"): "evaluate the run (report, plots)",
    ("keras_med/export/saved_model.py", "write_saved_model"): "write the SavedModel (trace signatures)",
    ("keras/src/export/saved_model_export_archive.py", "_filter_and_track_resources"): "  trace the signatures",
    ("tensorflow/python/saved_model/save.py", "save"): "  tf.saved_model.save",
    ("keras_med/export/saved_model.py", "verify_saved_model"): "verify after reload",
    ("keras_med/export/saved_model.py", "describe_signatures"): "describe the signatures (reloads)",
    ("tensorflow/python/saved_model/load.py", "load"): "tf.saved_model.load (any caller)",
    ("keras_med/export/warmup.py", "write_warmup_requests"): "warm-up requests",
    ("keras_med/export/predictor.py", "load_predictor"): "build the predictor",
    ("keras_med/export/predictor.py", "predict_files"): "predict the files (traces on first call)",
    ("keras_med/evaluation/external.py", "evaluate_external"): "score the external set",
    ("keras_med/explain/files.py", "explain_files"): "Grad-CAM files",
}


def round_commands(name: str, demo: Path, labels: Path, images: list[Path], work: Path) -> dict[str, list[str]]:
    """The test's five commands for model `name`, writing under `work`."""
    run_dir = work / "run"
    model = str(run_dir / "checkpoints" / "best.keras")
    return {
        "train": ["train", "--recipe", "ham10000", "--data-dir", str(demo), "--model", name, "--weights", "none",
                  "--plan", "scratch", "--image-size", "32", "--batch-size", "16", "--epochs", "1",
                  "--steps-per-epoch", "1", "--bootstrap", "0", "--explain", "0", "--no-export",
                  "--output-dir", str(work), "--run-dir", str(run_dir)],
        "export": ["export", "--model", model, "--name", name, "--base-dir", str(work / "saved")],
        "predict": ["predict", "--model", model, "--json", *map(str, images)],
        "evaluate": ["evaluate", "--model", model, "--labels", str(labels), "--images", str(demo),
                     "--out", str(work / "external"), "--bootstrap", "0", "--explain", "0"],
        "explain": ["explain", "--model", model, str(images[0]), "--out", str(work / "cam")],
    }


def step_seconds(profile: cProfile.Profile) -> dict[str, float]:
    """Cumulative seconds of each `STEPS` entry in `profile` (recursive calls counted once)."""
    found = {}
    for (path, _, function), (_, _, _, cumulative, _) in pstats.Stats(profile).stats.items():
        for (suffix, wanted), label in STEPS.items():
            if function == wanted and path.replace(os.sep, "/").endswith(suffix):
                found[label] = found.get(label, 0.0) + cumulative
    return {label: found[label] for label in STEPS.values() if label in found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["custom_cnn"], help="model names, in this order")
    parser.add_argument("--profile", action="store_true", help="also time the steps inside each command")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import pandas as pd

    from keras_med.cli import main as cli_main
    from keras_med.data.synthetic import write_ham10000_demo

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        demo = write_ham10000_demo(root / "demo", n_images=112, seed=0, size=(40, 32))
        table = pd.read_csv(demo / "HAM10000_metadata.csv").drop_duplicates("dx").head(4)
        table[["image_id", "dx"]].rename(columns={"dx": "label"}).to_csv(root / "labels.csv", index=False)
        images = [next(demo.rglob(f"{image_id}.jpg")) for image_id in table["image_id"][:2]]
        for name in args.models:
            total = 0.0
            for command, argv in round_commands(name, demo, root / "labels.csv", images, root / name).items():
                profile = cProfile.Profile() if args.profile else None
                started, cpu_started = time.perf_counter(), time.process_time()
                if profile:
                    profile.enable()
                status = cli_main(argv)
                if profile:
                    profile.disable()
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
                total += seconds
                print(f"{name} {command}: {seconds:.1f} s wall, {cpu:.1f} s CPU (exit status {status})", flush=True)
                for label, cumulative in (step_seconds(profile) if profile else {}).items():
                    print(f"{name} {command} | {label}: {cumulative:.1f} s", flush=True)
            print(f"{name} round: {total:.1f} s wall", flush=True)


if __name__ == "__main__":
    main()
