"""The Gradio page: upload or pick images, see answers, Grad-CAM side by side, warnings and the model card.

Gradio is the maintained standard for model demos and gives, with no front-end code, the page, an
HTTP API behind it (`gradio_client`, endpoint `/analyse`: files and class choice in, the answers' HTML out) and file uploads that never reach the
model as anything but bytes.
"""

from __future__ import annotations

import os

from keras_med.app.analysis import (TOP_CLASS, analyse_files, class_choices, model_card_markdown, render_results)
from keras_med.app.source import RESEARCH_USE, ModelSource
from keras_med.app.trust_words import TrustFacts

# No usage statistics or version checks: the page runs where there may be no network.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

API_NAME = "analyse"


def build_page(source: ModelSource, facts: TrustFacts | None = None, log=None):
    """The `gradio.Blocks` page for `source` (not launched).

    Args:
        source: The model (`keras_med.app.source.open_saved_model` or `open_server`).
        facts: What the export says about its guard and sets (`keras_med.app.trust_words.read_trust_facts`),
            for scores in validation percentiles and coverage per class; None: unknown.
        log: A `keras_med.export.prediction_log.PredictionLog` every answer is appended to, or None.

    Returns:
        The page; `page.launch(server_name=..., server_port=...)` serves it.

    Example:
    >>> page = build_page(open_saved_model("saved_models/ham10000"))
    >>> page.launch(server_port=7860)
    """
    import gradio as gr

    def analyse(files, choice):
        paths = [getattr(item, "name", item) for item in files or []]
        results = analyse_files(source, paths, choice, resize=(facts or TrustFacts()).resize, log=log)
        return render_results(source, results, facts)

    with gr.Blocks(title=f"keras_med: {source.title}") as page:
        gr.Markdown(f"# {source.title}\n**{RESEARCH_USE}**")
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Images (JPEG, PNG, GIF, BMP, WebP, TIFF, DICOM)", file_count="multiple", type="filepath",
                                elem_id="km-files")
                choice = gr.Dropdown(class_choices(source), value=TOP_CLASS, label="Grad-CAM for",
                                     elem_id="km-class-choice")
                button = gr.Button("Analyse", variant="primary", elem_id="km-analyse")
                if source.examples:
                    gr.Examples([[[str(path)]] for path in source.examples], inputs=[files],
                                label="Example images from the model's run")
            with gr.Column(scale=2):
                answer = gr.HTML(render_results(source, []), elem_id="km-answer")
        with gr.Accordion("Model card", open=False, elem_id="km-model-card"):
            gr.Markdown(model_card_markdown(source))
        button.click(analyse, inputs=[files, choice], outputs=[answer], api_name=API_NAME)
    return page
