"""Which image format a byte string holds, by its magic bytes (never by the file name).

Pure Python, so that clients that do not import TensorFlow (the REST client, a file check)
can use it. The serving graph makes the same test with TensorFlow ops
(``keras_med.export.image_checks``), from the same ``SIGNATURES`` table.
"""

from __future__ import annotations

# Format name -> the byte strings a file of that format starts with. BMP's "BM" is short, but
# TensorFlow's BMP decoder is the judge of the rest: a wrong guess is a decode failure, named.
SIGNATURES = {
    "jpeg": (b"\xff\xd8\xff",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "gif": (b"GIF87a", b"GIF89a"),
    "bmp": (b"BM",),
    "webp": (b"RIFF",),
}
# A second test for formats whose first bytes are a container's: RIFF also holds WAV and AVI, and
# only the form type at byte 8 says WebP.
SECOND_SIGNATURES = {"webp": (8, b"WEBP")}
FORMATS = tuple(SIGNATURES)


def sniff_image_format(data: bytes) -> str | None:
    """The format of encoded image bytes: ``"jpeg"``, ``"png"``, ``"gif"``, ``"bmp"``, ``"webp"``, or None.

    Args:
        data: The first bytes of a file (16 are enough) or the whole file.

    Returns:
        The format name, or None when the bytes start like none of them.

    Example:

    >>> sniff_image_format(b"\\x89PNG\\r\\n\\x1a\\n...")
    'png'
    >>> sniff_image_format(b"hello") is None
    True
    """
    head = bytes(data[:16])
    for name, magics in SIGNATURES.items():
        offset, second = SECOND_SIGNATURES.get(name, (0, b""))
        if head.startswith(magics) and head[offset:offset + len(second)] == second:
            return name
    return None
