"""Dataset means and paired bootstrap confidence intervals over soundscapes.

Conventions:
    * Per-soundscape CAPI-SDRi values are ``float64`` arrays in dB with **NaN for a None clip**
      (no non-silence label on either side). The dataset CAPI-SDRi is the official mean over the
      non-None clips, so a None clip counts in neither the sum nor the count
      (`casdri.replay.scored_mean`, its one implementation and summation order).
    * A paired bootstrap resamples **soundscapes** (with replacement, the same draw for both
      policies) and recomputes both dataset means on each resample; the gain is the difference
      of the two means, not the mean of per-soundscape differences (a clip can be None under one
      policy and scored under the other). Resamples where either mean is undefined are dropped.
    * With ``clusters`` (e.g. each soundscape's source recordings) the resamples draw clusters,
      not soundscapes (`cluster_weights`): soundscapes that share a recording share its
      uncertainty, and the interval speaks for soundscapes made of other recordings.
    * Intervals are percentile intervals (two-sided, ``confidence`` mass).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .errors import InputError
from .replay import scored_mean

__all__ = ["dataset_mean", "BootstrapGain", "paired_bootstrap", "paired_bootstrap_parts",
           "gain_difference", "cluster_weights", "cluster_members"]

_BATCH = 500  # resamples per block (bounds memory at _BATCH * S)


dataset_mean = scored_mean
"""Official dataset CAPI-SDRi: `casdri.replay.scored_mean` (one rule, one summation order)."""


@dataclass(frozen=True)
class BootstrapGain:
    """Result of `paired_bootstrap` (all values in dB).

    Attributes:
        tuned_db, base_db: dataset means of the two policies on the sample.
        gain_db: ``tuned_db - base_db``.
        gain_ci_db: ``(low, high)`` percentile interval of the gain.
        tuned_ci_db: ``(low, high)`` percentile interval of ``tuned_db`` alone.
        n_soundscapes: soundscapes in the sample (None clips included).
        n_boot: resamples drawn; confidence: interval mass; seed: resampling seed.
        prob_gain_positive: share of the (defined) resamples whose gain is > 0.
    """

    tuned_db: float
    base_db: float
    gain_db: float
    gain_ci_db: tuple[float, float]
    tuned_ci_db: tuple[float, float]
    n_soundscapes: int
    n_boot: int
    confidence: float
    seed: int
    prob_gain_positive: float = float("nan")

    @property
    def ci_includes_zero(self) -> bool:
        """True when the gain's interval does not exclude 0 (no evidence of a gain)."""
        lo, hi = self.gain_ci_db
        return not (lo > 0.0 or hi < 0.0)

    def to_dict(self) -> dict:
        return {
            "tuned_db": self.tuned_db, "base_db": self.base_db, "gain_db": self.gain_db,
            "gain_ci_db": list(self.gain_ci_db), "tuned_ci_db": list(self.tuned_ci_db),
            "n_soundscapes": self.n_soundscapes, "n_boot": self.n_boot,
            "confidence": self.confidence, "seed": self.seed,
            "prob_gain_positive": self.prob_gain_positive,
        }


def _validate_pair(tuned, base) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(tuned, dtype=np.float64)
    b = np.asarray(base, dtype=np.float64)
    if a.ndim not in (1, 2) or b.ndim != 1 or a.shape[-1] != b.shape[0]:
        raise InputError(
            f"paired values: expected two 1-D arrays of the same length (one value per "
            f"soundscape; tuned may be (R, S): R repeats), got shapes {a.shape} and {b.shape}"
        )
    if np.isinf(a).any() or np.isinf(b).any():
        raise InputError("paired values hold +-Inf; per-soundscape CAPI-SDRi must be finite or NaN")
    return a, b


def paired_bootstrap(
    tuned: np.ndarray,
    base: np.ndarray,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    clusters: Optional[Sequence] = None,
) -> BootstrapGain:
    """Paired bootstrap CI of the dataset-CAPI-SDRi gain of ``tuned`` over ``base``.

    Args:
        tuned: ``(S,) float64`` per-soundscape CAPI-SDRi of the tuned policy, dB, NaN = None;
            or ``(R, S)``: R repeats (e.g. repeated k-fold splits), whose dataset means are
            averaged (on the sample and on every resample: one draw of soundscapes for all).
        base: ``(S,) float64`` the same soundscapes under the reference policy.
        n_boot: number of resamples.
        confidence: interval mass in (0, 1).
        seed: seed of the resampling (same seed, same interval).
        clusters: None (resample soundscapes), or per soundscape the ids of the clusters it
            belongs to, e.g. its source recordings (None or empty: a cluster of its own):
            resample the clusters instead (`cluster_weights`), for the uncertainty of the
            gain on soundscapes made of other recordings.

    Returns:
        `BootstrapGain`.

    Raises:
        InputError: shapes differ, Inf values, or bad ``n_boot`` / ``confidence``.

    Example:
        >>> r = paired_bootstrap(np.array([2.0, 3.0, np.nan]), np.array([1.0, 2.0, 0.0]), 200)
        >>> round(r.gain_db, 3)
        1.5
    """
    a, b = _validate_pair(tuned, base)
    _check_boot(n_boot, confidence)
    ba, bb = _resampled_means([a, b], b.shape[0], n_boot, seed, clusters)
    return _gain(a, b, ba, bb, n_boot, confidence, seed)


def paired_bootstrap_parts(
    tuned: np.ndarray,
    start: np.ndarray,
    base: np.ndarray,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    clusters: Optional[Sequence] = None,
) -> tuple[BootstrapGain, BootstrapGain, BootstrapGain]:
    """The gain of ``tuned`` over ``base`` and its two parts, on one set of resamples: ``start``
    over ``base`` and ``tuned`` over ``start`` (the first gain is the sum of the other two).

    Each equals `paired_bootstrap` of that pair with the same ``seed`` (the same resamples,
    bit for bit); the soundscapes are gathered once per resample for all three.

    Args:
        tuned: ``(S,)`` or ``(R, S)`` as in `paired_bootstrap`; start, base: ``(S,) float64``
            (dB, NaN = None), e.g. an untuned start policy and the baseline.
        n_boot, confidence, seed, clusters: as in `paired_bootstrap`.

    Returns:
        ``(tuned vs base, start vs base, tuned vs start)``, each a `BootstrapGain`.

    Raises:
        InputError: as `paired_bootstrap`, for either pair.
    """
    a, b = _validate_pair(tuned, base)
    st, _ = _validate_pair(start, base)
    if st.ndim != 1:
        raise InputError(f"start: expected one value per soundscape, got shape {st.shape}")
    _check_boot(n_boot, confidence)
    ba, bs, bb = _resampled_means([a, st, b], b.shape[0], n_boot, seed, clusters)
    return (_gain(a, b, ba, bb, n_boot, confidence, seed),
            _gain(st, b, bs, bb, n_boot, confidence, seed),
            _gain(a, st, ba, bs, n_boot, confidence, seed))


def _check_boot(n_boot, confidence=0.95) -> None:
    if not 0.0 < float(confidence) < 1.0:
        raise InputError(f"confidence must be in (0, 1), got {confidence}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise InputError(f"n_boot must be an int >= 1, got {n_boot!r}")


def _resampled_means(arrays, S: int, n_boot: int, seed: int, clusters=None) -> list:
    """Per array (``(S,)``, or ``(R, S)`` rows whose dataset means are averaged): its dataset
    mean on each of ``n_boot`` resamples, the same resamples for every array, drawn in blocks
    of `_BATCH` from ``default_rng(seed)``: of the ``S`` soundscapes (with replacement), or,
    with ``clusters``, as the weights of `cluster_weights` (a weighted mean over the scored
    clips: Σ w·v / Σ w)."""
    rows = [x if x.ndim == 2 else x[None, :] for x in arrays]
    rng = np.random.default_rng(seed)
    members = None if clusters is None else cluster_members(clusters, S)
    out = [[] for _ in rows]
    left = int(n_boot)
    while left > 0 and S > 0:
        n = min(_BATCH, left)
        if members is None:
            idx = rng.integers(0, S, size=(n, S))
            for k, r in enumerate(rows):
                out[k].append(np.mean([scored_mean(x[idx]) for x in r], axis=0))
        else:
            w = _product_weights(*members, n, rng)
            for k, r in enumerate(rows):
                out[k].append(np.mean([_weighted_mean(w, x) for x in r], axis=0))
        left -= n
    return [np.concatenate(o) if o else np.zeros(0) for o in out]


def gain_difference(
    tuned_1: np.ndarray,
    base_1: np.ndarray,
    tuned_2: np.ndarray,
    base_2: np.ndarray,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    clusters_1: Optional[Sequence] = None,
    clusters_2: Optional[Sequence] = None,
) -> tuple[float, tuple[float, float]]:
    """How much a gain differs between two samples of soundscapes (e.g. a tune split and a
    test split): ``(gain_1 - gain_2, its percentile interval)`` in dB. Each sample's soundscapes
    are resampled on their own, so both samples' sampling error counts; with ``clusters_k``
    (both or neither) the clusters are resampled instead, with one draw of counts over the
    union of both samples' clusters, so a cluster the two share moves both (as in
    `paired_bootstrap`; independent draws for clusters they do not share).

    Args:
        tuned_k, base_k: ``(S_k,) float64`` per-soundscape values of sample ``k`` (dB, NaN =
            None); n_boot, confidence, seed, clusters_k: as in `paired_bootstrap`.

    Raises:
        InputError: as `paired_bootstrap`, for either sample.
    """
    a1, b1 = _validate_pair(tuned_1, base_1)
    a2, b2 = _validate_pair(tuned_2, base_2)
    if a1.ndim != 1 or a2.ndim != 1 or not b1.size or not b2.size:
        raise InputError(f"gain_difference: expected two non-empty samples of one value per "
                         f"soundscape, got shapes {a1.shape} and {a2.shape}")
    _check_boot(n_boot, confidence)
    if (clusters_1 is None) != (clusters_2 is None):
        raise InputError("gain_difference: give clusters for both samples or for neither")
    if clusters_1 is None:  # each sample's soundscapes, from streams of their own
        s1, s2 = np.random.SeedSequence(seed).spawn(2)
        m1 = _resampled_means([a1, b1], b1.shape[0], n_boot, s1)
        m2 = _resampled_means([a2, b2], b2.shape[0], n_boot, s2)
    else:  # one draw of counts over the union of clusters: a cluster both samples share
        S1 = b1.shape[0]  # moves both (independent draws where they share none)
        m = _resampled_means([np.concatenate([a1, np.full_like(a2, np.nan)]),
                              np.concatenate([b1, np.full_like(b2, np.nan)]),
                              np.concatenate([np.full_like(a1, np.nan), a2]),
                              np.concatenate([np.full_like(b1, np.nan), b2])],
                             S1 + b2.shape[0], n_boot, seed,
                             list(clusters_1) + list(clusters_2))
        m1, m2 = m[:2], m[2:]
    d = (m1[0] - m1[1]) - (m2[0] - m2[1])
    diff = (dataset_mean(a1) - dataset_mean(b1)) - (dataset_mean(a2) - dataset_mean(b2))
    return float(diff), _interval(d[np.isfinite(d)], confidence)


def cluster_weights(clusters: Sequence, n_boot: int, seed: int = 0) -> np.ndarray:
    """``(n_boot, S) float64`` bootstrap weights that resample clusters, not soundscapes.

    Every cluster draws a Poisson(1) count per resample; a soundscape's weight is the product
    of the counts of the clusters it belongs to (a soundscape in none is a cluster of its own).
    Soundscapes that share a source recording are therefore kept or dropped together, and a
    resample stands for soundscapes made of other recordings. Source: the random-weight
    bootstrap of Owen & Eckles, "Bootstrapping data arrays of arbitrary order", Annals of
    Applied Statistics 6(3), 2012, which multiplies one mean-1, variance-1 weight per factor of
    a crossed design. Here the product also runs over the several recordings of one soundscape
    (multi-membership), an extension: a soundscape of ``m`` recordings weighs with variance
    ``2**m - 1`` and is left out of a resample with probability ``1 - 0.632**m``, so the
    interval is wider the more recordings a soundscape mixes (measured coverage on planted data:
    `tests/test_search_folds_stats.py`).

    Args:
        clusters: per soundscape, a sequence of hashable cluster ids, or one id (a ``str``
            is one id, not a sequence of characters); None or empty: its own cluster.
        n_boot: resamples (an int >= 1); seed: seed of the counts.

    Raises:
        InputError: ``clusters`` not of length S, or a bad ``n_boot``.

    Example:
        >>> w = cluster_weights([["a"], ["a", "b"], None], 1000, seed=0)
        >>> w.shape, bool(np.all(w[w[:, 0] == 0, 1] == 0))  # no "a": soundscape 1 is out too
        ((1000, 3), True)
    """
    _check_boot(n_boot)
    members, k = cluster_members(clusters, len(clusters))
    return _product_weights(members, k, int(n_boot), np.random.default_rng(seed))


def cluster_members(clusters: Sequence, S: int) -> tuple[np.ndarray, int]:
    """Number the clusters of each soundscape.

    Args:
        clusters: per soundscape, a sequence of hashable cluster ids (e.g. source recordings),
            or one id (a ``str`` is one id); None or empty: a cluster of its own.
        S: the number of soundscapes ``clusters`` must have.

    Returns:
        ``((S, m) int64, K)``: the cluster numbers ``0 .. K-1`` of each soundscape, padded to the
        largest membership ``m`` with ``K`` (no cluster); a soundscape in no cluster gets a
        number of its own, so ``K`` counts them too.

    Raises:
        InputError: ``clusters`` not of length ``S``.

    Example:
        >>> m, k = cluster_members([["a"], ["a", "b"], None], 3); m.tolist(), k
        ([[0, 3], [0, 1], [2, 3]], 3)
    """
    if len(clusters) != S:
        raise InputError(f"clusters: expected one entry per soundscape ({S}), got {len(clusters)}")
    ids: dict = {}
    rows = []
    for s, c in enumerate(clusters):
        if isinstance(c, (str, bytes)):
            c = (c,)  # one id ("rec1"), not its characters
        keys = [("", k) for k in dict.fromkeys(c)] if c is not None and len(c) else [("\0own", s)]
        rows.append([ids.setdefault(k, len(ids)) for k in keys])
    width = max((len(r) for r in rows), default=1)
    out = np.full((S, width), len(ids), np.int64)
    for s, r in enumerate(rows):
        out[s, :len(r)] = r
    return out, len(ids)


def _product_weights(members: np.ndarray, k: int, n: int, rng) -> np.ndarray:
    """``(n, S)``: per resample, each of the ``k`` clusters draws a Poisson(1) count (the
    padding cluster ``k`` weighs 1), a soundscape the product of its clusters' counts."""
    counts = np.ones((n, k + 1), np.float64)
    counts[:, :k] = rng.poisson(1.0, size=(n, k))
    return counts[:, members].prod(axis=2)


def _weighted_mean(w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per row of weights ``w (n, S)``: the weighted dataset mean of ``v (S,)`` over its scored
    (non-NaN) clips, NaN where their weights sum to 0."""
    ok = ~np.isnan(v)
    num = w[:, ok] @ v[ok]
    den = w[:, ok].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _interval(x: np.ndarray, confidence: float) -> tuple[float, float]:
    """Two-sided percentile interval of resampled values ``x`` (NaNs when there are none)."""
    if not x.size:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(x, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _gain(a, b, ba, bb, n_boot, confidence, seed) -> BootstrapGain:
    """`BootstrapGain` of ``a`` over ``b`` from their resampled means ``ba``/``bb``."""
    rows = a if a.ndim == 2 else a[None, :]
    mean_a, mean_b = float(np.mean([dataset_mean(r) for r in rows])), dataset_mean(b)
    good = np.isfinite(ba) & np.isfinite(bb)
    prob = float(np.mean(ba[good] > bb[good])) if good.any() else float("nan")
    gain_ci = _interval(ba[good] - bb[good], confidence)
    tuned_ci = _interval(ba[good], confidence)
    return BootstrapGain(
        tuned_db=mean_a, base_db=mean_b, gain_db=mean_a - mean_b, gain_ci_db=gain_ci,
        tuned_ci_db=tuned_ci, n_soundscapes=b.shape[0], n_boot=int(n_boot),
        confidence=float(confidence), seed=int(seed), prob_gain_positive=prob,
    )
