"""`score_folders`: DCASE evaluation folders → CAPI-SDRi (or the 2025 CA-SDRi) and label scores.

Conventions:
    * The folders are matched by name first (`casdri.folders.scan_folders`: exact names, every
      layout error before any audio is read), then soundscapes are read and scored in parallel
      and accumulated in soundscape-name order, the official order, so the dataset mean is the
      official Python sum in that order.
    * Work per soundscape: read channel 0 of the soundscape and the stems as float32, check
      rate, channels and length, and compute the SNRs the metric reads, and no other: the
      files are read in an order (`_plan`) that makes each shared class's stems and
      references contiguous, so each class is one kernel call on slices of the arrays as
      read, plus one call for channel 0 against the shared classes' references (no copies;
      a full ``(n_est + 1) x n_ref`` matrix would compute about 40 % more pairs). Only the
      small SNR matrices travel back to the accumulator, which applies the CAPI rule
      (`casdri.capi_sdri_from_snr`). NaN/Inf samples are refused as in `casdri.folders`;
      rows that enter a computed pair are scanned only when an entry is not finite.
    * Each worker thread reads into its own reused buffers (`casdri.folders.ReadBuffers`):
      fresh arrays would cost more in page faults than the reads themselves. Reading
      (libsndfile) and the numba kernel both release the GIL, so threads run in parallel.
    * Results are `casdri.CapiSdriResult`; per-soundscape label lists hold the real files only
      (the official results pad them with ``'silence'`` up to 3; that never changes a value).

Source: the official ``Evaluator`` (folder mode, ``estimate_target_dir`` set),
nttcslab/dcase2026_task4_baseline @ 20e6992, ``src/evaluation/evaluate.py`` and
``src/datamodules/dataset.py`` (``DatasetS3``); see ``tests/data/golden/README.md`` for how
casdri differs on purpose (exact name matching, errors on bad audio).
"""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
from joblib import Parallel, delayed
from tqdm import tqdm

from . import metric as _m
from .accumulator import CapiSdri, CapiSdriResult
from .errors import InputError
from .folders import (
    SAMPLE_RATE_HZ, SOUNDSCAPE_CHANNELS, PathLike, ReadBuffers, SoundscapeAudio,
    SoundscapeFiles, _check_finite, check_audio_finite, read_soundscape, scan_folders,
)
from .labels import SILENCE, LabelSet

__all__ = ["score_folders", "default_jobs"]

_BACKENDS = ("threading", "loky")


def default_jobs() -> int:
    """Worker count used when ``jobs`` is ``None``: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


@dataclass(frozen=True)
class _Plan:
    """Read order of one soundscape that makes every SNR the metric reads a contiguous block.

    Stems and references of the classes on both sides come first, grouped by class (file
    order within a class, which the metric's tie rule depends on), the others after.
    ``files`` lists the stems in that order; ``est_pos[k]`` / ``ref_pos[k]`` give the file
    order position of row ``k``; ``blocks`` holds one ``(est rows, ref rows)`` pair of slices
    per shared class; the first ``n_matched_refs`` references are those of shared classes.
    """

    files: SoundscapeFiles
    est_pos: np.ndarray
    ref_pos: np.ndarray
    blocks: tuple[tuple[slice, slice], ...]
    n_matched_ests: int
    n_matched_refs: int


def _plan(files: SoundscapeFiles) -> _Plan:
    est_by: dict[str, list[int]] = {}
    ref_by: dict[str, list[int]] = {}
    for rows, labels in ((est_by, files.est_labels), (ref_by, files.ref_labels)):
        for i, label in enumerate(labels):
            if label != SILENCE:
                rows.setdefault(label, []).append(i)
    shared = [c for c in ref_by if c in est_by]
    est_pos = [i for c in shared for i in est_by[c]]
    ref_pos = [j for c in shared for j in ref_by[c]]
    blocks, e0, r0 = [], 0, 0
    for c in shared:
        e1, r1 = e0 + len(est_by[c]), r0 + len(ref_by[c])
        blocks.append((slice(e0, e1), slice(r0, r1)))
        e0, r0 = e1, r1
    n_e, n_r = len(est_pos), len(ref_pos)
    est_pos += sorted(set(range(len(files.ests))) - set(est_pos))
    ref_pos += sorted(set(range(len(files.refs))) - set(ref_pos))
    grouped = SoundscapeFiles(files.name, files.mixture_path,
                              tuple(files.refs[j] for j in ref_pos),
                              tuple(files.ests[i] for i in est_pos))
    return _Plan(grouped, np.array(est_pos, dtype=np.intp), np.array(ref_pos, dtype=np.intp),
                 tuple(blocks), n_e, n_r)


def _clip_snr(plan: _Plan, audio: SoundscapeAudio, check_finite: bool = True
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(snr [n_est, n_ref], snr_mix [n_ref])`` in dB, file order, from audio read in
    ``plan.files`` order.

    Only the entries the metric reads are computed (same-class pairs, and channel 0 against
    the references of shared classes; NaN elsewhere), one kernel call per shared class plus
    one for channel 0, on contiguous slices of the rows as read (no copy). About 40 % of the
    pairs of a full ``(n_est + 1) x n_ref`` matrix are never read on typical clips.

    With ``check_finite``, NaN/Inf samples raise `AudioFileError`: rows that enter a computed
    pair are scanned only when a computed entry is not finite (float64 energies of finite
    float32 samples cannot overflow, so an entry is finite exactly when its two rows are),
    the other rows always.
    """
    files = plan.files
    n_est, n_ref = len(files.ests), len(files.refs)
    snr, snr_mix = np.full((n_est, n_ref), np.nan), np.full(n_ref, np.nan)
    m_e, m_r = plan.n_matched_ests, plan.n_matched_refs
    finite = True
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN/Inf are reported below
        for es, rs in plan.blocks:
            block = _m.snr_db(audio.est_wavs[es], audio.ref_wavs[rs])
            finite = finite and bool(np.isfinite(block).all())
            snr[np.ix_(plan.est_pos[es], plan.ref_pos[rs])] = block
        if m_r:
            mix = _m.snr_db(audio.rows[-1:], audio.ref_wavs[:m_r])[0]
            finite = finite and bool(np.isfinite(mix).all())
            snr_mix[plan.ref_pos[:m_r]] = mix
    if check_finite:
        if not finite:
            check_audio_finite(audio, files)
        if not m_r:
            _check_finite(audio.mixture, files.mixture_path, "channel 0")
        for row, stem in zip(audio.est_wavs[m_e:], files.ests[m_e:]):
            _check_finite(row, stem.path, "the stem")
        for row, stem in zip(audio.ref_wavs[m_r:], files.refs[m_r:]):
            _check_finite(row, stem.path, "the stem")
    return snr, snr_mix


_LOCAL = threading.local()


def _score_one(files: SoundscapeFiles, metric: str, sample_rate_hz: int, n_channels: int):
    if metric != "capi":  # the waveforms go back to the accumulator: fresh arrays
        return read_soundscape(files, sample_rate_hz, n_channels)
    if not hasattr(_LOCAL, "buffers"):
        _LOCAL.buffers = ReadBuffers()
    plan = _plan(files)
    audio = read_soundscape(plan.files, sample_rate_hz, n_channels, _LOCAL.buffers,
                            check_finite=False)
    snr, snr_mix = _clip_snr(plan, audio)
    return files.name, files.est_labels, files.ref_labels, snr, snr_mix


def score_folders(
    soundscape_dir: PathLike,
    oracle_dir: PathLike,
    estimate_dir: PathLike,
    *,
    label_set: Union[str, Sequence[str], LabelSet] = "dcase2026t4",
    metric: str = "capi",
    jobs: Optional[int] = None,
    backend: str = "threading",
    progress: bool = False,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    n_channels: int = SOUNDSCAPE_CHANNELS,
) -> CapiSdriResult:
    """Score a DCASE evaluation folder set like the official evaluator, exactly matched.

    Args:
        soundscape_dir: folder of ``<name>.wav`` 4-channel soundscapes (channel 0 is the
            mixture reference).
        oracle_dir: folder of ``<name>_<i>_<Label>.wav`` mono oracle targets.
        estimate_dir: folder of ``<name>_<i>_<Label>.wav`` (or ``<name>_<Label>.wav``) mono
            estimates.
        label_set: label set of the file labels (``"dcase2026t4"``, ``"dcase2025t4"``, a list
            of class names or a `LabelSet`).
        metric: ``"capi"`` (DCASE 2026 CAPI-SDRi) or ``"ca2025"`` (DCASE 2025 CA-SDRi, unique
            labels per soundscape; a repeated label raises `LabelError`).
        jobs: parallel workers (``None``: `default_jobs`; 1: serial, in this thread).
        backend: ``"threading"`` (default; reads and kernel release the GIL) or ``"loky"``
            (processes).
        progress: show a tqdm bar on stderr.
        sample_rate_hz: required sample rate of every file.
        n_channels: required channel count of the soundscape files.

    Returns:
        `CapiSdriResult`: dataset CAPI-SDRi in dB (mean over the clips that are not ``None``),
        label accuracies in percent, per-soundscape and per-class tables.

    Raises:
        FolderLayoutError: missing folder, unmatched or ambiguous names, duplicate indices.
        LabelError: a file label outside ``label_set``.
        AudioFileError: unreadable file, wrong rate, channel count or length, NaN/Inf samples.
        InputError: bad ``metric``, ``jobs`` or ``backend``.

    References:
        ``Evaluator.evaluate`` in folder mode, nttcslab/dcase2026_task4_baseline @ 20e6992.

    Example:
        >>> import pathlib, casdri
        >>> d = pathlib.Path(casdri.__file__).parents[1] / "tests" / "data" / "golden" / "dirs"
        >>> r = score_folders(d / "soundscape", d / "oracle_target", d / "estimate", jobs=1)
        >>> round(r.capi_sdri, 3), round(r.accuracy_mix, 3), r.n_soundscapes, r.n_scored
        (4.543, 30.769, 13, 12)
    """
    if backend not in _BACKENDS:
        raise InputError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if jobs is not None and (not isinstance(jobs, (int, np.integer)) or jobs < 1):
        raise InputError(f"jobs must be a positive integer or None, got {jobs!r}")
    acc = CapiSdri(label_set, metric)  # validates metric and label set first
    files = scan_folders(soundscape_dir, oracle_dir, estimate_dir, acc.label_set)
    n_jobs = min(default_jobs() if jobs is None else int(jobs), len(files))
    work = (delayed(_score_one)(f, metric, sample_rate_hz, n_channels) for f in files)
    bar = tqdm(total=len(files), disable=not progress, file=sys.stderr, unit="soundscape",
               desc="casdri score")
    with bar:
        if n_jobs <= 1:
            results = (_score_one(f, metric, sample_rate_hz, n_channels) for f in files)
        else:
            results = Parallel(n_jobs=n_jobs, backend=backend, return_as="generator")(work)
        for out in results:
            if metric == "capi":
                acc.update_from_snr(*out)
            else:
                acc.update(out.name, out.est_labels, out.est_wavs, out.ref_labels,
                           out.ref_wavs, out.mixture)
            bar.update()
    return acc.compute()
