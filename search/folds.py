"""Stratified k-fold splits of soundscapes for held-out validation of a decision policy.

Conventions:
    * Soundscapes are addressed by their row index in the cache (``0 .. S-1``).
    * The stratum of a soundscape is its number of target sources (zero-target clips are the
      stratum 0). Each stratum is shuffled with the seed, the strata are laid end to end and the
      soundscapes are dealt to folds round-robin, so every stratum is split as evenly as it can
      be (fold sizes within a stratum differ by at most one) and the folds differ in size by at
      most one.
    * ``k = 1`` is "no cross-validation": one fold, tuned and scored on everything.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from casdri.errors import InputError

__all__ = ["Folds", "stratified_folds"]


@dataclass(frozen=True)
class Folds:
    """A k-fold split of ``S`` soundscapes.

    Attributes:
        fold_of: ``(S,) int64``, the fold (``0 .. k-1``) that holds each soundscape out.
        k: number of folds.
        strata: ``(S,) int64``, the stratum (number of sources) of each soundscape.
        seed: the seed of the shuffle.
    """

    fold_of: np.ndarray
    k: int
    strata: np.ndarray
    seed: int

    @property
    def n_soundscapes(self) -> int:
        return int(self.fold_of.shape[0])

    def held_out(self, fold: int) -> np.ndarray:
        """``(S,) bool``: the soundscapes scored by ``fold`` (all of them when ``k == 1``)."""
        self._check(fold)
        if self.k == 1:
            return np.ones(self.n_soundscapes, dtype=bool)
        return self.fold_of == fold

    def tune(self, fold: int) -> np.ndarray:
        """``(S,) bool``: the soundscapes a policy is tuned on for ``fold``.

        ``fold=None`` (or ``k == 1``) is every soundscape (the final policy).
        """
        if fold is None or self.k == 1:
            return np.ones(self.n_soundscapes, dtype=bool)
        self._check(fold)
        return self.fold_of != fold

    def _check(self, fold: int) -> None:
        if not 0 <= fold < self.k:
            raise InputError(f"fold {fold} out of range 0..{self.k - 1}")

    def summary(self) -> dict:
        """Counts per fold and stratum, ``{fold: {n_sources: count}}`` (for reports and tests)."""
        out: dict = {}
        for f in range(self.k):
            sel = self.fold_of == f
            vals, counts = np.unique(self.strata[sel], return_counts=True)
            out[f] = {int(v): int(c) for v, c in zip(vals, counts)}
        return out


def stratified_folds(n_sources: np.ndarray, k: int = 5, seed: int = 0) -> Folds:
    """Split soundscapes into ``k`` folds stratified by their number of sources.

    Args:
        n_sources: ``(S,)`` integer number of target sources of each soundscape (0 for a
            zero-target clip).
        k: number of folds, ``1 <= k <= S``.
        seed: seed of the shuffle within each stratum (same seed, same folds).

    Returns:
        `Folds`.

    Raises:
        InputError: ``k`` out of range or ``n_sources`` not a 1-D array of integers >= 0.

    Example:
        >>> f = stratified_folds(np.array([0, 0, 1, 1, 2, 2]), k=2, seed=0)
        >>> f.summary()
        {0: {0: 1, 1: 1, 2: 1}, 1: {0: 1, 1: 1, 2: 1}}
    """
    strata = np.asarray(n_sources)
    if strata.ndim != 1 or not np.issubdtype(strata.dtype, np.integer) or (strata < 0).any():
        raise InputError(
            f"n_sources: expected a 1-D array of non-negative integers, got dtype {strata.dtype} "
            f"shape {strata.shape}"
        )
    S = strata.shape[0]
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= max(S, 1):
        raise InputError(f"folds: expected an integer 1 <= k <= {S} (soundscapes), got {k!r}")
    rng = np.random.default_rng(seed)
    order = []
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        order.append(members[rng.permutation(members.shape[0])])
    order = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    fold_of = np.empty(S, dtype=np.int64)
    fold_of[order] = np.arange(S) % k
    return Folds(fold_of=fold_of, k=int(k), strata=strata.astype(np.int64), seed=int(seed))
