"""DICOM images to the 8-bit RGB pixels the model sees, with pydicom.

One function, `read_dicom_pixels`, is used by the training pipeline's decode step (through
`decode.decode_image`), by `keras-med evaluate`/`explain` (which decode through the same step) and
by `keras-med predict` and the REST client (`dicom_to_png_bytes`, client side, because the
SavedModel takes JPEG/PNG bytes), so the served model sees the pixels the model was trained on.

The order is the DICOM standard's grayscale pipeline (PS3.4 N.2), with pydicom's own functions:
1. Modality LUT (`RescaleSlope`/`RescaleIntercept` or a Modality LUT Sequence): stored values to
   physical ones (Hounsfield units, optical density).
2. VOI LUT (a VOI LUT Sequence, or Window Center/Width) when the file has one; else a robust
   window over the image's own 0.5-99.5 percentiles (`window="percentile"`) or its full range
   (`window="minmax"`). The header window is what the radiologist's viewer shows.
3. MONOCHROME1 (white = low values, common in CR/DX) inverted so that bone is bright, as in
   MONOCHROME2 and in every JPEG/PNG chest X-ray set.
4. Scaling of the window to 0..255 and gray to 3 channels.

TensorFlow-free: pydicom and NumPy only.
"""

from __future__ import annotations

import io
import logging
import os
from typing import BinaryIO

import numpy as np

from keras_med.data.errors import BadImageError

logger = logging.getLogger(__name__)

DICOM_SUFFIX = ".dcm"
# A DICOM Part 10 file: a 128-byte preamble, then these four bytes.
DICOM_MAGIC = b"DICM"
DICOM_MAGIC_OFFSET = 128
WINDOWS = ("auto", "percentile", "minmax")
ROBUST_PERCENTILES = (0.5, 99.5)
# The packages pydicom uses for compressed transfer syntaxes (pydicom decodes RLE and native itself).
DECODER_PACKAGES = "pylibjpeg with pylibjpeg-libjpeg / pylibjpeg-openjpeg, or python-gdcm"


class UnsupportedDicomError(BadImageError):
    """A DICOM file this pipeline cannot turn into one 2D image (multi-frame, no pixels, missing codec)."""


def is_dicom_bytes(head: bytes) -> bool:
    """Whether `head` (the first 132 bytes or more of a file) is a DICOM Part 10 file."""
    return head[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + len(DICOM_MAGIC)] == DICOM_MAGIC


def read_dicom_pixels(source: str | os.PathLike | bytes | BinaryIO, window: str = "auto",
                      name: str | None = None) -> np.ndarray:
    """Read one single-frame DICOM image as uint8 RGB `(H, W, 3)`, display-ready (see the module docstring).

    Args:
        source: a file path, the file's bytes, or a binary file object.
        window: `"auto"` uses the file's VOI LUT or Window Center/Width and falls back to the
            0.5-99.5 percentile window; `"percentile"` and `"minmax"` ignore the header window.
        name: what to call the file in errors (default: the path, or "DICOM bytes").

    Returns:
        uint8 array `(H, W, 3)`; grayscale images repeat their one channel.

    Raises:
        UnsupportedDicomError: not a DICOM file, no pixel data, several frames, or a compressed
            transfer syntax whose decoder package is not installed (the message names it).

    Example:
        >>> pixels = read_dicom_pixels("scan.dcm")  # doctest: +SKIP
        >>> pixels.shape, pixels.dtype               # doctest: +SKIP
        ((512, 512, 3), dtype('uint8'))
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
    if name is None:
        name = "DICOM bytes" if isinstance(source, (bytes, bytearray)) else str(getattr(source, "name", source))
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        dataset = pydicom.dcmread(handle)
    except (InvalidDicomError, OSError, EOFError, ValueError) as error:
        raise UnsupportedDicomError(f"{name}: not a readable DICOM file ({error})") from error
    if "PixelData" not in dataset:
        kind = dataset.get("Modality", "") or dataset.get("SOPClassUID", "unknown")
        raise UnsupportedDicomError(f"{name}: DICOM object without pixel data ({kind}); expected an image")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnsupportedDicomError(f"{name}: multi-frame DICOM ({frames} frames); expected a single 2D image "
                                    "(export the frame you want as its own file)")
    try:
        stored = dataset.pixel_array
    except (RuntimeError, NotImplementedError, ValueError) as error:
        syntax = dataset.file_meta.get("TransferSyntaxUID", "unknown") if hasattr(dataset, "file_meta") else "unknown"
        detail = " ".join(str(error).split())  # pydicom lists the missing plugins over several lines
        raise UnsupportedDicomError(f"{name}: cannot decode its pixel data (transfer syntax {syntax}); a "
                                    f"compressed DICOM needs {DECODER_PACKAGES} installed ({detail})") from error
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if stored.ndim == 3 and stored.shape[-1] == 3:
        return _colour_to_uint8(stored, dataset)
    if stored.ndim != 2:
        raise UnsupportedDicomError(f"{name}: pixel array of shape {stored.shape}; expected one 2D image")
    values = apply_modality_lut(stored, dataset)
    use_header = window == "auto" and ("VOILUTSequence" in dataset or "WindowCenter" in dataset)
    if use_header:
        low, high = _voi_output_range(dataset)
        values = apply_voi_lut(values, dataset, index=0)
    elif window == "minmax":
        low, high = float(values.min()), float(values.max())
    else:
        low, high = (float(v) for v in np.percentile(values, ROBUST_PERCENTILES))
    scaled = _to_unit(values, low, high)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    gray = np.rint(scaled * 255.0).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def _to_unit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, np.float64)
    return np.clip((np.asarray(values, np.float64) - low) / (high - low), 0.0, 1.0)


def _voi_output_range(dataset) -> tuple[float, float]:
    """The value range `apply_voi_lut`'s output spans, so the window maps to 0..255 whatever the image.

    pydicom returns a VOI LUT's entries as they are (0..2**bits-1) and maps a window onto the
    stored value range after rescaling (`pydicom.pixels.processing.apply_windowing`); the same
    rule is followed here, so the window's bottom is 0 and its top 255.
    """
    if "VOILUTSequence" in dataset:
        item = dataset.VOILUTSequence[0]
        data = np.asarray(item.LUTData if not isinstance(item.LUTData, bytes) else
                          np.frombuffer(item.LUTData, np.uint16))
        return float(data.min()), float(data.max())
    if dataset.get("ModalityLUTSequence"):
        low, high = 0.0, float(2 ** dataset.ModalityLUTSequence[0].LUTDescriptor[2] - 1)
    elif int(dataset.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, float(2 ** int(dataset.BitsStored) - 1)
    else:
        low, high = float(-(2 ** (int(dataset.BitsStored) - 1))), float(2 ** (int(dataset.BitsStored) - 1) - 1)
    slope, intercept = dataset.get("RescaleSlope"), dataset.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return low, high


def _colour_to_uint8(stored: np.ndarray, dataset) -> np.ndarray:
    """RGB (pydicom already converts YBR to RGB) at 8 bits; no modality or VOI LUT applies to colour."""
    if stored.dtype == np.uint8:
        return stored
    top = float(2 ** int(dataset.get("BitsStored", 16)) - 1)
    return np.rint(np.clip(stored / top, 0.0, 1.0) * 255.0).astype(np.uint8)


def dicom_to_png_bytes(source: str | os.PathLike | bytes, name: str | None = None) -> bytes:
    """`read_dicom_pixels` encoded as a lossless PNG, for clients of the SavedModel (which takes JPEG/PNG).

    Args:
        source: a DICOM file path or its bytes.
        name: what to call the file in errors.
    """
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(read_dicom_pixels(source, name=name)).save(buffer, format="PNG")
    return buffer.getvalue()


def read_dicom_tags(path: str | os.PathLike, keywords: list[str]) -> dict[str, str]:
    """Header values by keyword (e.g. `ViewPosition`, `PatientSex`, `PatientAge`, `Manufacturer`), pixels unread.

    Args:
        path: a DICOM file.
        keywords: DICOM keywords; a keyword the file lacks gives `""`.
    """
    import pydicom

    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    return {keyword: str(dataset.get(keyword, "") or "") for keyword in keywords}


def write_dicom_image(path: str | os.PathLike, pixels: np.ndarray, *, photometric: str = "MONOCHROME2",
                      bits_stored: int | None = None, rescale: tuple[float, float] | None = None,
                      window: tuple[float, float] | None = None, frames: int = 1) -> None:
    """Write a small uncompressed DICOM image (for demos and tests; not a clinical writer).

    Args:
        path: the `.dcm` file to write.
        pixels: stored values: `(H, W)` uint8/uint16 grayscale, `(H, W, 3)` uint8 RGB, or
            `(frames, H, W)` with `frames > 1`.
        photometric: `MONOCHROME1`, `MONOCHROME2` or `RGB`.
        bits_stored: significant bits (default: the dtype's).
        rescale: `(slope, intercept)` of the Modality LUT, or None.
        window: `(center, width)` of the VOI window, or None.
        frames: number of frames in `pixels` (several: a multi-frame object).
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = DicomDataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "OT"
    pixels = np.asarray(pixels)
    dataset.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    if frames > 1:
        dataset.NumberOfFrames = frames
    if rescale is not None:
        dataset.RescaleSlope, dataset.RescaleIntercept = (f"{value:g}" for value in rescale)
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = (f"{value:g}" for value in window)
    dataset.save_as(path, enforce_file_format=True)
