"""Shared machinery of the decision policies: typed parameter sets, their encoding, YAML, and
the plain-Python inputs/outputs of ``decide``.

Conventions:
    * A parameter set is a frozen dataclass subclassing `PolicyParams`; each field declares its
      kind in its metadata (`scalar`, `threshold`, `choice`). Field order is the encoded order.
    * Encoded vector (``float64``): a scalar takes 1 column; a threshold C columns (one per
      class, label-set order), from one float or a ``{label: value}`` mapping; a choice 1
      column holding its code (the index of a string choice, the value of an int choice).
    * A *space* tells what the encoding depends on: a `casdri.cache.DecisionCache`, a
      `casdri.schema.CacheMeta`, a `casdri.labels.LabelSet` or a label-set name. Choices that
      depend on the cache (tagger names, stages, separators) need a cache or its metadata.
    * YAML names classes (``verify_thr: {Speech: 0.4, default: 0.5}``); a threshold may be
      one number, a mapping (every class, or with a ``default``) or a list of C numbers.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional, Union

import numpy as np
import yaml

from .._decide_io import Lookup, SlotStem, SoundscapeInputs
from ..errors import PolicyError
from ..labels import SILENCE, LabelSet, get_label_set
from ._validate import allowed, allowed_text, check_field, encoded_allowed

__all__ = ["PolicyParams", "ParamRange", "scalar", "threshold", "choice", "SoundscapeInputs",
           "SlotStem", "Decision", "Lookup", "resolve_space", "pick_slots"]

Threshold = Union[float, Mapping[str, float]]


def scalar(default: float, low: float, high: float, doc: str = "",
           off: Optional[float] = None) -> Any:
    """A float parameter (one column) searched in ``[low, high]`` (or equal to ``off``, an
    infinity that switches its comparison off)."""
    return dataclasses.field(default=default, metadata=dict(kind="scalar", low=low, high=high,
                                                            doc=doc, off=off))


def threshold(default: float, low: float, high: float, doc: str = "",
              off: Optional[float] = None, integer: bool = False) -> Any:
    """A per-class threshold (C columns): one float or a ``{label: float}`` mapping, each in
    ``[low, high]`` or equal to ``off`` (an infinity that switches the comparison off);
    ``integer``: whole numbers only (a per-class index, searched on the integers of the
    range)."""
    return dataclasses.field(default=default, metadata=dict(kind="threshold", low=low,
                                                            high=high, doc=doc, off=off,
                                                            integer=integer))


def choice(default: Any, choices: Union[tuple, Callable], doc: str = "",
           auto: Optional[Callable] = None, values: Optional[tuple] = None) -> Any:
    """A categorical parameter (one column); ``choices`` a tuple or ``f(meta) -> tuple``;
    ``auto(meta)`` gives the value of a ``None`` default; ``values``: every integer a
    cache-dependent choice can ever take (checked before a cache is known)."""
    md = dict(kind="choice", choices=choices, doc=doc)
    if auto is not None:
        md["auto"] = auto
    if values is not None:
        md["values"] = tuple(values)
    return dataclasses.field(default=default, metadata=md)


@dataclass(frozen=True)
class ParamRange:
    """One parameter of a search space, from the field metadata to the Optuna distribution
    (the one descriptor: `search.objective.Param` is this type).

    Attributes:
        name: field name; columns: ``(k,) int64`` encoded columns (k = C for per-class).
        low, high: numeric range (None for a choice); choices: encoded choice codes.
        per_class: True for thresholds; integer: a numeric parameter restricted to integers;
            off: the threshold's "off" value allowed outside the range; default: encoded
            default value(s).
    """

    name: str
    columns: np.ndarray
    low: Optional[float] = None
    high: Optional[float] = None
    choices: tuple = ()
    per_class: bool = False
    integer: bool = False
    off: Optional[float] = None
    default: Optional[np.ndarray] = None

    @property
    def categorical(self) -> bool:
        """True for a choice (``choices`` holds its encoded values)."""
        return bool(self.choices)


def resolve_space(space) -> tuple[LabelSet, Any]:
    """``(label_set, meta or None)`` of a cache, metadata, label set or label-set name."""
    meta = getattr(space, "meta", None) if not hasattr(space, "classes") else None
    if meta is None and hasattr(space, "taggers") and hasattr(space, "classes"):
        meta = space  # a CacheMeta
    if meta is not None:
        label_set = getattr(space, "label_set", None)
        if not isinstance(label_set, LabelSet):
            label_set = LabelSet(meta.label_set, tuple(meta.classes))
        return label_set, meta
    return get_label_set(space), None


class PolicyParams:
    """Base of the parameter dataclasses (`BaselineParams`, `RefineParams`, `OracleParams`)."""

    policy: ClassVar[str] = ""

    def __post_init__(self):
        """Refuse values outside the rules of `casdri.policies._validate` (field named)."""
        for f in self._fields():
            check_field(type(self).__name__, f, getattr(self, f.name))

    def check(self, space) -> "PolicyParams":
        """Check the cache-dependent choices too (as the search does); returns ``self``.

        Raises:
            PolicyError: a choice the cache (or its metadata) cannot serve, named.
        """
        type(self).check_encoded(self.encode(space)[None, :], space)
        return self

    @classmethod
    def _fields(cls):
        return [f for f in dataclasses.fields(cls) if "kind" in f.metadata]

    @classmethod
    def _choices(cls, f, meta) -> tuple:
        ch = f.metadata["choices"]
        if callable(ch):
            if meta is None:
                raise PolicyError(f"{cls.__name__}.{f.name}: its choices come from the cache; "
                                  "pass the cache (or its metadata), not a label set")
            ch = tuple(ch(meta))
        return ch

    @classmethod
    def _code(cls, f, value, meta) -> float:
        ch = f.metadata["choices"]
        if value is None and "auto" in f.metadata:
            if meta is None:
                raise PolicyError(f"{cls.__name__}.{f.name}=None (automatic) needs the cache")
            value = f.metadata["auto"](meta)
        if callable(ch):
            if meta is None:
                if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                    return float(value)
                raise PolicyError(f"{cls.__name__}.{f.name}={value!r} needs the cache to encode")
            ch = tuple(ch(meta))
        named = bool(ch) and isinstance(ch[0], str)
        if isinstance(value, str) and value in ch:
            return float(ch.index(value))
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if (named and 0 <= value < len(ch)) or (not named and value in ch):
                return float(value)
        raise PolicyError(f"{cls.__name__}.{f.name}={value!r}: expected one of {list(ch)}")

    @classmethod
    def layout(cls, space) -> dict[str, np.ndarray]:
        """``{field: columns}`` of the encoded vector."""
        label_set, _ = resolve_space(space)
        out, k = {}, 0
        for f in cls._fields():
            n = label_set.n_classes if f.metadata["kind"] == "threshold" else 1
            out[f.name] = np.arange(k, k + n, dtype=np.int64)
            k += n
        return out

    @classmethod
    def field_index(cls) -> dict[str, int]:
        """``{field: position}`` in field order (the index into `offsets`)."""
        return {f.name: i for i, f in enumerate(cls._fields())}

    @classmethod
    def offsets(cls, space) -> np.ndarray:
        """``(n_fields,) int64``: first encoded column of each field, in field order. The
        kernels read field ``i`` (class ``c``) at column ``offsets[i] (+ c)``."""
        return np.array([int(c[0]) for c in cls.layout(space).values()], np.int64)

    @classmethod
    def n_params(cls, space) -> int:
        return int(sum(len(c) for c in cls.layout(space).values()))

    def per_class(self, name: str, label_set: LabelSet) -> np.ndarray:
        """``(C,) float64`` values of threshold ``name``."""
        return _threshold_vector(getattr(self, name), label_set, f"{type(self).__name__}.{name}")

    def encode(self, space) -> np.ndarray:
        """``(P,) float64`` encoded vector (see module conventions)."""
        label_set, meta = resolve_space(space)
        parts = []
        for f in self._fields():
            v = getattr(self, f.name)
            kind = f.metadata["kind"]
            if kind == "threshold":
                parts.append(self.per_class(f.name, label_set))
            elif kind == "scalar":
                parts.append(np.array([float(v)]))
            else:
                parts.append(np.array([self._code(f, v, meta)]))
        x = np.concatenate(parts).astype(np.float64)
        if np.isnan(x).any():
            raise PolicyError(f"{type(self).__name__}: NaN parameter value")
        return x

    @classmethod
    def decode(cls, x: np.ndarray, space) -> "PolicyParams":
        """Inverse of `encode` (a threshold with equal columns becomes one float)."""
        label_set, meta = resolve_space(space)
        x = np.asarray(x, np.float64).reshape(-1)
        lay = cls.layout(label_set)
        if x.shape[0] != sum(len(c) for c in lay.values()):
            raise PolicyError(f"{cls.__name__}: encoded vector has {x.shape[0]} values, expected "
                              f"{sum(len(c) for c in lay.values())}")
        kw = {}
        for f in cls._fields():
            v = x[lay[f.name]]
            kind = f.metadata["kind"]
            if kind == "threshold":
                kw[f.name] = float(v[0]) if (v == v[0]).all() else \
                    {c: float(t) for c, t in zip(label_set.classes, v)}
            elif kind == "scalar":
                kw[f.name] = float(v[0])
            else:
                code = int(v[0])
                ch = f.metadata["choices"]
                ch = ch if not callable(ch) else (tuple(ch(meta)) if meta is not None else None)
                kw[f.name] = ch[code] if ch and isinstance(ch[0], str) else code
        return cls(**kw)

    @classmethod
    def search_space(cls, space) -> list[ParamRange]:
        """Ranges of every parameter (choices filtered to what the cache can serve)."""
        _, meta = resolve_space(space)
        lay = cls.layout(space)
        default = cls().encode(space) if meta is not None else None
        out = []
        for f in cls._fields():
            md, cols = f.metadata, lay[f.name]
            d = None if default is None else default[cols]
            if md["kind"] == "choice":
                ch = cls._choices(f, meta) if meta is not None or not callable(md["choices"]) \
                    else ()
                codes = tuple(float(ch.index(c) if isinstance(c, str) else c) for c in ch)
                codes = cls._valid_codes(f.name, codes, meta)
                out.append(ParamRange(f.name, cols, choices=codes, default=d))
            else:
                out.append(ParamRange(f.name, cols, float(md["low"]), float(md["high"]),
                                      per_class=md["kind"] == "threshold", default=d,
                                      off=md.get("off"), integer=bool(md.get("integer"))))
        return out

    @classmethod
    def _valid_codes(cls, name: str, codes: tuple, meta) -> tuple:
        return codes

    @classmethod
    def _check_spec(cls, space):
        """``(P, column names, [(column, allowed codes, name)], [(columns, metadata, name)])``,
        memoised on a cache's ``memo``."""
        memo = getattr(space, "memo", None)
        key = ("check_spec", cls)
        if memo is not None and key in memo:
            return memo[key]
        md = {f.name: f.metadata for f in cls._fields()}
        names, choices, numeric = [], [], []
        for r in cls.search_space(space):
            names += [r.name] * len(r.columns)
            if r.choices:
                choices.append((int(r.columns[0]), np.asarray(r.choices), r.name))
            else:
                numeric.append((np.asarray(r.columns), md[r.name], r.name))
        lo, hi, off = (np.full(len(names), np.nan) for _ in range(3))
        whole = np.zeros(len(names), bool)
        for cols, m, _ in numeric:  # the rules of `allowed`, one vector per bound
            lo[cols], hi[cols] = m["low"], m["high"]
            whole[cols] = bool(m.get("integer"))
            if m.get("off") is not None:
                off[cols] = m["off"]
        num = np.flatnonzero(~np.isnan(lo))
        width = max([len(codes) for _, codes, _ in choices], default=0)
        codes = np.full((len(choices), width), np.nan)
        for j, (_, c, _) in enumerate(choices):
            codes[j, :len(c)] = c
        fast = (num.astype(np.int64), lo[num], hi[num], off[num], whole[num],
                np.array([col for col, _, _ in choices], np.int64), codes,
                np.array([len(c) for _, c, _ in choices], np.int64))
        spec = (len(names), names, choices, numeric, fast)
        if memo is not None:
            memo[key] = spec
        return spec

    @classmethod
    def check_encoded(cls, X: np.ndarray, space) -> np.ndarray:
        """``(n, P)`` C-contiguous float64 copy of ``X``, checked against the space (the rules
        of `casdri.policies._validate`).

        Raises:
            PolicyError: wrong width, NaN, a value out of its range, or a choice code the cache
                cannot serve (named).
        """
        X = np.ascontiguousarray(np.atleast_2d(np.asarray(X, np.float64)))
        P, names, choices, numeric, fast = cls._check_spec(space)
        if X.ndim != 2 or X.shape[1] != P:
            raise PolicyError(f"{cls.policy}: settings must be (n, {P}), got {X.shape}")
        # every rule in one compiled pass (NaN fails every comparison); the checks below name
        # the first failure only when it finds one
        if encoded_allowed(X, *fast):
            return X
        nan = np.isnan(X)
        if nan.any():
            row, col = (int(v[0]) for v in np.nonzero(nan))
            raise PolicyError(f"{cls.policy}.{names[col]}: NaN in setting {row}")
        for col, allowed_codes, name in choices:
            bad = ~np.isin(X[:, col], allowed_codes)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise PolicyError(f"{cls.policy}.{name}={float(X[row, col])!r} in setting {row}: "
                                  f"this cache allows {[float(v) for v in allowed_codes]}")
        for cols, md, name in numeric:
            bad = ~allowed(X[:, cols], md)
            if bad.any():
                row, k = (int(v[0]) for v in np.nonzero(bad))
                raise PolicyError(f"{cls.policy}.{name}={float(X[row, cols[k]])!r} in setting "
                                  f"{row}: expected {allowed_text(md)}")
        return X

    # ---- YAML
    def to_dict(self, label_set: LabelSet) -> dict:
        out = {}
        for f in self._fields():
            v = getattr(self, f.name)
            if f.metadata["kind"] == "threshold":
                vec = self.per_class(f.name, label_set)
                v = float(vec[0]) if (vec == vec[0]).all() else \
                    {c: float(t) for c, t in zip(label_set.classes, vec)}
            elif f.metadata["kind"] == "scalar":
                v = float(v)
            out[f.name] = v
        return out

    def to_yaml(self, label_set) -> str:
        """YAML document ``{policy, label_set, params}`` (classes by name)."""
        ls = get_label_set(label_set) if not isinstance(label_set, LabelSet) else label_set
        return yaml.safe_dump({"policy": self.policy, "label_set": ls.name,
                               "params": self.to_dict(ls)}, sort_keys=False)

    @classmethod
    def from_yaml(cls, source: Union[str, Path, Mapping], label_set=None) -> "PolicyParams":
        """Parse a YAML document (text, file path, or the parsed mapping).

        Raises:
            PolicyError: another policy, another label set, unknown field or label.
        """
        doc = source
        if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source
                                        and source.endswith((".yaml", ".yml"))):
            doc = parse_policy_yaml(Path(source))
        elif isinstance(doc, str):
            doc = parse_policy_yaml(doc)
        if not isinstance(doc, Mapping):
            raise PolicyError(f"{cls.__name__}: expected a YAML mapping, got {type(doc).__name__}")
        if "params" in doc:
            if doc.get("policy", cls.policy) != cls.policy:
                raise PolicyError(f"YAML is for policy {doc.get('policy')!r}, not {cls.policy!r}")
            name = doc.get("label_set")
            if label_set is not None and name is not None:
                want = label_set if isinstance(label_set, LabelSet) else get_label_set(label_set)
                if want.name != name:
                    raise PolicyError(
                        f"label_set {name!r} of the policy YAML differs from {want.name!r}, the "
                        "label set it is used with (the cache's or the system's); use a policy "
                        f"tuned for {want.name!r} (or correct its 'label_set' line if the "
                        "classes are the same)")
            label_set = label_set if label_set is not None else name
            doc = doc["params"] or {}
        names = {f.name for f in cls._fields()}
        unknown = set(doc) - names
        if unknown:
            raise PolicyError(f"{cls.__name__}: unknown parameters {sorted(unknown)}; expected "
                              f"{sorted(names)}")
        ls = None if label_set is None else (
            label_set if isinstance(label_set, LabelSet) else get_label_set(label_set))
        kw = {}
        for f in cls._fields():
            if f.name not in doc:
                continue
            v = doc[f.name]
            if f.metadata["kind"] == "threshold" and not isinstance(v, (int, float)):
                if ls is None:
                    raise PolicyError(f"{cls.__name__}.{f.name}: per-class values need a label set")
                vec = _threshold_vector(v, ls, f"{cls.__name__}.{f.name}")
                v = {c: float(t) for c, t in zip(ls.classes, vec)}
            kw[f.name] = float(v) if f.metadata["kind"] != "choice" and \
                isinstance(v, (int, float)) and not isinstance(v, bool) else v
        return cls(**kw)


def _threshold_vector(v, label_set: LabelSet, where: str) -> np.ndarray:
    C = label_set.n_classes
    if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
        return np.full(C, float(v))
    if isinstance(v, Mapping):
        default = v.get("default")
        unknown = [k for k in v if k != "default" and k not in label_set.classes]
        if unknown:
            raise PolicyError(f"{where}: unknown labels {unknown} for label set "
                              f"{label_set.name!r}")
        missing = [c for c in label_set.classes if c not in v]
        if missing and default is None:
            raise PolicyError(f"{where}: no value for {missing}; give every class or a 'default'")
        return np.array([float(v.get(c, default)) for c in label_set.classes])
    if isinstance(v, (list, tuple, np.ndarray)) and len(v) == C:
        return np.asarray(v, np.float64).copy()
    raise PolicyError(f"{where}: expected a number, a {{label: number}} mapping or {C} numbers, "
                      f"got {v!r}")


# ----------------------------------------------------------------------------- decide I/O




@dataclass(frozen=True)
class Decision:
    """What ``decide`` chose for one soundscape.

    Attributes:
        queries: the lookups made, in order (canonical tuples).
        stems: one `SlotStem` per slot of the final query; separators: the separator per slot.
        keep: per slot, True = labelled with its query class, False = silence.
    """

    queries: tuple
    stems: tuple
    separators: tuple
    keep: tuple

    @property
    def labels(self) -> tuple[int, ...]:
        """Per slot: class index, or -1 for silence."""
        return tuple(s.label if k else -1 for s, k in zip(self.stems, self.keep))

    def est_labels(self, label_set: LabelSet) -> list[str]:
        return [label_set.classes[c] if c >= 0 else SILENCE for c in self.labels]


def pick_slots(query: tuple, lookup: Lookup, select_separator: int, stage: int,
               n_separators: int) -> tuple[list, list]:
    """Steps (f) then (e): the stage's stems of the selected separator(s), per slot.

    ``select_separator`` 0/1: that separator; 2: per slot the stem whose retag probability of
    its query class is higher (tie: separator 0); with one separator, 2 means 0.
    """
    if select_separator in (0, 1) or n_separators == 1:
        sep = 0 if select_separator == 2 else select_separator
        stems = list(lookup(query, sep, stage))
        return stems, [sep] * len(stems)
    a, b = list(lookup(query, 0, stage)), list(lookup(query, 1, stage))
    stems, seps = [], []
    for sa, sb in zip(a, b):
        take_b = float(sb.retag_max[sa.label]) > float(sa.retag_max[sa.label])
        stems.append(sb if take_b else sa)
        seps.append(1 if take_b else 0)
    return stems, seps


def parse_policy_yaml(source: Union[str, Path]):
    """The parsed document of a policy YAML: ``source`` is its text, or a `Path` to read.

    Raises:
        PolicyError: the file cannot be read, or the text is not (safe) YAML; names the file
            (or "policy YAML" for text) and the parser's line (was a raw ``yaml`` or ``OSError``).
    """
    where = "policy YAML"
    if isinstance(source, Path):
        where = str(source)
        try:
            source = source.read_text()
        except OSError as exc:
            raise PolicyError(f"{where}: cannot read the policy YAML ({exc.strerror or exc})") \
                from None
    try:
        return yaml.safe_load(source)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise PolicyError(f"{where}: not valid YAML ({first}); a policy YAML is written by "
                          "casdri-search or `PolicyParams.to_yaml`") from None
