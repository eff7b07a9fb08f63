"""Is A really better than B? A paired comparison of two systems on one dev set.

Conventions:
    * Inputs are per-soundscape tables with columns ``soundscape``, ``capi_sdri`` (dB, NaN =
      None) and ``ref_labels`` (the ``per_soundscape`` tables of `casdri.replay` and
      `casdri.score_folders`, or a ``casdri score --out`` file). The soundscapes both tables
      hold are compared, in soundscape-id order (the official order); the others are counted
      and named in a warning.
    * None handling is the official one: each system's dataset mean is over its own non-None
      soundscapes (a zero-target soundscape is None when silent and 0 with a false positive),
      so the gain is the difference of the two dataset means, not a mean of differences.
    * The CI is `casdri.stats.paired_bootstrap` (soundscapes resampled with one draw for both
      systems; percentile interval); the probability of improvement is the share of resamples
      whose gain is > 0. Same values, seed and ``n_boot`` → the same interval as the search's
      held-out report.
    * Each soundscape's exact share of the gain uses the rule of `casdri._gap_states.attribute`
      (shares sum to the gain although the scored sets differ); "changed most" ranks by it.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from . import _gap_states as _gap
from ._tables import comparison_text
from .cache import load_cache
from .errors import InputError
from .policies import POLICIES, load_policy_yaml, params_class
from .replay import replay
from .scoring import score_folders
from .stats import paired_bootstrap

__all__ = ["Comparison", "compare", "compare_values", "compare_systems", "load_system",
           "system_table"]


@dataclass(frozen=True)
class Comparison:
    """Result of `compare` (dB).

    Attributes:
        name_a, name_b: what was compared; bootstrap: `casdri.stats.BootstrapGain` of A over
            B (``tuned_db`` = A, ``base_db`` = B).
        prob_improvement: share of bootstrap resamples where A's mean beats B's.
        n_soundscapes: compared; n_scored_a, n_scored_b: non-None among them.
        n_better, n_worse, n_equal: soundscapes scored by both where A > B, A < B, A == B.
        per_soundscape: soundscape, scene, a_db, b_db, diff_db (NaN unless both scored),
            share_db (exact share of the gain), sorted by ``|share_db|`` descending.
        per_scene: scene, n_soundscapes, a_db, b_db, gain_db, ci_low_db, ci_high_db,
            prob_improvement (within the type), share_db (the type's share of the gain).
        per_class: class, a_db, b_db, gain_db, d_tp, d_fp, d_fn (None when not given).
    """

    name_a: str
    name_b: str
    bootstrap: object
    prob_improvement: float
    n_soundscapes: int
    n_scored_a: int
    n_scored_b: int
    n_better: int
    n_worse: int
    n_equal: int
    per_soundscape: pd.DataFrame
    per_scene: pd.DataFrame
    per_class: Optional[pd.DataFrame] = None

    def to_text(self, top: int = 10) -> str:
        return comparison_text(self, top)


def compare_values(a, b, soundscapes=None, ref_labels=None, n_boot: int = 10_000,
                   confidence: float = 0.95, seed: int = 0, name_a: str = "A",
                   name_b: str = "B", per_class: Optional[pd.DataFrame] = None) -> Comparison:
    """Paired comparison of aligned per-soundscape values.

    Args:
        a, b: ``(S,) float64`` CAPI-SDRi of A and B on the same soundscapes, dB, NaN = None.
        soundscapes: ``S`` ids (default ``0..S-1``); ref_labels: ``S`` reference label lists
            (for the scene types; default: one type ``all``).
        n_boot, confidence, seed: of the bootstrap (`casdri.stats.paired_bootstrap`).
        name_a, name_b: labels of the two systems in the printed tables.
        per_class: optional per-class table (`compare` builds it).

    Returns:
        `Comparison`.

    Raises:
        InputError: shapes differ, Inf values, bad bootstrap settings.
    """
    boot = paired_bootstrap(a, b, n_boot=n_boot, confidence=confidence, seed=seed)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    S = len(a)
    ids = [str(i) for i in range(S)] if soundscapes is None else [str(x) for x in soundscapes]
    scenes = (["all"] * S if ref_labels is None
              else [_gap.scene_type([x for x in r if x != "silence"]) for r in ref_labels])
    empty = [{} for _ in range(S)]
    share = np.full(S, np.nan)
    if (~np.isnan(a)).any() and (~np.isnan(b)).any():
        share, _ = _gap.attribute(b, empty, _gap.dataset_mean(b), a, empty)
    both = ~np.isnan(a) & ~np.isnan(b)
    ps = pd.DataFrame({"soundscape": ids, "scene": scenes, "a_db": a, "b_db": b,
                       "diff_db": np.where(both, a - b, np.nan), "share_db": share})
    ps = ps.iloc[np.argsort(-np.abs(share), kind="stable")].reset_index(drop=True)
    rows = []
    for scene in sorted(set(scenes), key=_scene_key):
        m = np.array([x == scene for x in scenes])
        sb = paired_bootstrap(a[m], b[m], n_boot=n_boot, confidence=confidence, seed=seed)
        rows.append({"scene": scene, "n_soundscapes": int(m.sum()), "a_db": sb.tuned_db,
                     "b_db": sb.base_db, "gain_db": sb.gain_db, "ci_low_db": sb.gain_ci_db[0],
                     "ci_high_db": sb.gain_ci_db[1], "prob_improvement": sb.prob_gain_positive,
                     "share_db": float(share[m].sum())})
    d = (a - b)[both]
    return Comparison(name_a, name_b, boot, boot.prob_gain_positive, S,
                      int((~np.isnan(a)).sum()), int((~np.isnan(b)).sum()), int((d > 0).sum()),
                      int((d < 0).sum()), int((d == 0).sum()), ps, pd.DataFrame(rows), per_class)


def _scene_key(x: str):
    return (int(x.split()[0]), "duplicate" in x) if x[0].isdigit() else (-1, False)


def compare(table_a: pd.DataFrame, table_b: pd.DataFrame, class_a=None, class_b=None,
            **kw) -> Comparison:
    """Paired comparison of two per-soundscape tables (module conventions).

    Args:
        table_a, table_b: per-soundscape tables (``soundscape``, ``capi_sdri``, ``ref_labels``).
        class_a, class_b: optional per-class tables (``label``, ``sdri_mean``, ``tp``, ``fp``,
            ``fn``: `casdri.replay` / `casdri.score_folders` ``per_class``), used only when
            both systems cover the same soundscapes.
        **kw: `compare_values` options (n_boot, confidence, seed, name_a, name_b).

    Raises:
        InputError: a missing column, or no soundscape in common.
    """
    for name, t in (("A", table_a), ("B", table_b)):
        if not isinstance(t, pd.DataFrame):
            hint = ("; pass its .per_soundscape (casdri.replay(..., per_soundscape=True))"
                    if hasattr(t, "per_soundscape") else "")
            raise InputError(f"table {name}: expected a per-soundscape DataFrame, got "
                             f"{type(t).__name__}{hint}")
        miss = {"soundscape", "capi_sdri", "ref_labels"} - set(t.columns)
        if miss:
            raise InputError(f"table {name}: missing columns {sorted(miss)} (expected a "
                             "per-soundscape table of casdri.replay or casdri score --out)")
    ja = table_a.set_index(table_a["soundscape"].astype(str))
    jb = table_b.set_index(table_b["soundscape"].astype(str))
    common = sorted(set(ja.index) & set(jb.index))
    if not common:
        raise InputError("A and B share no soundscape: compare systems on one dev set")
    only = sorted(set(ja.index) ^ set(jb.index))
    if only:
        warnings.warn(f"{len(only)} soundscapes are scored by one system only and left out "
                      f"(first: {only[:3]})", stacklevel=2)
    pc = None
    if class_a is not None and class_b is not None and not only:
        pc = _class_table(class_a, class_b)
    return compare_values(ja.loc[common, "capi_sdri"].to_numpy(np.float64),
                          jb.loc[common, "capi_sdri"].to_numpy(np.float64), common,
                          [list(x) for x in ja.loc[common, "ref_labels"]], per_class=pc, **kw)


def _class_table(ca: pd.DataFrame, cb: pd.DataFrame) -> pd.DataFrame:
    cols = ["label", "sdri_mean", "tp", "fp", "fn"]
    t = ca[cols].merge(cb[cols], on="label", how="outer", suffixes=("_a", "_b"))
    for k in ("tp", "fp", "fn"):
        t[f"d_{k}"] = (t[f"{k}_a"].fillna(0) - t[f"{k}_b"].fillna(0)).astype(int)
    out = pd.DataFrame({"class": t["label"], "a_db": t["sdri_mean_a"], "b_db": t["sdri_mean_b"],
                        "gain_db": t["sdri_mean_a"] - t["sdri_mean_b"], "d_tp": t["d_tp"],
                        "d_fp": t["d_fp"], "d_fn": t["d_fn"]})
    return out.reset_index(drop=True)


# ----------------------------------------------------------------------------- systems


def load_system(spec, cache):
    """``(policy module, params)`` of ``"baseline"`` / ``"oracle"`` (defaults) or a policy
    YAML file. Raises `InputError` for anything else."""

    if str(spec) in POLICIES:
        return POLICIES[str(spec)], params_class(str(spec))()
    p = Path(str(spec))
    if p.is_file() and p.suffix in (".yaml", ".yml"):
        return load_policy_yaml(p, cache.label_set, cache)  # errors name the file
    raise InputError(f"{spec}: not a policy ({', '.join(sorted(POLICIES))}), a policy YAML "
                     "file, a stem folder or a score table (.csv/.parquet/.json of casdri score "
                     "--out); check the path")


def system_table(spec, cache=None, soundscapes=None, oracle=None, label_set="dcase2026t4",
                 mask=None):
    """``(name, per-soundscape table, per-class table or None)`` of one system: a score table
    file (.csv/.parquet/.json of ``casdri score --out``), a stem folder (scored against
    ``soundscapes`` / ``oracle``), or a policy on ``cache`` (soundscapes of ``mask``)."""
    p = Path(str(spec))
    if p.is_file() and p.suffix in (".csv", ".parquet", ".json"):
        return str(p), _read_table(p), None
    if p.is_dir():
        if not (soundscapes and oracle):
            raise InputError(f"{spec} is a stem folder: pass --soundscapes and --oracle")

        r = score_folders(soundscapes, oracle, p, label_set=label_set)
        return str(p), r.per_soundscape, r.per_class

    mod, params = load_system(spec, cache)
    r = replay(cache, mod, params, mask=mask, per_soundscape=True, per_class=True)
    return f"{spec} ({mod.NAME} on {cache.path})", r.per_soundscape, r.per_class


def _read_table(p: Path) -> pd.DataFrame:
    if p.suffix == ".parquet":
        t = pd.read_parquet(p)
    elif p.suffix == ".json":

        t = pd.DataFrame(json.loads(p.read_text())["per_soundscape"])
        t["capi_sdri"] = t["capi_sdri"].astype(np.float64)  # null -> NaN
    else:
        t = pd.read_csv(p, keep_default_na=False, na_values=[""])
        t["ref_labels"] = [[] if not isinstance(x, str) or not x else x.split(";")
                           for x in t.get("ref_labels", [""] * len(t))]
    return t


def compare_systems(a, b, cache=None, soundscapes=None, oracle=None, label_set="dcase2026t4",
                    n_boot: int = 10_000, seed: int = 0, open_cache=None,
                    mask=None) -> Comparison:
    """`compare` of two systems given as the CLI takes them (see `system_table`).

    ``cache``: a `DecisionCache` or its directory, opened only when a policy is compared
    (``open_cache(path) -> (cache, mask)`` overrides the opening); ``mask``: its soundscapes.
    """
    needs_cache = [s for s in (a, b) if not Path(str(s)).exists() or
                   Path(str(s)).suffix in (".yaml", ".yml")]
    if needs_cache and not hasattr(cache, "key_codes"):
        cache, mask = open_cache(cache) if open_cache is not None else (_load(cache), mask)
    na, ta, ca = system_table(a, cache, soundscapes, oracle, label_set, mask)
    nb, tb, cb = system_table(b, cache, soundscapes, oracle, label_set, mask)
    return compare(ta, tb, ca, cb, n_boot=n_boot, seed=seed, name_a=na, name_b=nb)


def _load(path):

    if path is None:
        raise InputError("a policy needs a cache: pass --cache DIR")
    return load_cache(path)
