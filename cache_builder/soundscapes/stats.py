"""How hard a generated split is for a separator: SNR of the mixture against each oracle
target and the all-silent oracle-label floor, both by casdri's metric.

Conventions:
    * Audio is read as float32 (the official pipeline's dtype); the mixture is channel 0
      (W) of ``soundscape/<name>.wav``, the references are ``oracle_target/`` files in the
      order of the metadata (``role == 'target'`` rows, column ``oracle_file``).
    * ``snr_mix_db``: `casdri.metric.snr_db` of the mixture against each oracle target.
    * ``silent_floor_db``: CAPI-SDRi (`casdri.metric.capi_sdri`) of all-zero stems carrying
      the oracle labels, averaged over the soundscapes with targets (a zero-target
      soundscape with no estimate scores ``None`` and is left out, as in the metric).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import pandas as pd
import soundfile as sf

from casdri.layout import ORACLE_DIR, SOUNDSCAPE_DIR, WAV
from casdri.metric import capi_sdri, snr_db

from .metadata import METADATA_FILES

__all__ = ["SplitDifficulty", "split_difficulty"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class SplitDifficulty:
    """Per-split figures (module conventions).

    Attributes:
        n_soundscapes: soundscapes in the split.
        n_targets: oracle targets.
        snr_mix_db: ``(n_targets,)`` float64 SNR of the mixture W against each target, dB.
        silent_floor_db: mean CAPI-SDRi of silent stems with oracle labels, dB.
    """

    n_soundscapes: int
    n_targets: int
    snr_mix_db: np.ndarray
    silent_floor_db: float

    @property
    def median_snr_mix_db(self) -> float:
        """Median of `snr_mix_db`, dB."""
        return float(np.median(self.snr_mix_db))


def split_difficulty(split_dir: PathLike) -> SplitDifficulty:
    """Figures of one generated split folder (module conventions).

    Args:
        split_dir: ``<out>/<split>`` as `generate_soundscapes` writes it.

    Raises:
        FileNotFoundError: the metadata or an audio file is missing.
    """
    root = Path(split_dir)
    table = pd.read_parquet(root / METADATA_FILES[0])
    snrs, floors = [], []
    names = sorted(table["soundscape"].unique())
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
    return SplitDifficulty(len(names), len(snrs), np.asarray(snrs, dtype=np.float64),
                           float(np.mean(floors)) if floors else float("nan"))
