"""The web page (Gradio): its API through gradio_client, and the page itself in a real browser (Chromium).

The page runs in this process on a free port over a tiny exported model; Chromium is the system's
(`/usr/bin/chromium`, installed by .ci/run), driven by Playwright.
"""

import base64
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tensorflow as tf
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from keras_med.app.analysis import analyse_files, render_results
from keras_med.app.page import build_page
from keras_med.app.source import RESEARCH_USE, open_saved_model, open_server
from keras_med.export import export_for_serving
from helpers import CLASSES, png_bytes as png, gradcam_cnn, random_images

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
LONG_NAMES = {"akiec": "Actinic keratoses", "bcc": "Basal cell carcinoma", "mel": "Melanoma"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny model exported from a fake run (split.csv, report.md, class_names.json), and two files to upload."""
    root = tmp_path_factory.mktemp("app")
    run_dir = root / "run"
    run_dir.mkdir()
    rows = ["path,label,group,split"]
    for index, name in enumerate(CLASSES):
        path = run_dir / f"example{index}.png"
        path.write_bytes(png(random_images(1, seed=index, patch=True)[0]))
        rows.append(f"{path},{name},g{index},test")
    (run_dir / "split.csv").write_text("\n".join(rows) + "\n")
    (run_dir / "report.md").write_text("# Model card\n\nBalanced accuracy 0.81 [0.77, 0.85]\n![roc](plots/roc.png)\n")
    (run_dir / "class_names.json").write_text(json.dumps({"class_names": CLASSES, "long_names": LONG_NAMES}))
    export_for_serving(gradcam_cnn(), name="tiny", base_dir=root / "saved_models", class_names=CLASSES,
                       run_dir=run_dir)
    upload = root / "lesion.png"
    upload.write_bytes(png(random_images(1, seed=7, patch=True)[0]))
    text = root / "notes.txt"
    text.write_text("not an image")
    return {"model_dir": root / "saved_models" / "tiny", "upload": upload, "text": text}


def saved_model_answer(exported):
    """The SavedModel's own answer for the upload: what the page must show."""
    loaded = tf.saved_model.load(str(exported["model_dir"] / "1"))
    answer = loaded.signatures["serving_default"](image_bytes=tf.constant([exported["upload"].read_bytes()]))
    return answer["top_class_name"].numpy()[0].decode(), answer["probabilities"].numpy()[0]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def page_url(exported):
    page = build_page(open_saved_model(exported["model_dir"]))
    _, url, _ = page.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield url
    page.close()


def test_source_reads_the_export(exported):
    source = open_saved_model(exported["model_dir"])  # the newest version of saved_models/tiny
    assert source.title == "tiny version 1" and source.class_names == CLASSES
    assert source.label("mel") == "mel (Melanoma)" and source.has_guard is False
    assert [path.name for path in source.examples] == ["0_example0.png", "1_example1.png", "2_example2.png"]
    assert "Balanced accuracy 0.81" in source.model_card and "plots/roc.png" not in source.model_card


@pytest.mark.system
def test_api_answers_like_the_saved_model_and_flags_a_bad_file(exported, page_url):
    from gradio_client import Client, handle_file

    client = Client(page_url, verbose=False)
    answer = client.predict([handle_file(str(exported["upload"])), handle_file(str(exported["text"]))],
                            "top class", api_name="/analyse")
    top, probabilities = saved_model_answer(exported)
    assert f'class="km-top" data-class="{top}"' in answer
    for name, probability in zip(CLASSES, probabilities):
        assert f'data-class="{name}">{name} ({LONG_NAMES[name]})</td><td class="km-prob">{probability:.4f}' in answer
    assert "Not answered: unknown_format" in answer and 'data-file="notes.txt"' in answer
    assert answer.count('<img class="km-gradcam"') == 1 and 'src="data:image/png;base64,' in answer
    assert f'class="km-explained">{top}<' in answer

    # a chosen class is explained instead of the top one
    chosen = next(name for name in CLASSES if name != top)
    answer = client.predict([handle_file(str(exported["upload"]))], f"{chosen} ({LONG_NAMES[chosen]})",
                            api_name="/analyse")
    assert f'class="km-explained">{chosen}<' in answer


def add_files(page, url, paths, already=()):
    """Add `paths` to the page's file box (which holds `already`) and wait until the page lists them.

    Gradio 6.31 sometimes never finishes an upload: its `upload_progress` stream stays open after the
    POST (seen about one time in six here, with the browser's requests logged). Then the page is
    loaded afresh and every file is set at once, the same state a user reaches by reloading.
    """
    box = page.locator("#km-files")
    for attempt in range(3):
        if attempt:
            page.goto(url, wait_until="networkidle")
            paths = [*already, *paths]
        box.locator("input[type=file]").set_input_files([str(path) for path in paths])
        try:
            for path in paths:
                box.get_by_text(path.name).first.wait_for(timeout=15_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise


@pytest.mark.system
def test_page_in_a_real_browser(exported, page_url, tmp_path):
    from playwright.sync_api import sync_playwright

    top, probabilities = saved_model_answer(exported)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(page_url, wait_until="networkidle")
            page.get_by_text(RESEARCH_USE).first.wait_for()

            add_files(page, page_url, [exported["upload"]])
            page.locator("#km-analyse").click()
            page.locator(".km-top").wait_for(timeout=30_000)
            assert page.locator(".km-top").get_attribute("data-class") == top
            shown = {cell.get_attribute("data-class"): cell.locator("xpath=../td[@class='km-prob']").inner_text()
                     for cell in page.locator(".km-class").all()}
            assert shown == {name: f"{p:.4f}" for name, p in zip(CLASSES, probabilities)}
            # the Grad-CAM picture is shown: an <img> under the answer that has loaded
            page.wait_for_function("() => [...document.querySelectorAll('img.km-gradcam')]"
                                   ".some(image => image.complete && image.naturalWidth > 0)", timeout=30_000)
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

            # a non-image beside the image: its row says why, the image is still answered, the page stays up
            add_files(page, page_url, [exported["text"]], already=[exported["upload"]])
            page.locator("#km-analyse").click()
            page.locator(".km-error").wait_for(timeout=30_000)
            assert "unknown_format" in page.locator(".km-error").inner_text()
            assert page.locator(".km-top").count() == 1
            assert page.locator(".km-top").get_attribute("data-class") == top
            page.screenshot(path=str(tmp_path / "page_error.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000


class FakeTFServing(BaseHTTPRequestHandler):
    """TF Serving's REST predict over a reloaded SavedModel, for the explain signature's row format."""

    loaded = None

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        signature = self.loaded.signatures[body["signature_name"]]
        rows = body["instances"]
        data = tf.constant([base64.b64decode(row["image_bytes"]["b64"] if "image_bytes" in row else row["b64"])
                            for row in rows])
        if body["signature_name"] == "explain":
            outputs = signature(image_bytes=data, class_index=tf.constant([row["class_index"] for row in rows]))
        else:
            outputs = signature(image_bytes=data)
        columns = {key: value.numpy() for key, value in outputs.items()}
        answer = [{key: _json_value(key, column[index]) for key, column in columns.items()} for index in range(len(rows))]
        payload = json.dumps({"predictions": answer}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _json_value(key, value):
    """As TF Serving writes it: `*_bytes` strings base64 in {"b64": ...}, other strings as text."""
    if key.endswith("_bytes"):
        return {"b64": base64.b64encode(value).decode()}
    value = value.tolist() if isinstance(value, np.ndarray) else value.item() if hasattr(value, "item") else value
    if isinstance(value, list):
        return [item.decode() if isinstance(item, bytes) else item for item in value]
    return value.decode() if isinstance(value, bytes) else value


@pytest.fixture(scope="module")
def server(exported):
    handler = type("Handler", (FakeTFServing,), {"loaded": tf.saved_model.load(str(exported["model_dir"] / "1"))})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_remote_server_answers_the_page_and_explain_command(exported, server, tmp_path):
    from keras_med.cli import main

    local = analyse_files(open_saved_model(exported["model_dir"]), [exported["upload"], exported["text"]])
    source = open_server(server, "tiny")
    assert source.class_names == CLASSES and source.has_guard is None
    remote = analyse_files(source, [exported["upload"], exported["text"]])
    assert [r.error[:15] for r in remote] == ["", "unknown_format:"]
    np.testing.assert_array_equal(remote[0].side_by_side, local[0].side_by_side)
    np.testing.assert_allclose(remote[0].explanation.heatmap, local[0].explanation.heatmap, atol=1e-6)
    assert "km-top" in render_results(source, remote)

    assert main(["explain", "--server", server, "--name", "tiny", str(exported["upload"]), "--class", "bcc",
                 "--out", str(tmp_path / "maps")]) == 0
    assert (tmp_path / "maps" / "lesion_gradcam.png").stat().st_size > 1000


def test_answers_render_warnings_and_errors():
    from keras_med.app.analysis import ImageResult
    from keras_med.app.source import ModelSource
    from keras_med.explain.served import ServedExplanation
    from keras_med.export.predictions import Prediction

    source = ModelSource(None, "m", CLASSES, LONG_NAMES, has_guard=True)
    unusual = Prediction("x.png", "", True, "mel", 2, {"akiec": 0.1, "bcc": 0.2, "mel": 0.7}, [],
                         in_distribution=False, ood_score=3.5, prediction_set=["bcc", "mel"])
    page = render_results(source, [ImageResult("x<1>.png", ServedExplanation(unusual, "mel", np.zeros((2, 2)), b"")),
                                   ImageResult("y.dcm", None, "too_large: 30000000 bytes")])
    assert "Warning: unlike the training images" in page and "score 3.5" in page
    assert 'class="km-decisions">none<' in page and 'class="km-set">bcc, mel<' in page
    assert "x&lt;1&gt;.png" in page and "x<1>" not in page  # file names are escaped
    assert 'class="km-error">Not answered: too_large' in page
    assert "no out-of-distribution guard" in render_results(
        ModelSource(None, "m", CLASSES, has_guard=False), [ImageResult("x.png", ServedExplanation(unusual, "mel",
                                                                                                   np.zeros((2, 2)), b""))])
