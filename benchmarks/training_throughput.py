"""Training throughput: images/s of the same model trained in Keras (TF backend) and in PyTorch.

Usage:
    python benchmarks/training_throughput.py --torch-python /tmp/venv-torch/bin/python

Both halves train the same architecture (keras_med's custom CNN and MobileNetV2, no pretrained
weights) on one random batch repeated, so only the training step is measured: forward, loss,
backward and an AdamW update. Both use the same number of CPU threads. Two plans:
- scratch: every layer trains, BatchNorm in training mode (batch statistics);
- finetune (MobileNetV2 only): as the HAM10000 recipe's second phase trains it, every layer
  trains except BatchNorm, which is frozen in inference mode (keras_med's `unfreeze_top`;
  PyTorch: `eval()` and no gradient for the BatchNorm modules).
`--rounds` alternates the two frameworks and reports the median of the per-round ratios, so a
burst of load from other processes hits both. The PyTorch half runs
in a subprocess under `--torch-python` (PyTorch is not a project dependency), via this same
file with `--backend torch`. Keras runs as keras_med trains on a CPU (XLA off; `--xla` adds an
XLA-compiled run, which is much slower on CPU); PyTorch runs in its default and channels_last
memory formats.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time

logger = logging.getLogger("benchmarks.training_throughput")

NUM_CLASSES = 7


PLANS = ("scratch", "finetune")


def variants(models: list[str], plans: list[str]) -> list[tuple[str, str]]:
    """(model, plan) pairs to time; the custom CNN is always trained from scratch."""
    return [(name, plan) for name in models for plan in plans if plan == "scratch" or name != "custom_cnn"]


def keras_rates(models: list[str], plans: list[str], image_size: int, batch_size: int, steps: int, warmup: int,
                threads: int, xla: bool = False) -> dict[str, float]:
    """Images/s per (model, variant) for Keras, TF backend."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from keras_med.config import TrainConfig
    from keras_med.models import create_model
    from keras_med.training import compile_model
    from keras_med.training.fit import freeze_backbone, unfreeze_top

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    targets = np.eye(NUM_CLASSES, dtype="float32")[rng.integers(0, NUM_CLASSES, batch_size)]
    dataset = tf.data.Dataset.from_tensors((images, targets)).repeat().prefetch(2)
    rates = {}
    for name, plan in variants(models, plans):
        for variant, jit in (("default", "off"), ("xla", "on"))[:2 if xla else 1]:
            model = create_model(name, num_classes=NUM_CLASSES, image_size=image_size, weights=None)
            if plan == "finetune":
                freeze_backbone(model)
                unfreeze_top(model, -1)
            compile_model(model, TrainConfig(jit_compile=jit), "multiclass")
            model.fit(dataset, epochs=1, steps_per_epoch=warmup, verbose=0)
            start = time.perf_counter()
            model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
            key = f"{name}/{plan}/{variant}"
            rates[key] = steps * batch_size / (time.perf_counter() - start)
            logger.info("keras %s: %.1f images/s", key, rates[key])
    return rates


def torch_rates(models: list[str], plans: list[str], image_size: int, batch_size: int, steps: int, warmup: int,
                threads: int) -> dict[str, float]:
    """Images/s per (model, variant) for PyTorch/torchvision, same architectures."""
    import torch
    import torchvision
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    def head(features: int) -> nn.Module:
        # keras_med's head: GlobalAveragePooling, Dropout, Dense(256), ReLU, Dropout, Dense(C)
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(features, 256),
                             nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, NUM_CLASSES))

    def custom_cnn() -> nn.Module:
        blocks, channels = [], 3
        for filters in (32, 64, 128, 256):
            blocks += [nn.Conv2d(channels, filters, 3, padding=1, bias=False), nn.BatchNorm2d(filters, momentum=0.1),
                       nn.ReLU(), nn.MaxPool2d(2)]
            channels = filters
        return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 256), nn.ReLU(),
                             nn.Dropout(0.3), nn.Linear(256, NUM_CLASSES))

    def mobilenetv2() -> nn.Module:
        return nn.Sequential(torchvision.models.mobilenet_v2(weights=None).features, head(1280))

    builders = {"custom_cnn": custom_cnn, "mobilenetv2": mobilenetv2}
    images = torch.rand(batch_size, 3, image_size, image_size) * 255
    labels = torch.randint(0, NUM_CLASSES, (batch_size,))
    rates = {}
    for name, plan in variants(models, plans):
        for variant, memory_format in (("default", torch.contiguous_format), ("channels_last", torch.channels_last)):
            model = builders[name]().to(memory_format=memory_format).train()
            if plan == "finetune":
                for module in model.modules():
                    if isinstance(module, nn.BatchNorm2d):
                        module.eval()
                        module.requires_grad_(False)
            batch = images.contiguous(memory_format=memory_format)
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                                          weight_decay=1e-4)
            loss_fn = nn.CrossEntropyLoss()

            def step():
                optimizer.zero_grad(set_to_none=True)
                # the same in-model scaling as keras_med (Rescaling 1/255 or 1/127.5 - 1)
                loss = loss_fn(model(batch / 127.5 - 1.0), labels)
                loss.backward()
                optimizer.step()

            for _ in range(warmup):
                step()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            rates[f"{name}/{plan}/{variant}"] = steps * batch_size / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["compare", "keras", "torch"], default="compare",
                        help="compare: run both and print ratios; keras/torch: one half, JSON on stdout.")
    parser.add_argument("--torch-python", default="/tmp/venv-torch/bin/python",
                        help="Python interpreter with torch and torchvision installed.")
    parser.add_argument("--models", nargs="+", default=["custom_cnn", "mobilenetv2"])
    parser.add_argument("--plans", nargs="+", choices=PLANS, default=list(PLANS))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=15, help="Timed training steps per model.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps first (tracing, allocation).")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both frameworks.")
    parser.add_argument("--rounds", type=int, default=1, help="Alternate the frameworks this many times.")
    parser.add_argument("--xla", action="store_true", help="Also time Keras with jit_compile=True.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    measure = (args.models, args.plans, args.image_size, args.batch_size, args.steps, args.warmup, args.threads)
    if args.backend == "keras":
        print(json.dumps(keras_rates(*measure, xla=args.xla)))
        return
    if args.backend == "torch":
        print(json.dumps(torch_rates(*measure)))
        return
    if not os.path.isfile(args.torch_python):
        raise SystemExit(f"--torch-python: {args.torch_python} does not exist; create a venv with torch and "
                         "torchvision (see BENCHMARKS.md)")
    common = ["--models", *args.models, "--plans", *args.plans, "--image-size", str(args.image_size),
              "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--threads", str(args.threads)]
    rounds = []
    for number in range(args.rounds):
        torch_result = subprocess.run([args.torch_python, __file__, "--backend", "torch", *common],
                                      check=True, capture_output=True, text=True)
        torch = json.loads(torch_result.stdout.strip().splitlines()[-1])
        keras = keras_rates(*measure, xla=args.xla)
        rounds.append((keras, torch))
        logger.info("round %d: keras %s torch %s", number + 1, keras, torch)
    print(f"{args.image_size} px, batch {args.batch_size}, {args.threads} threads, {args.steps} timed steps, "
          f"median of {args.rounds} round(s); load average at the end {os.getloadavg()[0]:.1f}")
    print("| model | plan | Keras (images/s) | PyTorch default | PyTorch channels_last | Keras / best PyTorch |")
    print("|---|---|---|---|---|---|")
    median = statistics.median
    for name, plan in variants(args.models, args.plans):
        key = f"{name}/{plan}"
        ratios = [keras[f"{key}/default"] / max(torch[f"{key}/default"], torch[f"{key}/channels_last"])
                  for keras, torch in rounds]
        xla = f" (XLA: {median(k[f'{key}/xla'] for k, _ in rounds):.1f})" if args.xla else ""
        print(f"| {name} | {plan} | {median(k[f'{key}/default'] for k, _ in rounds):.1f}{xla} | "
              f"{median(t[f'{key}/default'] for _, t in rounds):.1f} | "
              f"{median(t[f'{key}/channels_last'] for _, t in rounds):.1f} | {median(ratios):.2f}x |")


if __name__ == "__main__":
    main()
