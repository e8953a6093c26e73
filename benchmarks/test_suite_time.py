"""Wall time of test files run in one process and on two pytest-xdist workers (`-n 2 --dist loadfile`).

The two runs go back to back, so on a shared machine their ratio means more than either figure.

Usage:
    nice -n 10 python benchmarks/test_suite_time.py tests/test_training.py tests/test_faults_kill.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed_pytest(files: list[str], workers: str) -> tuple[float, int]:
    """Seconds and exit status of `python -m pytest -q -n <workers> --dist loadfile FILES` in the repository."""
    started = time.monotonic()
    finished = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", workers,
                               "--dist", "loadfile", *files], cwd=REPO, capture_output=True, text=True)
    return time.monotonic() - started, finished.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="test files (or node ids) to time")
    args = parser.parse_args()
    for workers in ("0", "2"):
        seconds, status = timed_pytest(args.files, workers)
        print(f"-n {workers}: {seconds:.0f} s (exit status {status})", flush=True)


if __name__ == "__main__":
    main()
