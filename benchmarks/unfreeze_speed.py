"""Fine-tuning step time against how many top backbone blocks are unfrozen (`--unfreeze N`).

Usage:
    python benchmarks/unfreeze_speed.py --model mobilenetv2 --image-size 160 --unfreeze -1 12 9 6 0 --rounds 2

Each setting trains the recipe's classifier (no pretrained weights: the arithmetic is the same) on
one random batch repeated, in a fresh subprocess, and reports the median wall time of the timed
steps (the first steps trace the graph and are left out) and images/s; BatchNorm stays frozen as in
the finetune plan. `--rounds` repeats every setting in rotated order, so a burst of load from other
processes does not fall on one setting only. A frozen lower block needs no gradient, so TensorFlow
skips its backward pass: the saving is largest for the early, high-resolution blocks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def step_seconds(model_name: str, image_size: int, batch_size: int, unfreeze: int, steps: int, warmup: int,
                 threads: int) -> dict:
    """Median seconds per training step of `model_name` with the top `unfreeze` blocks trainable."""
    import keras
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from keras_med.config import TrainConfig
    from keras_med.models import create_model
    from keras_med.training import compile_model
    from keras_med.training.fit import unfreeze_top

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    targets = np.eye(7, dtype="float32")[rng.integers(0, 7, batch_size)]
    dataset = tf.data.Dataset.from_tensors((images, targets)).repeat()
    model = create_model(model_name, num_classes=7, image_size=image_size, weights=None)
    layers = unfreeze_top(model, unfreeze)  # freezes the backbone first; 0 leaves only the head
    compile_model(model, TrainConfig(jit_compile="off"), "multiclass", 1e-4)

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    timer = Timer()
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[timer])
    median = statistics.median(timer.seconds[warmup:])
    return {"unfreeze": unfreeze, "layers": layers, "seconds": median, "images_per_second": batch_size / median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--unfreeze", type=int, nargs="+", default=[-1, 12, 9, 6, 0],
                        help="Settings to time (-1: whole backbone, 0: head only).")
    parser.add_argument("--steps", type=int, default=20, help="Timed steps per setting.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps first (tracing, allocation).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a subprocess's single setting
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(step_seconds(args.model, args.image_size, args.batch_size, args.one, args.steps,
                                      args.warmup, args.threads)))
        return
    results: dict[int, list[dict]] = {setting: [] for setting in args.unfreeze}
    for round_index in range(args.rounds):
        order = args.unfreeze[round_index % len(args.unfreeze):] + args.unfreeze[:round_index % len(args.unfreeze)]
        for setting in order:
            command = [sys.executable, __file__, "--one", str(setting), "--model", args.model,
                       "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
                       "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[setting].append(json.loads(output.strip().splitlines()[-1]))
    whole = statistics.median(r["seconds"] for r in results.get(-1, [])) if results.get(-1) else None
    print(f"{args.model}, {args.image_size} px, batch {args.batch_size}, {args.threads} threads, "
          f"{args.rounds} round(s); median step time per setting")
    print("| --unfreeze | trainable layers | s/step (each round) | images/s | vs whole backbone |")
    print("|---|---|---|---|---|")
    for setting, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        ratio = f"{whole / seconds:.2f}x" if whole else ""
        label = {-1: "-1 (all)", 0: "0 (head only)"}.get(setting, str(setting))
        each = ", ".join(f"{run['seconds']:.3f}" for run in runs)
        print(f"| {label} | {runs[0]['layers']} | {seconds:.3f} ({each}) | {args.batch_size / seconds:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
