"""Frame-level sound event detection (SED) as decision features: the one activity summary of a
soundscape's frame probabilities, used by the cache (`summary_of_cache`), the policies that
read SED (``staged``) and the live pipeline (`activity_summary` on the model's output).

Conventions:
    * Frame probabilities are ``(n_frames, C)`` per soundscape and model, stored float16 in
      the cache (`casdri.schema.SED`); the summary reads them **as float16** (the live
      pipeline rounds its model's output to float16 first, `as_cached`), then in float64.
    * Summary of one soundscape: ``(C, N_FEATURES) float64`` per class:
      ``[F_MAX]`` max over frames, ``[F_MEAN]`` mean over frames, and for each frame level
      ``SED_LEVELS_PCT[l]`` (percent) ``[F_DUR0 + l]`` the *active duration* in seconds:
      ``frame_hop_s`` times the number of frames whose probability is ``>= level / 100``.
      No frames: every feature NaN. A soundscape without SED (no row of the model): NaN.
    * The model read is the cache's first SED model by name (`SedData.models[0]`), or the one
      named.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["SED_LEVELS_PCT", "F_MAX", "F_MEAN", "F_DUR0", "N_FEATURES", "as_cached",
           "activity_summary", "summary_of_cache"]

#: frame-probability levels (percent) at which the active duration is summarised
SED_LEVELS_PCT = (30, 50, 70)
F_MAX, F_MEAN, F_DUR0 = 0, 1, 2
N_FEATURES = F_DUR0 + len(SED_LEVELS_PCT)


def as_cached(probs) -> np.ndarray:
    """``float16`` frame probabilities (any shape, e.g. ``(n_frames, C)``), rounded as the
    cache stores them."""
    return np.asarray(probs, dtype=np.float32).astype(np.float16)


def activity_summary(probs, frame_hop_s: float) -> np.ndarray:
    """The activity summary of one soundscape (module conventions).

    Args:
        probs: ``(n_frames, C)`` frame probabilities (float16 as cached, or any float: they
            are rounded to float16 first, `as_cached`).
        frame_hop_s: seconds between frames (> 0).

    Returns:
        ``(C, N_FEATURES) float64``: max, mean, then the active duration (s) per level.

    Raises:
        ValueError: ``probs`` not 2-D, or a hop that is not a positive finite number.

    Example:
        >>> s = activity_summary(np.array([[0.9, 0.1], [0.6, 0.2], [0.2, 0.1]]), 0.5)
        >>> s[0].round(3).tolist()
        [0.9, 0.567, 1.0, 1.0, 0.5]
    """
    p = np.asarray(probs)
    if p.ndim != 2:
        raise ValueError(f"SED probabilities must be (n_frames, C), got shape {p.shape}")
    if not (np.isfinite(frame_hop_s) and frame_hop_s > 0):
        raise ValueError(f"SED frame_hop_s must be a positive number of seconds, got "
                         f"{frame_hop_s!r}")
    p = as_cached(p).astype(np.float64)
    C = p.shape[1]
    out = np.full((C, N_FEATURES), np.nan)
    if p.shape[0] == 0:
        return out
    out[:, F_MAX] = p.max(axis=0)
    out[:, F_MEAN] = p.mean(axis=0)
    for lv, pct in enumerate(SED_LEVELS_PCT):
        out[:, F_DUR0 + lv] = float(frame_hop_s) * (p >= pct / 100.0).sum(axis=0)
    return out


def summary_of_cache(cache, model: Optional[str] = None) -> np.ndarray:
    """``(S, C, N_FEATURES) float64`` activity summaries of a cache's soundscapes (NaN where
    the cache holds no SED of ``model``), memoised on ``cache.memo``.

    Args:
        cache: a `casdri.cache.DecisionCache`.
        model: SED model name; None: the cache's first (by name); a cache without SED gives
            all NaN.

    Raises:
        KeyError: ``model`` is not among the cache's SED models (they are named).
    """
    key = ("sed_summary", model)
    if key in cache.memo:
        return cache.memo[key]
    S, C = cache.n_soundscapes, cache.n_classes
    out = np.full((S, C, N_FEATURES), np.nan)
    sed = cache.sed
    if sed is not None and sed.models:
        if model is not None and model not in sed.models:
            raise KeyError(f"SED model {model!r} is not in the cache {cache.path}; it holds "
                           f"{list(sed.models)}")
        m = sed.models.index(model) if model is not None else 0
        for s in range(S):
            a, b = sed.offsets[m * S + s], sed.offsets[m * S + s + 1]
            if b > a and np.isfinite(sed.frame_hop_s[m, s]):
                out[s] = activity_summary(sed.probs[a:b], float(sed.frame_hop_s[m, s]))
    cache.memo[key] = out
    return out
