"""benchmarks/result_cards.py: a recipe's card from its run directories (figures, intervals, split, minutes)."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import tomli_w

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "result_cards.py"


@pytest.fixture(scope="module")
def cards():
    spec = importlib.util.spec_from_file_location("result_cards", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(run_dir: Path, seed: int, auc: float, task: str = "binary", recipe: str = "covid_cxr") -> Path:
    """A finished run's files as the recipes write them, training taking 6 minutes."""
    run_dir.mkdir(parents=True)
    config = {"recipe": recipe, "data": {"data_dir": "/data/kermany", "demo": False, "image_size": 224,
                                         "val_fraction": 0.15, "test_fraction": 0.15, "split_file": ""},
              "model": {"model": "mobilenetv2", "weights": "imagenet"},
              "train": {"plan": "finetune", "epochs": 10, "seed": seed}}
    (run_dir / "config.toml").write_text(tomli_w.dumps(config))
    rows = ["path,label,group,split"] + [f"img{i}.png,{i % 2},p{i // 2},{('train', 'val', 'test')[i % 3]}"
                                         for i in range(12)]
    (run_dir / "split.csv").write_text("\n".join(rows) + "\n")
    (run_dir / "history.csv").write_text("epoch,loss\n0,0.7\n1,0.5\n2,0.4\n")
    metrics = {"task": task, "class_names": ["normal", "pneumonia"], "n_samples": 624,
               "roc_auc": {"value": auc, "ci95": [auc - 0.02, auc + 0.01]},
               "accuracy": {"value": 0.9, "ci95": [0.87, 0.92]},
               "sensitivity": {"value": 0.95, "ci95": None}, "specificity": {"value": None, "ci95": None}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    started = (run_dir / "split.csv").stat().st_mtime
    os.utime(run_dir / "metrics.json", (started + 360, started + 360))
    return run_dir


def test_card_of_two_seeds_gives_each_run_with_intervals_and_the_mean(cards, tmp_path):
    runs = [fake_run(tmp_path / "s1", 1, 0.96), fake_run(tmp_path / "s2", 2, 0.98)]
    assert cards.main(["--runs", *map(str, runs), "--out", str(tmp_path / "cards"), "--machine", "a test box"]) == 0
    card = (tmp_path / "cards" / "covid_cxr.md").read_text()
    assert "python -m keras_med.recipes.covid_cxr --data-dir /data/kermany" in card
    assert "| `s1` | 1 | 0.960 (0.940-0.970) | 0.900 (0.870-0.920) | 0.950 | undefined | 3 | 6.0 |" in card
    assert "| **mean (sd)** | | 0.970 (sd 0.014) | 0.900 (sd 0.000) | 0.950 (sd 0.000) | n/a | | |" in card
    # the patient p{i//2} holds images i and i+1, which the fake split puts in different splits
    assert "Images: 12 (train 4 / val 4 / test 4), 6 groups, 6 of them in more than one split" in card
    assert "a test box" in card


def test_runs_of_two_recipes_or_an_unfinished_run_are_refused(cards, tmp_path):
    runs = [fake_run(tmp_path / "a", 1, 0.9), fake_run(tmp_path / "b", 1, 0.9, recipe="classify")]
    with pytest.raises(SystemExit, match="one recipe"):
        cards.main(["--runs", *map(str, runs), "--out", str(tmp_path)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no config.toml"):
        cards.main(["--runs", str(tmp_path / "empty"), "--out", str(tmp_path)])
