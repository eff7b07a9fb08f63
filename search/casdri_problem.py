"""The `search.objective.Problem` of casdri's ``refine`` policy on a ``DecisionCache``.

Conventions:
    * Only public casdri API is used: ``casdri.cache.load_cache``, ``casdri.replay``,
      ``casdri.policies.{baseline,refine,oracle}``.
    * Without ``--cache`` the bundled demo cache ``casdri/data/demo_cache/`` is used (looked up
      with ``importlib.resources``, so it works from a wheel once the folder ships).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from casdri.errors import InputError

__all__ = ["DemoCacheMissing", "demo_cache_path", "open_cache", "CasdriProblem", "ProblemFactory",
           "cache_hash", "provenance"]

DEMO_MISSING = "no demo cache is bundled yet; pass --cache DIR"


class DemoCacheMissing(InputError):
    """No ``--cache`` was given and casdri ships no demo cache."""


def demo_cache_path():
    """Path of the bundled demo cache, or None when casdri ships none."""
    try:
        root = resources.files("casdri") / "data" / "demo_cache"
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover
        return None
    if root.is_dir() and (root / "_casdri_cache.json").is_file():
        return Path(str(root))
    return None


def open_cache(cache):
    """``(path or None, DecisionCache)`` for a directory, a loaded cache, or None (demo).

    Raises:
        DemoCacheMissing: ``cache`` is None and no demo cache is bundled.
    """
    if cache is None:
        path = demo_cache_path()
        if path is None:
            raise DemoCacheMissing(DEMO_MISSING)
        cache = path
    if isinstance(cache, (str, Path)):
        from casdri.cache import load_cache

        return Path(cache), load_cache(cache)
    return None, cache


class CasdriProblem:
    """`search.objective.Problem` of the ``refine`` policy on a ``DecisionCache``.

    Args:
        cache: the loaded `casdri.cache.DecisionCache`.

    Attributes:
        params: ``{name: Param}`` from ``RefineParams.search_space(cache)`` (field order).
        n_soundscapes, n_classes, class_names: of the cache.
    """

    policy = "refine"
    #: numba threads over settings in replay_matrix; off: a search makes many small replays
    #: (thread wake-ups cost more than they save) and runs chains in parallel processes
    parallel = False

    def __init__(self, cache):
        import numpy as np

        from casdri.policies import RefineParams
        from casdri.replay import prepare

        from .change_points import RefineChangePoints
        from .objective import Param

        self.cache = cache
        self.Params = RefineParams
        self.n_soundscapes = cache.n_soundscapes
        self.n_classes = cache.n_classes
        self.class_names = tuple(cache.meta.classes)
        self.params = {}
        for r in RefineParams.search_space(cache):
            self.params[r.name] = Param(
                r.name, np.asarray(r.columns, np.int64), r.low, r.high, tuple(r.choices),
                bool(r.per_class), bool(r.integer) and not r.choices)
        self.layout = {k: p.columns for k, p in self.params.items()}
        self._cp = RefineChangePoints(cache, self.layout, prepare(cache, "refine"))

    # ---- Problem interface
    def values(self, X, idx=None):
        from casdri.replay import replay_matrix

        return replay_matrix(self.cache, self.policy, X, mask=idx, parallel=self.parallel).values

    def pair_values(self, X, idx):
        from casdri.replay import replay_pairs

        from .cv import single_numba_thread

        with single_numba_thread():  # replay_pairs has no serial switch
            return replay_pairs(self.cache, self.policy, X, idx)

    def change_points(self, name, cls, x, idx):
        return self._cp(name, cls, x, idx)

    # ---- policies, start and output
    def n_sources(self):
        """``(S,) int64`` references per soundscape (the CV strata)."""
        return self.cache.n_ref.astype("int64")

    def policy_values(self, policy: str):
        """``(S,)`` per-soundscape values of ``baseline`` (defaults) or of ``oracle`` (the best
        of its separator/stage choices by dataset CAPI-SDRi)."""
        import itertools

        import numpy as np

        from casdri.policies import params_class
        from casdri.replay import replay_matrix

        cls = params_class(policy)
        if policy == "baseline":
            return replay_matrix(self.cache, policy, cls()).values[0]
        space = cls.search_space(self.cache)
        X = np.array(list(itertools.product(*[r.choices for r in space])), np.float64)
        v = replay_matrix(self.cache, policy, X).values
        ok = ~np.isnan(v)
        means = np.where(ok.any(1), np.where(ok, v, 0).sum(1) / np.maximum(ok.sum(1), 1), -np.inf)
        return v[int(np.argmax(means))]

    def start_vector(self, policy_in=None):
        """Encoded start: ``policy_in`` (a refine policy YAML) or the refine defaults."""
        from casdri.errors import PolicyError
        from casdri.policies import load_policy_yaml

        if policy_in is None:
            return self.Params().encode(self.cache)
        p = Path(policy_in)
        if not p.is_file():
            raise InputError(f"--policy-in {policy_in}: no such file")
        mod, params = load_policy_yaml(p.read_text(), self.cache.label_set)
        if mod.NAME != self.policy:
            raise PolicyError(f"--policy-in {policy_in}: policy {mod.NAME!r}; the search tunes "
                              f"{self.policy!r}")
        return params.encode(self.cache)

    def decode(self, x):
        return self.Params.decode(x, self.cache)

    def policy_yaml(self, x, provenance: dict) -> str:
        """The policy YAML of setting ``x`` with a ``provenance`` block (loads back with
        ``casdri.policies.load_policy_yaml``)."""
        import yaml

        doc = yaml.safe_load(self.decode(x).to_yaml(self.cache.label_set))
        doc["provenance"] = provenance
        return yaml.safe_dump(doc, sort_keys=False)

    def per_class_table(self, x):
        """Per-class CAPI-SDRi (mean SDRi over entries) of baseline and of setting ``x``."""
        import pandas as pd

        from casdri.policies import BaselineParams
        from casdri.replay import replay

        a = replay(self.cache, "baseline", BaselineParams(), per_class=True).per_class
        b = replay(self.cache, self.policy, x[None, :], per_class=True).per_class
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
        import numpy as np

        from casdri.replay import replay

        ps = replay(self.cache, self.policy, x[None, :], per_soundscape=True).per_soundscape
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
    """Picklable recipe of a `CasdriProblem` (loads the cache again in a worker process)."""

    def __init__(self, path):
        self.path = str(path)

    def __call__(self):
        from casdri.cache import load_cache

        return CasdriProblem(load_cache(self.path))


def cache_hash(path) -> str:
    """sha256 over the metadata file and every Parquet part (names and bytes), hex."""
    import hashlib

    h = hashlib.sha256()
    root = Path(path)
    files = sorted([root / "_casdri_cache.json", *root.glob("*/part-*.parquet")])
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def provenance(problem: CasdriProblem, path, result, policy_in) -> dict:
    """Cache id and hash, start, seeds and versions recorded in the policy YAML."""
    import platform

    import numba
    import numpy
    import optuna

    import casdri

    meta = problem.cache.meta
    return {
        "cache_path": None if path is None else str(path),
        "cache_id": meta.cache_id,
        "cache_hash": None if path is None else f"sha256:{cache_hash(path)}",
        "label_set": meta.label_set,
        "n_soundscapes": problem.n_soundscapes,
        "policy_in": None if policy_in is None else str(policy_in),
        "storage": result.settings.storage,
        "study_name": result.settings.study_name,
        "versions": {"casdri": casdri.__version__, "optuna": optuna.__version__,
                     "numpy": numpy.__version__, "numba": numba.__version__,
                     "python": platform.python_version()},
    }
