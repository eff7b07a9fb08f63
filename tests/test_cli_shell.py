"""`casdri._cli`: one exit-code policy and one message shape for every command line."""
from __future__ import annotations

import errno

import pytest

from casdri._cli import EXIT_INTERNAL, EXIT_USAGE, EXIT_USER, Parser, lazy_import, run
from casdri.errors import CacheError, MissingDependencyError


def _toy(exc):
    p = Parser(prog="toy")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--n", type=int)

    def handler(args):
        if exc is not None:
            raise exc
        return 0
    return p, handler


@pytest.mark.parametrize("exc, argv, code, line", [
    (None, ["--n", "x"], EXIT_USAGE,
     "toy: error: argument --n: invalid int value: 'x' (see 'toy --help')"),
    (CacheError("cache: broken; rebuild it"), [], EXIT_USER, "toy: error: cache: broken; "
                                                             "rebuild it"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/x"), [], EXIT_USER,
     "toy: error: no space left on the device (/data/x); free some space and rerun the same "
     "command (builds resume where they stopped)"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "out"), [], EXIT_USER,
     "toy: error: Is a directory (out)"),
    (ModuleNotFoundError("No module named 'pyroomacoustics'", name="pyroomacoustics"), [],
     EXIT_USER, 'toy: error: pyroomacoustics is not installed; install it with pip install '
                '".[builder]" (from the casdri checkout)'),
    (ZeroDivisionError("division by zero"), [], EXIT_INTERNAL,
     "toy: internal error: ZeroDivisionError: division by zero (rerun with --debug for the "
     "traceback and report it)"),
])
def test_exit_codes_and_one_line(capsys, exc, argv, code, line):
    parser, handler = _toy(exc)
    assert run(parser, handler, argv) == code
    assert capsys.readouterr().err.splitlines() == [line]


def test_debug_shows_the_traceback():
    parser, handler = _toy(ZeroDivisionError("x"))
    with pytest.raises(ZeroDivisionError):
        run(parser, handler, ["--debug"])


def test_lazy_import_hint():
    with pytest.raises(MissingDependencyError, match=r'casdri_no_such_module is not installed; '
                       r'install it with pip install casdri_no_such_module'):
        lazy_import("casdri_no_such_module")
    with pytest.raises(MissingDependencyError, match=r'pip install "\.\[builder\]"'):
        lazy_import("casdri_no_such_module", extra="builder")
    assert lazy_import("json").dumps(1) == "1"


def test_missing_torch_gives_the_builder_extra_hint(monkeypatch):
    import builtins
    import sys

    from cache_builder.system import pick_device
    real = builtins.__import__

    def no_torch(name, *a, **k):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        return real(name, *a, **k)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(MissingDependencyError, match=r'torch is not installed; install it with '
                       r'pip install "\.\[builder\]"'):
        pick_device("cpu")


def test_score_out_that_is_a_folder_is_a_user_error(capsys, tmp_path):
    from casdri import cli
    (tmp_path / "r.json").mkdir()
    assert cli.main(["score", "--example", "--no-progress", "--out",
                     str(tmp_path / "r.json")]) == EXIT_USER
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("casdri score: error: cannot write --out")


@pytest.fixture
def restored_gc():
    import gc
    before = gc.get_threshold()
    yield gc
    gc.unfreeze()
    gc.set_threshold(*before)


def test_a_command_owning_its_process_tunes_and_freezes_the_gc(restored_gc, monkeypatch):
    """From the process's own command line (argv None) the collector runs less often and the
    objects alive at the end are frozen (teardown does not scan them), even after an error;
    an explicit argv (tests, notebooks) leaves the collector as it was."""
    from casdri._cli import CLI_GC_THRESHOLD
    gc = restored_gc
    gc.unfreeze()
    parser, handler = _toy(None)
    seen = []
    assert run(parser, lambda args: seen.append(gc.get_threshold()) or 0, ["--n", "1"]) == 0
    assert gc.get_freeze_count() == 0 and seen[-1] != CLI_GC_THRESHOLD
    monkeypatch.setattr("sys.argv", ["toy", "--n", "1"])
    assert run(parser, lambda args: seen.append(gc.get_threshold()) or 0) == 0
    assert seen[-1] == CLI_GC_THRESHOLD and gc.get_freeze_count() > 1000
    gc.unfreeze()
    parser, handler = _toy(ZeroDivisionError("x"))
    assert run(parser, handler) == EXIT_INTERNAL
    assert gc.get_freeze_count() > 1000


def test_sigterm_ends_a_command_like_ctrl_c_with_its_own_code(restored_gc, monkeypatch, capsys):
    """SIGTERM (``kill``, a scheduler's time limit) unwinds the command: ``finally`` blocks run,
    one line says so, exit 143; the handler is the process's own again afterwards."""
    import signal

    from casdri._cli import EXIT_TERMINATED
    restored_gc.unfreeze()
    parser, _ = _toy(None)
    cleaned = []

    def handler(args):
        try:
            signal.raise_signal(signal.SIGTERM)
        finally:
            cleaned.append(True)
        return 0

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr("sys.argv", ["toy", "--n", "1"])
    assert run(parser, handler) == EXIT_TERMINATED == 143
    assert cleaned == [True]
    assert capsys.readouterr().err.strip() == "toy: terminated"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_warning_of_a_command_is_one_line(restored_gc, monkeypatch, capsys):
    """It showed the file, line number and source line of the warnings.warn call."""
    import warnings
    restored_gc.unfreeze()
    parser, _ = _toy(None)
    shown = warnings.showwarning

    def handler(args):
        warnings.warn("split 'dev' lacks class Blender (one-line test)", UserWarning)
        return 0

    monkeypatch.setattr("sys.argv", ["toy", "--n", "1"])
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        inside = warnings.showwarning
        assert run(parser, handler) == 0
        assert warnings.showwarning is inside  # restored by run (catch_warnings restores too)
    assert capsys.readouterr().err.splitlines() == [
        "toy: warning: split 'dev' lacks class Blender (one-line test)"]
    assert warnings.showwarning is shown


def test_a_command_run_from_another_thread_leaves_signals_alone(restored_gc, monkeypatch):
    """``signal.signal`` works only in the main thread: run(argv=None) from a thread raised a
    raw ValueError instead of returning an exit code."""
    import threading
    restored_gc.unfreeze()
    parser, _ = _toy(None)
    monkeypatch.setattr("sys.argv", ["toy", "--n", "1"])
    codes = []
    t = threading.Thread(target=lambda: codes.append(run(parser, lambda args: 0)))
    t.start()
    t.join()
    assert codes == [0]
