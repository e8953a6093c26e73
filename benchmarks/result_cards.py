"""Result cards: one Markdown page per recipe, generated from the run directories that measured it.

A card says what a figure means and how to get it again: the default command, the data, the split,
the test figures with their 95% bootstrap intervals (each run, and mean (sd) over runs), the
minutes each run took and the machine. Everything but the machine comes from the runs' own files
(`config.toml`, `metrics.json`, `split.csv`, `class_names.json`, `history.csv`,
`training_done.json`), so a card cannot drift from the runs it describes.

    # the card of three HAM10000 seeds, written to docs/results/ham10000.md
    PYTHONPATH=. python benchmarks/result_cards.py --runs runs/ham10000/s42 runs/ham10000/s1 runs/ham10000/s2 \\
        --machine "2-core x86_64 CPU, no GPU, shared" --out docs/results

The recipe is read from the runs (all must share it); `--command` overrides the default command
shown, which is otherwise rebuilt from the first run's data directory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tomllib
from pathlib import Path

import pandas as pd

# Headline figures per task, in the order a card shows them (keys of metrics.json).
HEADLINES = {
    "multiclass": [("balanced_accuracy", "balanced accuracy"), ("accuracy", "accuracy"), ("macro_auc", "macro AUC")],
    "binary": [("roc_auc", "AUC"), ("accuracy", "accuracy at the threshold"), ("sensitivity", "sensitivity"),
               ("specificity", "specificity")],
    "multilabel": [("mean_auc", "mean AUROC"), ("mean_pr_auc", "mean PR AUC")],
}


def _figure(entry) -> tuple[float | None, list | None]:
    """`(value, ci95)` of a metrics.json entry (`{"value", "ci95"}` or a bare number)."""
    if isinstance(entry, dict):
        return entry.get("value"), entry.get("ci95")
    return (float(entry), None) if isinstance(entry, (int, float)) else (None, None)


def training_minutes(run_dir: Path) -> float | None:
    """Minutes from split.csv (written before training) to metrics.json (the evaluation's end)."""
    start, end = run_dir / "split.csv", run_dir / "metrics.json"
    if start.is_file() and end.is_file():
        return (end.stat().st_mtime - start.stat().st_mtime) / 60
    return None


def read_run(run_dir: str | Path) -> dict:
    """What a card needs of one run directory; a missing required file is named in the error."""
    run_dir = Path(run_dir)
    for name in ("config.toml", "metrics.json"):
        if not (run_dir / name).is_file():
            raise SystemExit(f"{run_dir}: no {name}; expected a finished run directory")
    config = tomllib.loads((run_dir / "config.toml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    split = pd.read_csv(run_dir / "split.csv") if (run_dir / "split.csv").is_file() else None
    history = pd.read_csv(run_dir / "history.csv") if (run_dir / "history.csv").is_file() else None
    return {"dir": run_dir, "config": config, "metrics": metrics, "split": split, "history": history,
            "minutes": training_minutes(run_dir),
            "date": datetime.date.fromtimestamp((run_dir / "metrics.json").stat().st_mtime).isoformat()}


def default_command(run: dict) -> str:
    data = run["config"].get("data", {})
    source = "--demo" if data.get("demo") else f"--data-dir {data.get('data_dir') or 'DATA'}"
    return f"python -m keras_med.recipes.{run['config'].get('recipe', 'RECIPE')} {source}"


def _interval(value, ci) -> str:
    if value is None:
        return "undefined"
    return f"{value:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{statistics.mean(values):.3f}" + (f" (sd {statistics.stdev(values):.3f})" if len(values) > 1 else "")


def _split_lines(run: dict) -> list[str]:
    config, split = run["config"], run["split"]
    data, seed = config.get("data", {}), config.get("train", {}).get("seed")
    lines = []
    if split is not None:
        counts = split["split"].value_counts()
        shares = " / ".join(f"{name} {int(counts.get(name, 0))}" for name in ("train", "val", "test"))
        grouping = ""
        if "group" in split:
            shared = int((split.groupby("group")["split"].nunique() > 1).sum())
            grouping = f", {split['group'].nunique()} groups, {shared} of them in more than one split"
        lines.append(f"- Images: {len(split)} ({shares}){grouping}")
    if data.get("split_file"):
        lines.append(f"- Split: read from `{data['split_file']}`")
    else:
        lines.append(f"- Split: validation {data.get('val_fraction')}, test {data.get('test_fraction')}, "
                     f"made with seed {seed}")
    return lines


def render_card(runs: list[dict], machine: str, command: str | None = None) -> str:
    """The Markdown card of runs of one recipe (one row per run, then mean (sd) when there are several)."""
    recipes = {run["config"].get("recipe") for run in runs}
    if len(recipes) != 1:
        raise SystemExit(f"--runs: expected runs of one recipe, got {sorted(map(str, recipes))}")
    recipe, first = recipes.pop(), runs[0]
    task = first["metrics"].get("task", "multiclass")
    headlines = [(key, label) for key, label in HEADLINES.get(task, []) if key in first["metrics"]]
    model, train = first["config"].get("model", {}), first["config"].get("train", {})
    data = first["config"].get("data", {})
    lines = [f"# {recipe}: result card", "",
             f"Generated by `benchmarks/result_cards.py` from {len(runs)} run(s); dates {', '.join(sorted({r['date'] for r in runs}))}.",
             "", "## Command", "", "```bash", command or default_command(first), "```", "",
             "## Data and split", "",
             f"- Data: `{data.get('data_dir') or ('synthetic demo' if data.get('demo') else '?')}`, "
             f"{len(first['metrics'].get('class_names', []))} classes, task {task}",
             *_split_lines(first),
             f"- Model: {model.get('model')} ({model.get('weights')} weights), {data.get('image_size')} px, "
             f"plan {train.get('plan')}, {train.get('epochs')} epochs",
             "", "## Test figures (95% bootstrap intervals)", "",
             "| run | seed | " + " | ".join(label for _, label in headlines) + " | epochs run | minutes |",
             "|---" * (len(headlines) + 4) + "|"]
    for run in runs:
        cells = [_interval(*_figure(run["metrics"].get(key))) for key, _ in headlines]
        epochs = len(run["history"]) if run["history"] is not None else "n/a"
        minutes = "n/a" if run["minutes"] is None else f"{run['minutes']:.1f}"
        lines.append(f"| `{run['dir'].name}` | {run['config'].get('train', {}).get('seed')} | "
                     + " | ".join(cells) + f" | {epochs} | {minutes} |")
    if len(runs) > 1:
        means = [_mean_sd([_figure(run["metrics"].get(key))[0] for run in runs]) for key, _ in headlines]
        lines.append("| **mean (sd)** | | " + " | ".join(means) + " | | |")
    lines += ["", f"Test images per run: {', '.join(str(run['metrics'].get('n_samples')) for run in runs)}.",
              "", "## Machine", "", machine, ""]
    return "\n".join(lines)


def this_machine() -> str:
    return f"{os.cpu_count()}-core {platform.machine()} CPU ({platform.processor() or platform.platform()}), " \
           f"Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="finished run directories of one recipe")
    parser.add_argument("--out", default="docs/results", help="folder for <recipe>.md")
    parser.add_argument("--machine", default=None, help="the machine the runs ran on (default: this one)")
    parser.add_argument("--command", default=None, help="the command shown (default: rebuilt from the first run)")
    args = parser.parse_args(argv)
    runs = [read_run(path) for path in args.runs]
    card = render_card(runs, args.machine or this_machine(), args.command)
    out = Path(args.out) / f"{runs[0]['config'].get('recipe')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(card)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
