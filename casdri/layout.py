"""The DCASE 2026 Task 4 (S5) folder layout and stem-name format: the one place that spells
them (scoring, building, applying and training read folders through it).

Conventions:
    * A split folder holds ``soundscape/<name>.wav`` (4 channels, 32 kHz), and for a
      development split ``oracle_target/<name>_<i>_<Label>.wav`` (mono dry sources); a
      system's output is ``<name>_<i>_<Label>.wav`` stems in one folder (``estimate/`` in
      the bundled example), as the official ``DatasetS3`` waveform mode reads them.
    * ``i`` counts the stems (or targets) of one soundscape from 0; the 2025 naming
      ``<name>_<Label>.wav`` (no index) is read too. Only names ending in lower-case
      ``.wav`` are audio.
    * A name is parsed from the right, exactly (see `parse_stem_name`); the official loader
      matches by prefix, casdri gives each soundscape only its own files.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Collection, Iterable, Optional, Sequence, Union

from .errors import FolderLayoutError, LabelError
from .labels import SILENCE, LabelSet, get_label_set

__all__ = ["SOUNDSCAPE_DIR", "ORACLE_DIR", "ESTIMATE_DIR", "WAV", "stem_name",
           "parse_stem_name", "split_folders", "wav_names"]

#: sub-folders of a split folder, and of the bundled example
SOUNDSCAPE_DIR, ORACLE_DIR, ESTIMATE_DIR = "soundscape", "oracle_target", "estimate"
#: the only audio suffix read (as officially)
WAV = ".wav"
_INDEX = re.compile(r"[0-9]+")
_MAX_LISTED = 5


def _listed(items: Sequence[str]) -> str:
    more = len(items) - _MAX_LISTED
    return ", ".join(items[:_MAX_LISTED]) + (f" and {more} more" if more > 0 else "")


def stem_name(soundscape: str, index: int, label: str) -> str:
    """``<soundscape>_<index>_<label>.wav``, the name of a stem or an oracle target.

    Example:
        >>> stem_name("soundscape_0001", 0, "Speech")
        'soundscape_0001_0_Speech.wav'
    """
    if int(index) < 0:
        raise ValueError(f"stem index must be >= 0, got {index}")
    return f"{soundscape}_{int(index)}_{label}{WAV}"


def wav_names(folder: Path) -> list[str]:
    """Sorted names of the ``.wav`` files of ``folder``, the one folder reader.

    Anything that looks like audio but would be skipped (``.WAV``, a dangling link, a folder
    named ``*.wav``) is refused rather than silently left out (and its sources counted as
    missed).

    Raises:
        FolderLayoutError: naming each such entry and its fix.
    """
    names, bad = [], []
    for e in os.scandir(folder):
        if not e.name.lower().endswith(WAV):
            continue
        if not e.name.endswith(WAV):
            bad.append(f"{e.name!r} (rename it to end in lower-case '.wav': the official "
                       "evaluator reads only '*.wav')")
        elif e.is_file():
            names.append(e.name)
        elif e.is_symlink() and not os.path.exists(e.path):
            bad.append(f"{e.name!r} (a symbolic link to {os.readlink(e.path)!r}, which does "
                       "not exist: fix or remove the link)")
        elif e.is_dir():
            bad.append(f"{e.name!r} (a folder, not a file: rename or move it)")
        else:
            bad.append(f"{e.name!r} (not a regular file: remove it)")
    if bad:
        raise FolderLayoutError(f"folder {str(folder)!r}: {len(bad)} entr"
                                f"{'y' if len(bad) == 1 else 'ies'} cannot be read as a stem: "
                                f"{_listed(sorted(bad))}")
    return sorted(names)


def split_folders(root: Union[str, Path]) -> tuple[Path, Path]:
    """``(root/soundscape, root/oracle_target)`` of a split folder (not checked)."""
    root = Path(root)
    return root / SOUNDSCAPE_DIR, root / ORACLE_DIR


def _candidates(base: str, soundscapes: Collection[str], labels: Iterable[str]):
    for label in labels:
        head = base[: -len(label) - 1]
        if head in soundscapes:
            yield head, None, label
        name, sep, index = head.rpartition("_")
        if sep and _INDEX.fullmatch(index) and name in soundscapes:
            yield name, int(index), label


def _parse(file_name: str, soundscapes: Collection[str], label_set: LabelSet) -> list:
    base = file_name[:-4]
    labels = sorted((c for c in label_set.classes if base.endswith("_" + c)), key=len,
                    reverse=True) + [base.rpartition("_")[2]]
    return list(dict.fromkeys(_candidates(base, soundscapes, labels)))


def _ambiguous(file_name: str, found: list) -> str:
    ways = "; ".join(f"soundscape {s!r}, index {i}, label {lb!r}" for s, i, lb in found)
    return f"{file_name!r} parses as {ways}"


_AMBIGUOUS_FIX = ("rename the soundscapes so that no name equals another name plus "
                  "'_<number>' (fixed-width names such as soundscape_0001 avoid this)")
_UNMATCHED_FIX = ("expected <soundscape>_<index>_<Label>.wav or <soundscape>_<Label>.wav where "
                  "<soundscape> is the exact name of a soundscape file; remove the file or add "
                  "its soundscape")


def _check_label(file_name: str, label: str, label_set: LabelSet) -> None:
    if label not in label_set.classes:
        hint = (f"{SILENCE!r} marks an empty slot: write no file for it" if label == SILENCE
                else f"expected one of {', '.join(label_set.classes)}")
        raise LabelError(
            f"{file_name!r}: unknown label {label!r} for label set {label_set.name!r}; {hint}"
        )


def parse_stem_name(file_name: str, soundscapes: Collection[str],
                    label_set: Union[str, Sequence[str], LabelSet] = "dcase2026t4",
                    ) -> tuple[str, Optional[int], str]:
    """Parse ``<soundscape>_<index>_<Label>.wav`` or ``<soundscape>_<Label>.wav`` exactly.

    Args:
        file_name: a file name (no folder).
        soundscapes: the existing soundscape names (a set is fastest).
        label_set: the label set the label must belong to.

    Returns:
        ``(soundscape, index or None, label)``.

    Raises:
        FolderLayoutError: not a ``.wav`` name, no soundscape matches, or two ways match.
        LabelError: the label is not a class of ``label_set``.

    Example:
        >>> parse_stem_name("s_1_0_Cough.wav", {"s_0", "s_1", "s_10"})
        ('s_1', 0, 'Cough')
        >>> parse_stem_name("s_10_Speech.wav", {"s_1", "s_10"})
        ('s_10', None, 'Speech')
    """
    label_set = get_label_set(label_set)
    if not file_name.endswith(WAV):
        raise FolderLayoutError(f"{file_name!r}: expected a .wav file")
    found = _parse(file_name, soundscapes, label_set)
    if len(found) > 1:
        raise FolderLayoutError(f"ambiguous name: {_ambiguous(file_name, found)}; {_AMBIGUOUS_FIX}")
    if not found:
        raise FolderLayoutError(f"{file_name!r} matches no soundscape: {_UNMATCHED_FIX}")
    _check_label(file_name, found[0][2], label_set)
    return found[0]


