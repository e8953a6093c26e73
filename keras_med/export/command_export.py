"""Export a .keras model as a SavedModel for TF Serving (and optionally TFLite / ONNX).

Mounted by keras_med/cli.py as ``keras-med export``; ``add_arguments`` and ``run`` are its parts.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from keras_med.errors import ConfigError
from keras_med.export.metadata import TFLITE_QUANTIZATIONS, is_valid_served_name
from keras_med.tasks import TASKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``keras-med export`` flags to ``parser``."""
    parser.add_argument("--model", required=True, action="append", metavar="PATH",
                        help="The .keras model (e.g. runs/ham10000/<stamp>/checkpoints/best.keras); repeat for an "
                             "ensemble served as one SavedModel that averages their probabilities.")
    parser.add_argument("--name", required=True, help="Served model name: the folder under --base-dir and TF Serving's name.")
    parser.add_argument("--version", type=int, default=None, help="Version number (default: the next integer).")
    parser.add_argument("--base-dir", default="saved_models", help="TF Serving model base path.")
    parser.add_argument("--class-names", default=None,
                        help="Comma-separated class names (default: class_names.json of the model's run directory).")
    parser.add_argument("--task", choices=TASKS, default=None,
                        help="Task (default: class_names.json, else read from the 'predictions' layer).")
    parser.add_argument("--resize", choices=["resize", "pad"], default=None,
                        help="How images of another size reach the model size (default: the run's config.toml).")
    parser.add_argument("--container-base", default="/models",
                        help="Where --base-dir is mounted inside the TF Serving container (for models.config).")
    parser.add_argument("--tta", choices=["none", "flips"], default=None,
                        help="Test-time augmentation inside the served model: 'flips' averages the original and "
                             "flipped images (3 model passes per image; docs/serving.md). Default: the run's "
                             "[evaluation] tta.")
    parser.add_argument("--decision-rule", choices=["run", "none"], default="run",
                        help="'run': apply the run's decision rule (metrics.json; an ensemble: the mean of its "
                             "members' biases) inside the served model; 'none': argmax.")
    parser.add_argument("--tflite", nargs="*", choices=TFLITE_QUANTIZATIONS, default=[],
                        help="Also write TFLite files with these quantizations (e.g. --tflite float16 int8).")
    parser.add_argument("--onnx", action="store_true", help="Also write an ONNX file (needs tf2onnx, onnxruntime).")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse a bad --name or --version, or --onnx without its packages, before the model is loaded."""
    problems = []
    if not is_valid_served_name(args.name):
        problems.append(f"--name: expected letters, digits, '-', '_' or '.' (a folder name for TF Serving), "
                        f"got {args.name!r}")
    if args.version is not None:
        if args.version < 1:
            problems.append(f"--version: expected an integer of at least 1, got {args.version}")
        elif (Path(args.base_dir) / args.name / str(args.version)).exists():
            problems.append(f"--version {args.version}: {Path(args.base_dir) / args.name / str(args.version)} "
                            "already exists; expected a new version number (or none for the next one)")
    if (args.tflite or args.onnx) and len(args.model) > 1:
        problems.append("--tflite/--onnx: expected one --model (an ensemble is exported as a SavedModel only)")
    if args.onnx and not all(importlib.util.find_spec(module) for module in ("tf2onnx", "onnxruntime")):
        from keras_med.export.mobile import ONNX_INSTALL_HINT

        problems.append(f"--onnx: needs tf2onnx and onnxruntime, which are not installed: {ONNX_INSTALL_HINT}")
    if problems:
        raise ConfigError("; ".join(problems))


def run(args: argparse.Namespace) -> int:
    """Export, verify after reload, print the signatures (and TFLite/ONNX reports); 0 on success."""
    from keras_med.evaluation.decision_rule import members_thresholds_and_rule
    from keras_med.evaluation.trust import load_run_trust
    from keras_med.export.combined import read_run_tta
    from keras_med.export.mobile import export_other_formats
    from keras_med.export.saved_model import build_metadata, describe_signatures, export_for_serving
    from keras_med.run_directory import load_trained_model

    check_arguments(args)
    class_names = None
    if args.class_names is not None:
        class_names = [name.strip() for name in args.class_names.split(",") if name.strip()]
    members = [load_trained_model(path, class_names=class_names, task=args.task, resize=args.resize)
               for path in args.model]
    trained = members[0]
    model, run_info = trained.model, trained.run
    check_same_outputs(members)
    thresholds, rule = members_thresholds_and_rule(members, use_rule=args.decision_rule == "run")
    tta = args.tta or read_run_tta(trained.path)
    target = export_for_serving([member.model for member in members], name=args.name, base_dir=args.base_dir,
                                version=args.version, class_names=run_info.class_names, task=run_info.task,
                                thresholds=thresholds, resize=run_info.resize,
                                container_base=args.container_base, run_dir=trained.path,
                                tta=tta, decision_rule=rule, **load_run_trust(trained.path))
    out = sys.stdout
    out.write(f"SavedModel written to {target}\n{describe_signatures(target)}\n")
    out.write(f"models.config: {Path(args.base_dir) / 'models.config'}\n")
    if args.tflite or args.onnx:
        import dataclasses

        from keras_med.export.combined import serving_model

        # The same answer as the SavedModel: its flips and decision rule go into these files too.
        metadata = dataclasses.replace(
            build_metadata(model, run_info.class_names, task=run_info.task, thresholds=thresholds,
                           resize=run_info.resize),
            tta=tta, decision_rule=None if rule is None else rule.to_dict(run_info.class_names))
        served = serving_model([model], tta=tta, logit_biases=None if rule is None else rule.biases)
        folder = target.parent / "other_formats" / target.name
        for report in export_other_formats(served, metadata, folder, tuple(args.tflite), args.onnx):
            out.write(report.to_text() + "\n")
    return 0


def check_same_outputs(members) -> None:
    """Refuse an ensemble whose members differ in classes, task, image size or resize mode."""
    first = members[0]
    for member in members[1:]:
        ours = (member.run.class_names, member.run.task, member.image_size, member.run.resize)
        theirs = (first.run.class_names, first.run.task, first.image_size, first.run.resize)
        if ours != theirs:
            raise ConfigError(f"--model {member.path}: predicts {ours[1]} {ours[0]} at {ours[2]} px ({ours[3]}), but "
                              f"{first.path} predicts {theirs[1]} {theirs[0]} at {theirs[2]} px ({theirs[3]}); "
                              "an ensemble needs the same classes, task, size and resize mode")


def export_checkpoint_in_tensorflow(checkpoint: str | Path, *, name: str, base_dir: str | Path) -> Path:
    """Export a run's `.keras` checkpoint from a TensorFlow-backend process (`keras-med export`).

    A model trained on another Keras backend (JAX) is exported this way: the `.keras` file is
    backend-independent, and the serving graph (image decoding, the out-of-distribution guard's
    scores, the `explain` signature's gradients) is TensorFlow, which a JAX process cannot trace.
    The child reads the run's class names, thresholds, guard and sets exactly as `keras-med export`
    does, so the SavedModel is the one a TensorFlow run would have written.

    Returns:
        The new version folder.
    """
    import subprocess

    from keras_med.export.model_config import list_versions

    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    command = [sys.executable, "-m", "keras_med.cli", "export", "--model", str(checkpoint), "--name", name,
               "--base-dir", str(base_dir)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"exporting {checkpoint} under TensorFlow failed ({result.returncode}): "
                           f"{result.stderr.strip()[-2000:]}")
    return Path(base_dir) / name / str(max(list_versions(Path(base_dir) / name)))
