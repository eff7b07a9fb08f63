"""File writing and hashing shared by every casdri package (private; one truth per rule).

Conventions:
    * Every file casdri writes goes through `atomic_path`: the data are written to a hidden
      temp file in the destination folder, flushed and fsynced, then moved over the
      destination with ``os.replace`` (atomic on POSIX and Windows). A failure, including
      ``KeyboardInterrupt``, removes the temp file and leaves the destination as it was.
    * Temp names are ``.<name>.tmp-<pid>-<8 hex>`` so concurrent writers never collide and a
      crashed run's leftovers are recognisable (`TEMP_PATTERN`).
    * Written files get the usual mode (``0o666`` less the umask), not ``mkstemp``'s 0600.
    * Files that belong together (a search's policy, trials, figures and report) are rendered
      first and written in one `deferred_interrupts` block, so a Ctrl-C or a SIGTERM arriving
      while they are written takes effect after the last one: the folder holds the old set or
      the new one, not a mix.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import threading
import uuid
from pathlib import Path
from typing import Callable, Iterator, Union

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "deferred_interrupts",
           "sha256_file", "TEMP_PATTERN"]

PathLike = Union[str, os.PathLike]

#: how the name of an unfinished temp file looks (``re.fullmatch`` on a file name)
TEMP_PATTERN = re.compile(r"\..+\.tmp-\d+-[0-9a-f]{8}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike, *, mkdir: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on a clean exit it replaces ``path`` atomically.

    The caller writes the whole file to the yielded path (with any library: pyarrow,
    soundfile, zipfile, ...). On an exception the temp file is removed and ``path`` is left
    untouched.

    Args:
        path: destination file.
        mkdir: create the destination folder when missing.

    Raises:
        OSError: from the file system (the temp file is removed first).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_path(d / "x.txt") as tmp:
        ...     _ = tmp.write_text("hello")
        >>> (d / "x.txt").read_text(), sorted(p.name for p in d.iterdir())
        ('hello', ['x.txt'])
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: PathLike, data: Union[bytes, Callable[[Path], None]]) -> Path:
    """Write ``data`` (bytes, or a ``writer(tmp_path)`` callback) to ``path`` atomically.

    Returns:
        ``path`` as a `Path`.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb") as fh:
                fh.write(data)
    return path


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs, then deliver the first one that came.

    For a short group of writes that must land together (module conventions). The signal is
    raised again after the block under the handlers that were in place before it (Python's
    ``KeyboardInterrupt`` for SIGINT; for SIGTERM, the previous handler, by default the end of
    the process); when the block itself fails, its exception propagates instead. Python-level
    handlers, not a signal mask: another thread (numba's, joblib's) may take the signal, but
    Python runs handlers in the main thread. Outside the main thread (where Python cannot set
    handlers) the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    before: dict = {}
    failed = True
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            before[s] = signal.signal(s, lambda signum, _frame: caught.append(signum))
        yield
        failed = False
    finally:
        try:  # nested: a signal between the two restores cannot skip the second one
            if signal.SIGTERM in before:
                signal.signal(signal.SIGTERM, before[signal.SIGTERM])
        finally:
            if signal.SIGINT in before:
                signal.signal(signal.SIGINT, before[signal.SIGINT])
        if caught and not failed:
            signal.raise_signal(caught[0])


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see `atomic_path`)."""
    return atomic_write_bytes(path, text.encode(encoding))


def sha256_file(path: PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks of ``chunk_bytes``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            if not block:
                return h.hexdigest()
            h.update(block)
