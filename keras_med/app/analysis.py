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
from keras_med.app.trust_words import (NOT_ANSWERED_OOD, TrustFacts, coverage_words, score_words, set_words)
from keras_med.explain.served import ServedExplanation, explain_images
from keras_med.export.predictions import ImageInputError, read_image_file
from keras_med.image_convert import sniff_any_format

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


def analyse_files(source: ModelSource, paths, choice: str | None = TOP_CLASS, *, resize: str = "resize",
                  log=None) -> list[ImageResult]:
    """Answer each uploaded file; a bad file is an answer naming why, never an exception.

    Args:
        source: The model.
        paths: Uploaded file paths.
        choice: An entry of `class_choices`.
        resize: How the served graph brings images to the model size (for the picture of what it saw).
        log: A `keras_med.export.prediction_log.PredictionLog` to append every answer to, or None.
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
            # TIFF, WebP, DICOM and EXIF-rotated photos are converted as the CLI converts them.
            pending.append((len(results), path.name, read_image_file(path)))
            results.append(None)
        except OSError as error:
            results.append(ImageResult(path.name, None, f"unreadable: {error.strerror or error}"))
        except ImageInputError as error:
            # Named with the served model's reason codes, so the page's answers and log read like
            # `keras-med predict`'s; the upload's temporary path means nothing to the user, its name does.
            reason = "unknown_format" if sniff_any_format(path.read_bytes()) is None else "corrupt"
            results.append(ImageResult(path.name, None, f"{reason}: {str(error).replace(str(path), path.name)}"))
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
                                            side_by_side(data, explanation, resize) if answer.valid else None)
    if log is not None:
        _log_answers(source, results, log)
    return results


def _log_answers(source: ModelSource, results: list[ImageResult], log) -> None:
    """Append the answers, and the files refused before the model, in `keras-med predict --log`'s format."""
    from keras_med.export.predictions import Prediction

    predictions = [result.explanation.prediction if result.explanation is not None
                   else Prediction(result.name, "", False, error=result.error) for result in results]
    predictor = source.predictor
    try:
        log.write(predictions, getattr(predictor, "name", source.title), getattr(predictor, "version", None))
    except OSError:  # a full disk must not take the page down; the answer is still shown
        logger.exception("could not append to the prediction log %s", log.path)


def side_by_side(data: bytes, explanation: ServedExplanation, resize: str = "resize") -> np.ndarray:
    """The image as the model saw it beside its Grad-CAM overlay, as one uint8 picture.

    The left image is decoded by the served graph's own decoder (`keras_med.data.decode`), so a
    16-bit PNG is shown at the model's uint8 scale rather than clipped by Pillow to near white.
    """
    overlay = explanation.overlay()
    size = overlay.shape[0]
    try:
        import tensorflow as tf

        from keras_med.data.decode import decode_image

        image = np.asarray(decode_image(tf.constant(data), size, resize).numpy(), np.uint8)
    except Exception:  # a format only the model's server reads: Pillow's view is better than none
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize(overlay.shape[1::-1], Image.BILINEAR))
    gap = np.full((overlay.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([image, gap, overlay], axis=1)


def render_results(source: ModelSource, results: list[ImageResult], facts: TrustFacts | None = None) -> str:
    """The answers as HTML: per file, the verdict first, then what the model answered.

    An image the model does not answer (invalid, or unlike the training images) leads with
    "Not answered" and why; its probabilities and heat map stay available, folded under a closed
    `<details>` marked as not to be trusted, and no top-class headline is shown. The elements carry
    `km-*` classes so that the browser test reads the figures the page shows.

    Args:
        source: The model.
        results: `analyse_files`' answers.
        facts: What the export says about its guard and sets (`read_trust_facts`); None: unknown.
    """
    if not results:
        return '<p class="km-empty">Upload one or more images (JPEG, PNG, GIF, BMP, WebP, TIFF or DICOM), or pick an example.</p>'
    facts = facts or TrustFacts()
    return "\n".join(_render_one(source, result, facts) for result in results)


def _render_one(source: ModelSource, result: ImageResult, facts: TrustFacts) -> str:
    name = html.escape(result.name)
    if result.error:
        return (f'<div class="km-result km-invalid" data-file="{name}"><h3>{name}</h3>'
                f'<p class="km-verdict km-error">Not answered: {html.escape(result.error)}</p></div>')
    answer = result.explanation.prediction
    untrusted = answer.in_distribution is False and source.has_guard is not False
    parts = [f'<div class="km-result" data-file="{name}"><h3>{name}</h3>']
    if untrusted:
        parts.append(f'<p class="km-verdict km-ood"><b>{NOT_ANSWERED_OOD}.</b> It is '
                     f'{score_words(facts, answer.ood_score, False)}. No decision is made.</p>')
    elif source.has_guard is False:
        parts.append('<p class="km-no-guard">This export has no out-of-distribution guard: nothing says whether '
                     'the image is like the training images.</p>')
    details = _answer_details(source, result, facts)
    if untrusted:
        parts.append('<details class="km-untrusted"><summary>What the model answered anyway (not to be trusted: '
                     'the image is unlike its training images)</summary>' + details + "</details>")
    else:
        parts.append(details)
        if answer.in_distribution:
            parts.append(f'<p class="km-in-distribution">Like the training images: '
                         f'{score_words(facts, answer.ood_score, True)}.</p>')
    parts.append("</div>")
    return "".join(parts)


def _answer_details(source: ModelSource, result: ImageResult, facts: TrustFacts) -> str:
    """The top class, probabilities, decisions, the set in words and the Grad-CAM picture."""
    answer = result.explanation.prediction
    name = html.escape(result.name)
    ranked = sorted(answer.probabilities.items(), key=lambda item: -item[1])[:SHOWN_CLASSES]
    rows = "".join(f'<tr><td class="km-class" data-class="{html.escape(cls)}">{html.escape(source.label(cls))}</td>'
                   f'<td class="km-prob">{probability:.4f}</td></tr>' for cls, probability in ranked)
    parts = [f'<p>Top class: <b class="km-top" data-class="{html.escape(answer.top_class)}">'
             f'{html.escape(source.label(answer.top_class))}</b></p>',
             f'<table class="km-probs"><tr><th>class</th><th>probability</th></tr>{rows}</table>',
             f'<p>Decision at the stored operating points: <span class="km-decisions">'
             f'{html.escape(", ".join(answer.decisions) or "none")}</span></p>']
    if answer.in_distribution is not None:  # models exported before the trust outputs have no set
        parts.append(f'<p class="km-set-words">{set_words(facts, answer.prediction_set, source.label)}</p>')
        coverage = coverage_words(facts)
        if coverage:
            parts.append(f'<p class="km-coverage">{coverage}</p>')
    parts.append(f'<p>Grad-CAM for <span class="km-explained">{html.escape(result.explanation.explained_class)}'
                 f'</span>: the image as the model saw it, and the map over it.</p>')
    if result.side_by_side is not None:
        parts.append(f'<img class="km-gradcam" alt="{name}: image and Grad-CAM" src="{_png_data_uri(result.side_by_side)}"'
                     ' style="width:100%;max-width:560px">')
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
