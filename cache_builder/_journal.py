"""The batch journal of a chunk in flight: a killed build loses at most one separator batch.

Conventions:
    * A chunk's separated batches are journaled in ``<cache>/_build/journal/<part>/`` as one
      ``<separator index>-<batch index>.npz`` per finished batch (`casdri._io.atomic_path`: a
      file is whole or absent). An entry that cannot be read anyway (a disk fault) is
      deleted with a warning naming it and its batch is separated again: it never blocks a
      rerun. It holds what the part file will hold for
      those stems (energies, re-tagging softmaxes, SNRs), never audio.
    * A resumed chunk re-tags its soundscapes (one pass per soundscape and tagger), rebuilds the
      same closure and batches, and takes every batch whose journal entry names the same
      soundscapes and queries from the journal instead of separating it again. An entry that
      does not match (other models, other batching) is ignored and recomputed.
    * The journal of a chunk is deleted once its part is in the manifest.
"""
from __future__ import annotations

import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from casdri._io import TEMP_PATTERN, atomic_path

from .runner import StemInfo

__all__ = ["BatchJournal"]


class BatchJournal:
    """Finished separator batches of one chunk (module conventions).

    Args:
        folder: ``<cache>/_build/journal/<part>``; created on the first write.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _file(self, sep_index: int, batch_index: int) -> Path:
        return self.folder / f"{sep_index}-{batch_index:05d}.npz"

    def load(self, sep_index: int, batch_index: int, names: Sequence[str],
             queries: Sequence[tuple[int, ...]]) -> Optional[list]:
        """The batch's ``[item][stage]`` `StemInfo` lists, or None (absent, not matching, or
        unreadable: then deleted with a `RuntimeWarning` naming the file)."""
        path = self._file(sep_index, batch_index)
        if not path.is_file():
            return None
        try:
            return self._read(path, names, queries)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            warnings.warn(f"{path}: unreadable batch journal entry ({type(e).__name__}: {e}); "
                          "deleted, its batch is separated again", RuntimeWarning,
                          stacklevel=2)
            path.unlink(missing_ok=True)
            return None

    @staticmethod
    def _read(path: Path, names, queries) -> Optional[list]:
        with np.load(path, allow_pickle=False) as z:
            q_len = [len(q) for q in queries]
            if (list(z["names"]) != list(names) or z["q_len"].tolist() != q_len
                    or z["q_flat"].tolist() != [k for q in queries for k in q]):
                return None
            n_stages = int(z["n_stages"])
            out = [[] for _ in queries]
            for st in range(n_stages):
                energy, retag = z[f"energy_{st}"], z[f"retag_{st}"]
                snr_n, snr = z[f"snr_n_{st}"], z[f"snr_{st}"]
                a = b = 0
                for i, q in enumerate(queries):
                    n = len(q)
                    s = None
                    if snr_n[i] >= 0:
                        s = snr[b: b + n * snr_n[i]].reshape(n, int(snr_n[i]))
                        b += n * int(snr_n[i])
                    out[i].append(StemInfo(tuple(q), energy[a: a + n].copy(),
                                           retag[a: a + n].copy(),
                                           None if s is None else s.copy()))
                    a += n
        return out

    def save(self, sep_index: int, batch_index: int, names: Sequence[str],
             queries: Sequence[tuple[int, ...]], infos: Sequence[Sequence]) -> None:
        """Journal one finished batch atomically (`casdri._io.atomic_path`)."""
        n_stages = len(infos[0]) if infos else 0
        arrays = {"names": np.asarray(list(names), dtype=str),
                  "q_len": np.asarray([len(q) for q in queries], np.int64),
                  "q_flat": np.asarray([k for q in queries for k in q], np.int64),
                  "n_stages": np.asarray(n_stages)}
        for st in range(n_stages):
            per = [item[st] for item in infos]
            arrays[f"energy_{st}"] = np.concatenate([p.energy_db for p in per])
            arrays[f"retag_{st}"] = np.concatenate([p.retag for p in per])
            arrays[f"snr_n_{st}"] = np.asarray(
                [-1 if p.snr_db is None else p.snr_db.shape[1] for p in per], np.int64)
            arrays[f"snr_{st}"] = np.concatenate(
                [np.zeros(0)] + [p.snr_db.ravel() for p in per if p.snr_db is not None])
        with atomic_path(self._file(sep_index, batch_index)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    def remove_temps(self) -> None:
        """Temp files a kill left behind (never read)."""
        for f in self.folder.glob(".*"):
            if TEMP_PATTERN.fullmatch(f.name) or f.name.endswith(".tmp"):
                f.unlink(missing_ok=True)

    def clear(self) -> None:
        """Delete the journal (its chunk's part is on disk and in the manifest)."""
        shutil.rmtree(self.folder, ignore_errors=True)
