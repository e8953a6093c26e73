"""One press of the page's button: ask the model about each file and lay the answers out as HTML.

Kept free of Gradio so that it is tested directly; `keras_med.app.page` only wires it to widgets.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from keras_med.app.source import RESEARCH_USE, ModelSource
from keras_med.explain.served import ServedExplanation, explain_images

logger = logging.getLogger(__name__)

TOP_CLASS = "top class"
SHOWN_CLASSES = 5
# Uploads larger than this are refused before they reach the model (the page says so).
MAX_FILE_BYTES = 20 * 1024 * 1024


@dataclass
class ImageResult:
    """The page's answer for one file.

    Attributes:
        name: The file name as uploaded.
        explanation: The model's answer and Grad-CAM, or None when the file never reached it.
        error: Why the file is not answered ("" when it is).
        side_by_side: uint8 (S, 2S, 3): the image and its Grad-CAM overlay, or None.
    """

    name: str
    explanation: ServedExplanation | None
    error: str = ""
    side_by_side: np.ndarray | None = None


def class_choices(source: ModelSource) -> list[str]:
    """The class picker's entries: the top class, then every class with its long name."""
    return [TOP_CLASS] + [source.label(name) for name in source.class_names]


def class_index_of_choice(source: ModelSource, choice: str | None) -> int:
    """-1 for the top class (or nothing picked), else the picked class's index."""
    labels = class_choices(source)[1:]
    return labels.index(choice) if choice in labels else -1


def analyse_files(source: ModelSource, paths, choice: str | None = TOP_CLASS) -> list[ImageResult]:
    """Answer each uploaded file; a bad file is an answer naming why, never an exception.

    Args:
        source: The model.
        paths: Uploaded file paths.
        choice: An entry of `class_choices`.
    """
    results: list[ImageResult | None] = []
    pending = []
    for path in [Path(p) for p in paths or []]:
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                results.append(ImageResult(path.name, None, f"too_large: {size} bytes; the page takes at most "
                                                            f"{MAX_FILE_BYTES // (1024 * 1024)} MB"))
                continue
            pending.append((len(results), path.name, path.read_bytes()))
            results.append(None)
        except OSError as error:
            results.append(ImageResult(path.name, None, f"unreadable: {error.strerror or error}"))
    if pending:
        index = class_index_of_choice(source, choice)
        try:
            explanations = explain_images(source.predictor, [data for _, _, data in pending],
                                          [name for _, name, _ in pending], index)
        except Exception as error:  # the page must stay up whatever the model or server says
            logger.exception("the model could not answer")
            message = f"the model could not answer: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
            explanations = [None] * len(pending)
            for position, name, _ in pending:
                results[position] = ImageResult(name, None, message)
        for (position, name, data), explanation in zip(pending, explanations):
            if explanation is None:
                continue
            answer = explanation.prediction
            results[position] = ImageResult(name, explanation, "" if answer.valid else answer.error,
                                            side_by_side(data, explanation) if answer.valid else None)
    return results


def side_by_side(data: bytes, explanation: ServedExplanation) -> np.ndarray:
    """The uploaded image at the model size beside its Grad-CAM overlay, as one uint8 picture."""
    overlay = explanation.overlay()
    image = Image.open(io.BytesIO(data)).convert("RGB").resize(overlay.shape[1::-1], Image.BILINEAR)
    gap = np.full((overlay.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([np.asarray(image), gap, overlay], axis=1)


def render_results(source: ModelSource, results: list[ImageResult]) -> str:
    """The answers as HTML: per file, the top classes, decisions, prediction set, OOD flag, or the error.

    The elements carry `km-*` classes so that the browser test reads the figures the page shows.
    """
    if not results:
        return '<p class="km-empty">Upload one or more images (JPEG, PNG, GIF or BMP), or pick an example.</p>'
    return "\n".join(_render_one(source, result) for result in results)


def _render_one(source: ModelSource, result: ImageResult) -> str:
    name = html.escape(result.name)
    if result.error:
        return (f'<div class="km-result km-invalid" data-file="{name}"><h3>{name}</h3>'
                f'<p class="km-error">Not answered: {html.escape(result.error)}</p></div>')
    answer = result.explanation.prediction
    ranked = sorted(answer.probabilities.items(), key=lambda item: -item[1])[:SHOWN_CLASSES]
    rows = "".join(f'<tr><td class="km-class" data-class="{html.escape(cls)}">{html.escape(source.label(cls))}</td>'
                   f'<td class="km-prob">{probability:.4f}</td></tr>' for cls, probability in ranked)
    parts = [f'<div class="km-result" data-file="{name}"><h3>{name}</h3>',
             f'<p>Top class: <b class="km-top" data-class="{html.escape(answer.top_class)}">'
             f'{html.escape(source.label(answer.top_class))}</b></p>',
             f'<table class="km-probs"><tr><th>class</th><th>probability</th></tr>{rows}</table>',
             f'<p>Decision at the stored operating points: <span class="km-decisions">'
             f'{html.escape(", ".join(answer.decisions) or "none")}</span></p>']
    if answer.in_distribution is not None:  # models exported before the trust outputs have no set
        parts.append(f'<p>Conformal prediction set: <span class="km-set">'
                     f'{html.escape(", ".join(answer.prediction_set) or "empty")}</span></p>')
    if source.has_guard is False:
        parts.append('<p class="km-no-guard">This export has no out-of-distribution guard: nothing says whether '
                     'the image is like the training images.</p>')
    elif answer.in_distribution is False:
        parts.append(f'<p class="km-ood"><b>Warning: unlike the training images</b> (out-of-distribution score '
                     f'{answer.ood_score:.3g}); the answer is not to be trusted and no decision is made.</p>')
    elif answer.in_distribution:
        parts.append(f'<p class="km-in-distribution">Like the training images (out-of-distribution score '
                     f'{answer.ood_score:.3g}).</p>')
    parts.append(f'<p>Grad-CAM for <span class="km-explained">{html.escape(result.explanation.explained_class)}'
                 f'</span>: the image as the model saw it, and the map over it.</p>')
    if result.side_by_side is not None:
        parts.append(f'<img class="km-gradcam" alt="{name}: image and Grad-CAM" src="{_png_data_uri(result.side_by_side)}"'
                     ' style="width:100%;max-width:560px">')
    parts.append("</div>")
    return "".join(parts)


def _png_data_uri(pixels: np.ndarray) -> str:
    """The picture inline in the answer's HTML, so each image's map sits under its own answer."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def model_card_markdown(source: ModelSource) -> str:
    """The model card panel: the run's report when the export carries it, always the intended-use line."""
    card = source.model_card.strip() or "_This export carries no model card (report.md); see the run's report._"
    return f"**{RESEARCH_USE}**\n\n{card}"
