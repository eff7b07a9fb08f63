"""Reading DCASE Task 4 (S5) evaluation folders: exact name matching, checked audio.

Conventions:
    * Layout (the official ``DatasetS3`` waveform mode)::

          soundscape/<name>.wav               4 channels; channel 0 is the mixture reference
          oracle_target/<name>_<i>_<Label>.wav  mono dry source (none for a zero-target clip)
          estimate/<name>_<i>_<Label>.wav       mono stem; ``<name>_<Label>.wav`` (the 2025
                                                naming, no index) is accepted too

      Only files ending in ``.wav`` are read (as officially); other files are ignored.
    * **Exact matching.** A stem file name is parsed from the right: the label is what follows
      the last ``_`` (or the longest class of the label set that ends the name, for custom
      classes that contain ``_``), then an optional integer index, and the rest must be a
      soundscape name **exactly**. The official loader matches by prefix, so ``s_1`` also
      collects ``s_10_0_Cough.wav`` and silently relabels it; casdri gives each soundscape only
      its own files. A name that parses two ways (soundscapes ``s_1`` and ``s_1_0`` make
      ``s_1_0_Cough.wav`` either stem 0 of ``s_1`` or the unindexed stem of ``s_1_0``) raises
      `FolderLayoutError` naming the files; so does a file that matches no soundscape.
    * **Stem order** is by integer index, then file name; unindexed (2025-style) files come
      after indexed ones. This is the official sorted-file-name order whenever the indices of a
      soundscape have equal width (any soundscape with at most 10 stems ``0..9``); with
      indices >= 10 the official order is textual (``_10_`` before ``_2_``). The order only
      matters for exactly tied pairings (the metric takes the first maximum) and for the order
      of the label lists in the results.
    * **No padding.** The official loader pads each side with ``'silence'`` rows (zero
      waveforms) up to ``n_sources = 3``; those rows never change a value, so casdri does not
      add them and the per-soundscape label lists hold only real files.
    * Audio is read with soundfile as float32 (bit-identical to the official
      ``librosa.load(path, sr=None)``).

Bad input raises, naming the file and the fix, instead of scoring something else:
    * `LabelError`: a label outside the label set (``'silence'`` included: leave an empty slot
      out instead of writing a file for it).
    * `FolderLayoutError`: a missing folder, a name that matches no soundscape, an ambiguous
      name, two files with the same index for one soundscape and side.
    * `FolderLayoutError` too: an entry that looks like a stem but cannot be read as one
      (``.WAV`` in capitals, a dangling symbolic link, a folder named ``*.wav``); the official
      loader skips them and counts their sources as missed.
    * `AudioFileError`: an unreadable file, a sample rate other than 32 kHz, a zero-length
      soundscape, a soundscape that is not 4-channel, a stem that is not mono, a stem whose length differs from its
      soundscape's, and **any NaN or Inf sample** (in a stem, a reference or channel 0 of a
      soundscape; the error names the file and the first bad sample). The official code
      silently ignores a NaN in a stem that is never paired and turns the clip mean into NaN
      elsewhere; neither is a score, so casdri refuses both.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import soundfile as sf

from .errors import AudioFileError, FolderLayoutError, LabelError
from .labels import LabelSet, get_label_set
from .layout import (_AMBIGUOUS_FIX, _UNMATCHED_FIX, _ambiguous, _check_label, _listed,
                     _parse, parse_stem_name, wav_names)

__all__ = [
    "SAMPLE_RATE_HZ",
    "SOUNDSCAPE_CHANNELS",
    "StemFile",
    "SoundscapeFiles",
    "SoundscapeAudio",
    "parse_stem_name",
    "list_soundscapes",
    "scan_folders",
    "scan_targets",
    "check_header",
    "read_audio",
    "read_soundscape",
    "ReadBuffers",
    "check_audio_finite",
]

SAMPLE_RATE_HZ = 32000
SOUNDSCAPE_CHANNELS = 4

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class StemFile:
    """One oracle or estimate file: its path, the parsed index (``None`` in the 2025 naming)
    and its label."""

    path: Path
    index: Optional[int]
    label: str


@dataclass(frozen=True)
class SoundscapeFiles:
    """The files of one soundscape, stems in scoring order (see module *Conventions*)."""

    name: str
    mixture_path: Path
    refs: tuple[StemFile, ...]
    ests: tuple[StemFile, ...]

    @property
    def ref_labels(self) -> list[str]:
        return [s.label for s in self.refs]

    @property
    def est_labels(self) -> list[str]:
        return [s.label for s in self.ests]


@dataclass(frozen=True)
class SoundscapeAudio:
    """The audio of one soundscape, float32 at 32 kHz.

    Attributes:
        name: soundscape name.
        ref_labels, ref_wavs: oracle labels and ``(n_ref, n_samples)`` dry sources.
        est_labels: estimate labels.
        rows: ``(n_est + 1, n_samples)``: the stems, then channel 0 of the soundscape, in one
            C-contiguous array, so that every SNR a clip needs is one kernel call
            (``snr_db(rows, ref_wavs)``) with no copy.
    """

    name: str
    ref_labels: list[str]
    ref_wavs: np.ndarray
    est_labels: list[str]
    rows: np.ndarray

    @property
    def est_wavs(self) -> np.ndarray:
        """``(n_est, n_samples)`` stems (a view of ``rows``)."""
        return self.rows[:-1]

    @property
    def mixture(self) -> np.ndarray:
        """``(n_samples,)`` channel 0 of the soundscape (a view of ``rows``)."""
        return self.rows[-1]


# ----------------------------------------------------------------------------- names


def _check_dir(path: PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FolderLayoutError(f"{what} folder {str(path)!r} does not exist or is not a folder")
    return path


def list_soundscapes(soundscape_dir: PathLike) -> dict[str, Path]:
    """Soundscape names (file name without ``.wav``) → paths, sorted by name.

    Args:
        soundscape_dir: folder of ``<name>.wav`` soundscapes.

    Raises:
        FolderLayoutError: the folder does not exist.
    """
    folder = _check_dir(soundscape_dir, "soundscape")
    return {f[:-4]: folder / f for f in sorted(wav_names(folder), key=lambda f: f[:-4])}


def _order(stem: StemFile) -> tuple:
    return (stem.index is None, stem.index or 0, stem.path.name)


def _match_folder(folder: Path, soundscapes: dict[str, Path], label_set: LabelSet,
                  what: str) -> dict[str, tuple[StemFile, ...]]:
    where = f"{what} folder {str(folder)!r}"
    stems: dict[str, list[StemFile]] = {}
    unmatched, ambiguous = [], []
    for file_name in wav_names(folder):
        found = _parse(file_name, soundscapes, label_set)
        if len(found) != 1:
            (ambiguous if found else unmatched).append((file_name, found))
            continue
        name, index, label = found[0]
        try:
            _check_label(file_name, label, label_set)
        except LabelError as err:
            raise LabelError(f"{where}: {err}") from None
        stems.setdefault(name, []).append(StemFile(folder / file_name, index, label))
    if ambiguous:
        names = [f for f, _ in ambiguous]
        raise FolderLayoutError(
            f"{where}: {len(names)} ambiguous file name(s) ({_listed(names)}): "
            f"{_ambiguous(*ambiguous[0])}; {_AMBIGUOUS_FIX}"
        )
    if unmatched:
        names = [f for f, _ in unmatched]
        raise FolderLayoutError(
            f"{where}: {len(names)} file name(s) match no soundscape of the soundscape folder "
            f"({_listed(names)}); {_UNMATCHED_FIX}"
        )
    out = {}
    for name, files in stems.items():
        files.sort(key=_order)
        seen: dict[int, StemFile] = {}
        for f in files:
            if f.index is not None and f.index in seen:
                raise FolderLayoutError(
                    f"{what} folder {str(folder)!r}: {seen[f.index].path.name!r} and "
                    f"{f.path.name!r} both have index {f.index} for soundscape {name!r}; "
                    "give every file of a soundscape its own index"
                )
            if f.index is not None:
                seen[f.index] = f
        out[name] = tuple(files)
    return out


def scan_folders(soundscape_dir: PathLike, oracle_dir: PathLike, estimate_dir: PathLike,
                 label_set: Union[str, Sequence[str], LabelSet] = "dcase2026t4",
                 ) -> list[SoundscapeFiles]:
    """Match the oracle and estimate files to the soundscapes (names only; no audio read).

    Args:
        soundscape_dir: folder of ``<name>.wav`` soundscapes.
        oracle_dir: folder of ``<name>_<i>_<Label>.wav`` oracle targets.
        estimate_dir: folder of estimates, same naming (index optional).
        label_set: label set of the file labels.

    Returns:
        One `SoundscapeFiles` per soundscape, sorted by name (the official order); a
        soundscape with no oracle file is a zero-target clip, one with no estimate file has
        no stems.

    Raises:
        FolderLayoutError: missing folder, no soundscape, unmatched or ambiguous names,
            duplicate indices.
        LabelError: a label outside ``label_set``.

    Warns:
        UserWarning: the oracle or the estimate folder holds no file (legal, but likely the
            wrong folder).
    """
    label_set = get_label_set(label_set)
    soundscapes = list_soundscapes(soundscape_dir)
    if not soundscapes:
        raise FolderLayoutError(
            f"soundscape folder {str(soundscape_dir)!r} holds no .wav file; pass the folder "
            "of <name>.wav soundscapes"
        )
    refs = _match_folder(_check_dir(oracle_dir, "oracle"), soundscapes, label_set, "oracle")
    ests = _match_folder(_check_dir(estimate_dir, "estimate"), soundscapes, label_set,
                         "estimate")
    for found, folder, what in ((refs, oracle_dir, "every soundscape is zero-target"),
                                (ests, estimate_dir, "every reference counts as missed")):
        if not found:
            warnings.warn(f"{str(folder)!r} holds no stem file of these soundscapes: {what}; "
                          "is it the right folder?", stacklevel=2)
    return [SoundscapeFiles(name, path, refs.get(name, ()), ests.get(name, ()))
            for name, path in soundscapes.items()]


def scan_targets(soundscape_dir: PathLike, oracle_dir: Optional[PathLike],
                 label_set: Union[str, Sequence[str], LabelSet] = "dcase2026t4",
                 ) -> list[SoundscapeFiles]:
    """Match the oracle targets to the soundscapes, for building and training (no estimates).

    The same exact name matching as `scan_folders` (one reader of the DCASE layout for
    scoring, building and training).

    Args:
        soundscape_dir: folder of ``<name>.wav`` soundscapes.
        oracle_dir: folder of ``<name>_<i>_<Label>.wav`` oracle targets, or ``None`` (an
            evaluation set: every `SoundscapeFiles.refs` is then ``()`` and callers that
            need to tell "no oracle" from "zero-target" keep ``oracle_dir`` themselves).
        label_set: label set of the file labels.

    Returns:
        One `SoundscapeFiles` per soundscape, sorted by name, with ``ests == ()``.

    Raises:
        FolderLayoutError: a missing folder, no soundscape, unmatched or ambiguous names,
            duplicate indices.
        LabelError: a label outside ``label_set``.
    """
    label_set = get_label_set(label_set)
    soundscapes = list_soundscapes(soundscape_dir)
    if not soundscapes:
        raise FolderLayoutError(
            f"soundscape folder {str(soundscape_dir)!r} holds no .wav file; pass the folder "
            "of <name>.wav soundscapes (or generate them: casdri-cache generate)"
        )
    refs = ({} if oracle_dir is None else
            _match_folder(_check_dir(oracle_dir, "oracle"), soundscapes, label_set, "oracle"))
    return [SoundscapeFiles(name, path, refs.get(name, ()), ())
            for name, path in soundscapes.items()]


# ----------------------------------------------------------------------------- audio


def _open(path: Path) -> sf.SoundFile:
    try:
        return sf.SoundFile(path)
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        raise AudioFileError(
            f"{path}: cannot read it as audio ({err}); rewrite it as a WAV file"
        ) from None


def _check_rate(f: sf.SoundFile, path: Path, sample_rate_hz: int) -> None:
    if f.samplerate != sample_rate_hz:
        raise AudioFileError(
            f"{path}: sample rate {f.samplerate} Hz, expected {sample_rate_hz} Hz; resample the "
            "file (the official evaluator asserts the same rate)"
        )


def _check_finite(x: np.ndarray, path: Path, what: str) -> None:
    if not np.isfinite(x).all():
        t = int(np.argmax(~np.isfinite(x)))
        raise AudioFileError(
            f"{path}: {what} holds {x[t]} at sample {t}; NaN/Inf cannot be scored (the "
            "official code silently drops or propagates it): fix the file"
        )


def check_header(path: Path, *, sample_rate_hz: int, n_channels: int,
                 n_samples: Optional[int] = None, expects: str = "expected") -> int:
    """Check one audio file's header without reading its samples.

    Args:
        path: the file.
        sample_rate_hz: required rate.
        n_channels: required channel count (4 for a soundscape, 1 for a stem or target).
        n_samples: required length (a stem's or target's soundscape length), or ``None``.
        expects: who expects it, for the message (``"the system expects"``).

    Returns:
        The file's length in samples (``> 0``).

    Raises:
        AudioFileError: unreadable, another rate, channel count or length, or 0 samples;
            the message names the file and the fix.
    """
    with _open(path) as f:
        rate, channels, frames = f.samplerate, f.channels, f.frames
    if rate != sample_rate_hz:
        raise AudioFileError(f"{path}: sample rate {rate} Hz, {expects} {sample_rate_hz} Hz; "
                             "resample the file")
    if channels != n_channels:
        what = ("a mono file (one source, channel 0 only)" if n_channels == 1 else
                "pass the multichannel soundscapes (not oracle targets)")
        raise AudioFileError(f"{path}: {channels} channels, {expects} {n_channels}; {what}")
    if frames == 0:
        what = "the soundscape" if n_channels > 1 else "the file"
        raise AudioFileError(f"{path}: {what} holds 0 samples (an empty or truncated "
                             "file); rewrite it or remove it")
    if n_samples is not None and frames != n_samples:
        raise AudioFileError(f"{path}: {frames} samples, {expects} {n_samples} (the length of "
                             "its soundscape); stems and targets must be exactly as long as "
                             "their soundscape")
    return frames


def read_audio(path: Path, *, start: int = 0, stop: Optional[int] = None,
               check_finite: bool = True) -> np.ndarray:
    """Read samples ``start:stop`` of one file as float32 ``(n_channels, stop - start)``.

    Read with soundfile as float32, bit-identical to the official ``librosa.load(path,
    sr=None)``. Check the header first with `check_header`.

    Raises:
        AudioFileError: unreadable or truncated file, NaN/Inf samples (named with the file).
    """
    with _open(path) as f:
        stop = f.frames if stop is None else stop
        f.seek(start)
        out = np.empty((stop - start, f.channels), np.float32)
        _read_frames(f, path, out)
    if check_finite:
        for c in range(out.shape[1]):
            _check_finite(out[:, c], path, f"channel {c}")
    return np.ascontiguousarray(out.T)


class ReadBuffers:
    """Scratch memory that `read_soundscape` may reuse from one soundscape to the next.

    Fresh multi-megabyte arrays cost page faults that take longer than reading the file from
    the page cache, and threads of one process serialise on them; one `ReadBuffers` per
    thread avoids both. Arrays returned with a `ReadBuffers` are views into it, valid until
    the next call with the same buffers.
    """

    def __init__(self) -> None:
        self._flat: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, int]) -> np.ndarray:
        """A C-contiguous float32 array (grown as needed, never zeroed).

        Args:
            name: which buffer (one per concurrent use).
            shape: ``(rows, columns)``.
        """
        size = shape[0] * shape[1]
        flat = self._flat.get(name)
        if flat is None or flat.size < size:
            flat = self._flat[name] = np.empty(size, dtype=np.float32)
        return flat[:size].reshape(shape)


def _read_frames(f: sf.SoundFile, path: Path, out: np.ndarray) -> None:
    got = f.read(frames=out.shape[0], dtype="float32", out=out)
    if got.shape[0] != out.shape[0]:  # header and data disagree (truncated file)
        raise AudioFileError(
            f"{path}: header says {out.shape[0]} samples, only {got.shape[0]} could be read; "
            "the file is truncated: rewrite it"
        )


def _read_mixture(path: Path, sample_rate_hz: int, n_channels: int,
                  buffers: ReadBuffers) -> np.ndarray:
    with _open(path) as f:
        _check_rate(f, path, sample_rate_hz)
        if f.channels != n_channels:
            raise AudioFileError(
                f"{path}: {f.channels} channel(s), expected a {n_channels}-channel soundscape "
                "(channel 0 is the mixture reference); pass the original soundscape file"
            )
        if f.frames == 0:
            raise AudioFileError(
                f"{path}: the soundscape holds 0 samples; there is nothing to score (a "
                "truncated or empty file): rewrite it"
            )
        data = buffers.get("soundscape", (f.frames, n_channels))
        _read_frames(f, path, data)
    return data


def _read_stems(stems: Sequence[StemFile], out: np.ndarray, mixture_path: Path,
                sample_rate_hz: int, check_finite: bool) -> None:
    n_samples = out.shape[1]
    for row, stem in zip(out, stems):
        with _open(stem.path) as f:
            _check_rate(f, stem.path, sample_rate_hz)
            if f.channels != 1:
                raise AudioFileError(
                    f"{stem.path}: {f.channels} channels, expected a mono stem; write one "
                    "file per source (channel 0 only)"
                )
            if f.frames != n_samples:
                raise AudioFileError(
                    f"{stem.path}: {f.frames} samples but soundscape {mixture_path.name} has "
                    f"{n_samples}; stems must be exactly as long as their soundscape"
                )
            _read_frames(f, stem.path, row)
        if check_finite:
            _check_finite(row, stem.path, "the stem")


def read_soundscape(files: SoundscapeFiles, sample_rate_hz: int = SAMPLE_RATE_HZ,
                    n_channels: int = SOUNDSCAPE_CHANNELS,
                    buffers: Optional[ReadBuffers] = None,
                    check_finite: bool = True) -> SoundscapeAudio:
    """Read and check the audio of one soundscape (float32).

    Args:
        files: from `scan_folders`.
        sample_rate_hz: required sample rate of every file.
        n_channels: required channel count of the soundscape file.
        buffers: scratch memory to reuse (then the returned arrays are views into it, valid
            until the next call with the same buffers); ``None``: fresh arrays.
        check_finite: ``False`` leaves the NaN/Inf check to the caller (`check_audio_finite`).

    Returns:
        `SoundscapeAudio`: ``(n_ref, n_samples)`` references, and the stems followed by
        channel 0 as ``(n_est + 1, n_samples)`` rows, in the order of ``files``.

    Raises:
        AudioFileError: unreadable file, wrong rate, channel count or length, NaN/Inf.
    """
    fresh = buffers is None
    buffers = ReadBuffers() if fresh else buffers
    soundscape = _read_mixture(files.mixture_path, sample_rate_hz, n_channels, buffers)
    n = soundscape.shape[0]
    rows = buffers.get("rows", (len(files.ests) + 1, n))
    rows[-1] = soundscape[:, 0]
    if fresh:
        buffers = ReadBuffers()  # let the 4-channel array go; keep rows
    refs = buffers.get("refs", (len(files.refs), n))
    _read_stems(files.refs, refs, files.mixture_path, sample_rate_hz, False)
    _read_stems(files.ests, rows, files.mixture_path, sample_rate_hz, False)
    audio = SoundscapeAudio(files.name, files.ref_labels, refs, files.est_labels, rows)
    if check_finite:
        check_audio_finite(audio, files)
    return audio


def check_audio_finite(audio: SoundscapeAudio, files: SoundscapeFiles) -> None:
    """Raise `AudioFileError` naming the first file (and sample) that holds NaN or Inf.

    Args:
        audio: from `read_soundscape`.
        files: the files it was read from.
    """
    _check_finite(audio.mixture, files.mixture_path, "channel 0")
    for row, stem in zip(audio.ref_wavs, files.refs):
        _check_finite(row, stem.path, "the stem")
    for row, stem in zip(audio.est_wavs, files.ests):
        _check_finite(row, stem.path, "the stem")
