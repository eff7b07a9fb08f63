"""How hard a generated split is: SNR of the mixture against each oracle target, and the
floors and ceiling any tagger or separator figure on it should be read against, all by
casdri's metric.

Conventions:
    * Audio is read as float32 (the official pipeline's dtype); the mixture is channel 0
      (W) of ``soundscape/<name>.wav``, the references are ``oracle_target/`` files in the
      order of the metadata (``role == 'target'`` rows, column ``oracle_file``).
    * ``snr_mix_db``: `casdri.metric.snr_db` of the mixture against each oracle target.
    * ``silent_floor_db``: CAPI-SDRi (`casdri.metric.capi_sdri`) of all-zero stems carrying
      the oracle labels, averaged over the soundscapes with targets (a zero-target
      soundscape with no estimate scores ``None`` and is left out, as in the metric).
    * ``gain_floor_db``: the same with each stem a copy of the mixture W scaled by its
      least-squares gain ``<ref, W> / <W, W>`` (an oracle gain: the best a system that only
      rescales the mixture can do, per stem).
    * ``ideal_mask_db``: the same with each stem the mixture W through the ideal ratio mask
      ``|T| / sqrt(|T|² + |W − T|²)`` of its target ``T`` (Wang et al., "On training targets for
      supervised speech separation", IEEE/ACM TASLP 2014, beta = 1/2), mixture phase, Hann STFT
      of `MASK_WINDOW` samples and hop `MASK_HOP` (`scipy.signal.ShortTimeFFT`): what a
      single-channel mask separator could reach at best.
    * ``silence_tagger_pct``: mixture accuracy of a tagger that never predicts a class (the
      zero-target share, percent); on soundscapes with targets it is right 0 % of the time.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import ShortTimeFFT
from scipy.signal.windows import hann

from casdri.layout import ORACLE_DIR, SOUNDSCAPE_DIR, WAV
from casdri.metric import capi_sdri, snr_db

from .metadata import METADATA_FILES

__all__ = ["SplitDifficulty", "split_difficulty", "ideal_ratio_mask_stems", "MASK_WINDOW",
           "MASK_HOP"]

PathLike = Union[str, "os.PathLike[str]"]

MASK_WINDOW = 1024  # samples (32 ms at 32 kHz)
MASK_HOP = 256


@dataclass(frozen=True)
class SplitDifficulty:
    """Per-split figures (module conventions).

    Attributes:
        n_soundscapes: soundscapes in the split.
        n_targets: oracle targets.
        snr_mix_db: ``(n_targets,)`` float64 SNR of the mixture W against each target, dB.
        silent_floor_db: mean CAPI-SDRi of silent stems with oracle labels, dB.
        gain_floor_db: mean CAPI-SDRi of least-squares-scaled mixture copies, dB.
        ideal_mask_db: mean CAPI-SDRi of ideal-ratio-mask stems, dB.
        n_zero_target: zero-target soundscapes.
    """

    n_soundscapes: int
    n_targets: int
    snr_mix_db: np.ndarray
    silent_floor_db: float
    gain_floor_db: float
    ideal_mask_db: float
    n_zero_target: int

    @property
    def silence_tagger_pct(self) -> float:
        """Mixture accuracy of the all-silence tagger (the zero-target share), percent."""
        return 100.0 * self.n_zero_target / self.n_soundscapes if self.n_soundscapes else 0.0

    @property
    def median_snr_mix_db(self) -> float:
        """Median of `snr_mix_db`, dB."""
        return float(np.median(self.snr_mix_db))


def ideal_ratio_mask_stems(mixture: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Each target recovered from the mixture by its ideal ratio mask (module conventions).

    Args:
        mixture: ``(n_samples,)`` float32 channel 0 (W) of the soundscape.
        refs: ``(n_ref, n_samples)`` float32 oracle targets.

    Returns:
        ``(n_ref, n_samples)`` float32 stems ``iSTFT(M · STFT(W))`` with
        ``M = |T| / sqrt(|T|² + |W − T|² + tiny)``, the mixture's phase.
    """
    n = mixture.shape[-1]
    stft = ShortTimeFFT(hann(MASK_WINDOW, sym=False), MASK_HOP, fs=1)
    spec_mix = stft.stft(mixture.astype(np.float64))
    spec_ref = stft.stft(refs.astype(np.float64), axis=-1)
    target = np.abs(spec_ref) ** 2
    rest = np.abs(spec_mix[None] - spec_ref) ** 2
    mask = np.sqrt(target / (target + rest + np.finfo(np.float64).tiny))
    return stft.istft(mask * spec_mix[None], k1=n).astype(np.float32)


def split_difficulty(split_dir: PathLike, limit: Optional[int] = None) -> SplitDifficulty:
    """Figures of one generated split folder (module conventions).

    Args:
        split_dir: ``<out>/<split>`` as `generate_soundscapes` writes it.
        limit: only the first ``limit`` soundscapes by name (default: all).

    Raises:
        FileNotFoundError: the metadata or an audio file is missing.
    """
    root = Path(split_dir)
    table = pd.read_parquet(root / METADATA_FILES[0])
    snrs, floors, gains, masks = [], [], [], []
    names = sorted(table["soundscape"].unique())[:limit]
    for name in names:
        files = table.loc[(table["soundscape"] == name) & (table["role"] == "target"),
                          ["oracle_file", "label"]]
        if files.empty:
            continue
        mix = sf.read(root / SOUNDSCAPE_DIR / f"{name}{WAV}", dtype="float32")[0][:, 0]
        refs = np.stack([sf.read(root / ORACLE_DIR / f, dtype="float32")[0]
                         for f in files["oracle_file"]])
        labels = list(files["label"])
        snrs.extend(snr_db(mix, refs)[0])
        floors.append(capi_sdri(labels, np.zeros_like(refs), labels, refs, mix))
        gain = (refs.astype(np.float64) @ mix) / max(float(mix.astype(np.float64) @ mix), 1e-30)
        gains.append(capi_sdri(labels, (gain[:, None] * mix).astype(np.float32), labels, refs,
                               mix))
        masks.append(capi_sdri(labels, ideal_ratio_mask_stems(mix, refs), labels, refs, mix))

    def mean(values):
        return float(np.mean(values)) if values else float("nan")

    return SplitDifficulty(len(names), len(snrs), np.asarray(snrs, dtype=np.float64),
                           mean(floors), mean(gains), mean(masks), len(names) - len(floors))
