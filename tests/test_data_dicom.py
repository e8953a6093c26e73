"""DICOM input: pydicom-written files through the LUT order, the decode step, the pipeline and predict's client side."""

import io

import numpy as np
import pytest
from PIL import Image

from keras_med.data import BadImageError, build_image_pipeline, check_images, load_image
from keras_med.data.decode import plan_decoding, sniff_format
from keras_med.data.dicom import (UnsupportedDicomError, dicom_to_png_bytes, read_dicom_pixels, read_dicom_tags,
                                  write_dicom_image)

RAMP = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))  # 4 x 16, 0..240


def gray(pixels: np.ndarray) -> np.ndarray:
    assert pixels.dtype == np.uint8 and pixels.shape[-1] == 3
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])
    return pixels[..., 0].astype(int)


def test_monochrome2_8_bit_without_window_uses_the_percentile_window(tmp_path):
    write_dicom_image(tmp_path / "m2.dcm", RAMP)
    pixels = gray(read_dicom_pixels(tmp_path / "m2.dcm"))
    assert pixels.shape == (4, 16)
    assert np.all(np.diff(pixels[0]) >= 0), "brighter stored values stay brighter"
    assert pixels[0, 0] == 0 and pixels[0, -1] == 255
    minmax = gray(read_dicom_pixels(tmp_path / "m2.dcm", window="minmax"))
    np.testing.assert_array_equal(minmax[0], np.rint(np.arange(16) / 15 * 255).astype(int))


def test_monochrome1_is_inverted_so_that_high_values_are_dark(tmp_path):
    write_dicom_image(tmp_path / "m1.dcm", RAMP, photometric="MONOCHROME1")
    write_dicom_image(tmp_path / "m2.dcm", RAMP, photometric="MONOCHROME2")
    one, two = gray(read_dicom_pixels(tmp_path / "m1.dcm")), gray(read_dicom_pixels(tmp_path / "m2.dcm"))
    np.testing.assert_array_equal(one, 255 - two)
    assert one[0, 0] == 255 and one[0, -1] == 0


def test_12_bit_rescale_then_header_window_maps_the_window_to_0_255(tmp_path):
    stored = np.array([[0, 500, 1000, 1500, 2000, 4095]], dtype=np.uint16)
    # modality LUT: HU = 2 * stored - 1000 -> -1000, 0, 1000, 2000, 3000, 7190; window 1000 +- 1000
    write_dicom_image(tmp_path / "ct.dcm", stored, bits_stored=12, rescale=(2, -1000), window=(1000, 2000))
    pixels = gray(read_dicom_pixels(tmp_path / "ct.dcm"))[0]
    assert pixels[0] == 0 and pixels[1] == 0, "below the window: black"
    assert abs(pixels[2] - 128) <= 1, "the window centre is mid-gray"
    assert pixels[4] == 255 and pixels[5] == 255, "above the window: white"
    # without the header window (percentiles of the rescaled values) the centre is elsewhere
    robust = gray(read_dicom_pixels(tmp_path / "ct.dcm", window="percentile"))[0]
    assert robust[2] != pixels[2]


def test_rgb_dicom_keeps_its_colours(tmp_path):
    colours = np.zeros((6, 6, 3), dtype=np.uint8)
    colours[..., 0], colours[..., 1], colours[..., 2] = 200, 40, 90
    write_dicom_image(tmp_path / "rgb.dcm", colours, photometric="RGB")
    np.testing.assert_array_equal(read_dicom_pixels(tmp_path / "rgb.dcm"), colours)


def test_multi_frame_and_non_dicom_are_refused_naming_the_file(tmp_path):
    write_dicom_image(tmp_path / "cine.dcm", np.zeros((3, 8, 8), np.uint8), frames=3)
    with pytest.raises(UnsupportedDicomError, match=r"cine\.dcm: multi-frame DICOM \(3 frames\)"):
        read_dicom_pixels(tmp_path / "cine.dcm")
    (tmp_path / "notes.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(UnsupportedDicomError, match=r"notes\.dcm"):
        read_dicom_pixels(tmp_path / "notes.dcm")


def test_compressed_dicom_without_its_decoder_names_the_packages(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    write_dicom_image(tmp_path / "plain.dcm", np.zeros((8, 8), np.uint8))
    dataset = pydicom.dcmread(tmp_path / "plain.dcm")
    dataset.file_meta.TransferSyntaxUID = JPEGLSLossless  # no JPEG-LS decoder is installed here
    dataset.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\0" * 20])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(tmp_path / "jls.dcm")
    with pytest.raises(UnsupportedDicomError) as error:
        read_dicom_pixels(tmp_path / "jls.dcm")
    message = str(error.value)
    assert "jls.dcm" in message and "pylibjpeg" in message and "python-gdcm" in message and "\n" not in message


def test_decode_step_reads_dicom_by_content_and_check_names_a_refused_file(tmp_path, image_writer):
    write_dicom_image(tmp_path / "a.dcm", RAMP)
    image_writer(tmp_path / "b.png", RAMP)
    write_dicom_image(tmp_path / "cine.dcm", np.zeros((2, 4, 16), np.uint8), frames=2)
    assert sniff_format(str(tmp_path / "a.dcm")) == "dicom"
    assert plan_decoding([str(tmp_path / "a.dcm")], 16).image_format == "dicom"
    assert plan_decoding([str(tmp_path / "a.dcm"), str(tmp_path / "b.png")], 16).image_format == "auto"
    expected = read_dicom_pixels(tmp_path / "a.dcm")
    np.testing.assert_array_equal(load_image(str(tmp_path / "a.dcm")).numpy(), expected)
    result = check_images([str(tmp_path / name) for name in ("a.dcm", "b.png", "cine.dcm")], "skip", image_size=16)
    assert result.ok.tolist() == [True, True, False]
    assert "multi-frame" in result.bad[0]["reason"]
    with pytest.raises(BadImageError, match=r"cine\.dcm.*multi-frame"):
        check_images([str(tmp_path / "a.dcm"), str(tmp_path / "cine.dcm")], "error")


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_pixels_reaching_the_model_are_the_dicom_function_s(tmp_path, cache):
    paths = []
    for index, photometric in enumerate(["MONOCHROME1", "MONOCHROME2"]):
        write_dicom_image(tmp_path / f"{index}.dcm", RAMP.reshape(8, 8), photometric=photometric)
        paths.append(str(tmp_path / f"{index}.dcm"))
    dataset = build_image_pipeline(paths, np.array([0.0, 1.0]), image_size=8, batch_size=2, training=False,
                                   cache=cache)
    images, _ = next(iter(dataset))
    for image, path in zip(images.numpy(), paths):
        np.testing.assert_array_equal(image, read_dicom_pixels(path).astype(np.float32))


def test_predict_client_converts_dicom_to_the_same_pixels_as_png(tmp_path):
    from keras_med.export.predictions import read_image_file

    write_dicom_image(tmp_path / "x.dcm", RAMP, photometric="MONOCHROME1")
    sent = read_image_file(tmp_path / "x.dcm")
    assert sent == dicom_to_png_bytes(tmp_path / "x.dcm")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(sent))), read_dicom_pixels(tmp_path / "x.dcm"))


def test_header_tags_are_read_without_pixels(tmp_path):
    write_dicom_image(tmp_path / "x.dcm", RAMP)
    assert read_dicom_tags(tmp_path / "x.dcm", ["Modality", "PatientSex"]) == {"Modality": "OT", "PatientSex": ""}
