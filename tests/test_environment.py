"""environment.json: what a run ran on, and the model card's "Ran on" section."""

import hashlib

from keras_med.training.environment import (read_environment, run_environment, sha256_names,
                                            environment_summary, write_environment)


def test_environment_records_versions_hardware_threads_and_data_hashes(tmp_path):
    split = tmp_path / "split.csv"
    split.write_text("image,split\na.png,train\n")
    environment = run_environment(split, ["b.png", "a.png"], deterministic=True)
    assert environment["packages"]["keras"] and environment["packages"]["numpy"]
    assert environment["backend"] in ("tensorflow", "jax", "torch", "numpy") and environment["cpu"]
    assert isinstance(environment["gpus"], list) and "tf_intra_op_threads" in environment["threads"]
    assert environment["split_sha256"] == hashlib.sha256(split.read_bytes()).hexdigest()
    assert environment["images"] == {"count": 2, "sha256": sha256_names(["a.png", "b.png"])}
    assert sha256_names(["a.png", "b.png"]) != sha256_names(["a.png", "c.png"])
    write_environment(tmp_path, environment)
    assert read_environment(tmp_path) == environment
    assert read_environment(tmp_path / "missing") is None
    lines = environment_summary(environment)
    assert any(line.startswith("Data: split.csv SHA-256 " + environment["split_sha256"][:16]) for line in lines)
    assert "Op determinism: on." in lines
