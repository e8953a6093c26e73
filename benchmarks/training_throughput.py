"""Training throughput: images/s of the same model trained in Keras (TensorFlow and JAX backends) and PyTorch.

Usage:
    python benchmarks/training_throughput.py --rounds 3

PyTorch is not a project dependency: install the CPU wheel into the interpreter given by
`--torch-python` (default: this one), e.g. `pip install torch --index-url
https://download.pytorch.org/whl/cpu` (or plain `pip install torch` from PyPI). torchvision is not
needed: its MobileNetV2 is written out below.

All three train the same architecture (keras_med's custom CNN and MobileNetV2, no pretrained
weights) on one random batch repeated, so only the training step is measured: forward, loss,
backward and an AdamW update. All use the same number of CPU threads where the framework lets one
say so (TensorFlow: intra- and inter-op pools; PyTorch: `set_num_threads`; JAX/XLA uses every core,
two here). Two plans:
- scratch: every layer trains, BatchNorm in training mode (batch statistics);
- finetune (MobileNetV2 only): as the HAM10000 recipe's second phase trains it, every layer
  trains except BatchNorm, which is frozen in inference mode (keras_med's `unfreeze_top`;
  PyTorch: `eval()` and no gradient for the BatchNorm modules).
Each half runs in a fresh subprocess of this file (`--backend keras` under `KERAS_BACKEND=tensorflow`
or `jax`, `--backend torch` under `--torch-python`); `--rounds` repeats the three, rotating their
order, and reports per-round ratios, so a burst of load from other processes hits every framework.
Keras on TensorFlow runs as keras_med trains on a CPU (XLA off; `--xla` adds an XLA-compiled run,
much slower on CPU; `--bf16` adds a run under the mixed_bfloat16 policy); JAX always compiles with
XLA; PyTorch runs in its default and channels_last memory formats.
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
                threads: int, xla: bool = False, bf16: bool = False) -> dict[str, float]:
    """Images/s per (model, variant) for Keras on the backend of `KERAS_BACKEND`."""
    import keras
    import numpy as np
    import tensorflow as tf

    if keras.backend.backend() == "tensorflow":
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from keras_med.config import TrainConfig
    from keras_med.models import create_model
    from keras_med.training import compile_model
    from keras_med.training.fit import freeze_backbone, unfreeze_top

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    targets = np.eye(NUM_CLASSES, dtype="float32")[rng.integers(0, NUM_CLASSES, batch_size)]
    # tf.data autotuning off: with it on, this trivial pipeline ran the step at a fixed slow level
    # for whole blocks of steps (e.g. exactly 62.5 images/s, then 85-104) on the 2-core CPU: the
    # rate looked "bimodal". Off, the rate is steady.
    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = tf.data.Dataset.from_tensors((images, targets)).repeat().prefetch(2).with_options(options)
    rates = {}
    for name, plan in variants(models, plans):
        extra = [("xla", "on", "float32")] if xla and keras.backend.backend() == "tensorflow" else []
        extra += [("bf16", "off", "mixed_bfloat16")] if bf16 else []
        for variant, jit, policy in [("default", "off", "float32"), *extra]:
            keras.mixed_precision.set_global_policy(policy)
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
    keras.mixed_precision.set_global_policy("float32")
    return rates


def torch_rates(models: list[str], plans: list[str], image_size: int, batch_size: int, steps: int, warmup: int,
                threads: int) -> dict[str, float]:
    """Images/s per (model, variant) for PyTorch/torchvision, same architectures."""
    import torch
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
        # torchvision's mobilenet_v2().features, layer for layer (Sandler et al. 2018, width 1.0), written
        # out so that only torch is needed: the torchvision wheels at hand here are CUDA builds that
        # do not load beside a CPU-only torch ("libc10_cuda.so: cannot open shared object file").
        def conv(inputs, outputs, kernel=3, stride=1, groups=1, activation=True):
            layers = [nn.Conv2d(inputs, outputs, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                      nn.BatchNorm2d(outputs)]
            return nn.Sequential(*layers, nn.ReLU6(inplace=True)) if activation else nn.Sequential(*layers)

        class InvertedResidual(nn.Module):
            def __init__(self, inputs, outputs, stride, expansion):
                super().__init__()
                hidden = inputs * expansion
                self.residual = stride == 1 and inputs == outputs
                self.block = nn.Sequential(*([conv(inputs, hidden, 1)] if expansion != 1 else []),
                                           conv(hidden, hidden, stride=stride, groups=hidden),
                                           conv(hidden, outputs, 1, activation=False))

            def forward(self, x):
                return x + self.block(x) if self.residual else self.block(x)

        blocks, channels = [conv(3, 32, stride=2)], 32
        for expansion, outputs, repeats, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                                    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
            for index in range(repeats):
                blocks.append(InvertedResidual(channels, outputs, stride if index == 0 else 1, expansion))
                channels = outputs
        return nn.Sequential(*blocks, conv(channels, 1280, 1), head(1280))

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


def _half(command: list[str], environment: dict) -> dict[str, float]:
    result = subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, **environment})
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["compare", "keras", "torch"], default="compare",
                        help="compare: run every half and print ratios; keras/torch: one half, JSON on stdout.")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="Python interpreter with torch and torchvision installed.")
    parser.add_argument("--keras-backends", nargs="+", choices=["tensorflow", "jax"], default=["tensorflow", "jax"])
    parser.add_argument("--models", nargs="+", default=["custom_cnn", "mobilenetv2"])
    parser.add_argument("--plans", nargs="+", choices=PLANS, default=list(PLANS))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=15, help="Timed training steps per model.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps first (tracing, allocation).")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every framework.")
    parser.add_argument("--rounds", type=int, default=1,
                        help="Repeat the halves this many times, rotating their order.")
    parser.add_argument("--xla", action="store_true", help="Also time Keras on TensorFlow with jit_compile=True.")
    parser.add_argument("--bf16", action="store_true",
                        help="Also time Keras with the mixed_bfloat16 policy (oneDNN/AMX on CPUs that have them).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    measure = (args.models, args.plans, args.image_size, args.batch_size, args.steps, args.warmup, args.threads)
    if args.backend == "keras":
        print(json.dumps(keras_rates(*measure, xla=args.xla, bf16=args.bf16)))
        return
    if args.backend == "torch":
        print(json.dumps(torch_rates(*measure)))
        return
    if not os.path.isfile(args.torch_python):
        raise SystemExit(f"--torch-python: {args.torch_python} does not exist")
    common = ["--models", *args.models, "--plans", *args.plans, "--image-size", str(args.image_size),
              "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--threads", str(args.threads)]
    halves = {"torch": lambda: _half([args.torch_python, __file__, "--backend", "torch", *common], {})}
    for backend in args.keras_backends:
        halves[backend] = lambda backend=backend: _half(
            [sys.executable, __file__, "--backend", "keras", *common, *(["--xla"] if args.xla else []),
             *(["--bf16"] if args.bf16 else [])],
            {"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"})
    rounds = []
    names = list(halves)
    for number in range(args.rounds):
        order = names[number % len(names):] + names[:number % len(names)]
        result = {name: halves[name]() for name in order}
        rounds.append(result)
        logger.info("round %d (%s): %s", number + 1, ", ".join(order), result)
    print(f"{args.image_size} px, batch {args.batch_size}, {args.threads} threads, {args.steps} timed steps, "
          f"median of {args.rounds} round(s); load average at the end {os.getloadavg()[0]:.1f}")
    backends = args.keras_backends
    print("| model | plan | " + " | ".join(f"Keras {b}" for b in backends)
          + " | PyTorch default | PyTorch channels_last | "
          + " | ".join(f"{b} / best PyTorch, per round" for b in backends) + " |")
    print("|---" * (4 + 2 * len(backends)) + "|")
    median = statistics.median
    for name, plan in variants(args.models, args.plans):
        key = f"{name}/{plan}"
        best_torch = [max(r["torch"][f"{key}/default"], r["torch"][f"{key}/channels_last"]) for r in rounds]
        keras_cells = [f"{median(r[b][f'{key}/default'] for r in rounds):.1f}" for b in backends]
        ratio_cells = [", ".join(f"{r[b][f'{key}/default'] / t:.2f}" for r, t in zip(rounds, best_torch))
                       for b in backends]
        print(f"| {name} | {plan} | " + " | ".join(keras_cells)
              + f" | {median(r['torch'][f'{key}/default'] for r in rounds):.1f}"
              + f" | {median(r['torch'][f'{key}/channels_last'] for r in rounds):.1f} | "
              + " | ".join(ratio_cells) + " |")


if __name__ == "__main__":
    main()
