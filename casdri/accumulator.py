"""`CapiSdri`: the dataset accumulator (update / compute / reset), the shape of the official
``S5ClassAwareMetric`` + ``LabelMetric`` pair, with per-soundscape and per-class breakdowns.

Conventions: one `update` per soundscape; `compute` returns the official dataset mean over
clips whose value is not ``None`` and the label accuracies in percent (``None`` clips count
in ``accuracy_mix``). Per-class rows aggregate the entries each class adds to the clip means:
matched pairs (SDRi) and unmatched stems or references (zeros).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from . import metric as _m
from .errors import InputError
from .labels import LabelSet, get_label_set

__all__ = ["CapiSdri", "CapiSdriResult"]

_METRICS = ("capi", "ca2025")


@dataclass(frozen=True)
class CapiSdriResult:
    """Dataset result.

    Attributes:
        capi_sdri: mean over scored clips in dB (``None`` if no clip was scored).
        accuracy_mix: percent of clips whose label multiset is exact (all clips).
        accuracy_src: 100·Σtp/(Σtp+Σfp+Σfn), percent.
        n_soundscapes: clips updated; n_scored: clips with a value.
        per_soundscape: one row per clip: soundscape, capi_sdri (NaN for ``None``),
            est_labels, ref_labels, acc, tp, fp, fn.
        per_class: one row per class seen: label, sdri_mean (mean of its entries, zeros
            included, dB), sdri_matched_mean (mean over matched pairs only, dB), n_entries,
            tp, fp, fn.
        metric: ``"capi"`` (2026) or ``"ca2025"``.
    """

    capi_sdri: Optional[float]
    accuracy_mix: float
    accuracy_src: float
    n_soundscapes: int
    n_scored: int
    per_soundscape: pd.DataFrame = field(repr=False)
    per_class: pd.DataFrame = field(repr=False)
    metric: str = "capi"

    def to_dict(self) -> dict:
        """JSON-ready dict (``None`` for missing values)."""
        ps = self.per_soundscape.astype(object).where(self.per_soundscape.notna(), None)
        return {
            "metric": self.metric,
            "capi_sdri": self.capi_sdri,
            "accuracy_mix": self.accuracy_mix,
            "accuracy_src": self.accuracy_src,
            "n_soundscapes": self.n_soundscapes,
            "n_scored": self.n_scored,
            "per_soundscape": ps.to_dict(orient="records"),
            "per_class": self.per_class.astype(object).where(self.per_class.notna(), None)
            .to_dict(orient="records"),
        }


class CapiSdri:
    """Accumulate CAPI-SDRi (or the 2025 CA-SDRi) and label counts over soundscapes.

    Args:
        label_set: ``"dcase2026t4"`` (default), ``"dcase2025t4"``, a list of class names, or a
            `LabelSet`; labels outside it raise `LabelError`.
        metric: ``"capi"`` (DCASE 2026 CAPI-SDRi) or ``"ca2025"`` (DCASE 2025 CA-SDRi, unique
            labels; duplicates raise).

    Example:
        >>> import numpy as np
        >>> acc = CapiSdri()
        >>> ref = np.ones((1, 8), np.float32)
        >>> round(acc.update("s0", ["Speech"], 0.5 * ref, ["Speech"], ref, 2 * ref[0]), 4)
        6.0206
        >>> acc.update("s1", [], np.zeros((0, 8), np.float32), [], np.zeros((0, 8), np.float32),
        ...            np.zeros(8, np.float32)) is None
        True
        >>> r = acc.compute(); round(r.capi_sdri, 4), r.accuracy_mix, r.n_scored
        (6.0206, 100.0, 1)
    """

    def __init__(self, label_set: Union[str, Sequence[str], LabelSet] = "dcase2026t4",
                 metric: str = "capi") -> None:
        if metric not in _METRICS:
            raise InputError(f"metric must be one of {_METRICS}, got {metric!r}")
        self.label_set = get_label_set(label_set)
        self.metric = metric
        self.reset()

    def reset(self) -> None:
        """Forget every clip."""
        self._rows: list[dict] = []
        self._counts: list[_m.LabelCounts] = []
        self._blocks: list[_m.ClassBlock] = []
        self._names: set[str] = set()

    def _record(self, soundscape, est_labels, ref_labels, value, blocks) -> Optional[float]:
        counts = _m.label_counts(est_labels, ref_labels)
        self._names.add(soundscape)
        self._counts.append(counts)
        self._blocks.extend(blocks)
        self._rows.append({
            "soundscape": soundscape,
            "capi_sdri": np.nan if value is None else float(value),
            "est_labels": list(est_labels), "ref_labels": list(ref_labels),
            "acc": counts.acc, "tp": counts.tp, "fp": counts.fp, "fn": counts.fn,
        })
        return value

    def _check(self, soundscape: str, est_labels, ref_labels) -> tuple[list, list]:
        if soundscape in self._names:
            raise InputError(f"soundscape {soundscape!r} was already updated; call reset() first")
        est_labels = list(map(str, _m._label_seq(est_labels, f"{soundscape}: est_labels")))
        ref_labels = list(map(str, _m._label_seq(ref_labels, f"{soundscape}: ref_labels")))
        self.label_set.check(est_labels, f"{soundscape}: estimate labels")
        self.label_set.check(ref_labels, f"{soundscape}: reference labels")
        return est_labels, ref_labels

    def update(self, soundscape: str, est_labels: Sequence[str], est_wavs: np.ndarray,
               ref_labels: Sequence[str], ref_wavs: np.ndarray, mixture: np.ndarray
               ) -> Optional[float]:
        """Score one soundscape from waveforms (see `casdri.capi_sdri`) and return its value."""
        est_labels, ref_labels = self._check(soundscape, est_labels, ref_labels)
        if self.metric == "ca2025":
            value = _m.ca_sdri_2025(est_labels, est_wavs, ref_labels, ref_wavs, mixture)
            return self._record(soundscape, est_labels, ref_labels, value, [])
        est_labels, est, ref_labels, ref, mix = _m._validate_clip(
            est_labels, est_wavs, ref_labels, ref_wavs, mixture)
        snr, snr_mix = _m.clip_snr(est_labels, est, ref_labels, ref, mix)
        return self._update_blocks(soundscape, est_labels, ref_labels, snr, snr_mix)

    def update_from_snr(self, soundscape: str, est_labels: Sequence[str],
                        ref_labels: Sequence[str], snr_db: np.ndarray, snr_mix_db: np.ndarray
                        ) -> Optional[float]:
        """Score one soundscape from ``(n_est, n_ref)`` and ``(n_ref,)`` SNR matrices in dB."""
        if self.metric != "capi":
            raise InputError("update_from_snr is defined for metric='capi' only")
        est_labels, ref_labels = self._check(soundscape, est_labels, ref_labels)
        snr = np.asarray(snr_db, dtype=np.float64)
        _m.capi_sdri_from_snr(est_labels, ref_labels, snr, snr_mix_db)  # validates shapes
        return self._update_blocks(soundscape, est_labels, ref_labels, snr,
                                   np.asarray(snr_mix_db, dtype=np.float64).reshape(-1))

    def _update_blocks(self, soundscape, est_labels, ref_labels, snr, snr_mix):
        blocks = _m.class_blocks(est_labels, ref_labels, snr, snr_mix)
        return self._record(soundscape, est_labels, ref_labels, _m.clip_value(blocks), blocks)

    def compute(self) -> CapiSdriResult:
        """Dataset mean over scored clips, label accuracies and the breakdown tables."""
        per_soundscape = pd.DataFrame(self._rows, columns=[
            "soundscape", "capi_sdri", "est_labels", "ref_labels", "acc", "tp", "fp", "fn"])
        values = per_soundscape["capi_sdri"].to_numpy(dtype=np.float64)
        scored = values[~np.isnan(values)]
        # official: Python sum of the clip floats in update order, divided by their count
        mean = float(sum(scored.tolist()) / len(scored)) if len(scored) else None
        acc_mix, acc_src = _m.label_accuracies(self._counts)
        return CapiSdriResult(mean, acc_mix, acc_src, len(self._rows), int(len(scored)),
                              per_soundscape, self._per_class(), self.metric)

    def _per_class(self) -> pd.DataFrame:
        cols = ["label", "sdri_mean", "sdri_matched_mean", "n_entries", "tp", "fp", "fn"]
        if self.metric == "ca2025":
            return pd.DataFrame(columns=cols)
        agg: dict[str, list] = {}
        for b in self._blocks:
            a = agg.setdefault(b.label, [0.0, 0, 0.0, 0, 0, 0])
            a[0] += sum(b.sdri_db); a[1] += b.n_entries
            a[2] += sum(b.sdri_db); a[3] += b.tp; a[4] += b.fp; a[5] += b.fn
        rows = []
        for label in sorted(agg, key=self.label_set.classes.index):
            s, n, sm, tp, fp, fn = agg[label]
            rows.append([label, s / n if n else np.nan, sm / tp if tp else np.nan, n, tp, fp, fn])
        return pd.DataFrame(rows, columns=cols)
