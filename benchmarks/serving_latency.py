"""Serving latency: the reloaded SavedModel's signatures against ``model.predict`` on the same images.

Measures single-image p50/p95 latency and batch-32 throughput of ``serving_default`` (JPEG bytes,
decoded and resized in the graph), ``predict_pixels`` (float32 pixels) and ``model.predict``,
and prints a Markdown table with ratios against ``model.predict`` from this one run. A third
table times the ways to keep one corrupt image from failing a batch, decode stage only: the
``tf.map_fn`` decode (no isolation: one bad row fails all), the ``tf.data`` pass with
``ignore_errors`` the serving graph uses (sequential and parallel map), and splitting the batch
into one request per image on the client.

    python benchmarks/serving_latency.py --images ../shared/data/ham10000_200x150/images \
        --model mobilenetv2 --image-size 128 --repeats 100 [--baseline saved_models/old/1] [--combined]

``--combined`` also times the served answers of ``keras_med.export.combined``: flip TTA in the
graph (three passes), an ensemble of two models, and one model with the decision rule; and the same
model with Shades-of-Gray colour constancy as its first step (the recipes' ``--colour-constancy``).

Methods are timed in alternating rounds (one call each per round), so that a shared machine's
load falls on all of them alike.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_med.data.decode import decode_image
from keras_med.evaluation.decision_rule import LogitAdjustment
from keras_med.export import export_for_serving
from keras_med.export.image_checks import decode_rows, sniff_formats
from keras_med.models import create_model

BATCH = 32


def load_jpegs(folder: str | None, count: int, seed: int) -> list[bytes]:
    """``count`` JPEG files from ``folder``, or synthetic 600x450 JPEGs when no folder is given."""
    if folder:
        paths = sorted(Path(folder).glob("*.jp*g"))
        if len(paths) < count:
            raise SystemExit(f"--images {folder}: expected at least {count} JPEG files, found {len(paths)}")
        picked = np.random.default_rng(seed).choice(len(paths), count, replace=False)
        return [paths[i].read_bytes() for i in picked]
    rng = np.random.default_rng(seed)
    return [tf.io.encode_jpeg(rng.integers(0, 256, (450, 600, 3), dtype=np.uint8)).numpy() for _ in range(count)]


def timed_rounds(functions: dict, repeats: int, warmup: int) -> dict[str, np.ndarray]:
    """Wall-clock seconds of each function, called in alternating rounds after ``warmup`` untimed calls each.

    One call of every function per round, in a new random order each round, so that load from
    other jobs on a shared machine, and what the previous call left behind (a heavy eager call
    slowed the next one by ~10 ms when the order was fixed), fall on all of them alike.
    """
    names = list(functions)
    for name in names:
        for _ in range(warmup):
            functions[name]()
    times = {name: np.empty(repeats) for name in names}
    order = np.random.default_rng(0)
    for index in range(repeats):
        for name in order.permutation(names):
            start = time.perf_counter()
            functions[name]()
            times[name][index] = time.perf_counter() - start
    return times


def decode_strategies(size: int):
    """The decode stage alone, three ways, as tf.functions over a string batch (B,)."""
    spec = [tf.TensorSpec([None], tf.string)]

    def decode(data):
        return tf.cast(decode_image(data, size), tf.float32)

    @tf.function(input_signature=spec)
    def map_fn(batch):
        return tf.map_fn(decode, batch, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))

    @tf.function(input_signature=spec)
    def data_sequential(batch):
        return decode_rows(batch, sniff_formats(batch), decode, size, min_size=32)[0]

    @tf.function(input_signature=spec)
    def data_parallel(batch):
        rows = tf.data.Dataset.from_tensor_slices(batch).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        return rows.ignore_errors().batch(tf.shape(batch, out_type=tf.int64)[0]).get_single_element()

    return {"tf.map_fn (before: a bad row fails the batch)": map_fn,
            "tf.data + ignore_errors, sequential map (serving graph now)": data_sequential,
            "tf.data + ignore_errors, parallel map (AUTOTUNE)": data_parallel}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=None, help="Folder of JPEG files (default: synthetic 600x450 JPEGs).")
    parser.add_argument("--model", default="mobilenetv2", help="keras_med model registry name.")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--classes", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=100, help="Timed single-image calls per method.")
    parser.add_argument("--batch-repeats", type=int, default=10, help="Timed batch-32 calls per method.")
    parser.add_argument("--combined", action="store_true",
                        help="Also time serving_default of exports with flip TTA in the graph, an ensemble of two "
                             "models, and the decision rule (keras_med.export.combined).")
    parser.add_argument("--baseline", default=None,
                        help="SavedModel folder exported by another version of keras_med; its serving_default is "
                             "timed in the same rounds (a before/after comparison on the same load).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    size = args.image_size
    model = create_model(args.model, num_classes=args.classes, image_size=size, weights=None)
    jpegs = load_jpegs(args.images, BATCH, seed=0)
    # The same images for every method: decoded and resized once by the graph the SavedModel runs.
    with tempfile.TemporaryDirectory() as base:
        path = export_for_serving(model, name="bench", base_dir=base,
                                  class_names=[f"class{i}" for i in range(args.classes)])
        loaded = tf.saved_model.load(str(path))
        serve_bytes = loaded.signatures["serving_default"]
        serve_pixels = loaded.signatures["predict_pixels"]
        batch_bytes = tf.constant(jpegs)
        resized = np.stack([tf.image.resize(tf.io.decode_jpeg(data, channels=3), [size, size]).numpy()
                            for data in jpegs]).round().astype(np.float32)
        one_bytes, one_pixels = batch_bytes[:1], tf.constant(resized[:1])
        batch_pixels = tf.constant(resized)
        # One truncated JPEG (valid header, second half cut) in place of the first image.
        faulty_bytes = tf.constant([jpegs[0][:len(jpegs[0]) // 2], *jpegs[1:]])
        faulty = serve_bytes(image_bytes=faulty_bytes)
        if faulty["valid"].numpy().tolist() != [False] + [True] * (BATCH - 1):
            raise SystemExit("the batch with a truncated JPEG was not answered row by row")

        single_calls = {
            "model.predict (1 image)": lambda: model.predict(resized[:1], verbose=0),
            "model(x) eager call (1 image, for reference)": lambda: model(one_pixels, training=False),
            "serving_default (1 JPEG, decode+resize in graph)": lambda: serve_bytes(image_bytes=one_bytes),
            "predict_pixels (1 image)": lambda: serve_pixels(pixels=one_pixels),
        }
        batch_calls = {
            "model.predict (32 images)": lambda: model.predict(resized, batch_size=BATCH, verbose=0),
            "serving_default (32 JPEGs)": lambda: serve_bytes(image_bytes=batch_bytes),
            "predict_pixels (32 images)": lambda: serve_pixels(pixels=batch_pixels),
            "serving_default (32 JPEGs, the first truncated: flagged, 31 answered)":
                lambda: serve_bytes(image_bytes=faulty_bytes),
            "serving_default (32 JPEGs, one request per image: client-side split)":
                lambda: [serve_bytes(image_bytes=batch_bytes[i:i + 1]) for i in range(BATCH)],
        }
        if args.combined:
            other = create_model(args.model, num_classes=args.classes, image_size=size, weights=None)
            biases = tuple(np.linspace(-0.5, 0.5, args.classes).tolist())
            colour_balanced = create_model(args.model, num_classes=args.classes, image_size=size, weights=None,
                                           colour_constancy="shades_of_gray")
            variants = {"flip TTA in graph (3 passes)": dict(model=model, tta="flips"),
                        "ensemble of 2 models": dict(model=[model, other]),
                        "decision rule (logit biases)": dict(model=model, decision_rule=LogitAdjustment(biases, "balanced")),
                        "Shades-of-Gray colour constancy": dict(model=colour_balanced)}
            for label, options in variants.items():
                served = tf.saved_model.load(str(export_for_serving(
                    name="bench", base_dir=base, class_names=[f"class{i}" for i in range(args.classes)],
                    **options))).signatures["serving_default"]
                single_calls[f"serving_default (1 JPEG), {label}"] = lambda f=served: f(image_bytes=one_bytes)
                batch_calls[f"serving_default (32 JPEGs), {label}"] = lambda f=served: f(image_bytes=batch_bytes)
        if args.baseline:
            baseline = tf.saved_model.load(args.baseline).signatures["serving_default"]
            single_calls[f"baseline serving_default (1 JPEG): {args.baseline}"] = \
                lambda: baseline(image_bytes=one_bytes)
            batch_calls["baseline serving_default (32 JPEGs)"] = lambda: baseline(image_bytes=batch_bytes)
        singles = timed_rounds(single_calls, args.repeats, warmup=5)
        batches = timed_rounds(batch_calls, args.batch_repeats, warmup=2)
        strategies = decode_strategies(size)
        strategy_singles = timed_rounds({name: lambda f=f: f(one_bytes) for name, f in strategies.items()},
                                        args.repeats, warmup=5)
        strategy_batches = timed_rounds({name: lambda f=f: f(batch_bytes) for name, f in strategies.items()},
                                        args.batch_repeats, warmup=2)
    base_p50 = np.median(singles["model.predict (1 image)"])
    base_rate = BATCH / np.median(batches["model.predict (32 images)"])
    lines = [f"Machine: {platform.machine()}, {tf.config.threading.get_intra_op_parallelism_threads() or 'default'} "
             f"intra-op threads, TensorFlow {tf.__version__}; model {args.model} {size}px, weights none; "
             f"images: {args.images or 'synthetic 600x450 JPEG'}",
             "", "| single image | p50 ms | p95 ms | p50 / model.predict p50 |", "|---|---|---|---|"]
    for name, times in singles.items():
        lines.append(f"| {name} | {np.median(times) * 1e3:.2f} | {np.percentile(times, 95) * 1e3:.2f} | "
                     f"{np.median(times) / base_p50:.3f}x |")
    lines += ["", "| batch of 32 | p50 ms | images/s | throughput / model.predict |", "|---|---|---|---|"]
    for name, times in batches.items():
        rate = BATCH / np.median(times)
        lines.append(f"| {name} | {np.median(times) * 1e3:.1f} | {rate:.0f} | {rate / base_rate:.2f}x |")
    lines += ["", "| decode stage only | 1 JPEG p50 ms | 32 JPEGs p50 ms |", "|---|---|---|"]
    for name in strategies:
        lines.append(f"| {name} | {np.median(strategy_singles[name]) * 1e3:.2f} | "
                     f"{np.median(strategy_batches[name]) * 1e3:.1f} |")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
