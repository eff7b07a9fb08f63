"""What a policy's plain-Python ``decide`` sees: one soundscape's inputs and the stems a
lookup returns (shared by the cache, the policies and the live pipeline; no policy logic).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from .labels import LabelSet
from .schema import reduce_retag

__all__ = ["SoundscapeInputs", "SlotStem", "Lookup"]


@dataclass(frozen=True)
class SoundscapeInputs:
    """What a policy's plain-Python ``decide`` sees of one soundscape.

    Attributes:
        soundscape: id; label_set: the classes.
        tagger_probs: tagger name → ``(K, C+1)`` softmax (float32), in cache tagger order.
        ref_labels: oracle class indices (needed by ``oracle`` only).
        n_separators, n_stages: what ``lookup`` can serve.
        sed_summary: ``(C, casdri.sed.N_FEATURES) float64`` SED activity summary of the
            soundscape (`casdri.sed.activity_summary`), or None (no SED: every SED gate
            passes).
    """

    soundscape: str
    label_set: LabelSet
    tagger_probs: Mapping[str, np.ndarray]
    ref_labels: Optional[tuple[int, ...]] = None
    n_separators: int = 1
    n_stages: int = 1
    sed_summary: Optional[np.ndarray] = None


@dataclass(frozen=True)
class SlotStem:
    """One slot of a separation as ``decide`` sees it.

    Attributes:
        label: query class of the slot; energy_db: dB re mixture channel 0.
        retag_max: ``(C,) float32`` max over retagger tracks; retag_silence_min: float32 min
            over tracks of the silence probability.
        ref: caller's handle (stem row in a cache, or the waveform in the live pipeline).
    """

    label: int
    energy_db: float
    retag_max: np.ndarray
    retag_silence_min: float
    ref: Any = None

    @classmethod
    def from_retag(cls, label: int, energy_db: float, retag: np.ndarray,
                   ref: Any = None) -> "SlotStem":
        """From a ``(K, C+1)`` retagger softmax, reduced as the cache is
        (`casdri.schema.reduce_retag`)."""
        mx, smin = reduce_retag(np.asarray(retag)[None])
        return cls(int(label), float(energy_db), mx[0], float(smin[0]), ref)


Lookup = Callable[[tuple, int, int], Sequence[SlotStem]]
