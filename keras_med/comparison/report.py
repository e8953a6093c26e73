"""What `keras-med compare` writes: a console table, `comparison.md`, `comparison.html` (with a forest
plot of the differences) and `comparison.json`.

The Markdown and HTML come from the model card's renderer (`keras_med.evaluation.report`), so the
comparison reads like the runs' own reports and the HTML embeds its picture.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from keras_med.atomic import atomic_path, write_text_atomic
from keras_med.comparison.statistics import Difference, PairedComparison
from keras_med.evaluation.report import Card, Heading, Image, Paragraph, Table, render_html, render_markdown

FOREST_PLOT = "comparison_forest.png"
READABLE = {"balanced_accuracy": "balanced accuracy", "macro_auc": "macro AUC", "ece": "expected calibration error"}


def readable(metric: str) -> str:
    """`recall/mel` -> "recall of mel"; `ece` -> "expected calibration error"."""
    if metric.startswith("recall/"):
        return f"recall of {metric.split('/', 1)[1]}"
    return READABLE.get(metric, metric)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def verdict(item: Difference, label_a: str = "A", label_b: str = "B") -> str:
    """One plain sentence, e.g. "B is better than A on balanced accuracy by 0.021 (95% CI -0.010 to 0.052): not shown".

    "shown" means the 95% interval of B - A excludes 0. For a metric where lower is better (the
    calibration error), "better" means a lower value; the interval is always of B - A.
    """
    name = readable(item.metric)
    if item.difference is None:
        return f"{label_b} against {label_a} on {name}: undefined on these test images"
    interval = "no interval" if item.ci95 is None else f"95% CI {item.ci95[0]:.3f} to {item.ci95[1]:.3f}"
    outcome = "shown" if item.shown else "not shown"
    if item.difference == 0:
        return f"{label_b} equals {label_a} on {name} (difference 0.000, {interval}): {outcome}"
    better = (item.difference < 0) if item.lower_is_better else (item.difference > 0)
    word = "better" if better else "worse"
    interval += " of B - A" if (item.lower_is_better or not better) and item.ci95 is not None else ""
    return f"{label_b} is {word} than {label_a} on {name} by {abs(item.difference):.3f} ({interval}): {outcome}"


def table_rows(comparison: PairedComparison) -> list[list]:
    """Rows of the differences table: metric, A, B, B - A, 95% CI, p, shown."""
    rows = []
    for item in comparison.differences:
        interval = "n/a" if item.ci95 is None else f"{item.ci95[0]:.3f} to {item.ci95[1]:.3f}"
        p_value = "n/a" if item.p_value is None else f"{item.p_value:.3g}"
        rows.append([readable(item.metric) + (" (lower is better)" if item.lower_is_better else ""),
                     _number(item.a), _number(item.b), _number(item.difference), interval, p_value,
                     "shown" if item.shown else "not shown"])
    return rows


HEADERS = ["metric", "A", "B", "B - A", "95% CI", "p", "difference"]


def console_table(comparison: PairedComparison) -> str:
    """The differences as a fixed-width text table."""
    rows = [HEADERS] + table_rows(comparison)
    widths = [max(len(str(row[k])) for row in rows) for k in range(len(HEADERS))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def tests_lines(comparison: PairedComparison) -> list[str]:
    """McNemar's and DeLong's results in words (empty for seed groups)."""
    lines = []
    if comparison.mcnemar is not None:
        test = comparison.mcnemar
        method = "exact binomial" if test.method == "exact" else "chi-square, continuity-corrected"
        lines.append(f"McNemar ({method}): "
                     f"{test.a_only} images only A got right, {test.b_only} only B; p = {test.p_value:.3g}")
    for item in comparison.delong:
        lines.append(f"DeLong, AUC of {item.column}: A {item.auc_a:.3f}, B {item.auc_b:.3f}, B - A {item.difference:.3f} "
                     f"(95% CI {item.ci95[0]:.3f} to {item.ci95[1]:.3f}), p = {item.p_value:.3g}")
    return lines


def forest_plot(comparisons: list[PairedComparison], path: str | Path) -> Path:
    """Each metric's B - A with its 95% interval, one row per metric and comparison, 0 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, points, lows, highs, colours = [], [], [], [], []
    for comparison in comparisons:
        prefix = f"{comparison.label_b} - {comparison.label_a}: " if len(comparisons) > 1 else ""
        for item in comparison.differences:
            if item.difference is None:
                continue
            low, high = item.ci95 if item.ci95 is not None else (item.difference, item.difference)
            labels.append(prefix + readable(item.metric) + (" (lower is better)" if item.lower_is_better else ""))
            points.append(item.difference)
            lows.append(item.difference - low)
            highs.append(high - item.difference)
            colours.append("tab:red" if item.shown else "tab:gray")
    positions = np.arange(len(labels))[::-1]
    figure, axis = plt.subplots(figsize=(7.5, 0.35 * len(labels) + 1.2))
    for y, x, low, high, colour in zip(positions, points, lows, highs, colours):
        axis.errorbar(x, y, xerr=[[max(low, 0.0)], [max(high, 0.0)]], fmt="o", color=colour, capsize=3)
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_yticks(positions, labels)
    axis.set_xlabel("B - A, with 95% bootstrap interval (red: interval excludes 0)")
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)
    return path


def build_card(comparisons: list[PairedComparison], notes: list[str]) -> Card:
    card = Card("Comparison of runs")
    card.add(Paragraph(" ".join(verdict(c.difference("balanced_accuracy"), c.label_a, c.label_b) + "."
                                for c in comparisons)))
    for comparison in comparisons:
        card.add(Heading(f"{comparison.label_b} against {comparison.label_a}"))
        card.add(Paragraph(f"{comparison.label_a}: {', '.join(comparison.runs_a)}. "
                           f"{comparison.label_b}: {', '.join(comparison.runs_b)}. "
                           f"{comparison.n_images} shared test images in {comparison.n_groups} groups."))
        card.add(Table(HEADERS, table_rows(comparison)))
        for line in tests_lines(comparison):
            card.add(Paragraph(line))
    card.add(Heading("How to read this"))
    card.add(Paragraph(
        "Differences are B - A on the test images all runs share. Intervals and p-values come from a paired "
        "bootstrap that resamples whole groups (patients, lesions: split.csv's group column); with several runs "
        "per side (seeds) each resample also draws runs of each side, so the interval covers the seeds' "
        "variation too. 'shown' means the 95% interval excludes 0. McNemar's and DeLong's tests treat the "
        "images as independent."))
    card.add(Paragraph(" ".join(notes)))
    card.add(Image(FOREST_PLOT, "B - A for each metric with its 95% interval"))
    return card


def write_comparison(comparisons: list[PairedComparison], out_dir: str | Path, notes: list[str],
                     settings: dict) -> dict[str, Path]:
    """Write `comparison.md`, `comparison.html`, `comparison.json` and the forest plot into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    forest_plot(comparisons, out_dir / FOREST_PLOT)
    card = build_card(comparisons, notes)
    paths = {"markdown": out_dir / "comparison.md", "html": out_dir / "comparison.html",
             "json": out_dir / "comparison.json", "plot": out_dir / FOREST_PLOT}
    write_text_atomic(paths["markdown"], render_markdown(card))
    write_text_atomic(paths["html"], render_html(card, out_dir))
    summary = {"headline": [verdict(c.difference("balanced_accuracy"), c.label_a, c.label_b) for c in comparisons],
               "notes": notes, "settings": settings, "comparisons": [c.to_dict() for c in comparisons]}
    write_text_atomic(paths["json"], json.dumps(summary, indent=2))
    return paths
