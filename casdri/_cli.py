"""One shell for the command-line tools (``casdri``, ``casdri-cache``, ``casdri-search``):
one parser base, one exit-code policy, one way to show tracebacks, one lazy import.

Conventions:
    * **Exit codes**: `EXIT_OK` 0 success; `EXIT_USER` 1 bad input the user can fix (a
      `casdri.errors.CasdriError` or an ``OSError``: one line ``prog: error: ...``);
      `EXIT_USAGE` 2 a usage error (one line ``prog: error: ... (see 'prog --help')``, as
      argparse's own code); `EXIT_INTERNAL` 3 anything else (a bug: one line naming the
      exception type, asking for ``--debug`` and a report); 130 interrupted (Ctrl-C); 143
      terminated (SIGTERM, e.g. ``kill`` or a batch scheduler's time limit, for a command run
      from the process's own command line: it unwinds as Ctrl-C does, so half-written temp
      files are removed and grouped writes finish, `casdri._io.deferred_interrupts`).
    * ``--debug`` anywhere on the command line shows the traceback instead of the one line.
    * A warning of a command run from the process's own command line is one line,
      ``prog: warning: ...`` (Python shows the file, line and source line of the call).
    * A closed stdout (``casdri-cache info CACHE | head``) ends quietly with 0.
    * Heavy or optional modules are imported where they are used, through `lazy_import`, so
      that ``--help`` stays fast and a missing extra gets its ``pip install`` hint.
    * A command run from the process's own command line (``argv`` None) owns the process's
      cyclic garbage collector (`CLI_GC_THRESHOLD`): collections run less often while it
      imports and loads (most objects then live until the end). When it returns, one full
      collection finalises its garbage, and what is still alive is frozen (``gc.freeze``),
      so the interpreter's teardown does not scan it again. Collections and teardown took
      about 1 s of a 5 s warm ``casdri-search --stage gates``. Commands close what they open
      (an RDB storage: `search.engines.open_storage`) rather than leave it to finalisers. A
      call with an explicit ``argv`` (tests, notebooks) leaves the collector alone.
"""
from __future__ import annotations

import argparse
import errno
import gc
import importlib
import os
import signal
import sys
import threading
import warnings
from types import ModuleType
from typing import Callable, Optional, Sequence

from .errors import CasdriError, MissingDependencyError

__all__ = ["EXIT_OK", "EXIT_USER", "EXIT_USAGE", "EXIT_INTERNAL", "EXIT_INTERRUPTED",
           "EXIT_TERMINATED", "Terminated",
           "Parser", "UsageError", "int_at_least", "number", "lazy_import", "run",
           "OPTIONAL_MODULES", "CLI_GC_THRESHOLD"]

#: ``gc.set_threshold`` of a command that owns its process (Python's default: 700, 10, 10)
CLI_GC_THRESHOLD = (10_000, 10, 10)

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_TERMINATED = 128 + signal.SIGTERM

#: optional top-level modules → the casdri extra that installs them
OPTIONAL_MODULES = {"torch": "builder", "torchaudio": "builder", "pyroomacoustics": "builder",
                    "optuna_dashboard": "notebooks", "nbclient": "notebooks",
                    "jupyter": "notebooks"}


class Terminated(BaseException):
    """SIGTERM, raised in the main thread of a command (module conventions); a
    ``BaseException`` like ``KeyboardInterrupt``, so ``except Exception`` does not swallow it."""


def _terminated(_signum, _frame):
    raise Terminated


class UsageError(Exception):
    """A command line argparse (or a handler) refuses; carries the parser for its ``prog``."""

    def __init__(self, message: str, parser: argparse.ArgumentParser):
        super().__init__(message)
        self.parser = parser


class Parser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors raise `UsageError` (printed by `run`)."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        raise UsageError(message, self)


def int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers ``>= lo``.

    Example:
        >>> int_at_least(1)("3")
        3
        >>> int_at_least(1)("0")
        Traceback (most recent call last):
        argparse.ArgumentTypeError: expected an integer >= 1, got 0
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {value}")
        return value
    parse.__name__ = f"integer >= {lo}"
    return parse


def number(expected: str, ok: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse ``type`` accepting a float for which ``ok(value)`` holds (never NaN).

    Args:
        expected: how a good value reads in the message (``"seconds > 0"``).
        ok: the check.

    Example:
        >>> number("a level in (0, 1)", lambda v: 0 < v < 1)("0.05")
        0.05
        >>> number("a level in (0, 1)", lambda v: 0 < v < 1)("2")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected a level in (0, 1), got '2'
    """
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value != value or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def _hint(module: str) -> str:
    extra = OPTIONAL_MODULES.get(module.split(".")[0])
    where = f'pip install ".[{extra}]"' if extra else f"pip install {module.split('.')[0]}"
    return f"{module} is not installed; install it with {where} (from the casdri checkout)"


def lazy_import(name: str, extra: Optional[str] = None) -> ModuleType:
    """``importlib.import_module(name)``; a missing module raises `MissingDependencyError`
    with the ``pip install ".[extra]"`` hint.

    Args:
        name: module to import (``"torch"``).
        extra: the casdri extra that installs it (default: from `OPTIONAL_MODULES`).
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        top = (e.name or name).split(".")[0]
        if top != name.split(".")[0]:
            raise
        if extra is not None:
            raise MissingDependencyError(f'{name} is not installed; install it with pip '
                                         f'install ".[{extra}]" (from the casdri checkout)'
                                         ) from None
        raise MissingDependencyError(_hint(name)) from None


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, CasdriError):
        where = f" ({e.filename})" if e.filename else ""
        if e.errno == errno.ENOSPC:
            return (f"no space left on the device{where}; free some space and rerun the same "
                    "command (builds resume where they stopped)")
        if e.errno in (errno.EACCES, errno.EPERM):
            return f"permission denied{where}; choose a folder you can write"
        return f"{e.strerror or e}{where}"
    return str(e)


def run(parser: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], int],
        argv: Optional[Sequence[str]] = None, own_process: Optional[bool] = None) -> int:
    """Parse ``argv`` and call ``handler(args)`` under the exit-code policy of the module.

    Args:
        parser: a `Parser` (its subparsers too: ``parser_class=Parser``).
        handler: ``args -> exit code``; may raise `UsageError` through ``parser.error``.
        argv: arguments without the program name (default ``sys.argv[1:]``).
        own_process: the command owns the process (the collector, SIGTERM and the warnings
            display of the module conventions); default: ``argv`` is None. Off the main
            thread the signal and warnings settings are left alone.

    Returns:
        The exit code (module conventions).
    """
    own = argv is None if own_process is None else own_process
    argv = sys.argv[1:] if argv is None else argv
    if not own:
        return _run(parser, handler, argv)
    gc.set_threshold(*CLI_GC_THRESHOLD)  # this process's own command: see the conventions
    main = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _terminated) if main else None
    shown = warnings.showwarning
    if main:
        warnings.showwarning = _OneLineWarning(parser.prog)
    try:
        return _run(parser, handler, argv)
    finally:
        if main:
            warnings.showwarning = shown
            signal.signal(signal.SIGTERM, before)
        gc.collect()
        gc.freeze()


class _OneLineWarning:
    """`warnings.showwarning` of a command (module conventions): ``prog: warning: ...``, the
    prog of the subcommand once the command line is parsed (`_run` sets it)."""

    def __init__(self, prog: str):
        self.prog = prog

    def __call__(self, message, category, filename, lineno, file=None, line=None):
        print(f"{self.prog}: warning: {message}", file=sys.stderr if file is None else file)


def _run(parser, handler, argv: Sequence[str]) -> int:
    argv = list(argv)
    debug = "--debug" in argv
    prog = parser.prog
    try:
        args = parser.parse_args(argv)
        prog = " ".join(filter(None, [parser.prog, getattr(args, "command", None)]))
        if isinstance(warnings.showwarning, _OneLineWarning):
            warnings.showwarning.prog = prog
        return int(handler(args) or 0)
    except UsageError as e:
        print(f"{e.parser.prog}: error: {e} (see '{e.parser.prog} --help')", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:  # the reader of stdout left: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 - the one place errors become exit codes
        if debug:
            raise
        if isinstance(e, ModuleNotFoundError) and e.name:
            print(f"{prog}: error: {_hint(e.name)}", file=sys.stderr)
            return EXIT_USER
        if isinstance(e, (CasdriError, OSError)):
            print(f"{prog}: error: {_describe(e)}", file=sys.stderr)
            return EXIT_USER
        print(f"{prog}: internal error: {type(e).__name__}: {e} (rerun with --debug for the "
              "traceback and report it)", file=sys.stderr)
        return EXIT_INTERNAL
