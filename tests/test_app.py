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
    from keras_med.app.trust_words import TrustFacts
    from keras_med.explain.served import ServedExplanation
    from keras_med.export.predictions import Prediction

    source = ModelSource(None, "m", CLASSES, LONG_NAMES, has_guard=True)
    facts = TrustFacts(score_quantiles=list(np.linspace(0.0, 10.0, 1001)), pass_rate=0.95, coverage=0.9,
                       measured_coverage={"coverage": 0.91, "per_class": {"akiec": 0.8, "bcc": 0.68, "mel": 0.95}})
    unusual = Prediction("x.png", "", True, "mel", 2, {"akiec": 0.1, "bcc": 0.2, "mel": 0.7}, [],
                         in_distribution=False, ood_score=9.97, prediction_set=["bcc", "mel"])
    page = render_results(source, [ImageResult("x<1>.png", ServedExplanation(unusual, "mel", np.zeros((2, 2)), b"")),
                                   ImageResult("y.dcm", None, "too_large: 30000000 bytes")], facts)
    verdict = "Not answered: this image is unlike the images the model was trained on"
    assert verdict in page and "farther from the training images than 99.7% of the validation images" in page
    # the verdict leads; the answer is folded under a closed <details> marked as untrusted
    assert page.index(verdict) < page.index("km-untrusted") < page.index("km-top")
    assert "<details class=\"km-untrusted\"><summary>" in page and "not to be trusted" in page
    assert 'class="km-decisions">none<' in page
    assert "With 90% coverage, the diagnosis is one of:" in page and "bcc (Basal cell carcinoma)" in page
    assert "bcc 68%" in page and "held the true class 91%" in page
    assert "x&lt;1&gt;.png" in page and "x<1>" not in page  # file names are escaped
    assert 'class="km-verdict km-error">Not answered: too_large' in page

    ordinary = Prediction("z.png", "", True, "mel", 2, {"akiec": 0.1, "bcc": 0.2, "mel": 0.7}, ["mel"],
                          in_distribution=True, ood_score=0.5, prediction_set=[])
    page = render_results(source, [ImageResult("z.png", ServedExplanation(ordinary, "mel", np.zeros((2, 2)), b""))],
                          facts)
    assert "Not answered" not in page and "km-untrusted" not in page and 'class="km-top"' in page
    assert "the set is empty" in page and "than 5% of the validation images" in page
    # an export without stored quantiles (a remote server) states the raw score
    assert "out-of-distribution score 9.97" in render_results(
        source, [ImageResult("x.png", ServedExplanation(unusual, "mel", np.zeros((2, 2)), b""))])
    assert "no out-of-distribution guard" in render_results(
        ModelSource(None, "m", CLASSES, has_guard=False), [ImageResult("x.png", ServedExplanation(unusual, "mel",
                                                                                                   np.zeros((2, 2)), b""))])


def test_score_percentile_reads_the_stored_quantiles():
    from keras_med.evaluation.ood import score_percentile, validation_quantiles

    scores = np.random.default_rng(0).gamma(2.0, 1.0, 3000)
    quantiles = validation_quantiles(scores)
    for score in np.quantile(scores, [0.1, 0.5, 0.9, 0.997]):
        assert score_percentile(quantiles, score) == pytest.approx(np.mean(scores < score), abs=0.002)
    assert score_percentile(quantiles, scores.max() + 1) == 1.0 and score_percentile(quantiles, -1.0) == 0.0
    assert score_percentile([], 1.0) is None


def test_a_16_bit_png_is_shown_as_the_model_sees_it():
    import io

    from PIL import Image

    from keras_med.app.analysis import side_by_side
    from keras_med.explain.served import ServedExplanation
    from keras_med.export.predictions import Prediction

    grey16 = np.full((40, 40), 30000, np.uint16)  # mid grey on a 16-bit scale; Pillow's RGB clips it to white
    buffer = io.BytesIO()
    Image.fromarray(grey16).save(buffer, format="PNG")
    overlay = png(np.zeros((32, 32, 3), np.uint8))
    picture = side_by_side(buffer.getvalue(), ServedExplanation(Prediction("g.png", "", True), "mel", np.zeros((32, 32)),
                                                                overlay))
    assert picture.shape == (32, 68, 3)
    assert abs(float(picture[:, :32].mean()) - 30000 / 257) < 2


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A tiny model with an out-of-distribution guard and sets, and a chest X-ray it flags."""
    from keras_med.data.synthetic import draw_chest
    from helpers import export_with_trust
    from test_export_guards import CLASSES as SKIN_CLASSES, lesions, small_model

    model = small_model()
    root = tmp_path_factory.mktemp("guarded")
    export_with_trust(model, lesions(240, seed=0), lesions(120, seed=1), root / "saved_models", SKIN_CLASSES)
    chest = root / "chest_xray.png"
    chest.write_bytes(png(np.repeat(draw_chest([], np.random.default_rng(4), 64)[..., None], 3, axis=-1)))
    return {"model_dir": root / "saved_models" / "skin", "chest": chest, "classes": SKIN_CLASSES}


def test_the_page_logs_each_answer_like_predict(guarded, exported, tmp_path):
    from keras_med.app.source import newest_version_folder
    from keras_med.app.trust_words import read_trust_facts
    from keras_med.export.prediction_log import PredictionLog

    source = open_saved_model(guarded["model_dir"])
    log = PredictionLog(tmp_path / "answers.jsonl")
    results = analyse_files(source, [guarded["chest"], exported["text"]], log=log)
    assert results[0].explanation.prediction.in_distribution is False
    records = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [record["input"] for record in records] == ["chest_xray.png", "notes.txt"]
    assert records[0]["model"] == "skin" and records[0]["version"] == 1 and len(records[0]["input_sha256"]) == 64
    assert records[0]["output"]["in_distribution"] is False and records[0]["output"]["ood_score"] > 0
    assert records[1]["output"]["valid"] is False and records[1]["output"]["error"].startswith("unknown_format")
    facts = read_trust_facts(newest_version_folder(guarded["model_dir"]))
    assert len(facts.score_quantiles) == 1001 and facts.coverage == pytest.approx(0.9)


def test_the_verdict_comes_before_any_class_name_in_a_real_browser(guarded, tmp_path):
    from playwright.sync_api import sync_playwright

    from keras_med.app.source import newest_version_folder
    from keras_med.app.trust_words import NOT_ANSWERED_OOD, read_trust_facts

    page_app = build_page(open_saved_model(guarded["model_dir"]),
                          read_trust_facts(newest_version_folder(guarded["model_dir"])))
    _, url, _ = page_app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url, wait_until="networkidle")
                add_files(page, url, [guarded["chest"]])
                page.locator("#km-analyse").click()
                page.locator(".km-verdict").wait_for(timeout=30_000)
                text = page.locator("#km-answer").inner_text()
                assert NOT_ANSWERED_OOD in text and "validation images the guard was calibrated on" in text
                first_class = min((text.find(name) for name in guarded["classes"] if name in text), default=len(text))
                assert text.index(NOT_ANSWERED_OOD) < first_class
                # the model's answer is there but folded, and not visible until opened
                assert not page.locator(".km-top").is_visible()
                page.screenshot(path=str(tmp_path / "page_ood.png"), full_page=True)
                page.locator("details.km-untrusted summary").click()
                assert page.locator(".km-top").is_visible()
            finally:
                browser.close()
    finally:
        page_app.close()
    assert (tmp_path / "page_ood.png").stat().st_size > 10_000


def test_a_tiff_upload_is_converted_like_the_command_line_converts_it(exported, tmp_path):
    from PIL import Image

    tiff = tmp_path / "lesion.tif"
    Image.open(exported["upload"]).save(tiff, format="TIFF")
    source = open_saved_model(exported["model_dir"])
    png_result, tiff_result = analyse_files(source, [exported["upload"], tiff])
    assert tiff_result.error == "" and tiff_result.explanation is not None
    assert tiff_result.explanation.prediction.probabilities == pytest.approx(
        png_result.explanation.prediction.probabilities, abs=1e-6)
    assert "TIFF or DICOM" in render_results(source, [])
