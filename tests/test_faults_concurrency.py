"""Fault injection, concurrency: two processes on one run directory, two exports to one model name.

The lock tests use real processes (flock is per open file and dropped by the kernel when its
process dies, which only a second process shows). The children load the small modules by path
so that none of them starts TensorFlow.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from helpers import LOCK_HOLDER_SCRIPT, REPO
from keras_med.errors import UserError
from keras_med.run_lock import LOCK_FILE, RunDirectoryLockedError, run_directory_lock

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
HOLDER = LOCK_HOLDER_SCRIPT

SECOND = textwrap.dedent("""
    import sys
    from keras_med.command_line import run_command
    from keras_med.run_lock import run_directory_lock

    def body(argv):
        with run_directory_lock(argv[0]):
            print("trained")

    sys.exit(run_command("keras-med train", body, sys.argv[1:]))
""")


def _start_holder(run_dir: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_second_process_on_a_run_directory_refuses_in_one_line_naming_the_first(tmp_path):
    run_dir = tmp_path / "runs" / "ham"
    holder = _start_holder(run_dir)
    try:
        second = subprocess.run([sys.executable, "-c", SECOND, str(run_dir)], capture_output=True, text=True,
                                env=ENV, timeout=120)
        assert second.returncode == 2, second.stderr
        assert "trained" not in second.stdout
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr
        assert f"in use by process {holder.pid}" in lines[0] and str(run_dir) in lines[0]
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    # Released cleanly: the next process takes it and works.
    after = subprocess.run([sys.executable, "-c", SECOND, str(run_dir)], capture_output=True, text=True, env=ENV,
                           timeout=120)
    assert after.returncode == 0 and after.stdout.strip() == "trained" and "took over" not in after.stderr


def test_lock_of_a_killed_process_is_taken_over_saying_so(tmp_path, caplog):
    holder = _start_holder(tmp_path)
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(holder.pid)
    with pytest.raises(RunDirectoryLockedError, match=f"process {holder.pid}"):
        with run_directory_lock(tmp_path):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    with caplog.at_level(logging.WARNING, logger="keras_med.run_lock"):
        with run_directory_lock(tmp_path) as lock:
            assert lock.read_text().strip() == str(os.getpid())
    assert f"left by process {holder.pid}, which is no longer running" in caplog.text
    # A clean release leaves an empty lock file: no warning next time.
    assert (tmp_path / LOCK_FILE).read_text() == ""


def test_lock_nests_within_one_process(tmp_path):
    with run_directory_lock(tmp_path):
        with run_directory_lock(tmp_path / "." ):
            assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        # Still held by the outer block after the inner one ends.
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert (tmp_path / LOCK_FILE).read_text() == ""


def test_unwritable_run_directory_is_one_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot lock the run directory"):
        with run_directory_lock(blocker / "run"):
            pass


# --- export versions ---------------------------------------------------------------------------------
CLAIM = textwrap.dedent("""
    import runpy, sys, time
    from pathlib import Path
    publish = runpy.run_path(sys.argv[1])["publish_version"]
    model_dir, start, count = Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    while time.time() < start:
        time.sleep(0.001)
    for index in range(count):
        partial = model_dir / f".partial-{index}-{sys.argv[5]}"
        partial.mkdir()
        (partial / "saved_model.pb").write_text(sys.argv[5])
        print(publish(partial, model_dir)[1], flush=True)
""")


def test_concurrent_exports_to_one_name_each_get_their_own_version(tmp_path):
    import time

    model_dir = tmp_path / "saved_models" / "ham10000"
    model_dir.mkdir(parents=True)
    (model_dir / "1").mkdir()  # an existing version: the next ones start at 2
    (model_dir / "1" / "saved_model.pb").write_text("old")
    script = REPO / "keras_med" / "export" / "versioning.py"
    start = time.time() + 1.5
    runs = [subprocess.Popen([sys.executable, "-c", CLAIM, str(script), str(model_dir), str(start), "10", name],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
            for name in ("a", "b", "c")]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], [err for _, err in outputs]
    versions = sorted(int(line) for out, _ in outputs for line in out.split())
    assert versions == list(range(2, 32))
    # Every version holds exactly one export, complete, and no partial folder is left.
    writers = [(model_dir / str(version) / "saved_model.pb").read_text() for version in versions]
    assert sorted(writers) == sorted(["a"] * 10 + ["b"] * 10 + ["c"] * 10)
    assert sorted(path.name for path in model_dir.iterdir()) == sorted(str(v) for v in [1, *versions])


def test_concurrent_threads_and_an_explicit_version_that_exists(tmp_path):
    from keras_med.export.versioning import publish_version

    barrier = threading.Barrier(6)
    claimed, errors = [], []

    def export(index):
        partial = tmp_path / f".partial-{index}"
        partial.mkdir()
        (partial / "saved_model.pb").write_text(str(index))
        barrier.wait()
        try:
            claimed.append(publish_version(partial, tmp_path)[1])
        except Exception as error:  # collected: an exception in a thread would not fail the test
            errors.append(error)

    threads = [threading.Thread(target=export, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and sorted(claimed) == [1, 2, 3, 4, 5, 6]
    partial = tmp_path / ".partial-x"
    partial.mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        publish_version(partial, tmp_path, version=3)
    assert publish_version(partial, tmp_path, version=9) == (tmp_path / "9", 9)
