"""Formats and orientation: every file of a class folder used or listed, TIFF/WebP/GIF/BMP decode, EXIF
applied the same in training and in the client conversion, oversized and lying headers named, sniffed CSV delimiters."""

from __future__ import annotations

import io
import logging
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from keras_med.data import BadImageError, check_images, check_table_images, load_image, load_image_folder
from keras_med.data.decode import plan_decoding
from keras_med.data.sources.table import load_image_table
from keras_med.image_convert import ImageConversionError, image_bytes_for_model, pillow_rgb

# Left half white, right half black: any rotation or mirror moves the white half.
HALVES = np.zeros((20, 40, 3), np.uint8)
HALVES[:, :20] = 255


def _save(path, pixels=HALVES, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **options)
    return path


def _rotated_jpeg(path, orientation=6):
    """A JPEG of HALVES tagged with an EXIF orientation (6: a viewer turns it 90 degrees clockwise)."""
    image = Image.fromarray(HALVES)
    exif = image.getexif()
    exif[0x0112] = orientation
    return _save(path, HALVES, exif=exif.tobytes(), quality=95)


def _lying_jpeg(path, side=9000):
    """A real 8x8 JPEG whose header claims side x side (libjpeg: 'premature end of data', grey fill)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    frame = data.find(b"\xff\xc0")
    data[frame + 5:frame + 9] = side.to_bytes(2, "big") * 2
    path.write_bytes(bytes(data))
    return path


def _huge_png(path, side=20000):
    """A valid PNG header claiming side x side (over Pillow's bomb limit) with a tiny, truncated body."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = side.to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # the IHDR chunk's CRC, so Pillow reads it
    path.write_bytes(bytes(data))
    return path


# --- a folder per class: every file used or listed --------------------------------------------------

def test_folder_reads_every_format_and_sub_folders_and_lists_what_it_leaves_out(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    root = tmp_path / "data"
    for name in ("a.tif", "b.tiff", "c.gif", "d.bmp", "e.webp", "f.jpe", "g.JPG", "patient7/h.png"):
        _save(root / "mel" / name)
    _save(root / "nv" / "i.png")
    (root / "nv" / "notes.txt").write_text("not an image")
    (root / "nv" / ".DS_Store").write_bytes(b"\0\0")
    _save(root / "nv" / "._i.png")
    _save(root / "nv" / ".thumbs" / "j.png")
    (root / "README").write_text("loose file beside the class folders")

    table = load_image_folder(root, report_dir=tmp_path / "run")

    used = sorted(path.split("/data/")[1] for path in table.paths)
    assert used == ["mel/a.tif", "mel/b.tiff", "mel/c.gif", "mel/d.bmp", "mel/e.webp", "mel/f.jpe", "mel/g.JPG",
                    "mel/patient7/h.png", "nv/i.png"]
    listed = pd.read_csv(tmp_path / "run" / "left_out.csv")
    reasons = dict(zip(listed["path"].str.split("/data/").str[1], listed["reason"]))
    assert set(reasons) == {"README", "nv/notes.txt", "nv/.DS_Store", "nv/._i.png", "nv/.thumbs/j.png"}
    assert reasons["README"].startswith("not in a class folder")
    assert reasons["nv/notes.txt"].startswith("unsupported extension '.txt'")
    assert reasons["nv/.DS_Store"] == reasons["nv/._i.png"] == "hidden file"
    assert reasons["nv/.thumbs/j.png"] == "in a hidden folder"
    assert len(table.left_out) == 5
    assert "left out 5 files of" in caplog.text and "1 image(s) are in sub-folders" in caplog.text
    # every one of them decodes, and the recipe engine's decode check lists what was left out
    checked = check_table_images(table, "error", report_dir=tmp_path / "engine")
    assert len(checked) == 9
    assert pd.read_csv(tmp_path / "engine" / "left_out.csv").equals(listed)


# --- decoding: TIFF, WebP under a .jpg name, EXIF orientation -----------------------------------------

def test_tiff_and_webp_named_jpg_decode_to_the_same_pixels_as_png(tmp_path):
    png = _save(tmp_path / "x.png")
    tiff = _save(tmp_path / "x.tif")
    webp = _save(tmp_path / "x.jpg", format="WEBP", lossless=True)
    sixteen = tmp_path / "x16.tif"
    Image.fromarray((HALVES[..., 0].astype(np.uint16) * 257)).save(sixteen)
    for path in (tiff, webp, sixteen):
        np.testing.assert_array_equal(load_image(str(path)).numpy(), load_image(str(png)).numpy())
    result = check_images([str(png), str(tiff), str(webp)], "error", image_size=10)
    np.testing.assert_array_equal(result.pixels[1], result.pixels[0])
    np.testing.assert_array_equal(result.pixels[2], result.pixels[0])


def test_exif_orientation_is_applied_in_the_check_pass_and_eager_decode(tmp_path):
    rotated = _rotated_jpeg(tmp_path / "phone.jpg")
    plain = _save(tmp_path / "plain.jpg", quality=95)
    plan = plan_decoding([str(rotated), str(plain)], None)
    assert plan.pillow_paths == (str(rotated),)

    image = load_image(str(rotated)).numpy()
    assert image.shape == (40, 20, 3)  # turned 90 degrees: the white half is now on top
    assert image[:18].mean() > 240 and image[22:].mean() < 15
    result = check_images([str(rotated), str(plain)], "error", image_size=16)
    assert result.pixels[0][:7].mean() > 240 and result.pixels[0][9:].mean() < 15
    assert result.pixels[1][:, :7].mean() > 240 and result.pixels[1][:, 9:].mean() < 15


# --- decode errors named per file ---------------------------------------------------------------------

def test_a_decompression_bomb_is_skipped_or_refused_per_file(tmp_path):
    good = _save(tmp_path / "good.png")
    huge = _huge_png(tmp_path / "huge.png")
    assert plan_decoding([str(good), str(huge)], 16).pillow_paths == (str(huge),)
    result = check_images([str(good), str(huge)], "skip", report_dir=tmp_path / "run", image_size=16)
    assert result.ok.tolist() == [True, False] and result.pixels.shape == (1, 16, 16, 3)
    assert result.bad[0]["reason"].startswith("too large")
    with pytest.raises(BadImageError, match=r"huge.png: too large"):
        check_images([str(good), str(huge)], "error")


def test_a_jpeg_whose_header_claims_more_than_its_bytes_is_truncated(tmp_path):
    liar = _lying_jpeg(tmp_path / "liar.jpg")
    good = _save(tmp_path / "good.jpg")
    result = check_images([str(good), str(liar)], "skip", image_size=16)
    assert result.ok.tolist() == [True, False]
    assert result.bad[0]["reason"].startswith("truncated: ") and "9000x9000" in result.bad[0]["reason"]


def test_a_tiff_row_in_a_table_decodes_and_a_bad_one_is_named_without_tensorflow_internals(tmp_path):
    _save(tmp_path / "images" / "a.tif")
    _save(tmp_path / "images" / "b.png")
    (tmp_path / "images" / "c.tif").write_bytes(b"II*\x00 not really a TIFF")
    pd.DataFrame({"file": ["a.tif", "b.png", "c.tif"], "y": ["x", "y", "y"]}).to_csv(tmp_path / "t.csv", index=False)
    table = load_image_table(tmp_path / "t.csv", tmp_path / "images", image_column="file", label_column="y")
    checked = check_table_images(table, "skip", image_size=8)
    assert checked.frame["file"].tolist() == ["a.tif", "b.png"]
    reason = checked.skipped[0]["reason"]
    assert reason.startswith("unreadable image") and "{{" not in reason and "function_node" not in reason


# --- the client conversion sends the pixels training decodes -----------------------------------------

def test_clients_convert_exif_and_tiff_to_the_pixels_training_decodes(tmp_path):
    import tensorflow as tf

    rotated = _rotated_jpeg(tmp_path / "phone.jpg")
    tiff = _save(tmp_path / "x.tif")
    for path in (rotated, tiff):
        sent = image_bytes_for_model(path.read_bytes(), str(path))
        assert sent.startswith(b"\x89PNG")  # a format the served graph decodes
        np.testing.assert_array_equal(tf.io.decode_png(sent, channels=3).numpy(), load_image(str(path)).numpy())
    plain = _save(tmp_path / "plain.jpg").read_bytes()
    assert image_bytes_for_model(plain) == plain  # sent untouched
    with pytest.raises(ImageConversionError, match="notes.txt: not a JPEG, PNG, GIF or BMP image"):
        image_bytes_for_model(b"hello, not an image", "notes.txt")
    with pytest.raises(ImageConversionError, match="too_large"):
        pillow_rgb(_huge_png(tmp_path / "huge.png").read_bytes(), "huge.png")


def test_the_served_graph_calls_a_lying_jpeg_truncated(tmp_path):
    import tensorflow as tf

    from keras_med.data.decode import decode_image
    from keras_med.export import image_checks

    good = _save(tmp_path / "good.jpg").read_bytes()
    liar = _lying_jpeg(tmp_path / "liar.jpg").read_bytes()
    image_bytes = tf.constant([good, liar])
    formats = image_checks.sniff_formats(image_bytes)
    decode = lambda data: tf.cast(decode_image(data, 16), tf.float32)  # noqa: E731
    _, dims, decoded = image_checks.decode_rows(image_bytes, formats, decode, 16, 4)
    reasons = image_checks.byte_reasons(image_bytes, formats, dims, decoded, 4).numpy()
    assert decoded.numpy().tolist() == [True, False]
    assert reasons[0] == b"" and reasons[1].startswith(b"truncated: the JPEG holds")


# --- tables: the delimiter is sniffed -----------------------------------------------------------------

@pytest.mark.parametrize("delimiter", [";", "\t", ","])
def test_a_semicolon_or_tab_table_is_read_and_its_delimiter_logged(tmp_path, delimiter, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("a.png", "b.png"):
        _save(tmp_path / "images" / name)
    (tmp_path / "t.csv").write_text(delimiter.join(["file", "dx", "note"]) + "\n"
                                    + delimiter.join(["a.png", "mel", "3,5 mm"]) + "\n"
                                    + delimiter.join(["b.png", "nv", "Effusion|Mass"]) + "\n")
    if delimiter == ",":
        (tmp_path / "t.csv").write_text('file,dx,note\na.png,mel,"3,5 mm"\nb.png,nv,Effusion|Mass\n')
    table = load_image_table(tmp_path / "t.csv", tmp_path / "images", image_column="file", label_column="dx")
    assert table.frame["note"].tolist() == ["3,5 mm", "Effusion|Mass"]
    assert f"read as CSV with delimiter {delimiter!r}" in caplog.text


def _description_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "a dermatoscope photo"  # ImageDescription: any EXIF makes Pillow write the VP8X header
    return exif.tobytes()


@pytest.mark.parametrize("options", [{"lossless": True}, {"quality": 90}, {"quality": 90, "exif": _description_exif()}],
                         ids=["VP8L", "VP8", "VP8X"])
def test_the_served_graph_reads_webp_headers_and_decodes_it_as_training_does(tmp_path, options):
    import tensorflow as tf

    from keras_med.data.decode import decode_image
    from keras_med.export import image_checks
    from keras_med.image_format import sniff_image_format

    pixels = np.random.default_rng(0).integers(0, 255, (37, 50, 3), dtype=np.uint8)
    webp = _save(tmp_path / "x.jpg", pixels, format="WEBP", **options).read_bytes()
    kind = webp[12:16]
    assert kind == {"VP8L": b"VP8L", "VP8": b"VP8 ", "VP8X": b"VP8X"}[
        "VP8L" if options.get("lossless") else "VP8X" if "exif" in options else "VP8"]
    assert sniff_image_format(webp) == "webp" and sniff_image_format(b"RIFF\0\0\0\0WAVEfmt ") is None
    assert image_bytes_for_model(webp) == webp  # sent as it is: the served graph decodes WebP
    image_bytes = tf.constant([webp, b"", b"RIFF", webp[:20]])  # with rows too short for the WEBP test
    formats = image_checks.sniff_formats(image_bytes)
    decode = lambda data: tf.cast(decode_image(data, 16), tf.float32)  # noqa: E731
    images, dims, decoded = image_checks.decode_rows(image_bytes, formats, decode, 16, 4)
    assert dims.numpy()[0].tolist() == [37, 50] and decoded.numpy().tolist() == [True, False, False, False]
    reasons = image_checks.byte_reasons(image_bytes, formats, dims, decoded, 4).numpy()
    assert [reason.split(b":")[0] for reason in reasons] == [b"", b"empty", b"unknown_format", b"corrupt"]
    np.testing.assert_array_equal(images.numpy()[0], check_images([str(tmp_path / "x.jpg")], image_size=16).pixels[0])


def test_folder_has_images_looks_into_sub_folders_but_not_hidden_ones(tmp_path):
    from keras_med.data.files import folder_has_images

    _save(tmp_path / "nested" / "patient1" / "a.tif")
    _save(tmp_path / "hidden" / ".cache" / "a.png")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("x")
    assert [folder_has_images(tmp_path / name) for name in ("nested", "hidden", "text")] == [True, False, False]
