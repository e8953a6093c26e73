"""Client-side pieces shared by every way of predicting: input checks and the answer per image."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from keras_med.errors import KerasMedError, UserError
from keras_med.export.signatures import OUTPUT_KEYS
from keras_med.image_format import sniff_image_format

# Models exported before the serving graph answered a reason per row lack "reason"; their
# invalid rows get this generic one.
OPTIONAL_OUTPUT_KEYS = ("reason",)
UNKNOWN_REASON = "the model could not decode it, or its pixels are outside 0..255"


class ImageInputError(UserError, ValueError):
    """An input that is not an image file or not a valid pixel array; the message names it."""


class ServingError(KerasMedError, RuntimeError):
    """The model server refused a request or could not be reached; the message says which and why.

    Not a bug of keras_med: the command line prints it in one line with exit status 2.

    Args:
        message: What failed, naming the server and model.
        bad_request: True when the server rejected the request's content (HTTP 400, gRPC
            INVALID_ARGUMENT), e.g. an image it could not decode, rather than failing itself.
    """

    exit_code = 2

    def __init__(self, message: str, bad_request: bool = False):
        super().__init__(message)
        self.bad_request = bad_request


@dataclass
class Prediction:
    """The answer for one input.

    Attributes:
        source: The file name (or ``pixels[i]``) the answer is for.
        input_sha256: SHA-256 of the encoded bytes (or of the pixel array) sent.
        valid: False when the input could not be read, decoded or answered; see ``error``.
        top_class: Name of the top class (binary: the thresholded decision); None when invalid.
        top_index: Its index in the class names; None when invalid.
        probabilities: Probability per class name.
        decisions: Names of the classes whose probability reaches their threshold (none when the
            input is out of distribution).
        error: Why the input is invalid ("" when valid): the served model's ``reason``
            (``"<code>: <explanation>"``, codes in docs/serving.md) or a client-side check's message.
        in_distribution: False when the model's guard finds the input unlike its training images;
            None for a model exported without the trust outputs.
        ood_score: The guard's score (higher = more unusual), or None.
        prediction_set: The conformal prediction set's class names (multi-label: the decisions).
        tta_spread: With ``keras-med predict --tta N``: the standard deviation of each class's
            probability over N augmented copies (flips, small shifts); empty otherwise.
    """

    source: str
    input_sha256: str
    valid: bool
    top_class: str | None = None
    top_index: int | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    decisions: list[str] = field(default_factory=list)
    error: str = ""
    in_distribution: bool | None = None
    ood_score: float | None = None
    prediction_set: list[str] = field(default_factory=list)
    tta_spread: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        """One human-readable line, most probable classes first."""
        source = self.source or "''"
        if not self.valid:
            # Errors raised for a file already start with its name; say it once.
            return f"{source}: ERROR {self.error.removeprefix(self.source + ': ')}"
        ranked = sorted(self.probabilities.items(), key=lambda item: -item[1])
        probabilities = " ".join(f"{name}={value:.3f}" for name, value in ranked)
        text = (f"{source}: {self.top_class} ({self.probabilities[self.top_class]:.3f}) "
                f"decisions=[{', '.join(self.decisions)}] {probabilities}")
        if self.in_distribution is not None:
            text += f" set=[{', '.join(self.prediction_set)}]"
        if self.in_distribution is False:
            text += f" OUT OF DISTRIBUTION (score {self.ood_score:.4g}): unlike the training images, do not trust"
        if self.tta_spread:
            name, spread = max(self.tta_spread.items(), key=lambda item: item[1])
            text += f" tta_spread: largest {name} +-{spread:.3f}"
        return text


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_image_bytes(data: bytes, source: str) -> bytes:
    """``data`` when it starts like a JPEG, PNG, GIF, BMP or WebP; an ImageInputError naming ``source`` otherwise.

    Only the magic bytes are checked, not the file name: a PNG saved as ``.jpg`` is sent as it is
    and decoded as a PNG by the served model, which also judges the rest (truncation, size).

    Args:
        data: Encoded image bytes.
        source: What to call the input in the error (usually its path).
    """
    if not isinstance(data, (bytes, bytearray)):
        raise ImageInputError(f"{source}: expected encoded image bytes, got {type(data).__name__}")
    if not data:
        raise ImageInputError(f"{source}: empty input; expected JPEG, PNG, GIF, BMP or WebP bytes")
    if sniff_image_format(data) is None:
        raise ImageInputError(f"{source}: not a JPEG, PNG, GIF, BMP or WebP image (starts with {bytes(data[:8])!r})")
    return bytes(data)


def read_image_file(path: str | Path) -> bytes:
    """The bytes to send for an image file, or an ImageInputError naming the file.

    The served model takes JPEG/PNG/GIF/BMP bytes and its TensorFlow decoders ignore EXIF; a
    DICOM, TIFF or WebP file, or an EXIF-rotated photo, is converted here, on the client side, by
    the functions the training pipeline decodes with (`keras_med.image_convert`), so the model sees
    the pixels it was trained on.

    Args:
        path: Image file (JPEG, PNG, GIF, BMP, TIFF, WebP or DICOM, by content).
    """
    from keras_med.data.dicom import UnsupportedDicomError
    from keras_med.image_convert import ImageConversionError, image_bytes_for_model

    path = Path(path)
    if not str(path) or str(path) == ".":
        raise ImageInputError("empty image path; expected a JPEG, PNG, GIF, BMP, TIFF, WebP or DICOM file")
    if not path.is_file():
        raise ImageInputError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageInputError(f"{path}: cannot read it: {error.strerror or error}") from error
    if not data:
        return check_image_bytes(data, str(path))
    try:
        return image_bytes_for_model(data, name=str(path))
    except (UnsupportedDicomError, ImageConversionError) as error:
        raise ImageInputError(str(error)) from error


def check_pixels(pixels, source: str = "pixels") -> np.ndarray:
    """Pixels as float32 (N, H, W, 3) in 0..255, or an ImageInputError saying what is wrong.

    Args:
        pixels: uint8 or float array (N, H, W, 3), or one image (H, W, 3).
        source: What to call the input in errors.
    """
    array = np.asarray(pixels)
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise ImageInputError(f"{source}: expected uint8 or float pixels, got dtype {array.dtype}")
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape[1:3]:
        raise ImageInputError(f"{source}: expected shape (N, H, W, 3) or (H, W, 3), got {np.shape(pixels)}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ImageInputError(f"{source}: pixel values must be finite numbers in 0..255 (found NaN or inf)")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ImageInputError(f"{source}: pixel values must be in 0..255 (got {array.min():.3g}..{array.max():.3g})")
    return array


def predictions_from_rows(rows: list[dict], sources: list[str], hashes: list[str]) -> list[Prediction]:
    """Turn the serving signature's rows (one dict of outputs per input) into Predictions.

    Args:
        rows: One mapping per input with the keys in ``signatures.OUTPUT_KEYS``; strings may be
            bytes (in-process) or str (REST).
        sources: Name of each input.
        hashes: SHA-256 of each input.
    """
    if len(rows) != len(sources):
        raise ServingError(f"expected {len(sources)} answers, got {len(rows)}")
    answers = []
    for row, source, digest in zip(rows, sources, hashes):
        missing = [key for key in OUTPUT_KEYS if key not in row and key not in OPTIONAL_OUTPUT_KEYS]
        if missing:
            raise ServingError(f"answer for {source} lacks outputs {missing}; is this a keras_med model?")
        if not bool(row["valid"]):
            answers.append(Prediction(source, digest, False, error=_text(row.get("reason", "")) or UNKNOWN_REASON))
            continue
        names = [_text(name) for name in row["class_names"]]
        probabilities = {name: float(value) for name, value in zip(names, row["probabilities"])}
        decisions = [name for name, decided in zip(names, row["decisions"]) if bool(decided)]
        answer = Prediction(source, digest, True, _text(row["top_class_name"]), int(row["top_class_index"]),
                            probabilities, decisions)
        if "in_distribution" in row:
            # A SavedModel without the trust outputs answers without them; they stay None.
            answer.in_distribution = bool(row["in_distribution"])
            answer.ood_score = float(row["ood_score"])
            answer.prediction_set = [name for name, member in zip(names, row["prediction_set"]) if bool(member)]
        answers.append(answer)
    return answers


def rows_from_columns(outputs: dict) -> list[dict]:
    """Split batched outputs (name -> array with a batch axis) into one dict per input."""
    arrays = {key: np.asarray(value) for key, value in outputs.items()}
    count = len(arrays["valid"])
    return [{key: array[index] for key, array in arrays.items()} for index in range(count)]


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)
