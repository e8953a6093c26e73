"""Seconds of one SavedModel export (`export_for_serving`), of describing it, and of reloading it, per model.

A model built with random weights at 32 px (the size tests/test_every_model_cli.py exports at) is
exported as `keras-med export` does it, then its signatures are described and it is reloaded once
(as the export's own check and TF Serving do). Each figure is wall seconds and this process's CPU
seconds (all threads): on a shared machine the CPU seconds move less with the load than the wall
seconds, so compare them between two versions of the code run back to back.

    nice -n 10 python benchmarks/export_time.py --models custom_cnn densenet121
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from contextlib import contextmanager


@contextmanager
def timed(label: str):
    """Print `label: W s wall, C s CPU` for the block."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    print(f"{label}: {time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} s CPU", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["custom_cnn"], help="model names, in this order")
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import tensorflow as tf

    from keras_med.export import describe_signatures, export_for_serving
    from keras_med.models import create_model

    classes = [f"c{index}" for index in range(7)]
    for name in args.models:
        model = create_model(name, num_classes=len(classes), image_size=args.image_size, weights=None)
        with tempfile.TemporaryDirectory() as base:
            with timed(f"{name} export_for_serving"):
                path = export_for_serving(model, name=name, base_dir=base, class_names=classes)
            with timed(f"{name} describe_signatures"):
                describe_signatures(path)
            with timed(f"{name} tf.saved_model.load"):
                tf.saved_model.load(str(path))


if __name__ == "__main__":
    main()
