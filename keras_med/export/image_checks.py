"""Per-row checks of the serving graph: decode every image it can, and say why for the others.

A request is a batch, and TensorFlow cannot catch an op's error inside a graph: one corrupt
image handed to ``decode_jpeg`` fails the whole request. So the rows are decoded inside a
``tf.data`` pass ended by ``ignore_errors()`` (a dataset op, so it runs in TF Serving without
Python), each element carrying its row index: a row whose index does not come back failed to
decode, and only that row is flagged. Measured (benchmarks/serving_latency.py, 2-core CPU, five runs): the
decode stage of one 200x150 JPEG takes 1.4-3.1 ms against 0.8-1.1 ms for the ``tf.map_fn`` it
replaces, and a batch of 32 about the same (16 ms); the whole single-image request stays at
0.10x ``model.predict``. The map is sequential: a parallel map (AUTOTUNE) was no faster on one
image and mixed on 32 (11-27 ms), and a server already runs requests in parallel.

Before decoding, cheap tests on the bytes and the header catch what the decoder would accept
or what it should not try: the format by magic bytes (never by file name), the width and height
from the header (too small to be a real image, or so large that decoding would exhaust memory).
After a decode failure, the ending of the bytes tells a truncated file from a corrupt one.

Every row answers a ``reason`` string, "" when valid, else ``"<code>: <explanation>"`` with a
code from ``REASON_CODES`` (documented in docs/serving.md), so a program can split on ":".
"""

from __future__ import annotations

import tensorflow as tf

from keras_med.image_convert import JPEG_MAX_PIXELS_PER_BYTE, MAX_IMAGE_PIXELS
from keras_med.image_format import FORMATS, SECOND_SIGNATURES, SIGNATURES

# MAX_IMAGE_PIXELS is Pillow's decompression-bomb limit, the one training applies too
# (keras_med.image_convert): a header can claim 100000 x 100000 pixels in a few bytes, and
# decoding it would take 30 GB.
REASON_CODES = ("empty", "unknown_format", "truncated", "corrupt", "too_small", "too_large", "bad_pixels")

# Format codes in the graph: 0 for none, then 1.. in the order of keras_med.image_format.FORMATS.
_UNKNOWN = 0
_CODE = {name: index + 1 for index, name in enumerate(FORMATS)}
# What a complete file of the format ends with; absent means the file was cut short.
_ENDINGS = {
    "jpeg": (b"\xff\xd9", "truncated: the JPEG ends before its end-of-image marker"),
    "png": (b"\x00\x00\x00\x00IEND\xaeB`\x82", "truncated: the PNG ends before its IEND chunk"),
    "gif": (b";", "truncated: the GIF ends before its trailer"),
}
_EMPTY = "empty: no image bytes were sent"
_UNKNOWN_FORMAT = "unknown_format: not a JPEG, PNG, GIF, BMP or WebP image (judged by its first bytes)"
_BAD_PIXELS = "bad_pixels: pixel values must be finite and within 0..255"


def sniff_formats(image_bytes: tf.Tensor) -> tf.Tensor:
    """The format code of each row of a string tensor (B,) by its magic bytes; 0 when unknown."""
    codes = tf.zeros(tf.shape(image_bytes), tf.int32)
    for name, magics in SIGNATURES.items():
        offset, second = SECOND_SIGNATURES.get(name, (0, b""))
        for magic in magics:
            match = tf.equal(tf.strings.substr(image_bytes, 0, len(magic)), magic)
            if second:
                # padded: substr fails on a row shorter than the offset (an empty or 3-byte upload)
                padded = tf.strings.join([image_bytes, b"\x00" * (offset + len(second))])
                match &= tf.equal(tf.strings.substr(padded, offset, len(second)), second)
            codes = tf.where(match & tf.equal(codes, _UNKNOWN), _CODE[name], codes)
    return codes


def header_dims(data: tf.Tensor, code: tf.Tensor) -> tf.Tensor:
    """``[height, width]`` (int64) from the header of one encoded image; raises when it cannot be read.

    JPEG: TensorFlow's own header parser. PNG: the IHDR chunk (big-endian, bytes 16-23). GIF: the
    logical screen (little-endian, bytes 6-9). BMP: the info header (little-endian int32 at 18
    and 22; a negative height means a top-down bitmap). WebP (RFC 9649): by its first chunk,
    `VP8X` (24-bit width-1 and height-1 at 24 and 27), `VP8L` (14-bit width-1 and height-1
    packed from byte 21) or `VP8 ` (14-bit width and height at 26 and 28).
    """

    def unsigned(start, length, big_endian):
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, start, length), tf.uint8), tf.int64)
        weights = [256 ** power for power in range(length)]
        return tf.reduce_sum(raw * tf.constant(weights[::-1] if big_endian else weights, tf.int64))

    def bmp():
        height = unsigned(22, 4, big_endian=False)
        height = tf.where(height >= 2 ** 31, 2 ** 32 - height, height)
        return tf.stack([height, unsigned(18, 4, big_endian=False)])

    def webp():
        chunk = tf.strings.substr(data, 12, 4)
        extended = tf.stack([unsigned(27, 3, False) + 1, unsigned(24, 3, False) + 1])
        bits = unsigned(21, 4, False)
        lossless = tf.stack([(bits // 2 ** 14) % 2 ** 14 + 1, bits % 2 ** 14 + 1])
        lossy = tf.stack([unsigned(28, 2, False) % 2 ** 14, unsigned(26, 2, False) % 2 ** 14])
        return tf.where(tf.equal(chunk, "VP8X"), extended, tf.where(tf.equal(chunk, "VP8L"), lossless, lossy))

    branches = {
        _UNKNOWN: lambda: tf.constant([-1, -1], tf.int64),
        _CODE["jpeg"]: lambda: tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64),
        _CODE["png"]: lambda: tf.stack([unsigned(20, 4, True), unsigned(16, 4, True)]),
        _CODE["gif"]: lambda: tf.stack([unsigned(8, 2, False), unsigned(6, 2, False)]),
        _CODE["bmp"]: bmp,
        _CODE["webp"]: webp,
    }
    return tf.switch_case(code, [branches[index] for index in range(len(branches))])


def decode_rows(image_bytes: tf.Tensor, formats: tf.Tensor, decode, image_size: int, min_size: int):
    """Decode every row that can be decoded; the others get zeros.

    Args:
        image_bytes: string (B,) encoded images.
        formats: int32 (B,) from ``sniff_formats``; rows of code 0 are not tried.
        decode: Function from one encoded image (scalar string) to float32 (S, S, 3).
        image_size: S.
        min_size: Smallest short side answered; smaller images are not decoded.

    Returns:
        ``(images, dims, decoded)``: float32 (B, S, S, 3); int64 (B, 2) height and width read
        from the header (-1 where it could not be read); bool (B,) true where the image decoded.
    """
    count = tf.shape(image_bytes, out_type=tf.int64)[0]
    blank = tf.zeros([image_size, image_size, 3], tf.float32)
    rows = tf.where(formats != _UNKNOWN)[:, 0]

    def decode_one(index, data, code):
        # A header that claims no pixels is corrupt, not small: fail the row like a decode error.
        dims = header_dims(data, code)
        with tf.control_dependencies([tf.debugging.assert_positive(dims, message="image header claims no pixels")]):
            dims = tf.identity(dims)
        fits = ((tf.reduce_min(dims) >= min_size) & (dims[0] * dims[1] <= MAX_IMAGE_PIXELS)
                & ~_jpeg_too_short(data, code, dims))
        image = tf.cond(fits, lambda: tf.ensure_shape(decode(data), blank.shape), lambda: blank)
        return index, image, dims, fits

    survivors = (tf.data.Dataset.from_tensor_slices((rows, tf.gather(image_bytes, rows), tf.gather(formats, rows)))
                 .map(decode_one)
                 .ignore_errors())
    # One sentinel row (index B, dropped below) so that the single batch exists even when every
    # row failed or the request is empty.
    sentinel = tf.data.Dataset.from_tensors((count, blank, tf.constant([-1, -1], tf.int64), False))
    index, images, dims, fits = survivors.concatenate(sentinel).batch(count + 1).get_single_element()
    where = index[:, None]
    # The static shape matters: with (?, ?, ?, ?) the model's graph is not optimised for its input
    # (single-image requests took ~50% longer, measured).
    images = tf.ensure_shape(tf.scatter_nd(where, images, tf.stack([count + 1, image_size, image_size, 3]))[:-1],
                             [None, image_size, image_size, 3])
    # scatter_nd adds into zeros: shift dims by one so that rows never written read -1.
    dims = tf.scatter_nd(where, dims + 1, tf.stack([count + 1, 2]))[:-1] - 1
    decoded = tf.scatter_nd(where, tf.cast(fits, tf.int32), tf.reshape(count + 1, [1]))[:-1] > 0
    return images, dims, decoded


def _jpeg_too_short(data: tf.Tensor, code: tf.Tensor, dims: tf.Tensor) -> tf.Tensor:
    """True for a JPEG with fewer bytes than its header's size needs (keras_med.image_convert.jpeg_too_short).

    libjpeg only warns "premature end of data segment" and fills the missing rows with grey, which
    would be answered as a valid image.
    """
    length = tf.cast(tf.strings.length(data), tf.int64)
    return tf.equal(code, _CODE["jpeg"]) & (length * JPEG_MAX_PIXELS_PER_BYTE < dims[..., 0] * dims[..., 1])


def byte_reasons(image_bytes: tf.Tensor, formats: tf.Tensor, dims: tf.Tensor, decoded: tf.Tensor,
                 min_size: int) -> tf.Tensor:
    """Why each row of ``serving_default`` is not answered ("" where it is), as a string (B,).

    Args:
        image_bytes: string (B,) as sent.
        formats: int32 (B,) from ``sniff_formats``.
        dims: int64 (B, 2) from ``decode_rows``.
        decoded: bool (B,) from ``decode_rows``.
        min_size: Smallest short side answered.
    """
    failed = _decode_failure_reasons(image_bytes, formats)
    height, width = dims[:, 0], dims[:, 1]
    size = tf.strings.join([tf.strings.as_string(width), "x", tf.strings.as_string(height), " pixels"])
    too_small = tf.strings.join(["too_small: ", size, f"; the model needs at least {min_size} on the short side"])
    too_large = tf.strings.join(["too_large: ", size, f"; the model takes at most {MAX_IMAGE_PIXELS} pixels"])
    header_read = tf.reduce_min(dims, axis=-1) >= 0
    reasons = tf.where(decoded, "", failed)
    reasons = tf.where(header_read & (tf.minimum(height, width) < min_size), too_small, reasons)
    reasons = tf.where(header_read & ~decoded & (height * width > MAX_IMAGE_PIXELS), too_large, reasons)
    short = tf.strings.join(["truncated: the JPEG holds ", tf.strings.as_string(tf.strings.length(image_bytes)),
                             " bytes, too few for its ", size, " (premature end of data)"])
    reasons = tf.where(header_read & ~decoded & _jpeg_too_short(image_bytes, formats, dims), short, reasons)
    reasons = tf.where(tf.equal(formats, _UNKNOWN), _UNKNOWN_FORMAT, reasons)
    return tf.where(tf.equal(tf.strings.length(image_bytes), 0), _EMPTY, reasons)


def pixel_reasons(pixels: tf.Tensor, min_size: int) -> tf.Tensor:
    """Why each image of ``predict_pixels`` (float32 (B, H, W, 3)) is not answered ("" where it is)."""
    in_range = tf.reduce_all(tf.math.is_finite(pixels) & (pixels >= 0.0) & (pixels <= 255.0), axis=[1, 2, 3])
    reasons = tf.where(in_range, "", _BAD_PIXELS)
    height, width = tf.shape(pixels)[1], tf.shape(pixels)[2]
    too_small = tf.strings.join(["too_small: ", tf.strings.as_string(width), "x", tf.strings.as_string(height),
                                 f" pixels; the model needs at least {min_size} on the short side"])
    return tf.where(tf.minimum(height, width) < min_size, too_small, reasons)


def _decode_failure_reasons(image_bytes: tf.Tensor, formats: tf.Tensor) -> tf.Tensor:
    """The reason for a row whose decode failed: truncated when its format's ending is missing."""
    # Left-pad so that the last-bytes slice exists even for rows shorter than the longest ending.
    longest = max(len(ending) for ending, _ in _ENDINGS.values())
    padded = tf.strings.join([b"\x00" * longest, image_bytes])
    length = tf.strings.length(padded)
    names = tf.constant(["image", *(name.upper() for name in FORMATS)])
    reasons = tf.strings.join(["corrupt: the ", tf.gather(names, formats), " decoder could not read it"])
    for name, (ending, reason) in _ENDINGS.items():
        size = tf.fill(tf.shape(length), len(ending))
        ends_well = tf.equal(tf.strings.substr(padded, length - size, size), ending)
        reasons = tf.where(tf.equal(formats, _CODE[name]) & ~ends_well, reason, reasons)
    return reasons
