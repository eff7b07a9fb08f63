"""The `search.objective.Problem` of any registered casdri policy on a ``DecisionCache``.

Conventions:
    * Only public casdri API is used: ``casdri.cache.load_cache``, ``casdri.replay``,
      ``casdri.policies`` (the registry: any registered policy can be searched; ``baseline``
      and ``oracle`` also give the reference values of the report).
    * The policy's plug-in supplies everything policy-specific: its parameters
      (``PARAMS.search_space``), its change points and its search plan (``plan``: stage name →
      the `Param` names that stage may move).
    * Without ``--cache`` the bundled demo cache ``casdri/data/demo_cache/`` is used
      (`casdri.cache.demo_cache_path`, re-exported here).
"""
from __future__ import annotations

import hashlib
import itertools
import platform
from pathlib import Path
from typing import Optional

import numba
import numpy as np
import optuna
import pandas as pd
import yaml

import casdri
from casdri.cache import demo_cache_path, load_cache
from casdri.errors import InputError, PolicyError
from casdri.policies import BaselineParams, get_policy, load_policy_yaml, params_class
from casdri.replay import prepare, replay, replay_matrix, replay_pairs, scored_mean, trace

from .objective import Param

__all__ = ["DemoCacheMissing", "demo_cache_path", "open_cache", "CasdriProblem", "ProblemFactory",
           "cache_hash", "provenance"]

DEMO_MISSING = "no demo cache is bundled yet; pass --cache DIR"


class DemoCacheMissing(InputError):
    """No ``--cache`` was given and casdri ships no demo cache."""


def open_cache(cache, allow_incomplete: bool = False):
    """``(path or None, DecisionCache)`` for a directory, a loaded cache, or None (demo).

    ``allow_incomplete`` is passed to `casdri.cache.load_cache` (search a cache whose build
    has not finished every chunk).

    Raises:
        DemoCacheMissing: ``cache`` is None and no demo cache is bundled.
    """
    if cache is None:
        path = demo_cache_path()
        if path is None:
            raise DemoCacheMissing(DEMO_MISSING)
        cache = path
    if isinstance(cache, (str, Path)):
        return Path(cache), load_cache(cache, allow_incomplete=allow_incomplete)
    return None, cache


def group_source(cache, group_by: Optional[str]) -> Optional[str]:
    """What ``--group-by`` names on ``cache``: ``"recording"``, ``"room"``, a column name, or
    None (``"none"``, or ``"auto"`` on a cache with neither recordings nor rooms). ``"auto"``
    is the source recordings when the cache lists them, else the rooms."""
    if group_by in (None, "none"):
        return None
    if group_by == "auto":
        if cache.recordings is not None:
            return "recording"
        return "room" if cache.rooms is not None else None
    return group_by


class CasdriProblem:
    """`search.objective.Problem` of one registered policy on a ``DecisionCache``.

    Args:
        cache: the loaded `casdri.cache.DecisionCache`.
        policy: a registered policy name or plug-in (`casdri.policies.POLICIES`).
        recordings: per soundscape, its source recording ids (a sequence each; empty: none),
            for the evidence rule's clustered test (`clusters`); default: the cache's
            ``recordings`` column, if any. Give them when the cache lacks the column but its
            metadata (e.g. the official dev set's) names them.

    Attributes:
        policy: the policy's name; module: its plug-in; Params: its parameter dataclass.
        params: ``{name: Param}`` from ``Params.search_space(cache)`` (field order).
        plan: ``{stage name: (Param names)}``, the policy's ``SEARCH_PLAN``.
        features: ``{feature name: (Param names)}``, the policy's ``FEATURES`` (optional).
        n_soundscapes, n_classes, class_names: of the cache.

    Raises:
        PolicyError: an unknown policy.
        InputError: ``recordings`` not of one entry per soundscape.
    """

    #: numba threads over settings in replay_matrix; off: a search makes many small replays
    #: (thread wake-ups cost more than they save) and runs chains in parallel processes
    parallel = False

    def __init__(self, cache, policy="refine", recordings=None):
        self.module = get_policy(policy)
        self._recordings = None if recordings is None else list(recordings)
        if self._recordings is not None and len(self._recordings) != cache.n_soundscapes:
            raise InputError(f"recordings: expected one entry per soundscape "
                             f"({cache.n_soundscapes}), got {len(self._recordings)}")
        self.policy = self.module.NAME
        self.cache = cache
        self.Params = self.module.PARAMS
        self.n_soundscapes = cache.n_soundscapes
        self.n_classes = cache.n_classes
        self.class_names = tuple(cache.meta.classes)
        self.params = {}
        for r in self.Params.search_space(cache):
            self.params[r.name] = Param(
                r.name, np.asarray(r.columns, np.int64), r.low, r.high, tuple(r.choices),
                bool(r.per_class), bool(r.integer) and not r.choices, r.off)
        self.layout = {k: p.columns for k, p in self.params.items()}
        self.plan = {stage: tuple(n for n in names if n in self.params)
                     for stage, names in self.module.SEARCH_PLAN.items()}
        self.features = {f: tuple(n for n in names if n in self.params)
                         for f, names in getattr(self.module, "FEATURES", {}).items()}
        factory = getattr(self.module, "change_points", None)
        self._cp = None if factory is None else factory(
            cache, prepare(cache, self.module),
            lambda X, idx: trace(cache, self.module, X, idx))

    # ---- Problem interface
    def values(self, X, idx=None):
        return replay_matrix(self.cache, self.module, X, mask=idx, parallel=self.parallel).values

    def pair_values(self, X, idx):
        return replay_pairs(self.cache, self.module, X, idx, parallel=self.parallel)

    def change_points(self, name, cls, x, idx):
        return None if self._cp is None else self._cp(name, cls, x, idx)

    def clusters(self, group_by: Optional[str] = "auto"):
        """``(name, ids)``: per soundscape, the ids the evidence rule's paired test treats as
        one unit of evidence (`search.acceptance.cluster_links`), and what they are; or None.

        Follows ``--group-by`` (`group_source`): ``("recording", ...)`` the source recordings
        (a soundscape's several recordings: overlapping clusters; the ``recordings`` given to
        the constructor, else the cache's column), ``("room", ...)`` the rooms; None for
        ``"none"``, a cache without that column, or another column (which groups the folds
        only)."""
        if self._recordings is not None and group_by in ("auto", "recording"):
            return "recording", self._recordings
        src = group_source(self.cache, group_by)
        column = {"recording": self.cache.recordings, "room": self.cache.rooms}.get(src)
        return None if column is None else (src, list(column))

    # ---- policies, start and output
    def n_sources(self):
        """``(S,) int64`` references per soundscape (the CV strata)."""
        return self.cache.n_ref.astype("int64")

    def policy_values(self, policy: str):
        """``(S,)`` per-soundscape values of ``baseline`` (defaults) or of ``oracle`` (the best
        of its separator/stage choices by dataset CAPI-SDRi)."""
        cls = params_class(policy)
        if policy == "baseline":
            return replay_matrix(self.cache, policy, cls()).values[0]
        space = cls.search_space(self.cache)
        X = np.array(list(itertools.product(*[r.choices for r in space])), np.float64)
        v = replay_matrix(self.cache, policy, X).values
        means = scored_mean(v)
        return v[int(np.argmax(np.where(np.isnan(means), -np.inf, means)))]

    def start_vector(self, policy_in=None):
        """Encoded start: ``policy_in`` (a policy YAML of this policy) or the policy's
        ``START`` (its defaults when it has none)."""
        if policy_in is None:
            return getattr(self.module, "START", self.Params()).encode(self.cache)
        p = Path(policy_in)
        if not p.is_file():
            raise InputError(f"--policy-in {policy_in}: no such file")
        mod, params = load_policy_yaml(p, self.cache.label_set, self.cache)  # errors name it
        if mod.NAME != self.policy:
            raise PolicyError(f"--policy-in {policy_in}: policy {mod.NAME!r}; the search tunes "
                              f"{self.policy!r}")
        return params.encode(self.cache)

    def decode(self, x):
        return self.Params.decode(x, self.cache)

    def policy_yaml(self, x, provenance: dict) -> str:
        """The policy YAML of setting ``x`` with a ``provenance`` block (loads back with
        ``casdri.policies.load_policy_yaml``)."""
        doc = yaml.safe_load(self.decode(x).to_yaml(self.cache.label_set))
        doc["provenance"] = provenance
        return yaml.safe_dump(doc, sort_keys=False)

    def per_class_table(self, x):
        """Per-class CAPI-SDRi (mean SDRi over entries) of baseline and of setting ``x``."""
        a = replay(self.cache, "baseline", BaselineParams(), per_class=True).per_class
        b = replay(self.cache, self.module, x[None, :], per_class=True).per_class
        t = pd.DataFrame({"class": list(self.class_names)})
        t = t.merge(a[["label", "sdri_mean"]].rename(columns={"label": "class",
                                                               "sdri_mean": "baseline_db"}),
                    how="left").merge(
            b[["label", "sdri_mean"]].rename(columns={"label": "class", "sdri_mean": "final_db"}),
            how="left")
        return t.fillna(0.0)

    def confusion(self, x):
        """``(matrix, labels)``: reference label (rows) against estimated label (columns) of
        setting ``x``, ``"none"`` last. Per clip the multiset intersection is the diagonal;
        the remaining references and stems are paired in label order (then "none")."""
        ps = replay(self.cache, self.module, x[None, :], per_soundscape=True).per_soundscape
        names = list(self.class_names)
        ix = {n: i for i, n in enumerate(names)}
        C = len(names)
        m = np.zeros((C + 1, C + 1), np.int64)
        for est, ref in zip(ps["est_labels"], ps["ref_labels"]):
            est, ref = sorted(est), sorted(ref)
            rest_e = list(est)
            rest_r = []
            for r in ref:
                if r in rest_e:
                    rest_e.remove(r)
                    m[ix[r], ix[r]] += 1
                else:
                    rest_r.append(r)
            for k in range(max(len(rest_e), len(rest_r))):
                i = ix[rest_r[k]] if k < len(rest_r) else C
                j = ix[rest_e[k]] if k < len(rest_e) else C
                m[i, j] += 1
        return m, names + ["none"]


class ProblemFactory:
    """Picklable recipe of a `CasdriProblem`: a worker process loads the cache once and reuses
    the problem for every chain it runs (`--jobs`), until a file of the cache changes."""

    def __init__(self, path, policy: str = "refine", allow_incomplete: bool = False):
        self.path = str(path)
        self.policy = get_policy(policy).NAME
        self.allow_incomplete = bool(allow_incomplete)

    def __call__(self):
        key = (self.path, self.policy, self.allow_incomplete, _files_stamp(self.path))
        problem = _LOADED.get(key)
        if problem is None:
            problem = CasdriProblem(load_cache(self.path, allow_incomplete=self.allow_incomplete),
                                    self.policy)
            _LOADED.clear()  # one cache per worker: a worker serves one search at a time
            _LOADED[key] = problem
        return problem


#: this process's problem of the last `ProblemFactory` call, by (path, policy, incomplete, stamp)
_LOADED: dict = {}


def _cache_files(root: Path) -> list:
    """The metadata file and every Parquet part of a cache, sorted (what identifies it)."""
    return sorted([root / "_casdri_cache.json", *root.glob("*/part-*.parquet")])


def _files_stamp(path) -> tuple:
    """(name, size, mtime_ns) of `_cache_files`: changes when any is rewritten, added or
    removed (a rebuilt cache is loaded again)."""
    root = Path(path)
    return tuple((str(f.relative_to(root)), st.st_size, st.st_mtime_ns)
                 for f in _cache_files(root) for st in [f.stat()])


def cache_hash(path) -> str:
    """sha256 over `_cache_files` (names and bytes), hex."""
    h = hashlib.sha256()
    root = Path(path)
    for f in _cache_files(root):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def provenance(problem: CasdriProblem, path, result, policy_in) -> dict:
    """Cache id and hash, start, seeds and versions recorded in the policy YAML."""
    meta = problem.cache.meta
    return {
        "cache_path": None if path is None else str(path),
        "cache_id": meta.cache_id,
        "cache_hash": None if path is None else f"sha256:{cache_hash(path)}",
        "label_set": meta.label_set,
        "models": meta.model_sha256(),  # compared with the system's checkpoints by apply
        "n_soundscapes": problem.n_soundscapes,  # the cache's; the tune set: tune_soundscapes
        "policy_in": None if policy_in is None else str(policy_in),
        "storage": result.settings.storage,
        "study_name": result.settings.study_name,
        "versions": {"casdri": casdri.__version__, "optuna": optuna.__version__,
                     "numpy": np.__version__, "numba": numba.__version__,
                     "python": platform.python_version()},
    }
