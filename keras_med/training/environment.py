"""What a run ran on: package versions, backend, CPU and GPU, thread settings, and hashes of its data.

A seeded run repeats bit for bit only on the same software, hardware, thread settings and data;
`environment.json` records them so a reader can tell whether two runs are comparable, and the
model card shows them ("Ran on").
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Iterable

from keras_med.atomic import write_text_atomic

ENVIRONMENT_FILE = "environment.json"
PACKAGES = ("keras_med", "keras", "tensorflow", "jax", "jaxlib", "numpy")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "XLA_FLAGS")


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """`{package: installed version}`, None for a package that is not installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else `platform.processor()`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    """The GPUs TensorFlow sees, by device name (empty on a CPU-only machine)."""
    import tensorflow as tf

    names = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        names.append(details.get("device_name", device.name))
    return names


def thread_settings() -> dict:
    """TensorFlow's inter/intra-op thread pools (0 = TensorFlow's default), the environment
    variables that set thread counts, and how many CPUs this process may use."""
    import tensorflow as tf

    return {"tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            **{name: os.environ.get(name) for name in THREAD_VARIABLES}}


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_names(names: Iterable[str]) -> str:
    """The SHA-256 of the sorted names, one per line: the same set of images gives the same hash
    whatever order the table lists them in."""
    return hashlib.sha256("\n".join(sorted(map(str, names))).encode("utf-8")).hexdigest()


def run_environment(split_csv: str | Path | None = None, image_names: Iterable[str] | None = None,
                    deterministic: bool | None = None) -> dict:
    """What this process runs on, as a JSON-ready dict.

    Args:
        split_csv: the run's split.csv, hashed (None: no hash).
        image_names: the images the run reads (paths relative to the data folder, or ids), hashed
            sorted (None: no hash). Relative names keep the hash equal across machines.
        deterministic: whether op determinism was on, recorded as given (None: not recorded).
    """
    import keras

    environment = {"packages": package_versions(), "backend": keras.backend.backend(),
                   "python": platform.python_version(), "platform": platform.platform(),
                   "cpu": cpu_model(), "gpus": gpu_names(), "threads": thread_settings()}
    if deterministic is not None:
        environment["deterministic"] = deterministic
    if split_csv is not None:
        environment["split_sha256"] = sha256_file(split_csv)
    if image_names is not None:
        names = list(image_names)
        environment["images"] = {"count": len(names), "sha256": sha256_names(names)}
    return environment


def write_environment(run_dir: str | Path, environment: dict) -> Path:
    """Write `environment` to `run_dir/environment.json` (atomically: a later run and the model
    card read it)."""
    return write_text_atomic(Path(run_dir) / ENVIRONMENT_FILE, json.dumps(environment, indent=2) + "\n")


def read_environment(run_dir: str | Path) -> dict | None:
    """`run_dir/environment.json`, or None when the run has none."""
    path = Path(run_dir) / ENVIRONMENT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def environment_summary(environment: dict) -> list[str]:
    """The "Ran on" lines of a model card."""
    packages = environment.get("packages", {})
    software = ", ".join(f"{name} {version}" for name, version in packages.items() if version)
    threads = environment.get("threads", {})
    lines = [f"Software: {software}; backend {environment.get('backend')}; Python {environment.get('python')}.",
             f"Hardware: {environment.get('cpu')} ({threads.get('cpus_available')} CPUs available); GPUs: "
             f"{', '.join(environment.get('gpus') or []) or 'none'}.",
             f"Threads: TensorFlow inter-op {threads.get('tf_inter_op_threads')}, intra-op "
             f"{threads.get('tf_intra_op_threads')} (0 = default); OMP_NUM_THREADS "
             f"{threads.get('OMP_NUM_THREADS') or 'unset'}."]
    if "deterministic" in environment:
        lines.append(f"Op determinism: {'on' if environment['deterministic'] else 'off'}.")
    data = []
    if "split_sha256" in environment:
        data.append(f"split.csv SHA-256 {environment['split_sha256'][:16]}...")
    if "images" in environment:
        data.append(f"{environment['images']['count']} images, list SHA-256 {environment['images']['sha256'][:16]}...")
    if data:
        lines.append("Data: " + "; ".join(data) + ".")
    return lines
