"""Flags of the policies' jitted decisions (see `casdri._kernels` for their signature).

A decision is ``inline="always"``: Numba copies it into the driver that calls it, once per
(soundscape, block of settings). Inside its loop over settings it must not call a function
with array arguments (each such call reference-counts every array: 3-5x slower); helpers
that take scalars only cost nothing.
"""
from __future__ import annotations

__all__ = ["DECIDE_JIT"]

#: flags of a policy's jitted decision (inlined into the drivers, which set the other flags)
DECIDE_JIT = dict(inline="always")
