"""Stratified k-fold splits of soundscapes for held-out validation of a decision policy.

Conventions:
    * Soundscapes are addressed by their row index in the cache (``0 .. S-1``).
    * The stratum of a soundscape is its number of target sources (zero-target clips are the
      stratum 0). Each stratum is shuffled with the seed, the strata are laid end to end and the
      soundscapes are dealt to folds round-robin, so every stratum is split as evenly as it can
      be (fold sizes within a stratum differ by at most one) and the folds differ in size by at
      most one.
    * ``k = 1`` is "no cross-validation": one fold, tuned and scored on everything.
    * Grouped folds (`grouped_folds`) never split a group: soundscapes that share a source
      recording (joined transitively, union-find: `groups_from_recordings`) or a room are held
      out together. Groups are dealt greedily, largest first (ties in seeded random order), each
      to the fold where it adds the least squared excess over the per-fold target of every
      stratum and of the fold size (the idea of scikit-learn's ``StratifiedGroupKFold``, written
      small here: scikit-learn is not a dependency). Strata are then balanced only as far as
      the groups allow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from casdri.errors import InputError

__all__ = ["Folds", "stratified_folds", "grouped_folds", "groups_from_recordings",
           "groups_from_labels"]


@dataclass(frozen=True)
class Folds:
    """A k-fold split of ``S`` soundscapes.

    Attributes:
        fold_of: ``(S,) int64``, the fold (``0 .. k-1``) that holds each soundscape out.
        k: number of folds.
        strata: ``(S,) int64``, the stratum (number of sources) of each soundscape.
        seed: the seed of the shuffle.
        groups: ``(S,) int64`` group of each soundscape (folds never split one), or None.
        group_by: what the groups are (``"recording"``, ``"room"``, a column) or None.
    """

    fold_of: np.ndarray
    k: int
    strata: np.ndarray
    seed: int
    groups: Optional[np.ndarray] = None
    group_by: Optional[str] = None

    @property
    def n_groups(self) -> int:
        """Distinct groups (soundscapes when ungrouped)."""
        return self.n_soundscapes if self.groups is None else int(np.unique(self.groups).size)

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
    strata = _strata(n_sources)
    S = strata.shape[0]
    _check_k(k, S, S, "soundscapes")
    rng = np.random.default_rng(seed)
    order = []
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        order.append(members[rng.permutation(members.shape[0])])
    order = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    fold_of = np.empty(S, dtype=np.int64)
    fold_of[order] = np.arange(S) % k
    return Folds(fold_of=fold_of, k=int(k), strata=strata.astype(np.int64), seed=int(seed))


def _strata(n_sources) -> np.ndarray:
    strata = np.asarray(n_sources)
    if strata.ndim != 1 or not np.issubdtype(strata.dtype, np.integer) or (strata < 0).any():
        raise InputError(
            f"n_sources: expected a 1-D array of non-negative integers, got dtype {strata.dtype} "
            f"shape {strata.shape}"
        )
    return strata


def _check_k(k, n: int, S: int, what: str) -> None:
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= max(n, 1):
        raise InputError(f"folds: expected an integer 1 <= k <= {n} ({what} of {S} "
                         f"soundscapes), got {k!r}")


def grouped_folds(n_sources: np.ndarray, groups: np.ndarray, k: int = 5, seed: int = 0,
                  group_by: Optional[str] = None) -> Folds:
    """Split soundscapes into ``k`` folds that never split a group, stratified where possible.

    Args:
        n_sources: ``(S,)`` integer number of target sources of each soundscape.
        groups: ``(S,)`` integer group of each soundscape (e.g. from `groups_from_recordings`).
        k: number of folds, ``1 <= k <= number of groups``.
        seed: seed of the order of equal-size groups (same seed, same folds).
        group_by: what the groups are, recorded on the `Folds`.

    Returns:
        `Folds` with ``groups`` set.

    Raises:
        InputError: ``k`` larger than the number of groups, or bad arrays.

    Example:
        >>> f = grouped_folds(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 2]), k=2)
        >>> bool(f.fold_of[0] == f.fold_of[1])
        True
    """
    strata = _strata(n_sources)
    g = np.asarray(groups)
    if g.shape != strata.shape or not np.issubdtype(g.dtype, np.integer):
        raise InputError(f"groups: expected {strata.shape[0]} integers (one per soundscape), got "
                         f"dtype {g.dtype} shape {g.shape}")
    S = strata.shape[0]
    uniq, gi = np.unique(g, return_inverse=True)
    G = uniq.shape[0]
    _check_k(k, G, S, f"groups by {group_by or 'group'}")
    levels, si = np.unique(strata, return_inverse=True)
    hist = np.zeros((G, levels.shape[0]), np.int64)
    np.add.at(hist, (gi, si), 1)
    size = hist.sum(1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(G)
    order = order[np.argsort(-size[order], kind="stable")]  # largest first, seeded ties
    target = np.append(hist.sum(0), S) / k
    counts = np.zeros((k, levels.shape[0] + 1))
    fold_of_group = np.empty(G, np.int64)
    for j in order:
        h = np.append(hist[j], size[j])
        cost = (np.maximum(counts + h - target, 0) ** 2 - np.maximum(counts - target, 0) ** 2
                ).sum(1)
        best = np.flatnonzero(cost == cost.min())
        f = int(best[np.argmin(counts[best, -1])])  # ties: the smallest fold, then the first
        fold_of_group[j] = f
        counts[f] += h
    return Folds(fold_of=fold_of_group[gi], k=int(k), strata=strata.astype(np.int64),
                 seed=int(seed), groups=gi.astype(np.int64), group_by=group_by)


def groups_from_recordings(recordings: Sequence) -> np.ndarray:
    """``(S,) int64`` groups: soundscapes sharing a source recording, joined transitively.

    Args:
        recordings: per soundscape, a sequence of source recording ids (None or empty: the
            soundscape is its own group).

    Example:
        >>> groups_from_recordings([["a"], ["b", "c"], ["c"], None]).tolist()
        [0, 1, 1, 2]
    """
    S = len(recordings)
    parent = list(range(S))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict = {}
    for s, recs in enumerate(recordings):
        for r in recs if recs is not None else ():
            if r in first:
                a, b = find(s), find(first[r])
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first[r] = s
    roots = np.array([find(s) for s in range(S)], np.int64)
    return np.unique(roots, return_inverse=True)[1].astype(np.int64)


def groups_from_labels(labels: Sequence) -> np.ndarray:
    """``(S,) int64`` groups of equal labels (a room, a column value); None/NaN: own group.

    Example:
        >>> groups_from_labels(["r1", None, "r1", "r2"]).tolist()
        [0, 2, 0, 1]
    """
    keys = []
    for s, v in enumerate(labels):
        missing = v is None or (isinstance(v, float) and np.isnan(v))
        keys.append(("\0own", s) if missing else ("", str(v)))
    order = {key: i for i, key in enumerate(sorted(set(keys)))}
    return np.array([order[key] for key in keys], np.int64)
