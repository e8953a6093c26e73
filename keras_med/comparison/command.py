"""Compare runs on the test images they share: paired intervals, McNemar and DeLong.

    keras-med compare RUN_A RUN_B [RUN_C ...]          (B, C, ... each against A)
    keras-med compare --a A1 A2 A3 --b B1 B2 B3        (seed groups: mean over seeds, B - A)

Prints a plain sentence ("B is better than A on balanced accuracy by 0.021 (95% CI -0.010 to 0.052):
not shown") and a table, and writes `comparison.md`, `comparison.html` and `comparison.json` into `--out`.
"""

from __future__ import annotations

import argparse
import string
import sys

from keras_med.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `keras-med compare` flags to `parser`."""
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="Run directories (or their checkpoints/best.keras); the first is A, every other "
                             "one is compared with it.")
    parser.add_argument("--a", nargs="+", default=None, metavar="RUN",
                        help="Seed group A: runs of one configuration with different seeds.")
    parser.add_argument("--b", nargs="+", default=None, metavar="RUN",
                        help="Seed group B, compared with group A.")
    parser.add_argument("--out", default="runs/comparison", metavar="DIR",
                        help="Where comparison.md, comparison.html and comparison.json go.")
    parser.add_argument("--bootstrap", type=int, default=2000, help="Bootstrap resamples.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the resampling.")


def groups_from_arguments(args: argparse.Namespace) -> list[list[str]]:
    """The groups of runs to compare, the reference group first; refuses a mix of both forms."""
    if args.a or args.b:
        if args.runs:
            raise ConfigError("give runs either as RUN_A RUN_B ... or as --a ... --b ..., not both")
        if not (args.a and args.b):
            raise ConfigError("--a and --b: expected both seed groups (e.g. --a A1 A2 A3 --b B1 B2 B3)")
        return [list(args.a), list(args.b)]
    if len(args.runs) < 2:
        raise ConfigError(f"expected at least two runs to compare (RUN_A RUN_B), got {len(args.runs)}")
    return [[run] for run in args.runs]


def run(args: argparse.Namespace) -> int:
    """Compare the runs the parsed flags name; returns the exit status."""
    if args.bootstrap < 1:
        raise ConfigError(f"--bootstrap: expected an integer of at least 1, got {args.bootstrap}")
    groups = groups_from_arguments(args)
    if len(groups) > len(string.ascii_uppercase):
        raise ConfigError(f"expected at most {len(string.ascii_uppercase)} runs, got {len(groups)}")
    # Imported here so that `--help` and a flag mistake answer at once.
    from keras_med.comparison.report import console_table, tests_lines, verdict, write_comparison
    from keras_med.comparison.runs import align_runs, load_run_predictions_for_comparison
    from keras_med.comparison.statistics import compare

    loaded = [[load_run_predictions_for_comparison(path) for path in group] for group in groups]
    flat = [run for group in loaded for run in group]
    aligned, note = align_runs(flat)
    sizes = [len(group) for group in loaded]
    sides = [aligned[sum(sizes[:k]):sum(sizes[:k + 1])] for k in range(len(sizes))]
    labels = list(string.ascii_uppercase[:len(groups)])
    shared_groups = aligned[0].groups
    comparisons = [compare([run.scored for run in sides[0]], [run.scored for run in side], shared_groups,
                           label_a=labels[0], label_b=label, names_a=groups[0], names_b=group,
                           n_bootstrap=args.bootstrap, seed=args.seed)
                   for label, side, group in zip(labels[1:], sides[1:], groups[1:])]
    notes = [note + "."]
    ttas = sorted({run.tta for run in flat})
    notes.append(f"Probabilities compared: test-time augmentation {', '.join(ttas)} (as each run reported), "
                 "after each run's decision rule.")
    paths = write_comparison(comparisons, args.out, notes,
                             {"bootstrap": args.bootstrap, "seed": args.seed, "groups": groups})
    out = sys.stdout
    for comparison in comparisons:
        out.write(verdict(comparison.difference("balanced_accuracy"), comparison.label_a, comparison.label_b) + "\n")
    for comparison in comparisons:
        out.write(f"\n{comparison.label_b} against {comparison.label_a} ({', '.join(comparison.runs_b)} against "
                  f"{', '.join(comparison.runs_a)}; {comparison.n_images} images, {comparison.n_groups} groups)\n")
        out.write(console_table(comparison) + "\n")
        for line in tests_lines(comparison):
            out.write(line + "\n")
    out.write(f"\n{note}\nwrote {paths['markdown']}, {paths['html']}, {paths['json']}\n")
    return 0
