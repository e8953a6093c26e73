"""The `explain` signature's latency beside `predict_pixels` and `serving_default`, and the page's answer time.

Part 1 exports a fresh model (`--arch`, random weights: latency does not depend on them) and times
one image through each signature of the reloaded SavedModel, in alternating rounds so that a shared
machine's load falls on all alike. Part 2 serves the web page for `--page-model` (an export, e.g.
the demo recipe's `saved_models/ham10000`) in this process and times one image from upload to
answer through `gradio_client` (the page's own API: upload, the model's `explain` call, the HTML
and the Grad-CAM picture back). With `--screenshot PNG` it also drives the page in Chromium and
saves a screenshot (the README's picture).

    python benchmarks/explain_and_page.py --arch mobilenetv2 --image-size 224 --repeats 50 \
        --page-model saved_models/ham10000 --screenshot docs/app_screenshot.png
"""

from __future__ import annotations

import argparse
import logging
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf


def _percentiles(times: list[float]) -> str:
    values = np.asarray(times) * 1000.0
    return f"{np.percentile(values, 50):.1f} | {np.percentile(values, 95):.1f}"


def time_signatures(arch: str, image_size: int, repeats: int, classes: int = 7) -> list[str]:
    """Markdown rows: p50 | p95 milliseconds for one image through each signature."""
    from keras_med.export import export_for_serving
    from keras_med.models import create_model

    model = create_model(arch, num_classes=classes, image_size=image_size, weights=None)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1, 450, 600, 3)).astype(np.float32)
    jpeg = tf.io.encode_jpeg(pixels[0].astype(np.uint8)).numpy()
    with tempfile.TemporaryDirectory() as base:
        path = export_for_serving(model, name="bench", base_dir=base, class_names=[f"c{i}" for i in range(classes)])
        loaded = tf.saved_model.load(str(path))
        calls = {
            "serving_default (JPEG bytes)": lambda: loaded.signatures["serving_default"](
                image_bytes=tf.constant([jpeg])),
            "predict_pixels (float32 pixels)": lambda: loaded.signatures["predict_pixels"](
                pixels=tf.constant(pixels)),
            "explain (JPEG bytes, top class: answer + Grad-CAM + overlay PNG)": lambda: loaded.signatures["explain"](
                image_bytes=tf.constant([jpeg]), class_index=tf.constant([-1], tf.int32)),
        }
        times = {name: [] for name in calls}
        for call in calls.values():  # warm-up
            call()
        for _ in range(repeats):
            for name, call in calls.items():
                started = time.perf_counter()
                call()["valid"].numpy()
                times[name].append(time.perf_counter() - started)
    base_p50 = np.percentile(times["predict_pixels (float32 pixels)"], 50)
    return [f"| {name} | {_percentiles(values)} | {np.percentile(values, 50) / base_p50:.2f}x |"
            for name, values in times.items()]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def time_page(model_dir: str, repeats: int, screenshot: str | None) -> str:
    """A Markdown row: p50 | p95 milliseconds from upload to answer for one image through the page's API."""
    from gradio_client import Client, handle_file

    from keras_med.app.page import build_page
    from keras_med.app.source import open_saved_model

    source = open_saved_model(model_dir)
    if not source.examples:
        raise SystemExit(f"--page-model {model_dir}: the export carries no example images (assets.extra/examples)")
    image = str(source.examples[0])
    page = build_page(source)
    _, url, _ = page.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        client.predict([handle_file(image)], "top class", api_name="/analyse")  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            client.predict([handle_file(image)], "top class", api_name="/analyse")
            times.append(time.perf_counter() - started)
        if screenshot:
            take_screenshot(url, image, screenshot)
    finally:
        page.close()
    return f"| page, one image, upload to answer (gradio_client, {Path(model_dir).name}) | {_percentiles(times)} | |"


def take_screenshot(url: str, image: str, out: str) -> None:
    """Upload `image` in Chromium, analyse, and save the page as a small palette PNG."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        page.goto(url)
        page.locator("#km-files input[type=file]").set_input_files(image)
        page.locator("#km-files").get_by_text(Path(image).name).first.wait_for()
        page.locator("#km-analyse").click()
        page.locator(".km-top").wait_for(timeout=60_000)
        page.wait_for_function("() => [...document.querySelectorAll('img.km-gradcam')]"
                               ".some(image => image.complete && image.naturalWidth > 0)", timeout=60_000)
        raw = Path(out).with_suffix(".raw.png")
        page.screenshot(path=str(raw), full_page=True)
        browser.close()
    picture = Image.open(raw).convert("RGB")
    picture.quantize(colors=128).save(out, optimize=True)
    raw.unlink()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilenetv2")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--page-model", default=None, help="An export for the page timing (saved_models/<name>).")
    parser.add_argument("--page-repeats", type=int, default=20)
    parser.add_argument("--screenshot", default=None, help="Where to save the page's screenshot (PNG).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = ["| what (one image) | p50 ms | p95 ms | p50 / predict_pixels |", "|---|---|---|---|"]
    rows += time_signatures(args.arch, args.image_size, args.repeats)
    if args.page_model:
        rows.append(time_page(args.page_model, args.page_repeats, args.screenshot))
    sys.stdout.write(f"{platform.processor() or platform.machine()}, {args.arch} at {args.image_size}, "
                     f"{args.repeats} rounds, TF {tf.__version__}\n\n" + "\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
