"""Flags of the policies' jitted decisions (see `casdri._kernels` for their signature).

A decision is ``inline="always"``: Numba copies it into the driver that calls it, once per
(soundscape, block of settings). Inside its loop over settings it must not call a function
with array arguments (each such call reference-counts every array: 3-5x slower); helpers
that take scalars only cost nothing. Nor should it make views or aliases of its arrays
(``conf = wf[:k]``, ``sel = wi``): each one is reference-counted (an atomic increment and
decrement) on every call, i.e. once per soundscape, which dominated a one-setting replay;
index ``wi``/``wf`` at offsets instead.
"""
from __future__ import annotations

import numba

__all__ = ["DECIDE_JIT", "one_key"]

#: flags of a policy's jitted decision (inlined into the drivers, which set the other flags)
DECIDE_JIT = dict(inline="always")


@numba.njit(**DECIDE_JIT)
def one_key(j, g, n_slots, cnt0):  # pragma: no cover - jitted
    """``(g, m, code)`` of a one-lookup decision, every slot kept, from scalars: key ``j``
    (-1 empty, < -1 not cached), combo ``g``, the key's ``n_slots`` and ``tab_cnt[j, g, 0]``
    (negative: the combo is missing)."""
    if j < -1:
        return 0, 0, 1
    if j < 0:
        return 0, 0, 0
    if cnt0 < 0:
        return g, 0, 2
    return g, (1 << n_slots) - 1, 0
