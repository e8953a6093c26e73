"""benchmarks/recipe_quality.py: resumable seeds on one split, and the table of spreads, ensemble and rule."""

import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "recipe_quality.py"
NAMES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("recipe_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(run_dir: Path, seed: int) -> Path:
    """A finished run's files: class names, timing and cached val/test probabilities of one split."""
    rng = np.random.default_rng(seed)
    y_val, y_test = np.arange(60) % 3, np.arange(90) % 3

    def probabilities(y):
        logits = rng.normal(0, 1, (len(y), 3))
        logits[np.arange(len(y)), y] += 1.5
        logits[:, 0] += 1.0
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "class_names.json").write_text(json.dumps({"class_names": NAMES, "task": "multiclass"}))
    arrays = {"y_val": np.eye(3)[y_val], "y_test": np.eye(3)[y_test], "p_val_none": probabilities(y_val),
              "p_test_none": probabilities(y_test)}
    np.savez(run_dir / "predictions.npz", **arrays)
    (run_dir / "quality_time.json").write_text(json.dumps({"minutes": 2.0 + seed}))
    (run_dir / "metrics.json").write_text("{}")
    return run_dir


def test_scores_runs_their_spread_the_ensemble_and_the_rule(quality, tmp_path, capsys):
    runs = [fake_run(tmp_path / f"seed{seed}", seed) for seed in (0, 1, 2)]
    assert quality.main(["--score", *map(str, runs), "--tta", "none", "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "quality.json").read_text())[0]
    values = [run["none"]["balanced_accuracy"] for run in result["runs"]]
    table = capsys.readouterr().out
    assert f"{np.mean(values):.3f} ({np.std(values, ddof=1):.3f})" in table
    assert "**ensemble of 3**" in table and "3.000 (1.000)" in table  # minutes 2, 3, 4
    ensemble = result["ensemble"]["none"]
    assert ensemble["balanced_accuracy_rule"] > ensemble["balanced_accuracy"]
    assert set(ensemble["recall"]) == set(NAMES) and 0.5 < ensemble["macro_auc"] <= 1.0


def test_training_skips_finished_seeds_and_reuses_the_first_split(quality, tmp_path, monkeypatch):
    commands = []

    def fake_train(command):
        commands.append(command)
        run_dir = Path(command[command.index("--run-dir") + 1])
        (run_dir).mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text("{}")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(quality.subprocess, "run", fake_train)
    fake_run(tmp_path / "split1" / "seed1", 1)  # finished before
    groups = quality.train_seeds("ham10000", tmp_path, [42, 1, 2], 1, ["--demo"])
    assert [path.name for path in groups[0]] == ["seed42", "seed1", "seed2"]
    assert len(commands) == 2 and "--split-file" not in commands[0]
    assert commands[1][commands[1].index("--split-file") + 1] == str(tmp_path / "split1" / "seed42" / "split.csv")
    assert (tmp_path / "split1" / "seed2" / "quality_time.json").is_file()


def test_a_members_run_directory_is_scored_as_its_members(quality, tmp_path):
    ensemble_dir = tmp_path / "members-20261201-120000"
    for k in (1, 2, 10):
        fake_run(ensemble_dir / f"member{k}", k)
    (ensemble_dir / "ensemble").mkdir()
    single = fake_run(tmp_path / "single", 5)
    expanded = quality.expand_members([ensemble_dir, single])
    assert [path.name for path in expanded] == ["member1", "member2", "member10", "single"]
    assert quality.main(["--score", str(ensemble_dir), "--tta", "none", "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "quality.json").read_text())[0]
    assert [Path(run["run_dir"]).name for run in result["runs"]] == ["member1", "member2", "member10"]
    assert "none" in result["ensemble"]
