"""The one validation of policy parameter values, used when a parameter set is built (from
Python, YAML or a decoded search setting: the live ``apply`` and the search share it) and on
encoded settings (`PolicyParams.check_encoded`).

Rules (per field kind, from the field's metadata):
    * scalar: a real number (not a bool, not NaN) in ``[low, high]`` or equal to its "off"
      value when it declares one;
    * threshold: one such number, a ``{label: number}`` mapping or a sequence of numbers, each
      in ``[low, high]`` or equal to the field's declared "off" value (``-inf`` for
      ``energy_gate_db``, ``+inf`` for ``silence_thr``), never NaN; a whole number when the
      field is declared ``integer`` (a per-class index such as ``staged.stage_by_class``);
    * choice: an exact member: a string among the choices, or an integer (not a bool, not a
      float such as 0.5) among the integer choices (or the index of a named choice); a choice
      that depends on the cache takes an integer >= 0 within its ``values`` when declared, or
      a name, and is checked against the cache when encoded; ``None`` only where the field
      has an automatic value.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from .._jit_cache import njit_cached
from .._kernels_capi import _JIT
from ..errors import PolicyError

__all__ = ["check_field", "allowed", "allowed_text", "encoded_allowed"]


@njit_cached(**_JIT)
def encoded_allowed(X, num, lo, hi, off, whole, code_cols, codes, n_codes):  # pragma: no cover
    """Whether every row of encoded settings obeys the rules of `allowed` and of the choices:
    one pass over ``X``, stopping at the first value that does not.

    Args:
        X: ``(n, P)`` float64 settings.
        num: ``(m,)`` int64 numeric columns; lo, hi, off: ``(m,)`` float64 bounds and "off"
            values (NaN: none); whole: ``(m,)`` bool, whole numbers only.
        code_cols: ``(k,)`` int64 choice columns; codes: ``(k, c)`` float64 allowed codes,
            the first ``n_codes[j]`` of row ``j`` used.

    Returns:
        True when every value is allowed (NaN never is). Used by
        `casdri.policies._base.PolicyParams.check_encoded`, which names a failure in Python.
    """
    for i in range(X.shape[0]):
        for j in range(num.shape[0]):
            v = X[i, num[j]]
            if v == off[j]:
                continue
            if not (v >= lo[j] and v <= hi[j]):
                return False
            if whole[j] and v != np.floor(v):
                return False
        for j in range(code_cols.shape[0]):
            v = X[i, code_cols[j]]
            k = 0
            while k < n_codes[j] and v != codes[j, k]:
                k += 1
            if k == n_codes[j]:
                return False
    return True


def allowed_text(md: Mapping) -> str:
    """How the allowed values of a numeric field read in an error message."""
    off = md.get("off")
    kind = "a whole number" if md.get("integer") else "a number"
    return f"{kind} in [{md['low']}, {md['high']}]" + ("" if off is None else f" or {off} (off)")


def allowed(values: np.ndarray, md: Mapping) -> np.ndarray:
    """``bool`` mask of the values a numeric field allows (NaN never)."""
    v = np.asarray(values, np.float64)
    ok = (v >= md["low"]) & (v <= md["high"])
    if md.get("integer"):
        ok &= v == np.floor(v)
    if md.get("off") is not None:
        ok |= v == md["off"]
    return ok


def _number(where: str, v: Any, md: Mapping) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise PolicyError(f"{where}={v!r}: expected {allowed_text(md)}")
    if math.isnan(float(v)) or not allowed(np.array([float(v)]), md)[0]:
        raise PolicyError(f"{where}={v!r}: expected {allowed_text(md)}")


def _choice(where: str, v: Any, md: Mapping) -> None:
    ch = md["choices"]
    if v is None:
        if "auto" in md:
            return
        raise PolicyError(f"{where}=None: expected one of {_listing(md)}")
    is_int = isinstance(v, (int, np.integer)) and not isinstance(v, bool)
    if callable(ch):
        values = md.get("values")
        if is_int and v >= 0 and (values is None or v in values):
            return
        if isinstance(v, str) and values is None:
            return
    else:
        named = bool(ch) and isinstance(ch[0], str)
        if isinstance(v, str) and v in ch:
            return
        if is_int and ((named and 0 <= v < len(ch)) or (not named and v in ch)):
            return
    raise PolicyError(f"{where}={v!r}: expected one of {_listing(md)}")


def _listing(md: Mapping) -> str:
    ch = md["choices"]
    if not callable(ch):
        return repr(list(ch))
    values = md.get("values")
    return (repr(list(values)) if values is not None else "the cache's choices (an index >= 0)") \
        + " (checked against the cache)"


def check_field(owner: str, f, value: Any) -> None:
    """Raise `PolicyError` naming ``owner.field`` (and the class) when ``value`` breaks the
    rules of the module docstring."""
    md = f.metadata
    where = f"{owner}.{f.name}"
    kind = md["kind"]
    if kind == "choice":
        _choice(where, value, md)
    elif kind == "scalar":
        _number(where, value, md)
    elif isinstance(value, Mapping):
        for label, v in value.items():
            _number(f"{where}[{label}]", v, md)
    elif isinstance(value, (list, tuple, np.ndarray)):
        for i, v in enumerate(np.asarray(value, dtype=object).ravel()):
            _number(f"{where}[{i}]", v, md)
    else:
        _number(where, value, md)
