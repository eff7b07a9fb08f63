"""Decision policies: what a system decides from cached tagger, separator and re-tagger
outputs, replayed exactly by `casdri.replay`.

Conventions:
    * A policy is one plug-in: a module (or any object) with
        - ``NAME`` (str) and ``PARAMS``, its parameter dataclass (a `PolicyParams` subclass:
          ``search_space``, ``encode``/``decode``, ``offsets``, ``to_yaml``/``from_yaml``);
        - ``prepare(cache) -> (pi, pf)``: per-soundscape kernel inputs (built once per cache);
        - ``kernel_decide``: its jitted decision (``numba.njit(inline="always")``, signature
          in `casdri._kernels`), reading settings at ``off[field index] (+ class)``, where
          ``off = PARAMS.offsets(cache)`` as a tuple of ints; the shared tables score it (no
          CAPI code to write);
        - ``decide(inputs, params, lookup) -> Decision``: the same decision in plain Python
          (used live, and tested equal to the kernel);
        - ``required_keys(inputs, search_space=None)``: the queries it can ask for;
        - ``SEARCH_PLAN``: ``{stage name: field names the stage may move}``;
        - ``change_points``: ``None``, or ``change_points(cache, prep, trace)`` → a callable
          ``(name, cls, x, idx) -> (pos, values) or None`` (see `search.objective.Problem`);
        - optional ``START``: the search's untuned start (a ``PARAMS`` instance; default
          ``PARAMS()``);
        - optional ``FEATURES``: ``{feature name: field names}``, the decision features whose
          held-out worth the search reports (the tuned policy against itself with that
          feature's fields at their start values).
    * `register_policy` adds one to `POLICIES` (checked); the drivers around its decision are
      built on first use (`drivers`) and cached on disk by Numba.
    * Built in: ``baseline`` (official rule), ``refine`` (tagging-driven refinement),
      ``oracle`` (reference labels as queries), ``staged`` (refine with the stage chosen per
      class, re-classification by any stage and frame-level SED gates).

Adding a policy: write a module with the attributes above (``oracle.py`` is the smallest
template) and call ``register_policy(module)``; ``tests/test_toy_policy.py`` does exactly this
in one file and replays and searches it. The contract tests (``tests/test_policies.py``) run
on every registered policy.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Union

from .._kernels import Drivers, make_drivers
from ..errors import PolicyError
from . import baseline, oracle, refine, staged
from ._base import (Decision, ParamRange, PolicyParams, SlotStem, SoundscapeInputs,
                    parse_policy_yaml, pick_slots)
from .baseline import BaselineParams
from .oracle import OracleParams
from .refine import RefineParams
from .staged import StagedParams

__all__ = ["POLICIES", "register_policy", "get_policy", "params_class", "drivers",
           "required_keys", "load_policy_yaml", "POLICY_YAML_KEYS", "BaselineParams",
           "RefineParams", "StagedParams", "OracleParams", "PolicyParams", "ParamRange",
           "Decision", "SlotStem", "SoundscapeInputs", "pick_slots"]

#: name -> policy plug-in (module or object), in registration order
POLICIES: dict[str, Any] = {}
_DRIVERS: dict[str, Drivers] = {}
_REQUIRED = ("NAME", "PARAMS", "SEARCH_PLAN", "prepare", "kernel_decide", "decide",
             "required_keys")
#: top-level keys of a policy YAML document
POLICY_YAML_KEYS = ("policy", "label_set", "params", "provenance")


def register_policy(policy: Any, replace: bool = False) -> Any:
    """Add a policy plug-in (module conventions) to `POLICIES`; returns it.

    Raises:
        PolicyError: a missing attribute, a ``PARAMS`` that is not a `PolicyParams` of this
            policy, a search plan or a feature naming an unknown field, or a name already taken by
            another object (unless ``replace``).
    """
    where = getattr(policy, "__name__", repr(policy))
    missing = [a for a in _REQUIRED if not hasattr(policy, a)]
    if missing:
        raise PolicyError(f"policy {where}: missing {missing}; a policy needs {list(_REQUIRED)}")
    name, params = policy.NAME, policy.PARAMS
    if not (isinstance(params, type) and issubclass(params, PolicyParams)):
        raise PolicyError(f"policy {name!r}: PARAMS must be a PolicyParams subclass")
    if params.policy != name:
        raise PolicyError(f"policy {name!r}: {params.__name__}.policy is {params.policy!r}")
    fields = set(params.field_index())
    for stage, names in policy.SEARCH_PLAN.items():
        unknown = [n for n in names if n not in fields]
        if unknown:
            raise PolicyError(f"policy {name!r}: SEARCH_PLAN[{stage!r}] names unknown fields "
                              f"{unknown}; fields are {sorted(fields)}")
    for feature, names in getattr(policy, "FEATURES", {}).items():
        unknown = [n for n in names if n not in fields]
        if unknown:
            raise PolicyError(f"policy {name!r}: FEATURES[{feature!r}] names unknown fields "
                              f"{unknown}; fields are {sorted(fields)}")
    old = POLICIES.get(name)
    if old is not None and old is not policy and not replace:
        raise PolicyError(f"policy name {name!r} is taken by {getattr(old, '__name__', old)}; "
                          "pick another NAME or pass replace=True")
    POLICIES[name] = policy
    _DRIVERS.pop(name, None)
    return policy


for _mod in (baseline, refine, oracle, staged):
    register_policy(_mod)


def get_policy(policy: Union[str, ModuleType, Any]) -> Any:
    """The registered plug-in of a name or plug-in. Raises `PolicyError` when unknown."""
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise PolicyError(f"unknown policy {policy!r}; expected one of {sorted(POLICIES)}")
        return POLICIES[policy]
    if POLICIES.get(getattr(policy, "NAME", None)) is not policy:
        raise PolicyError(f"{getattr(policy, '__name__', policy)!r} is not a registered "
                          "policy; call casdri.policies.register_policy first")
    return policy


def params_class(policy) -> type:
    """The parameter dataclass of a policy."""
    return get_policy(policy).PARAMS


def drivers(policy) -> Drivers:
    """The jitted replay drivers of a policy (built on first use; see `casdri._kernels`)."""
    mod = get_policy(policy)
    if mod.NAME not in _DRIVERS:
        _DRIVERS[mod.NAME] = make_drivers(mod.kernel_decide)
    return _DRIVERS[mod.NAME]


def load_policy_yaml(source, label_set=None, cache=None) -> tuple[Any, PolicyParams]:
    """``(policy plug-in, params)`` from a policy YAML (text, path or mapping).

    ``cache`` (a `casdri.cache.DecisionCache` or its metadata), when given, also checks the
    values whose choices depend on it (a stage or separator index), so that their errors, too,
    name the file.

    Raises:
        PolicyError: no ``policy`` key, an unknown top-level key (`POLICY_YAML_KEYS`), an
            unknown policy, or a bad parameter (named); read from a file, the message starts
            with its path.
    """
    doc, path = source, None
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source):
        path = Path(source)
        doc = parse_policy_yaml(path)
    elif isinstance(doc, str):
        doc = parse_policy_yaml(doc)
    try:
        mod, params = _from_document(doc, label_set)
        if cache is not None:
            params.check(cache)
        return mod, params
    except PolicyError as e:  # name the file: a command may read several (casdri compare)
        if path is None or str(e).startswith(str(path)):
            raise
        raise PolicyError(f"{path}: {e}") from None


def _from_document(doc, label_set) -> tuple[Any, PolicyParams]:
    if not isinstance(doc, Mapping) or "policy" not in doc:
        raise PolicyError(f"policy YAML needs a 'policy' key (one of {sorted(POLICIES)})")
    unknown = [k for k in doc if k not in POLICY_YAML_KEYS]
    if unknown:
        raise PolicyError(f"policy YAML: unknown top-level keys {unknown}; expected "
                          f"{list(POLICY_YAML_KEYS)} (parameters go under 'params')")
    mod = get_policy(doc["policy"])
    return mod, mod.PARAMS.from_yaml(doc, label_set)


def required_keys(cache_or_inputs, policy, search_space=None) -> dict[str, list[tuple]]:
    """Queries a policy's search space can ask for, per soundscape.

    Args:
        cache_or_inputs: a `casdri.cache.DecisionCache`, or `SoundscapeInputs` objects (one,
            a sequence, or a mapping id → inputs).
        policy: name or plug-in.
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
