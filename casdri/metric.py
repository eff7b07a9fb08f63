"""CAPI-SDRi (DCASE 2026 Task 4), CA-SDRi (DCASE 2025 Task 4) and label counts, on waveforms.

Conventions:
    * A soundscape (clip) is scored from ``est_labels`` / ``est_wavs`` (the system's stems),
      ``ref_labels`` / ``ref_wavs`` (the oracle targets) and ``mixture`` (channel 0 of the
      four-channel soundscape). Waveforms are ``(n_rows, n_samples)`` float32 or float64
      arrays at 32 kHz; labels are class names or ``'silence'``; row ``i`` of a waveform
      array carries label ``i``.
    * ``'silence'`` rows are ignored (their waveforms are never read), as officially.
    * All values are in dB; sums are accumulated in float64. The official code works in
      float32: agreement is within 1e-4 dB (see ``tests/test_golden_cases.py``).
    * A clip with no non-silence label on either side scores ``None`` (left out of the
      dataset mean, but counted as correct in the mixture label accuracy).

Source: nttcslab/dcase2026_task4_baseline @ 20e6992, ``src/evaluation/metrics/s5capi_metric.py``
(``S5ClassAwareMetric('sdr')``, ``_pi_metric``) and ``label_metric.py`` (``LabelMetric``);
nttcslab/dcase2025_task4_baseline @ 12063c5, ``src/utils.py`` (``ca_metric``). The per-pair
score is torchmetrics ``signal_noise_ratio(zero_mean=False)``.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from ._snr_kernel import indexed_energies, pair_energies, row_energies
from .errors import InputError, LabelError
from .labels import SILENCE, LabelSet, get_label_set

__all__ = [
    "snr_db",
    "capi_sdri",
    "capi_sdri_from_snr",
    "ca_sdri_2025",
    "LabelCounts",
    "label_counts",
    "label_accuracies",
    "ClassBlock",
]


# ----------------------------------------------------------------------------- SNR


def _as_rows(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise InputError(f"{name}: expected (n_rows, n_samples), got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        raise InputError(
            f"{name}: expected float32 or float64 samples, got {x.dtype}; convert with "
            f"{name}.astype(np.float32) (the official pipeline reads audio as float32)"
        )
    return np.ascontiguousarray(x)


def snr_db(est: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """SNR of every stem against every reference, the official per-pair score.

    ``snr[i, j] = 10 log10((Σ_t ref[j,t]² + eps) / (Σ_t (ref[j,t] − est[i,t])² + eps))`` with
    ``eps = np.finfo(dtype).eps`` of the input dtype (1.1920929e-07 for float32, the official
    pipeline's dtype). No zero-mean, no scale invariance: an all-zero stem scores exactly 0 dB.

    Args:
        est: ``(n_est, n_samples)`` or ``(n_samples,)`` float32/float64 stems.
        ref: ``(n_ref, n_samples)`` or ``(n_samples,)`` references, same dtype and length.

    Returns:
        ``(n_est, n_ref)`` float64 SNR in dB (sums accumulated in float64).

    Raises:
        InputError: dtype or length mismatch, or not 1-D/2-D.

    References:
        torchmetrics ``functional.audio.snr.signal_noise_ratio(zero_mean=False)``, as called by
        ``S5ClassAwareMetric`` (nttcslab/dcase2026_task4_baseline @ 20e6992).

    Example:
        >>> ref = np.ones((1, 4), np.float32); est = 0.5 * ref
        >>> round(float(snr_db(est, ref)[0, 0]), 4)
        6.0206
    """
    est = _as_rows(est, "est")
    ref = _as_rows(ref, "ref")
    if est.dtype != ref.dtype:
        raise InputError(f"est is {est.dtype} but ref is {ref.dtype}; pass both in one dtype")
    if est.shape[1] != ref.shape[1]:
        raise InputError(
            f"length mismatch: est has {est.shape[1]} samples, ref has {ref.shape[1]}"
        )
    eps = float(np.finfo(est.dtype).eps)
    noise, ref_energy = pair_energies(est, ref)
    return 10.0 * np.log10((ref_energy[None, :] + eps) / (noise + eps))


# ----------------------------------------------------------------------------- CAPI-SDRi


@dataclass(frozen=True)
class ClassBlock:
    """What one class contributes to a clip's CAPI-SDRi.

    Attributes:
        label: class name.
        est_rows, ref_rows: rows of that class in the input arrays.
        pairs: chosen ``(est_row, ref_row)`` pairs (the pairing with the highest mean SNR).
        snr_db: SNR of each chosen pair, dB.
        sdri_db: SNR minus SNR of the mixture against the same reference, dB.
        n_zeros: zeros added for unmatched stems or references.
    """

    label: str
    est_rows: tuple[int, ...]
    ref_rows: tuple[int, ...]
    pairs: tuple[tuple[int, int], ...]
    snr_db: tuple[float, ...]
    sdri_db: tuple[float, ...]
    n_zeros: int

    @property
    def n_entries(self) -> int:
        """Entries in the clip mean: ``max(n_est, n_ref)`` of this class."""
        return len(self.pairs) + self.n_zeros

    @property
    def tp(self) -> int:
        return len(self.pairs)

    @property
    def fp(self) -> int:
        return len(self.est_rows) - len(self.pairs)

    @property
    def fn(self) -> int:
        return len(self.ref_rows) - len(self.pairs)


def _label_seq(labels, name: str):
    """``labels`` unless it is one string (its characters would be read as labels)."""
    if isinstance(labels, (str, bytes)):
        raise LabelError(f"{name}: expected a sequence of labels, got the string {labels!r}; "
                         f"pass [{labels!r}]")
    return labels


def _check_labels(labels: Sequence[str], n_rows: int, name: str) -> list[str]:
    labels = [str(x) for x in _label_seq(labels, name)]
    if len(labels) != n_rows:
        raise LabelError(f"{name}: {len(labels)} labels for {n_rows} rows")
    return labels


def _rows_by_class(labels: Sequence[str]) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        if label != SILENCE:
            rows.setdefault(label, []).append(i)
    return rows


def _best_pairing(snr: np.ndarray, est_rows: list[int], ref_rows: list[int]):
    """Official pairing search: reference subsets outer, stem permutations inner, first max."""
    k = min(len(est_rows), len(ref_rows))
    best_score, best = -np.inf, None
    for refs in itertools.combinations(ref_rows, k):
        for ests in itertools.permutations(est_rows, k):
            score = 0.0
            for e, r in zip(ests, refs):
                score += snr[e, r]
            if best is None or score > best_score:
                best_score, best = score, tuple(zip(ests, refs))
    return best


def class_blocks(
    est_labels: Sequence[str],
    ref_labels: Sequence[str],
    snr: np.ndarray,
    snr_mix: np.ndarray,
) -> list[ClassBlock]:
    """Per-class contributions to a clip's CAPI-SDRi (shared by every public face).

    Classes are listed in order of first appearance (stems, then references); the clip value
    does not depend on it (float64 sum).
    """
    est_by = _rows_by_class(est_labels)
    ref_by = _rows_by_class(ref_labels)
    blocks = []
    for label in list(dict.fromkeys([*est_by, *ref_by])):
        e_rows, r_rows = est_by.get(label, []), ref_by.get(label, [])
        pairs = _best_pairing(snr, e_rows, r_rows) if e_rows and r_rows else ()
        snrs = tuple(float(snr[e, r]) for e, r in pairs)
        sdris = tuple(float(snr[e, r] - snr_mix[r]) for e, r in pairs)
        blocks.append(ClassBlock(label, tuple(e_rows), tuple(r_rows), tuple(pairs), snrs, sdris,
                                 max(len(e_rows), len(r_rows)) - len(pairs)))
    return blocks


def clip_value(blocks: Iterable[ClassBlock]) -> Optional[float]:
    """Mean over all entries of the blocks (zeros included); ``None`` for no block."""
    total, count = 0.0, 0
    for b in blocks:
        total += sum(b.sdri_db)
        count += b.n_entries
    return None if count == 0 else total / count


def capi_sdri_from_snr(
    est_labels: Sequence[str],
    ref_labels: Sequence[str],
    snr_db: np.ndarray,
    snr_mix_db: np.ndarray,
) -> Optional[float]:
    """CAPI-SDRi of one clip from precomputed SNR matrices (the rule the replay reproduces).

    Per class present on either side, every pairing of ``k = min(n_est, n_ref)`` of its stems
    with as many of its references is tried (reference subsets outer, stem permutations
    inner, both in row order); the pairing with the highest **mean SNR** wins, ties to the
    first. Its SDRi values ``snr_db[e, r] − snr_mix_db[r]`` are kept and every unmatched stem or
    reference adds a 0. The clip value is the mean over ``Σ_class max(n_est, n_ref)`` entries.

    Args:
        est_labels: ``n_est`` labels (class names or ``'silence'``).
        ref_labels: ``n_ref`` labels.
        snr_db: ``(n_est, n_ref)`` SNR of each stem against each reference, dB. Entries of
            silence rows and of pairs of different classes are never read (may be NaN).
        snr_mix_db: ``(n_ref,)`` SNR of mixture channel 0 against each reference, dB.

    Returns:
        The clip's CAPI-SDRi in dB, or ``None`` when no label is a class.

    Raises:
        LabelError: label counts do not match the matrix shapes, or one string where a
            sequence of labels belongs. Labels are not checked against a label set (a typo
            is a class of its own): `capi_sdri` checks them.
        InputError: a shape mismatch, or a NaN/Inf entry that the metric reads (a
            same-class pair, or the mixture SNR of a reference whose class has a stem).

    References:
        ``S5ClassAwareMetric.update`` / ``_pi_metric``, nttcslab/dcase2026_task4_baseline
        @ 20e6992, ``src/evaluation/metrics/s5capi_metric.py``.

    Example:
        >>> capi_sdri_from_snr(["Speech"], ["Speech"], np.array([[12.0]]), np.array([2.0]))
        10.0
        >>> capi_sdri_from_snr(["Cough"], ["silence"], np.zeros((1, 1)), np.zeros(1))
        0.0
    """
    snr = np.asarray(snr_db, dtype=np.float64)
    snr_mix = np.asarray(snr_mix_db, dtype=np.float64).reshape(-1)
    if snr.ndim != 2:
        raise InputError(f"snr_db: expected (n_est, n_ref), got shape {snr.shape}")
    est_labels = _check_labels(est_labels, snr.shape[0], "est_labels vs snr_db rows")
    ref_labels = _check_labels(ref_labels, snr.shape[1], "ref_labels vs snr_db columns")
    if snr_mix.shape[0] != snr.shape[1]:
        raise InputError(f"snr_mix_db has {snr_mix.shape[0]} entries for {snr.shape[1]} references")
    est_by, ref_by = _rows_by_class(est_labels), _rows_by_class(ref_labels)
    for c in est_by.keys() & ref_by.keys():
        for r in ref_by[c]:
            if not np.isfinite(snr_mix[r]):
                raise InputError(f"snr_mix_db[{r}] ({c!r}) is {snr_mix[r]}: the metric reads "
                                 "it; pass finite dB values")
            for e in est_by[c]:
                if not np.isfinite(snr[e, r]):
                    raise InputError(f"snr_db[{e}, {r}] ({c!r}) is {snr[e, r]}: the metric "
                                     "reads it; pass finite dB values")
    return clip_value(class_blocks(est_labels, ref_labels, snr, snr_mix))


def _first_bad_sample(x: np.ndarray) -> int:
    return int(np.flatnonzero(~np.isfinite(x))[0])


def _validate_clip(est_labels, est_wavs, ref_labels, ref_wavs, mixture):
    """Shapes, dtypes and labels of one clip; samples are checked later, where they are read."""
    est = _as_rows(est_wavs, "est_wavs") if np.asarray(est_wavs).size else None
    ref = _as_rows(ref_wavs, "ref_wavs") if np.asarray(ref_wavs).size else None
    mix = np.asarray(mixture)
    if mix.dtype not in (np.float32, np.float64):
        raise InputError(
            f"mixture: expected float32 or float64 samples, got {mix.dtype}; convert with "
            "mixture.astype(np.float32) / 32768 for 16-bit PCM (the official pipeline reads "
            "audio as float32 in [-1, 1])"
        )
    if mix.ndim != 1:
        raise InputError(
            f"mixture: expected (n_samples,) (channel 0 of the soundscape), got shape {mix.shape}; "
            "pass soundscape[0]"
        )
    n_est = 0 if est is None else est.shape[0]
    n_ref = 0 if ref is None else ref.shape[0]
    est_labels = _check_labels(est_labels, n_est, "est_labels vs est_wavs rows")
    ref_labels = _check_labels(ref_labels, n_ref, "ref_labels vs ref_wavs rows")
    dtype = np.result_type(*(a.dtype for a in (est, ref, mix) if a is not None))
    if dtype not in (np.float32, np.float64):
        raise InputError(f"waveforms must be float32 or float64, got {dtype}")
    for name, arr in (("est_wavs", est), ("ref_wavs", ref)):
        if arr is not None and arr.shape[1] != mix.shape[0]:
            raise InputError(
                f"length mismatch: {name} has {arr.shape[1]} samples, mixture has {mix.shape[0]}"
            )
    as_dtype = lambda a: None if a is None else np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
    return est_labels, as_dtype(est), ref_labels, as_dtype(ref), np.ascontiguousarray(mix, dtype=dtype)


def _refuse_non_finite(name: str, arr: np.ndarray, rows, labels) -> None:
    for i in rows:
        if not np.isfinite(arr[i]).all():
            raise InputError(
                f"{name} row {i} ({labels[i]!r}) holds NaN/Inf at sample "
                f"{_first_bad_sample(arr[i])}; the official code would silently drop or "
                "propagate it: fix the stem"
            )


def clip_snr(est_labels, est, ref_labels, ref, mix) -> tuple[np.ndarray, np.ndarray]:
    """SNR matrices a clip needs: same-class pairs and the mixture against their references.

    Other entries are NaN (never read by the metric). Every non-silence row and the mixture
    must be finite (`InputError` otherwise): a NaN/Inf makes an energy non-finite, and only
    then are the samples scanned to name the first bad one.
    """
    n_est, n_ref = len(est_labels), len(ref_labels)
    snr = np.full((n_est, n_ref), np.nan)
    snr_mix = np.full(n_ref, np.nan)
    est_by, ref_by = _rows_by_class(est_labels), _rows_by_class(ref_labels)
    pairs = [(e, r) for c in est_by if c in ref_by for e in est_by[c] for r in ref_by[c]]
    refs = sorted({r for _, r in pairs})
    eps = float(np.finfo(mix.dtype).eps)
    # rows that enter no pair are still checked (cheaply, by their energy)
    lone_est = sorted({e for rows in est_by.values() for e in rows} - {e for e, _ in pairs})
    lone_ref = sorted({r for rows in ref_by.values() for r in rows} - set(refs))
    if lone_est and not np.isfinite(row_energies(est, lone_est)).all():
        _refuse_non_finite("est_wavs", est, lone_est, est_labels)
    if lone_ref and not np.isfinite(row_energies(ref, lone_ref)).all():
        _refuse_non_finite("ref_wavs", ref, lone_ref, ref_labels)
    if not np.isfinite(row_energies(mix[None, :], [0])).all():
        raise InputError(f"mixture holds NaN/Inf at sample {_first_bad_sample(mix)}")
    if not pairs:
        return snr, snr_mix
    e_idx = np.array([e for e, _ in pairs], np.int64)
    r_idx = np.array([r for _, r in pairs], np.int64)
    noise = indexed_energies(est, ref, e_idx, r_idx)
    mix_noise = indexed_energies(mix[None, :], ref, np.zeros(len(refs), np.int64),
                                 np.array(refs, np.int64))
    ref_energy = np.full(n_ref, np.nan)
    ref_energy[refs] = row_energies(ref, refs)
    if not (np.isfinite(noise).all() and np.isfinite(ref_energy[refs]).all()):
        _refuse_non_finite("ref_wavs", ref, refs, ref_labels)
        _refuse_non_finite("est_wavs", est, sorted(set(e_idx.tolist())), est_labels)
    snr[e_idx, r_idx] = 10.0 * np.log10((ref_energy[r_idx] + eps) / (noise + eps))
    snr_mix[refs] = 10.0 * np.log10((ref_energy[refs] + eps) / (mix_noise + eps))
    return snr, snr_mix


def capi_sdri(
    est_labels: Sequence[str],
    est_wavs: np.ndarray,
    ref_labels: Sequence[str],
    ref_wavs: np.ndarray,
    mixture: np.ndarray,
    label_set: Union[str, Sequence[str], LabelSet] = "dcase2026t4",
) -> Optional[float]:
    """CAPI-SDRi of one soundscape, the DCASE 2026 Task 4 rule (see `capi_sdri_from_snr`).

    Args:
        est_labels: ``n_est`` labels, class names or ``'silence'``.
        est_wavs: ``(n_est, n_samples)`` float32/float64 stems (``n_est`` may be 0; a 1-D
            ``(n_samples,)`` array is one stem).
        ref_labels: ``n_ref`` labels.
        ref_wavs: ``(n_ref, n_samples)`` oracle targets (dry sources at channel 0; 1-D: one).
        mixture: ``(n_samples,)`` channel 0 of the soundscape.
        label_set: the classes a label may name (besides ``'silence'``), as in `CapiSdri`;
            a typo would otherwise become a class of its own.

    Returns:
        CAPI-SDRi in dB, or ``None`` when neither side has a non-silence label.

    Raises:
        InputError: shape, length or dtype mismatch, or NaN/Inf in a non-silence row or the
            mixture (the official code silently ignores a NaN in an unpaired stem and turns the
            clip into NaN elsewhere; casdri refuses both).
        LabelError: label and row counts differ, a label outside ``label_set``, or one string
            where a sequence of labels belongs.

    References:
        ``S5ClassAwareMetric('sdr')``, nttcslab/dcase2026_task4_baseline @ 20e6992.

    Example:
        >>> ref = np.ones((1, 8000), np.float32); mix = 2 * ref[0]
        >>> round(capi_sdri(["Speech"], 0.5 * ref, ["Speech"], ref, mix), 4)
        6.0206
    """
    ls = get_label_set(label_set)
    ls.check(map(str, _label_seq(est_labels, "est_labels")), "est_labels")
    ls.check(map(str, _label_seq(ref_labels, "ref_labels")), "ref_labels")
    est_labels, est, ref_labels, ref, mix = _validate_clip(
        est_labels, est_wavs, ref_labels, ref_wavs, mixture)
    snr, snr_mix = clip_snr(est_labels, est, ref_labels, ref, mix)
    return clip_value(class_blocks(est_labels, ref_labels, snr, snr_mix))


def ca_sdri_2025(
    est_labels: Sequence[str],
    est_wavs: np.ndarray,
    ref_labels: Sequence[str],
    ref_wavs: np.ndarray,
    mixture: np.ndarray,
    on_duplicate: str = "raise",
) -> Optional[float]:
    """CA-SDRi of one soundscape, the DCASE 2025 Task 4 rule (unique labels per side).

    For each class in the union of the non-silence labels: SNR(stem, ref) − SNR(mixture, ref)
    if the class is on both sides, else 0; the clip value is the mean.

    What the official 2025 ``ca_metric`` does outside its definition: a label repeated on one
    side keeps only its **last** row and counts once (it builds a dict); a clip with no
    non-silence label returns the mean of an empty tensor (NaN), which poisons the 2025
    ``evaluate.py`` mean. casdri returns ``None`` for that clip (left out of the mean, as in
    2026) and, by default, refuses duplicates; ``on_duplicate="last"`` reproduces the old code.

    Args:
        est_labels, est_wavs, ref_labels, ref_wavs, mixture: as in `capi_sdri` (the labels
            are not checked against a label set: the 2025 classes differ from 2026's).
        on_duplicate: ``"raise"`` (default) or ``"last"``.

    Returns:
        CA-SDRi in dB, or ``None`` when no label is a class.

    Raises:
        LabelError: a repeated class label with ``on_duplicate="raise"``.
        InputError: as in `capi_sdri`.

    References:
        ``ca_metric`` with ``torchmetrics.functional.signal_noise_ratio``,
        nttcslab/dcase2025_task4_baseline @ 12063c5, ``src/utils.py``.
    """
    if on_duplicate not in ("raise", "last"):
        raise InputError(f"on_duplicate must be 'raise' or 'last', got {on_duplicate!r}")
    est_labels, est, ref_labels, ref, mix = _validate_clip(
        est_labels, est_wavs, ref_labels, ref_wavs, mixture)
    last: list[dict[str, int]] = []
    for side, labels in (("est_labels", est_labels), ("ref_labels", ref_labels)):
        rows = _rows_by_class(labels)
        dup = [c for c, r in rows.items() if len(r) > 1]
        if dup and on_duplicate == "raise":
            raise LabelError(
                f"{side} repeats {dup}: the 2025 CA-SDRi is defined for unique labels; use "
                "capi_sdri (2026) or on_duplicate='last' to reproduce the 2025 code"
            )
        last.append({c: r[-1] for c, r in rows.items()})
    est_last, ref_last = last
    for name, arr, labels in (("est_wavs", est, est_labels), ("ref_wavs", ref, ref_labels)):
        rows = [i for i, x in enumerate(labels) if x != SILENCE]
        if rows and not np.isfinite(row_energies(arr, rows)).all():
            _refuse_non_finite(name, arr, rows, labels)
    if not np.isfinite(row_energies(mix[None, :], [0])).all():
        raise InputError(f"mixture holds NaN/Inf at sample {_first_bad_sample(mix)}")
    classes = list(dict.fromkeys([*est_last, *ref_last]))
    if not classes:
        return None
    total = 0.0
    for c in classes:
        if c in est_last and c in ref_last:
            r = ref[ref_last[c]]
            pair = snr_db(np.vstack([est[est_last[c]], mix]), r)
            total += pair[0, 0] - pair[1, 0]
    return total / len(classes)


# ----------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class LabelCounts:
    """Label counts of one clip on multisets of non-silence labels (official ``LabelMetric``).

    Attributes:
        acc: the two multisets are equal.
        tp: size of the multiset intersection.
        fp: stems whose label has no reference left.
        fn: references whose label has no stem left.
    """

    acc: bool
    tp: int
    fp: int
    fn: int


def label_counts(est_labels: Sequence[str], ref_labels: Sequence[str]) -> LabelCounts:
    """Multiset label counts of one clip.

    Labels are compared as strings, not checked against a label set (`capi_sdri` checks
    them).

    Raises:
        LabelError: one string where a sequence of labels belongs.

    References:
        ``LabelMetric.update``, nttcslab/dcase2026_task4_baseline @ 20e6992,
        ``src/evaluation/metrics/label_metric.py``.

    Example:
        >>> label_counts(["Speech", "Speech", "silence"], ["Speech", "Cough"])
        LabelCounts(acc=False, tp=1, fp=1, fn=1)
    """
    est = Counter(x for x in map(str, _label_seq(est_labels, "est_labels")) if x != SILENCE)
    ref = Counter(x for x in map(str, _label_seq(ref_labels, "ref_labels")) if x != SILENCE)
    tp = sum((est & ref).values())
    return LabelCounts(est == ref, tp, sum(est.values()) - tp, sum(ref.values()) - tp)


def label_accuracies(counts: Iterable[LabelCounts]) -> tuple[float, float]:
    """Dataset ``(accuracy_mix, accuracy_src)`` in percent (official ``LabelMetric.compute``).

    ``accuracy_mix`` = 100 · mean(acc) over all clips, ``None`` clips included;
    ``accuracy_src`` = 100 · Σtp / (Σtp + Σfp + Σfn), NaN when that denominator is 0.
    """
    counts = list(counts)
    if not counts:
        return float("nan"), float("nan")
    acc = 100.0 * sum(c.acc for c in counts) / len(counts)
    tp = sum(c.tp for c in counts)
    den = tp + sum(c.fp for c in counts) + sum(c.fn for c in counts)
    return acc, (100.0 * tp / den if den else float("nan"))
