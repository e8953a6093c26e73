"""Reading and decoding image files with TensorFlow, and the check pass that names bad files.

TensorFlow-specific (`tf.io`, `tf.image`, `tf.data`): it feeds the `tf.data` pipeline.

Design: bad files must be named before training starts, and decoding twice would halve the input
rate. `check_images` therefore decodes every file once, in a parallel `tf.data` pass (C++ threads,
no GIL), with `ignore_errors` and each element's index: an index that does not come back is a bad
file. When an image size is given the same pass keeps the decoded, resized pixels (uint8), which
*is* the in-memory cache the pipeline then reads, so checking costs nothing extra. Only the few bad
files are decoded a second time, eagerly, to report TensorFlow's reason.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Sequence

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_med.data.dicom import DICOM_MAGIC, DICOM_MAGIC_OFFSET, is_dicom_bytes, read_dicom_pixels
from keras_med.image_convert import (JPEG_MAX_PIXELS_PER_BYTE, MAX_IMAGE_PIXELS, TIFF_MAGICS, ImageConversionError,
                                     exif_orientation, jpeg_too_short, pillow_rgb, sniff_any_format)
from keras_med.data.errors import BadImageError, DataError, MissingImageError
from keras_med.data.files import bad_image_row, check_on_bad_image, write_bad_images, write_left_out
from keras_med.data.memory import aligned_empty
from keras_med.data.table import LINE_COLUMN

logger = logging.getLogger(__name__)

RESIZE_MODES = ("resize", "pad")
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# decode_jpeg can scale by 1/2, 1/4 or 1/8 while decoding (DCT scaling), much faster than a full
# decode then resize; the ratio must be a Python int, hence one branch per ratio.
JPEG_RATIOS = (1, 2, 4, 8)
CHECK_BATCH = 128
# Enough of a file to see its format, a PNG/GIF/BMP size and a JPEG's APP1 EXIF marker (right
# after the SOI, or after a JFIF APP0) without reading the file twice.
HEAD_BYTES = 512
EXIF_MARKER = b"Exif\x00\x00"


@dataclasses.dataclass(frozen=True)
class DecodePlan:
    """How a set of files is decoded; decided once in Python so the per-image graph stays lean.

    Each op in the per-image graph costs a few microseconds, against ~170 us to decode a 200x150
    JPEG, so a format test and a header parse per image cost 10-15% of the rate when they are not
    needed.

    Attributes:
        image_format: `"jpeg"`, `"png"` or `"dicom"` when every file's content says so, else
            `"auto"` (a content test per image).
        reduced_decode: parse each JPEG header and decode at 1/2, 1/4, 1/8 scale where it still
            covers the target size; off when sampled files are too small for any reduction.
        pillow_paths: files decoded by `keras_med.image_convert.pillow_rgb` instead of
            TensorFlow: an EXIF orientation to apply, or a header over `MAX_IMAGE_PIXELS` (which
            Pillow refuses, so the file is reported as too large). TIFF needs no entry: its magic
            bytes route it to Pillow inside the graph.
    """

    image_format: str = "auto"
    reduced_decode: bool = True
    pillow_paths: tuple[str, ...] = ()


def sniff_format(path: str) -> str | None:
    """The format a file's first bytes say (`"jpeg"`, `"png"`, `"dicom"` or `"other"`), or None if unreadable.

    By content, not by name: a PNG or GIF saved as `.jpg` is common in scraped medical sets.
    """
    head = _read_head(path)
    return None if head is None else _format_of(head)


def _read_head(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(HEAD_BYTES)
    except OSError:
        return None


def _format_of(head: bytes) -> str:
    image_format = sniff_any_format(head)
    if image_format in ("jpeg", "png"):
        return image_format
    return "dicom" if is_dicom_bytes(head) else "other"


def _header_pixels(head: bytes, image_format: str | None) -> int:
    """Width x height from a PNG, GIF or BMP header (the fields the served graph reads); 0 if unknown."""
    if image_format == "png" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big") * int.from_bytes(head[20:24], "big")
    if image_format == "gif" and len(head) >= 10:
        return int.from_bytes(head[6:8], "little") * int.from_bytes(head[8:10], "little")
    if image_format == "bmp" and len(head) >= 26:
        return abs(int.from_bytes(head[18:22], "little", signed=True) * int.from_bytes(head[22:26], "little",
                                                                                        signed=True))
    return 0


def _needs_pillow(path: str, head: bytes) -> bool:
    """Whether TensorFlow's decode would give other pixels than a viewer (EXIF) or over-decode (bomb)."""
    image_format = sniff_any_format(head)
    if image_format == "jpeg":
        # Only files with an EXIF block are opened (HAM10000's 10,015 JPEGs have none).
        return EXIF_MARKER in head and exif_orientation(path, path) != 1
    return _header_pixels(head, image_format) > MAX_IMAGE_PIXELS


def plan_decoding(paths: Sequence[str], image_size: int | None, resize: str = "resize",
                  sample: int = 8) -> DecodePlan:
    """Choose the `DecodePlan` for `paths` from their first bytes and a few headers (PIL, no decode).

    Every file's first bytes are read (cheap beside decoding: benchmarks/decode_by_content.py), so one PNG or
    GIF named `.jpg` switches the plan to the per-image content test instead of failing to decode.
    The same bytes show a JPEG's EXIF block (then its orientation is read) and a PNG/GIF/BMP size
    over `MAX_IMAGE_PIXELS`: such files go to `plan.pillow_paths`. Unreadable files do not count:
    the check pass reports them.
    """
    formats, pillow_paths = set(), []
    for path in paths:
        head = _read_head(str(path))
        if head is None:
            continue
        formats.add(_format_of(head))
        if _needs_pillow(str(path), head):
            pillow_paths.append(str(path))
    if pillow_paths:
        logger.info("%d of %d image(s) are decoded with Pillow (EXIF orientation applied, or too large to decode), "
                    "e.g. %s", len(pillow_paths), len(paths), pillow_paths[0])
    image_format = next(iter(formats)) if len(formats) == 1 and formats != {"other"} else "auto"
    pillow_paths = tuple(pillow_paths)
    if image_size is None or image_format in ("png", "dicom"):
        return DecodePlan(image_format, reduced_decode=False, pillow_paths=pillow_paths)
    step = max(1, len(paths) // sample)
    sides = []
    for path in list(paths)[::step][:sample]:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size) if resize == "resize" else max(image.size))
        except (OSError, Image.DecompressionBombError):
            continue  # the check pass reports unreadable and too large files; the plan only needs sizes
    # Larger files than the sample still decode correctly, only without the reduced-scale speed-up.
    reduced = not sides or max(sides) >= JPEG_RATIOS[1] * image_size
    return DecodePlan(image_format, reduced_decode=reduced, pillow_paths=pillow_paths)


def decode_image(contents: tf.Tensor, image_size: int | None = None, resize: str = "resize",
                 plan: DecodePlan | None = None) -> tf.Tensor:
    """Decode image bytes (JPEG, PNG, GIF, BMP, WebP, TIFF, DICOM) to uint8 RGB, by content; resized when asked.

    Grayscale becomes 3 channels and RGBA drops alpha; a GIF gives its first frame. A DICOM file
    goes through `keras_med.data.dicom.read_dicom_pixels` (pydicom, in Python via
    `tf.numpy_function`): the same function `keras-med predict` uses on the client side. A TIFF
    goes through `keras_med.image_convert.pillow_rgb` the same way (TensorFlow has no TIFF
    decoder), again the function the clients convert with. A JPEG whose header claims more pixels
    than its bytes can hold (libjpeg's "premature end of data", answered in grey) or more than
    `MAX_IMAGE_PIXELS` fails, so the check pass reports it.

    With `plan.reduced_decode` a JPEG is decoded at the largest reduced scale (1/2, 1/4, 1/8) that
    still leaves it at least `image_size` on the sides that matter (both sides for `resize`, the
    long side for `pad`).

    Args:
        contents: a scalar string tensor with the encoded file.
        image_size: the side of the square output; `None` keeps the decoded size.
        resize: `"resize"` stretches to the square, `"pad"` keeps the aspect ratio and pads with 0.
        plan: what is known about the files (see `plan_decoding`); the default assumes nothing.
    """
    if resize not in RESIZE_MODES:
        raise DataError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    plan = plan or DecodePlan()

    def decode_jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(contents), tf.int64)
        pixels = shape[0] * shape[1]
        fits = tf.debugging.assert_less_equal(pixels, tf.constant(MAX_IMAGE_PIXELS, tf.int64),
                                              message="too_large: the JPEG header claims more pixels than decoded")
        whole = tf.debugging.assert_greater_equal(
            tf.cast(tf.strings.length(contents), tf.int64) * JPEG_MAX_PIXELS_PER_BYTE, pixels,
            message="truncated: the JPEG holds too few bytes for its header's size")
        with tf.control_dependencies([fits, whole]):
            contents_checked = tf.identity(contents)
        if image_size is None or not plan.reduced_decode:
            return tf.io.decode_jpeg(contents_checked, channels=3)
        side = tf.reduce_min(shape[:2]) if resize == "resize" else tf.reduce_max(shape[:2])
        branch = tf.add_n([tf.cast(side >= ratio * image_size, tf.int32) for ratio in JPEG_RATIOS[1:]])
        return tf.switch_case(branch, [lambda r=ratio: tf.io.decode_jpeg(contents_checked, channels=3, ratio=r)
                                       for ratio in JPEG_RATIOS])

    def decode_tf_other():
        return tf.io.decode_image(contents, channels=3, expand_animations=False)

    def decode_other():
        head = tf.strings.substr(contents, 0, 4)
        is_tiff = tf.reduce_any(tf.equal(head, tf.constant(TIFF_MAGICS)))
        return tf.cond(is_tiff, lambda: pillow_decode(contents), decode_tf_other)

    def decode_dicom():
        image = tf.numpy_function(_dicom_pixels, [contents], tf.uint8, stateful=False)
        image.set_shape([None, None, 3])
        return image

    def decode_dicom_or_other():
        # padded, so that a file shorter than the DICOM preamble compares instead of failing substr
        head = tf.strings.substr(tf.strings.substr(contents, 0, DICOM_MAGIC_OFFSET + 4) + _DICOM_PAD,
                                 DICOM_MAGIC_OFFSET, len(DICOM_MAGIC))
        return tf.cond(tf.equal(head, DICOM_MAGIC), decode_dicom, decode_other)

    if plan.image_format == "jpeg":
        image = decode_jpeg()
    elif plan.image_format == "png":
        image = tf.io.decode_png(contents, channels=3)
    elif plan.image_format == "dicom":
        image = decode_dicom()
    else:
        image = tf.cond(tf.equal(tf.strings.substr(contents, 0, 3), JPEG_MAGIC), decode_jpeg, decode_dicom_or_other)
    image.set_shape([None, None, 3])
    if image_size is None:
        return image
    return resize_image(image, image_size, resize)


_DICOM_PAD = b"\0" * (DICOM_MAGIC_OFFSET + len(DICOM_MAGIC))


def pillow_decode(contents: tf.Tensor) -> tf.Tensor:
    """uint8 RGB (H, W, 3) of encoded bytes by `keras_med.image_convert.pillow_rgb` (in Python, like DICOM)."""
    image = tf.numpy_function(_pillow_pixels, [contents], tf.uint8, stateful=False)
    image.set_shape([None, None, 3])
    with tf.control_dependencies([tf.debugging.assert_positive(tf.size(image), message="Pillow could not read it")]):
        return tf.identity(image)


def _pillow_pixels(contents) -> np.ndarray:
    # An error raised here would print a Python traceback from inside tf.data for every bad file;
    # an empty image fails the assert above quietly, and `_failure_reason` then says why.
    try:
        return pillow_rgb(contents.item() if isinstance(contents, np.ndarray) else contents)
    except ImageConversionError:
        return np.zeros((0, 0, 3), np.uint8)


def _dicom_pixels(contents) -> np.ndarray:
    # Python, under the GIL: pydicom has no TensorFlow op. With the in-memory cache each file is
    # decoded once, in the check pass. Eager calls pass a 0-d
    # object array, graph calls the bytes.
    return read_dicom_pixels(contents.item() if isinstance(contents, np.ndarray) else contents)


def resize_image(image: tf.Tensor, image_size: int, resize: str = "resize") -> tf.Tensor:
    """Resize uint8 image(s) to `image_size` square and return uint8 (4x less cache than float32)."""
    if resize == "pad":
        resized = tf.image.resize_with_pad(image, image_size, image_size)
    else:
        resized = tf.image.resize(image, [image_size, image_size])
    # Bilinear resizing (and zero padding) of 0..255 input stays in 0..255, so +0.5 and truncation
    # rounds without a clip.
    return tf.cast(resized + 0.5, tf.uint8)


def load_image(path: tf.Tensor, image_size: int | None = None, resize: str = "resize",
               plan: DecodePlan | None = None) -> tf.Tensor:
    """`decode_image` of the file at `path`; a file of `plan.pillow_paths` is decoded by Pillow.

    Without a plan, an eager call (evaluation, explain: one file at a time) plans for its file,
    so an EXIF-rotated photo is turned as in training; a graph call without a plan applies no
    EXIF orientation (pass the plan of `plan_decoding`).
    """
    if plan is None:
        plan = (plan_decoding([path.numpy().decode() if isinstance(path, tf.Tensor) else str(path)], image_size,
                              resize) if tf.executing_eagerly() else DecodePlan())
    contents = tf.io.read_file(path)
    if not plan.pillow_paths:
        return decode_image(contents, image_size, resize, plan)
    special = tf.reduce_any(tf.equal(path, tf.constant(plan.pillow_paths)))

    def by_pillow():
        image = pillow_decode(contents)
        return image if image_size is None else resize_image(image, image_size, resize)

    return tf.cond(special, by_pillow, lambda: decode_image(contents, image_size, resize, plan))


@dataclasses.dataclass
class CheckResult:
    """What `check_images` found.

    Attributes:
        ok: boolean mask over the input paths, true where the image decoded.
        pixels: uint8 `(n_ok, S, S, 3)` for the good images in input order, when an image size was given.
        bad: one dict (`path`, `row`, `reason`) per bad file, in input order.
    """

    ok: np.ndarray
    pixels: np.ndarray | None
    bad: list[dict]


def check_images(paths: Sequence[str], on_bad_image: str = "error", report_dir: str | os.PathLike | None = None,
                 image_size: int | None = None, resize: str = "resize", *, lines: Sequence[int] | None = None,
                 metadata: str = "") -> CheckResult:
    """Decode every image once, in parallel; raise for, or skip and list, the ones that fail.

    Args:
        paths: image files.
        on_bad_image: `"error"` raises `BadImageError` (or `MissingImageError`) naming the first bad
            file and how many there are; `"skip"` leaves them out and lists them in
            `report_dir/bad_images.csv` and the log.
        report_dir: where `bad_images.csv` goes in skip mode.
        image_size: when given, also return the decoded images resized to this square side.
        resize: `"resize"` or `"pad"` (see `decode_image`).
        lines: optional metadata line of each path, named in the error and in `bad_images.csv`.
        metadata: the metadata file those lines belong to.
    """
    result = _decode_all(paths, on_bad_image, image_size, resize, lines, metadata)
    write_bad_images(report_dir, result.bad)
    return result


def _decode_all(paths, on_bad_image, image_size, resize, lines, metadata) -> CheckResult:
    check_on_bad_image(on_bad_image)
    paths = [str(path) for path in paths]
    count = len(paths)
    # aligned, so the in-memory pipeline hands this very buffer to TensorFlow (memory.pixels_tensor)
    pixels = aligned_empty((count, image_size, image_size, 3)) if image_size else None
    seen = np.zeros(count, dtype=bool)

    plan = plan_decoding(paths, image_size, resize)

    def decode(index, path):
        image = load_image(path, image_size, resize, plan)
        return index, (image if image_size else tf.shape(image))

    dataset = (tf.data.Dataset.from_tensor_slices((np.arange(count, dtype=np.int64), tf.constant(paths, tf.string)))
               .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
               .ignore_errors()
               .batch(CHECK_BATCH)
               .prefetch(tf.data.AUTOTUNE))
    for indices, images in dataset.as_numpy_iterator():
        seen[indices] = True
        if pixels is not None:
            pixels[indices] = images
    bad = [bad_image_row(paths[index], _failure_reason(paths[index]), metadata,
                         None if lines is None else lines[index])
           for index in np.flatnonzero(~seen)]
    if bad and on_bad_image == "error":
        first = bad[0]
        where = f" ({metadata or 'metadata'} line {first['line']})" if first["line"] != "" else ""
        error = MissingImageError if first["reason"].startswith("missing") else BadImageError
        raise error(f"{first['path']}{where}: {first['reason']}; expected a readable JPEG, PNG, GIF, BMP, WebP, "
                    f"TIFF or DICOM "
                    f"({len(bad)} bad image(s) of {count}; on_bad_image='skip' lists and skips them)")
    if pixels is not None and not seen.all():
        pixels = pixels[seen]  # a copy, so only when some images were bad
    return CheckResult(ok=seen, pixels=pixels, bad=bad)


def _failure_reason(path: str) -> str:
    """Why one file failed to decode, in words (only called for the few bad files), without TensorFlow internals."""
    if not os.path.isfile(path):
        return "missing: no such image file"
    head = _read_head(path) or b""
    image_format = _format_of(head)
    if image_format == "dicom":
        try:
            read_dicom_pixels(path)
        except DataError as error:
            return f"unsupported DICOM: {str(error).removeprefix(path + ': ')}"
    if _header_pixels(head, sniff_any_format(head)) > MAX_IMAGE_PIXELS:
        return f"too large: more than {MAX_IMAGE_PIXELS} pixels (Pillow's decompression-bomb limit)"
    if image_format == "jpeg":
        reason = _jpeg_header_reason(path)
        if reason:
            return reason
    if image_format not in ("jpeg", "png") and sniff_any_format(head) in (None, "tiff"):
        try:
            pillow_rgb(path, path)
        except ImageConversionError as error:
            return str(error).removeprefix(path + ": ")
        if sniff_any_format(head) is None:
            return "unsupported format: not JPEG, PNG, GIF, BMP, WebP, TIFF or DICOM by its first bytes"
    try:
        decode_image(tf.io.read_file(path))
    except (tf.errors.OpError, ValueError) as error:
        message = getattr(error, "message", str(error)).split("[Op:")[0]
        message = re.sub(r"\{\{[^}]*\}\}", "", message).strip()
        return f"unreadable or truncated image: {message.splitlines()[-1].strip() if message else type(error).__name__}"
    return "unreadable image: failed to decode or resize"


def _jpeg_header_reason(path: str) -> str:
    """The size problem of a JPEG from its header (PIL, no decode): too large, or too few bytes for its size."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        return f"too large: more than {MAX_IMAGE_PIXELS} pixels (Pillow's decompression-bomb limit)"
    except OSError:
        return ""
    if width * height > MAX_IMAGE_PIXELS:
        return f"too large: {width}x{height} pixels; at most {MAX_IMAGE_PIXELS} are decoded"
    size = os.path.getsize(path)
    if jpeg_too_short(size, height, width):
        return (f"truncated: {size} bytes cannot hold the {width}x{height} pixels its header claims "
                "(libjpeg: premature end of data)")
    return ""


def check_table_images(table, on_bad_image: str = "error", report_dir: str | os.PathLike | None = None,
                       image_size: int | None = None, resize: str = "resize"):
    """`check_images` over an `ImageTable`: the table without its bad rows, pixels attached if sized.

    With `image_size` the returned table holds the decoded images (`table.pixels`), so later
    pipelines read them from memory and no file is decoded twice. In skip mode `bad_images.csv`
    lists every image skipped so far: the loader's missing files (`table.skipped`) and the
    undecodable ones found here, each with its metadata line; `left_out.csv` lists `table.left_out`
    (rows without a label, files of a folder that are not images).

    Args:
        table: an `ImageTable` whose images are files.
        on_bad_image: `"error"` or `"skip"` (bad rows dropped, counted, listed in `bad_images.csv`).
        report_dir: where `bad_images.csv` goes in skip mode.
        image_size: keep the images decoded at this square side; `None` only checks.
        resize: `"resize"` or `"pad"`.
    """
    # What the loader left out before decoding (rows without a label, files of a folder that are
    # not images) is listed beside bad_images.csv; the loader already logged the count.
    write_left_out(report_dir, table.left_out, summary=False)
    if table.pixels is not None:
        write_bad_images(report_dir, table.skipped)
        return table
    lines = table.frame[LINE_COLUMN].tolist() if LINE_COLUMN in table.frame.columns else None
    result = _decode_all(table.paths, on_bad_image, image_size, resize, lines, table.metadata)
    skipped = table.skipped + result.bad
    write_bad_images(report_dir, skipped)
    kept = dataclasses.replace(table.select(result.ok), skipped=skipped)
    return dataclasses.replace(kept, pixels=result.pixels) if image_size else kept
