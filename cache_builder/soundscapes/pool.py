"""The pool of real recordings a soundscape generator draws from, and its split partition.

Conventions:
    * Layout (the ``bed_sources`` layout)::

          <pool>/sound_event/<Class>/*.flac|*.wav   target clips, ``<Class>`` in the label set
          <pool>/interference/*.flac|*.wav          non-target events
          <pool>/noise/*.flac|*.wav                 stationary backgrounds
          <pool>/manifest.csv                       optional: path, category, class, ...

      With ``manifest.csv`` only the files it lists are used (column ``path``, relative to the
      pool, must lie in the folder its ``category``/``class`` say); without it the folders are
      scanned. Every clip is mono at the generator's sample rate (no resampling).
    * **Split partition** (``train`` / ``dev`` / ``test``): clips are grouped by *recording*
      (the manifest's ``original_file`` when present, a ``;``-separated list for clips
      assembled from several files, else the file itself): clips that share any original file
      form one group, so no original recording spans two splits. Within each class (and within
      ``interference`` and ``noise``) the groups are ordered by the SHA-256 of their id and
      cut 60/20/20: ``n_dev = n_test = round(0.2 n)``, at least 1 each when ``n >= 3``; with
      ``n == 2`` one group goes to train and one to dev; with ``n == 1`` it goes to train.
      The partition depends only on the pool, never on the generation seed, so splits made by
      different runs never share a recording.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd
import soundfile as sf

from casdri.errors import AudioFileError, InputError
from casdri.labels import LabelSet

__all__ = ["SPLITS", "Clip", "PoolSplit", "SourcePool", "load_pool", "read_clip"]

SPLITS = ("train", "dev", "test")
_CATEGORIES = ("sound_event", "interference", "noise")
_AUDIO_SUFFIXES = (".flac", ".wav")
_CONFIDENCE_RANK = {"low": 0, "medium": 1, "high": 2}
PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Clip:
    """One mono recording of the pool.

    Attributes:
        path: path relative to the pool root, POSIX separators.
        label: class name for a target clip, ``'interference'`` or ``'noise'``.
        group: recording id used by the split partition.
        n_samples: length in samples at the pool's sample rate.
    """

    path: str
    label: str
    group: str
    n_samples: int


@dataclass(frozen=True)
class PoolSplit:
    """The clips of one split.

    Attributes:
        name: ``'train'``, ``'dev'`` or ``'test'``.
        root: pool root folder.
        targets: class name → clips (only classes with at least one clip in this split),
            classes in label-set order.
        interference: interference clips.
        noise: background clips.
    """

    name: str
    root: Path
    targets: dict[str, tuple[Clip, ...]]
    interference: tuple[Clip, ...]
    noise: tuple[Clip, ...]


@dataclass(frozen=True)
class SourcePool:
    """A checked pool with its deterministic split partition (see module conventions)."""

    root: Path
    sample_rate_hz: int
    splits: dict[str, PoolSplit]

    def recordings(self, split: str) -> set[str]:
        """Paths of every clip of ``split`` (targets, interference and noise)."""
        part = self.splits[split]
        clips = [c for cs in part.targets.values() for c in cs]
        return {c.path for c in clips + list(part.interference) + list(part.noise)}


def _listed_files(root: Path, label_set: LabelSet) -> list[tuple[str, str]]:
    """``(relative path, label)`` of every audio file found by scanning the folders."""
    missing = [c for c in _CATEGORIES if not (root / c).is_dir()]
    if missing:
        raise InputError(
            f"{root}: not a source pool, missing folder(s) {', '.join(m + '/' for m in missing)}; "
            "expected sound_event/<Class>/, interference/ and noise/ (the bed_sources layout)")
    out: list[tuple[str, str]] = []
    for class_dir in sorted(p for p in (root / "sound_event").iterdir() if p.is_dir()):
        label = class_dir.name
        if label not in label_set.classes:
            _unknown_class(class_dir, label_set)
        files = sorted(f for f in class_dir.iterdir() if f.suffix.lower() in _AUDIO_SUFFIXES)
        if not files:
            raise InputError(f"{class_dir}: class folder holds no .flac/.wav clip; add clips "
                             "or remove the empty folder")
        out += [(f.relative_to(root).as_posix(), label) for f in files]
    for cat in ("interference", "noise"):
        out += [(f.relative_to(root).as_posix(), cat) for f in sorted((root / cat).iterdir())
                if f.suffix.lower() in _AUDIO_SUFFIXES]
    return out


def _unknown_class(class_dir: Path, label_set: LabelSet) -> None:
    raise InputError(f"{class_dir}: folder name {class_dir.name!r} is not a class of label set "
                     f"{label_set.name!r}; expected one of {', '.join(label_set.classes)}")


def _from_manifest(root: Path, label_set: LabelSet,
                   min_confidence: Optional[str]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """``(relative path, label)`` rows and path → recording id from ``manifest.csv``."""
    manifest = root / "manifest.csv"
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    need = {"path", "category"}
    if not need <= set(table.columns):
        raise InputError(f"{manifest}: needs columns {sorted(need)}, has {list(table.columns)}")
    if min_confidence is not None and "confidence" in table.columns:
        rank = _CONFIDENCE_RANK[min_confidence]
        table = table[table["confidence"].map(lambda c: _CONFIDENCE_RANK.get(c, -1) >= rank)]
    rows: list[tuple[str, str]] = []
    originals: dict[str, list[str]] = {}
    for rec in table.to_dict("records"):
        path, cat = rec["path"], rec["category"]
        parts = Path(path).parts
        depth = 3 if cat == "sound_event" else 2
        if cat not in _CATEGORIES or len(parts) != depth or parts[0] != cat:
            raise InputError(f"{manifest}: row {path!r} (category {cat!r}) does not follow "
                             "sound_event/<Class>/<file>, interference/<file>, noise/<file>")
        label = parts[1] if cat == "sound_event" else cat
        if cat == "sound_event" and label not in label_set.classes:
            _unknown_class(root / "sound_event" / label, label_set)
        stated = rec.get("class", label)
        if cat == "sound_event" and stated != label:
            raise InputError(f"{manifest}: row {path!r} says class {stated!r} but lies in "
                             f"sound_event/{label}/; move the file or fix the row")
        if not (root / path).is_file():
            raise InputError(f"{manifest}: lists {path!r}, which is not a file in {root}")
        rows.append((path, label))
        originals[path] = [o for o in rec.get("original_file", "").split(";") if o] or [path]
    return rows, _recording_groups(originals)


def _recording_groups(originals: dict[str, list[str]]) -> dict[str, str]:
    """Clip path → group id: clips that share any original file are one group (the id is the
    smallest clip path of the group), so no original recording spans two splits."""
    parent = {p: p for p in originals}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    first_clip: dict[str, str] = {}
    for path in sorted(originals):
        for orig in originals[path]:
            other = first_clip.setdefault(orig, path)
            a, b = find(path), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {p: find(p) for p in originals}


def _check_audio(root: Path, path: str, sample_rate_hz: int) -> int:
    """Length in samples of a mono clip at ``sample_rate_hz``; raises otherwise."""
    try:
        info = sf.info(str(root / path))
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioFileError(f"{root / path}: unreadable audio ({err})") from None
    if info.samplerate != sample_rate_hz:
        raise AudioFileError(f"{root / path}: sample rate {info.samplerate} Hz, expected "
                             f"{sample_rate_hz} Hz; resample the pool (casdri never resamples)")
    if info.channels != 1:
        raise AudioFileError(f"{root / path}: {info.channels} channels, expected a mono clip")
    if info.frames == 0:
        raise AudioFileError(f"{root / path}: empty clip")
    return int(info.frames)


def _partition(n: int) -> tuple[int, int, int]:
    """``(n_train, n_dev, n_test)`` for ``n`` recordings (module conventions)."""
    if n >= 3:
        n_dev = n_test = max(1, int(round(0.2 * n)))
        return n - n_dev - n_test, n_dev, n_test
    return (1, 1, 0) if n == 2 else (n, 0, 0)


def _split_clips(clips: list[Clip]) -> dict[str, tuple[Clip, ...]]:
    """Split one class's clips by recording group (module conventions)."""
    groups = sorted({c.group for c in clips},
                    key=lambda g: hashlib.sha256(g.encode("utf-8")).hexdigest())
    n_train, n_dev, _ = _partition(len(groups))
    where = {g: SPLITS[0] if i < n_train else SPLITS[1] if i < n_train + n_dev else SPLITS[2]
             for i, g in enumerate(groups)}
    return {s: tuple(c for c in clips if where[c.group] == s) for s in SPLITS}


def load_pool(sources_dir: PathLike, label_set: LabelSet, sample_rate_hz: int = 32000,
              min_confidence: Optional[str] = None) -> SourcePool:
    """Scan and check a source pool and partition it into splits.

    Args:
        sources_dir: pool root (layout in the module conventions).
        label_set: class folder names must be classes of this set.
        sample_rate_hz: every clip must have this rate (Hz).
        min_confidence: with a manifest holding ``confidence``, keep rows at least this
            confident (``'low'``, ``'medium'`` or ``'high'``); ``None`` keeps all.

    Returns:
        The pool; classes without clips are simply absent from ``targets``.

    Raises:
        InputError: a missing folder, a class folder outside the label set or without clips,
            a manifest row that does not match the layout.
        AudioFileError: a clip that is unreadable, not mono or not at ``sample_rate_hz``.
    """
    root = Path(sources_dir)
    if not root.is_dir():
        raise InputError(f"sources: {root} is not a folder; pass a pool with sound_event/, "
                         "interference/ and noise/")
    if min_confidence is not None and min_confidence not in _CONFIDENCE_RANK:
        raise InputError(f"min_confidence must be one of {list(_CONFIDENCE_RANK)} or None, "
                         f"got {min_confidence!r}")
    scanned = _listed_files(root, label_set)  # checks the folders even with a manifest
    if (root / "manifest.csv").is_file():
        rows, groups = _from_manifest(root, label_set, min_confidence)
    else:
        rows, groups = scanned, {p: p for p, _ in scanned}
    clips = [Clip(p, lab, groups[p], _check_audio(root, p, sample_rate_hz)) for p, lab in rows]
    by_label: dict[str, list[Clip]] = {}
    for clip in clips:
        by_label.setdefault(clip.label, []).append(clip)
    for cat in ("interference", "noise"):
        if not by_label.get(cat):
            raise InputError(f"{root / cat}: holds no clip; the generator needs at least one")
    parts = {lab: _split_clips(sorted(cs, key=lambda c: c.path)) for lab, cs in by_label.items()}
    splits = {
        s: PoolSplit(
            s, root,
            {lab: parts[lab][s] for lab in label_set.classes if lab in parts and parts[lab][s]},
            parts["interference"][s], parts["noise"][s])
        for s in SPLITS}
    return SourcePool(root, sample_rate_hz, splits)


@functools.lru_cache(maxsize=128)
def _read_cached(path: str) -> np.ndarray:
    data, _ = sf.read(path, dtype="float64", always_2d=False)
    data.setflags(write=False)
    return data


def read_clip(root: Path, clip: Clip) -> np.ndarray:
    """Samples of ``clip``: ``(n_samples,) float64``, read-only (cached per process)."""
    return _read_cached(str(Path(root) / clip.path))
