"""The submission folder and zip of a live apply (private; `cache_builder.apply`).

Conventions:
    * Stems are written to a hidden temp folder beside ``out`` (``.<out>.tmp-<pid>-<hex>``,
      `casdri._io.TEMP_PATTERN`), then moved into ``out``: a new ``out`` is one rename; an
      existing one (``--overwrite``) holds `INCOMPLETE_MARKER` while its stale stems of the
      same soundscapes are replaced (other files are kept). A killed run leaves only the temp
      folder, removed by the next run into the same ``out`` once its process is gone.
    * The zip is checked before any work (`zip_target`), written last and atomically
      (`casdri._io.atomic_path`), and holds exactly the stems of this run.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Union

from casdri._io import atomic_path, atomic_write_text
from casdri.errors import CacheError
from casdri.layout import parse_stem_name, wav_names

__all__ = ["INCOMPLETE_MARKER", "zip_target", "check_out", "temp_folder", "move_in",
           "write_zip"]

#: present in ``out`` while an apply moves its stems in
INCOMPLETE_MARKER = ".casdri-apply-incomplete"


def zip_target(out: Path, zip_name: Union[str, Path], overwrite: bool = False) -> Path:
    """The submission zip path for ``zip_name`` (a bare name goes beside ``out``), checked
    before any work: a temp file is made (and removed) in the folder that will hold it.

    Raises:
        CacheError: a suffix other than ``.zip``, a folder in the way, a folder that cannot
            be written, or an existing zip without ``overwrite``.
    """
    path = Path(zip_name)
    if not str(zip_name).strip() or path.name in ("", ".", ".."):
        raise CacheError(f"--zip {str(zip_name)!r}: give a file name such as submission.zip")
    if len(path.parts) == 1:
        path = Path(out).parent / path
    suffixes = "".join(path.suffixes)
    if not path.suffix:
        path = path.with_name(path.name + ".zip")
    elif path.suffix != ".zip":
        raise CacheError(f"--zip {str(zip_name)!r}: a submission is a .zip file (got "
                         f"{suffixes!r}); name it e.g. {path.name.split('.')[0]}.zip")
    if path.is_dir():
        raise CacheError(f"--zip {path}: is a folder; give a file name")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    try:  # os.access says yes to root anywhere, /proc included: try a real file
        if not folder.is_dir():
            raise OSError
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        raise CacheError(f"--zip {path}: cannot write into {folder}; choose a writable "
                         "folder") from None
    if path.exists() and not overwrite:
        raise CacheError(f"--zip {path}: exists (an earlier submission?); pass --overwrite to "
                         "replace it, or choose another name")
    return path


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CacheError(f"{out} exists and is not a folder; choose another --out")
    existing = wav_names(out) if out.is_dir() else []
    if existing and not overwrite:
        raise CacheError(f"{out} already holds {len(existing)} .wav files; choose an empty "
                         "--out or pass --overwrite")
    if out.is_dir() and (out / INCOMPLETE_MARKER).exists() and not overwrite:
        raise CacheError(f"{out} holds {INCOMPLETE_MARKER}: an earlier apply was killed while "
                         "moving its stems in; rerun it with --overwrite")


def temp_folder(out: Path) -> Path:
    """A fresh hidden folder beside ``out``; temp folders of dead runs into ``out`` go."""
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = re.compile(rf"\.{re.escape(out.name)}\.tmp-(\d+)-[0-9a-f]{{8}}")
    for p in out.parent.iterdir():
        m = prefix.fullmatch(p.name)
        if m and p.is_dir() and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def move_in(tmp: Path, out: Path, names: list[str], label_set) -> None:
    """Move the stems of ``tmp`` into ``out``; stale stems of these soundscapes go first."""
    if not out.exists():
        os.replace(tmp, out)
        return
    marker = out / INCOMPLETE_MARKER
    atomic_write_text(marker, f"apply pid {os.getpid()} is moving stems in from {tmp}\n")
    wanted = set(names)
    for name in wav_names(out):
        try:
            sc, _, _ = parse_stem_name(name, wanted, label_set)
        except Exception:  # noqa: BLE001 - a file of another soundscape: keep it
            continue
        (out / name).unlink()
    for name in wav_names(tmp):
        os.replace(tmp / name, out / name)
    marker.unlink()
    shutil.rmtree(tmp, ignore_errors=True)


def write_zip(out: Path, names: list[str], path: Path) -> Path:
    """Zip exactly ``names`` (this run's stems) from ``out`` into ``path``, atomically."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for name in sorted(names):
                z.write(out / name, arcname=name)
    return path
