"""Images the TensorFlow decoders cannot take as they are, turned into the pixels a viewer shows, with Pillow.

One function per job, shared by training and the clients so that both see the same pixels:

- `pillow_rgb`: TIFF (histology, microscopy), EXIF-rotated photos and any other format Pillow
  reads, as uint8 RGB with the EXIF orientation applied (`ImageOps.exif_transpose`, what every
  viewer does). The training decode (`keras_med.data.decode`) calls it for such files.
- `image_bytes_for_model`: what `keras-med predict`, the REST client and the page send to the
  served model. The served graph decodes JPEG/PNG/GIF/BMP/WebP with TensorFlow ops, which ignore
  EXIF and know no TIFF, so the client converts DICOM, TIFF and EXIF-rotated JPEGs to a lossless
  PNG of exactly the pixels training decodes, and sends every other image unchanged.

The pixel limit is Pillow's decompression-bomb limit, the one the served graph applies too: a
header can claim 100000 x 100000 pixels in a few bytes. TensorFlow-free: Pillow and NumPy only.
"""

from __future__ import annotations

import io
import os

import numpy as np

from keras_med.errors import UserError
from keras_med.image_format import sniff_image_format

# Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS = 1024**3 // 4 // 3).
MAX_IMAGE_PIXELS = 89_478_485
EXIF_ORIENTATION = 0x0112
# A JPEG codes at least one bit per 8x8 block of each component with Huffman tables, so fewer than
# one byte per 2048 pixels (1 bit per 4 blocks, a margin for arithmetic coding) cannot hold the
# image its header claims: libjpeg then only warns "premature end of data segment" and fills the
# rest with grey, which must be called truncated rather than answered.
JPEG_MAX_PIXELS_PER_BYTE = 2048
TIFF_MAGICS = (b"II*\x00", b"MM\x00*")
SERVED_FORMATS = ("jpeg", "png", "gif", "bmp", "webp")


class ImageConversionError(UserError, ValueError):
    """An image Pillow cannot read, or one too large to decode; the message names it and why."""


def sniff_any_format(data: bytes) -> str | None:
    """`sniff_image_format`, plus `"tiff"` (read by Pillow here, not by the served graph)."""
    head = bytes(data[:16])
    served = sniff_image_format(head)
    if served:
        return served
    if head.startswith(TIFF_MAGICS):
        return "tiff"
    return None


def jpeg_too_short(n_bytes: int, height: int, width: int) -> bool:
    """Whether a JPEG of `n_bytes` is too short for its header's `height x width` (see the constant)."""
    return n_bytes * JPEG_MAX_PIXELS_PER_BYTE < height * width


def _open(source, name: str):
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except Image.DecompressionBombError as error:
        raise ImageConversionError(f"{name}: too_large: {error}") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageConversionError(f"{name}: unreadable image: {error}") from error
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise ImageConversionError(f"{name}: too_large: {width}x{height} pixels; at most {MAX_IMAGE_PIXELS} "
                                   "are decoded (Pillow's decompression-bomb limit)")
    return image


def exif_orientation(source: bytes | str | os.PathLike, name: str = "image") -> int:
    """The EXIF orientation (1..8) of an image file or its bytes; 1 when it has none or cannot be read."""
    try:
        with _open(source, name) as image:
            value = image.getexif().get(EXIF_ORIENTATION, 1)
    except (ImageConversionError, OSError, ValueError, SyntaxError):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def pillow_rgb(source: bytes | str | os.PathLike, name: str = "image") -> np.ndarray:
    """uint8 RGB `(H, W, 3)` of an image as a viewer shows it: EXIF orientation applied, first frame.

    16-bit grey (TIFF, PNG) is scaled by 1/257 to 0..255, as TensorFlow's PNG decoder does, and
    alpha is dropped, as `decode_image(channels=3)` does, so that a file gives the same pixels
    whichever decoder reads it.

    Raises:
        ImageConversionError: unreadable, truncated or over `MAX_IMAGE_PIXELS`.
    """
    from PIL import ImageOps

    with _open(source, name) as image:
        try:
            image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            array = np.asarray(image)
            mode = image.mode
        except (OSError, ValueError, SyntaxError) as error:
            raise ImageConversionError(f"{name}: unreadable or truncated image: {error}") from error
        if mode.startswith("I;16") or mode in ("I", "F"):
            array = np.clip(array.astype(np.float64) / (257.0 if mode != "F" else 1.0) + 0.5, 0, 255).astype(np.uint8)
        elif mode not in ("L", "RGB", "RGBA", "LA"):
            array = np.asarray(image.convert("RGBA" if "A" in mode or "transparency" in image.info else "RGB"))
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] in (2, 4):  # drop alpha
        array = array[..., :-1]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3], dtype=np.uint8)


def needs_pillow(data: bytes, name: str = "image") -> bool:
    """Whether TensorFlow's decoders would not give the viewer's pixels: TIFF, another format, or EXIF-rotated."""
    image_format = sniff_any_format(data)
    if image_format not in SERVED_FORMATS:
        return True
    return image_format == "jpeg" and exif_orientation(bytes(data), name) != 1


def image_bytes_for_model(data: bytes, name: str = "image") -> bytes:
    """The bytes to send to the served model for an image file's bytes (see the module docstring).

    DICOM goes through `keras_med.data.dicom` (the training decode's function); TIFF, any other
    Pillow format and EXIF-rotated JPEGs become a lossless PNG of `pillow_rgb`; a plain JPEG, PNG,
    GIF, BMP or WebP is returned unchanged (the served graph judges truncation and size).

    Raises:
        ImageConversionError: neither an image the served model takes nor one Pillow can read.
    """
    from keras_med.data.dicom import DICOM_MAGIC, DICOM_MAGIC_OFFSET

    if bytes(data[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + len(DICOM_MAGIC)]) == DICOM_MAGIC:
        from keras_med.data.dicom import dicom_to_png_bytes

        return dicom_to_png_bytes(bytes(data), name=name)
    if not needs_pillow(data, name):
        return bytes(data)
    if sniff_any_format(data) is None:
        # Pillow reads dozens of formats; one it reads but sniff_any_format does not know (JPEG 2000,
        # PPM...) is converted too, and anything else is named as not an image.
        try:
            pixels = pillow_rgb(bytes(data), name)
        except ImageConversionError as error:
            raise ImageConversionError(f"{name}: not a JPEG, PNG, GIF or BMP image, nor a TIFF, WebP or DICOM "
                                       f"file (starts with {bytes(data[:8])!r})") from error
    else:
        pixels = pillow_rgb(bytes(data), name)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
