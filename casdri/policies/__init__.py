"""Decision policies: what a system decides from cached tagger, separator and re-tagger
outputs, replayed exactly by `casdri.replay`.

Conventions:
    * A policy is a module with ``NAME``, ``KERNEL_ID``, a parameter dataclass (subclass of
      `PolicyParams`: ``search_space``, ``encode``/``decode``, ``to_yaml``/``from_yaml``),
      ``prepare(cache) -> (pi, pf)`` (per-soundscape kernel inputs, built once per cache),
      ``decide(inputs, params, lookup) -> Decision`` (plain Python, used live) and
      ``required_keys(inputs, search_space=None)``.
    * Built in: ``baseline`` (official rule), ``refine`` (tagging-driven refinement),
      ``oracle`` (reference labels as queries).

Adding a policy:
    1. ``casdri/policies/<name>.py``: a frozen dataclass ``<Name>Params(PolicyParams)`` whose
       fields use `scalar`, `threshold` (per class) and `choice` (field order = encoded
       order), ``prepare``, ``decide`` and ``required_keys`` (copy `oracle` as a template).
    2. In `casdri._kernels`: a new ``POLICY_<NAME>`` id and a jitted
       ``_decide_<name>(x, s, pi, pf, ...) -> (key, combo, keep_mask, code)`` reading the
       same arrays (``x`` = one encoded setting), plus its branch in ``decide_one``. The
       shared tables then score it: no CAPI code to write.
    3. Register it in `POLICIES` below and add it to the contract tests
       (``tests/test_policies.py`` compares ``decide`` with the kernel on random caches).
"""
from __future__ import annotations

from types import ModuleType
from typing import Mapping, Union

from ..errors import PolicyError
from . import baseline, oracle, refine
from ._base import (Decision, ParamRange, PolicyParams, SlotStem, SoundscapeInputs, pick_slots)
from .baseline import BaselineParams
from .oracle import OracleParams
from .refine import RefineParams

__all__ = ["POLICIES", "get_policy", "required_keys", "load_policy_yaml", "BaselineParams",
           "RefineParams", "OracleParams", "PolicyParams", "ParamRange", "Decision", "SlotStem",
           "SoundscapeInputs", "pick_slots", "params_class"]

POLICIES: dict[str, ModuleType] = {m.NAME: m for m in (baseline, refine, oracle)}
_PARAMS = {"baseline": BaselineParams, "refine": RefineParams, "oracle": OracleParams}


def get_policy(policy: Union[str, ModuleType]) -> ModuleType:
    """The policy module of a name or module. Raises `PolicyError` for an unknown name."""
    if isinstance(policy, ModuleType):
        if getattr(policy, "NAME", None) not in POLICIES:
            raise PolicyError(f"module {policy.__name__} is not a registered policy")
        return policy
    if policy not in POLICIES:
        raise PolicyError(f"unknown policy {policy!r}; expected one of {sorted(POLICIES)}")
    return POLICIES[policy]


def params_class(policy: Union[str, ModuleType]) -> type:
    """The parameter dataclass of a policy."""
    return _PARAMS[get_policy(policy).NAME]


def load_policy_yaml(source, label_set=None) -> tuple[ModuleType, PolicyParams]:
    """``(policy module, params)`` from a policy YAML (text, path or mapping)."""
    import yaml
    from pathlib import Path

    doc = source
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source):
        doc = Path(source).read_text()
    if isinstance(doc, str):
        doc = yaml.safe_load(doc)
    if not isinstance(doc, Mapping) or "policy" not in doc:
        raise PolicyError("policy YAML needs a 'policy' key (baseline, refine or oracle)")
    mod = get_policy(doc["policy"])
    return mod, params_class(mod).from_yaml(doc, label_set)


def required_keys(cache_or_inputs, policy, search_space=None) -> dict[str, list[tuple]]:
    """Queries a policy's search space can ask for, per soundscape.

    Args:
        cache_or_inputs: a `casdri.cache.DecisionCache`, or `SoundscapeInputs` objects (one,
            a sequence, or a mapping id → inputs).
        policy: name or module.
        search_space: optional ``[ParamRange]`` restricting the choices (baseline taggers).

    Returns:
        ``{soundscape id: sorted canonical queries}`` (sorted by size, then classes).
    """
    mod = get_policy(policy)
    if hasattr(cache_or_inputs, "key_codes"):
        items = [cache_or_inputs.inputs(s) for s in range(cache_or_inputs.n_soundscapes)]
    elif isinstance(cache_or_inputs, SoundscapeInputs):
        items = [cache_or_inputs]
    elif isinstance(cache_or_inputs, Mapping):
        items = list(cache_or_inputs.values())
    else:
        items = list(cache_or_inputs)
    return {x.soundscape: sorted(mod.required_keys(x, search_space), key=lambda q: (len(q), q))
            for x in items}
