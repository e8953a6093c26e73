"""What every command does around its work: parse flags, log, and turn a user's mistake into one line.

Every entry point (`keras-med COMMAND`, `python -m keras_med.recipes.NAME`) runs its body through
`run_command`: a `keras_med.errors.KerasMedError` (a `UserError`, exit status 2; a
`RunDivergedError`, exit status 3) prints `PROG: error: MESSAGE` on one line and returns the
error's exit status; its traceback appears only with `--verbose`. Any other exception is a bug
and keeps its traceback. Ctrl-C prints one line (the epoch it stopped at; exit status 130). A bad flag is a `UsageError` too, so it reads the same way. TensorFlow's
C++ start-up lines are kept off stderr unless `--verbose` or `TF_CPP_MIN_LOG_LEVEL` asks for them
(`keras_med.backend.quiet_tensorflow_logs`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import Callable, Sequence

from keras_med.backend import quiet_tensorflow_logs
from keras_med.errors import ConfigError, KerasMedError
from keras_med.interruption import INTERRUPTED_EXIT_CODE, interrupted_message

log = logging.getLogger("keras_med")

VERBOSE_FLAGS = ("--verbose", "-v")


class UsageError(ConfigError):
    """A flag argparse refused (unknown, missing, of the wrong type or choice)."""


class CommandParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are `UsageError`s, so `run_command` prints them on one line.

    argparse's own handler prints the whole usage block and exits; here the message names the
    flag and points at `--help`, like every other user's mistake.
    """

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default once: configuration flags state the recipe's own default in their
    help and have None as argparse's default, which `ArgumentDefaultsHelpFormatter` would add again."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """`--verbose`/`-v`: debug logging and the traceback of a user's mistake."""
    parser.add_argument(*VERBOSE_FLAGS, dest="verbose", action="store_true",
                        help="Debug logging, and the full traceback of an error.")


def wants_verbose(argv: Sequence[str]) -> bool:
    """Whether argv asks for `--verbose`; read before parsing, so a parse error also honours it."""
    return any(arg in VERBOSE_FLAGS for arg in argv)


def configure_logging(verbose: bool = False) -> None:
    """Log INFO (DEBUG with `--verbose`) with a time stamp to stderr."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.INFO)


def one_line(error: BaseException) -> str:
    """The error's message on one line (messages that quote a library's error may hold newlines)."""
    return " ".join(str(error).split()) or type(error).__name__


def run_command(prog: str, body: Callable[[list[str]], int | None], argv: Sequence[str]) -> int:
    """Run `body(argv)`; a `KerasMedError` becomes one line on stderr and its exit status.

    Args:
        prog: the command as the user typed it (`keras-med export`), the prefix of the message.
        body: parses `argv` (with a `CommandParser`) and does the work; returns the exit status.
        argv: the command's arguments.

    Returns:
        The body's exit status (None counts as 0), or the error's `exit_code`.

    Example:
        >>> run_command("keras-med models", lambda argv: 0, [])
        0
    """
    argv = list(argv)
    verbose = wants_verbose(argv)
    configure_logging(verbose)
    # Before the body imports TensorFlow (Keras does), which every command but --help does.
    quiet_tensorflow_logs(verbose)
    try:
        return int(body(argv) or 0)
    except KerasMedError as error:
        if verbose:
            traceback.print_exc(file=sys.stderr)
        sys.stderr.write(f"{prog}: error: {one_line(error)}\n")
        return int(getattr(error, "exit_code", 1))
    except KeyboardInterrupt:
        # Ctrl-C is the user's choice, not a failure: the resume state of the last finished epoch
        # is on disk (written atomically), so the same command carries on from there.
        if verbose:
            traceback.print_exc(file=sys.stderr)
        sys.stderr.write(interrupted_message(prog) + "\n")
        return INTERRUPTED_EXIT_CODE
