"""`run_search`: the stage chain with (repeated, grouped) k-fold held-out validation.

Conventions:
    * Objective: the dataset CAPI-SDRi (official mean over non-None soundscapes) of the
      problem's policy on the tune soundscapes. How held-out, tune and per-stage figures are
      formed: `search.result`.
    * Folds: stratified by number of sources; grouped (`search.folds.grouped_folds`) when the
      cache carries groups (``--group-by``; by default the source recordings when the cache
      has them, else its rooms). Repeat ``r`` splits with seed ``seed + r``.
    * ``--test-split NAME``: the search tunes on the other split (``--split``, default the one
      the cache has most soundscapes of) and the final policy is scored once on ``NAME``.
      By default (``"auto"``) a cache with an ``eval`` split tests on it (unless ``--split
      eval``), so the realised gain on the shifted split prints beside the k-fold estimate;
      ``"none"`` (or ``None``) tests on nothing.
    * The policy written out is the ``final`` chain, tuned on every tune soundscape.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import optuna
import pyarrow.parquet as pq
import yaml

from casdri import schema as sc
from casdri.errors import InputError
from casdri.replay import kernels_cached

from . import casdri_problem as cp
from . import sweep
from .cv import run_chains
from .engines import make_sampler, open_storage
from .folds import Folds, grouped_folds, groups_from_labels, groups_from_recordings
from .folds import stratified_folds
from .result import (MIN_FOLD_SIZE, FeatureGain, SearchResult, TestFigure, pooled_heldout,
                     start_shift_note, summarize)
from .settings import SearchSettings
from casdri.stats import dataset_mean, gain_difference, paired_bootstrap_parts

__all__ = ["SearchResult", "run_search", "search_problem", "summarize", "make_split",
           "feature_heldout", "feature_columns"]


def make_split(n_sources: np.ndarray, groups: Optional[np.ndarray], group_by: Optional[str],
               idx: Optional[np.ndarray], k: int, seed: int) -> Folds:
    """The folds of soundscapes ``idx`` (all when None), as positions ``0 .. len(idx)-1``:
    grouped when ``groups`` is given (k lowered to the number of groups), else stratified."""
    idx = np.arange(len(n_sources)) if idx is None else np.asarray(idx, np.int64)
    strata = np.asarray(n_sources, np.int64)[idx]
    if groups is None:
        return stratified_folds(strata, min(k, len(idx)), seed)
    g = np.asarray(groups, np.int64)[idx]
    return grouped_folds(strata, g, min(k, np.unique(g).size), seed, group_by)


def feature_columns(problem) -> dict:
    """``{feature: (columns,) int64}`` of the problem's decision features (its optional
    ``features``: ``{name: (Param names)}``), those with at least one column."""
    out = {}
    for name, params in (getattr(problem, "features", None) or {}).items():
        cols = [problem.params[p].columns for p in params if p in problem.params]
        if cols:
            out[name] = np.concatenate(cols).astype(np.int64)
    return out


def _ablated(x: np.ndarray, x_start: np.ndarray, cols: dict) -> np.ndarray:
    """``(1 + F, P)``: ``x``, then ``x`` with each feature's columns at ``x_start``'s."""
    X = np.repeat(np.asarray(x, np.float64)[None, :], 1 + len(cols), axis=0)
    for i, c in enumerate(cols.values()):
        X[1 + i, c] = x_start[c]
    return X


def _worth(V: np.ndarray) -> tuple:
    """Per feature row ``V[1 + i]`` against ``V[0]``: (gain dB, soundscapes that differ)."""
    same = (V[1:] == V[0]) | (np.isnan(V[1:]) & np.isnan(V[0]))
    return ([dataset_mean(V[0]) - dataset_mean(v) for v in V[1:]],
            (~same).sum(axis=1).tolist())


def feature_heldout(problem, x_start, fold_results: list, k: int, S: int) -> list:
    """One `search.result.FeatureGain` per decision feature (`feature_columns`), held out:
    each fold policy and its ablations replayed on its held-out soundscapes, pooled per
    repeat, averaged over repeats."""
    cols = feature_columns(problem)
    if not cols:
        return []
    x_start = np.asarray(x_start, np.float64)
    gains, changed = [], []
    for i in range(0, len(fold_results), k):
        pooled = np.full((1 + len(cols), S), np.nan)
        for f in fold_results[i:i + k]:
            if f.heldout_idx.size:
                pooled[:, f.heldout_idx] = problem.values(_ablated(f.x_end, x_start, cols),
                                                          f.heldout_idx)
        g, c = _worth(pooled)
        gains.append(g)
        changed.append(c)
    g, c = np.mean(gains, axis=0), np.mean(changed, axis=0)
    return [FeatureGain(name, tuple(problem.features[name]), float(g[j]), int(round(c[j])))
            for j, name in enumerate(cols)]


def search_problem(problem, x_start: np.ndarray, n_sources: np.ndarray,
                   baseline_values: np.ndarray, oracle_values: np.ndarray,
                   settings: SearchSettings = SearchSettings(), groups=None,
                   group_by: Optional[str] = None, problem_factory: Optional[Callable] = None,
                   on_chain: Optional[Callable] = None,
                   on_stage: Optional[Callable] = None, clusters=None) -> SearchResult:
    """`run_search` on any `search.objective.Problem` (the cache-free core; see `run_search`).

    Args:
        groups: ``(S,) int64`` groups the folds never split (None: stratified folds only).
        clusters: per soundscape its source recordings (`casdri.stats.cluster_weights`): the
            held-out gain and its parts also get CIs that resample recordings.
    """
    t0 = time.perf_counter()
    settings.validate()
    n_sources = np.asarray(n_sources, np.int64)
    S = n_sources.shape[0]
    split_fn = functools.partial(make_split, n_sources, groups, group_by)
    splits = [split_fn(None, settings.folds, settings.seed + r) for r in range(settings.repeats)]
    if splits[0].k < settings.folds:
        raise InputError(f"--folds {settings.folds}: the cache has only {splits[0].n_groups} "
                         f"groups by {group_by}; use --folds <= {splits[0].n_groups} or "
                         "--group-by none")
    tasks = []
    if settings.folds > 1:
        tasks = [(f"{f'r{r}.' if r else ''}fold-{i}", sp.tune(i))  # repeat 0: "fold-i"
                 for r, sp in enumerate(splits) for i in range(sp.k)]
    tasks.append(("final", np.ones(S, dtype=bool)))
    results = run_chains(problem, x_start, tasks, settings, split_fn, problem_factory,
                         on_chain, on_stage)
    fold_results, final = results[:-1], results[-1]
    X = np.stack([np.asarray(x_start, np.float64), final.x_end])
    start_values, final_values = problem.values(X)
    base = np.asarray(baseline_values, np.float64)
    warnings = []
    heldout, heldout_values, repeat_gains = None, np.full(S, np.nan), []
    start_gain = tuning = by_recording = None
    if fold_results:
        k = splits[0].k
        per_repeat = [pooled_heldout(fold_results[i:i + k], S)
                      for i in range(0, len(fold_results), k)]
        repeat_gains = [dataset_mean(v) - dataset_mean(base) for v in per_repeat]
        with np.errstate(invalid="ignore"):
            stack = np.stack(per_repeat)
            ok = ~np.isnan(stack)
            heldout_values = np.where(ok.any(0), np.where(ok, stack, 0).sum(0)
                                      / np.maximum(ok.sum(0), 1), np.nan)
        heldout, start_gain, tuning = paired_bootstrap_parts(
            stack, start_values, base, n_boot=settings.n_boot, seed=settings.seed)
        if clusters is not None:
            by_recording = paired_bootstrap_parts(stack, start_values, base,
                                                  n_boot=settings.n_boot, seed=settings.seed,
                                                  clusters=clusters)
        gains = np.array([f.tune_end_db - dataset_mean(base[f.tune_idx]) for f in fold_results])
        tune_gain = float(np.mean(gains[np.isfinite(gains)])) if np.isfinite(gains).any() \
            else float("nan")
        empty = [f.fold for f in fold_results if not np.isfinite(f.tune_start_db)]
        if empty:
            warnings.append(
                f"WARNING: {len(empty)} fold chain(s) ({', '.join(empty[:3])}) had no scored "
                "soundscape in their tune set (only zero-target soundscapes without a false "
                "positive), so they tuned nothing; use fewer --folds or --group-by none")
        warnings += _warnings(heldout, splits[0])
    else:
        tune_gain = dataset_mean(final_values) - dataset_mean(base)
        warnings.append("WARNING: --folds 1: no held-out validation; the gain shown is the "
                        "tune-set gain and is optimistic")
    features = (feature_heldout(problem, x_start, fold_results, splits[0].k, S)
                if fold_results else [])
    result = SearchResult(
        settings=settings, stages=final.stages, splits=splits, problem=problem,
        x_start=np.asarray(x_start, np.float64), x_final=final.x_end, final=final,
        fold_results=fold_results, baseline_values=base,
        oracle_values=np.asarray(oracle_values, np.float64), start_values=start_values,
        final_values=final_values, heldout_values=heldout_values, heldout=heldout,
        repeat_gains_db=repeat_gains, tune_gain_db=tune_gain,
        seconds=time.perf_counter() - t0, warnings=warnings, start_gain=start_gain,
        tuning_gain=tuning, by_recording=by_recording, features=features)
    if fold_results:
        for _, r in result.stage_table().iterrows():
            if r.heldout_gain_db < 0:
                result.warnings.append(
                    f"WARNING: stage {r.stage} loses {r.heldout_gain_db:+.3f} dB held out "
                    "(pooled over folds); drop it or let --stage auto decide")
    return result


def _warnings(heldout, folds: Folds) -> list:
    out = []
    if heldout.ci_includes_zero:
        lo, hi = heldout.gain_ci_db
        out.append(f"WARNING: the held-out gain over baseline ({heldout.gain_db:+.3f} dB, 95% CI "
                   f"[{lo:+.3f}, {hi:+.3f}]) includes zero: the tuned policy is not shown to "
                   "beat the baseline on unseen soundscapes")
    sizes = np.bincount(folds.fold_of, minlength=folds.k)
    if sizes.min() < MIN_FOLD_SIZE:
        out.append(f"WARNING: small sample: held-out folds of {sizes.min()}-{sizes.max()} "
                   f"soundscapes ({folds.n_soundscapes} in all); below {MIN_FOLD_SIZE} per "
                   "fold the held-out figures and their CI are unreliable")
    return out


class SubProblem:
    """The `search.objective.Problem` of ``problem`` restricted to soundscapes ``idx`` (the
    tune split of ``--test-split``); other attributes are the full problem's."""

    def __init__(self, problem, idx: np.ndarray):
        self.full, self.idx = problem, np.asarray(idx, np.int64)
        self.n_soundscapes = int(self.idx.shape[0])

    def __getattr__(self, name):  # params, n_classes, class_names, decode, policy_yaml, ...
        if name in ("full", "idx") or name.startswith("__"):
            raise AttributeError(name)  # (unpickling, before __init__ state is back)
        return getattr(self.full, name)

    def values(self, X, idx=None):
        return self.full.values(X, self.idx if idx is None else self.idx[np.asarray(idx)])

    def pair_values(self, X, idx):
        return self.full.pair_values(X, self.idx[np.asarray(idx)])

    def change_points(self, name, cls, x, idx):
        return self.full.change_points(name, cls, x, self.idx[np.asarray(idx)])

    def clusters(self, group_by="auto"):
        c = self.full.clusters(group_by)
        return None if c is None else (c[0], [c[1][i] for i in self.idx])


class _SubFactory:
    """Picklable: rebuilds ``SubProblem(factory(), idx)`` in a worker."""

    def __init__(self, factory, idx):
        self.factory, self.idx = factory, idx

    def __call__(self):
        return SubProblem(self.factory(), self.idx)


def cache_groups(dc, path, group_by: Optional[str]):
    """``((S,) int64 groups or None, name)`` of ``--group-by`` on a loaded cache.

    ``"auto"``: the source recordings when the cache has them, else its rooms, else none;
    ``"none"``: none;
    ``"recording"`` / ``"room"``: the cache's optional columns; another name: that column of
    the cache's soundscapes Parquet parts.

    Raises:
        InputError: the cache lacks what ``group_by`` names (with the fix).
    """
    group_by = cp.group_source(dc, group_by)
    if group_by is None:
        return None, None
    if group_by == "recording":
        if dc.recordings is None:
            raise InputError("--group-by recording: the cache's soundscapes table has no "
                             f"'{sc.RECORDINGS}' column; rebuild it from generator metadata or "
                             "use --group-by room|COLUMN|none")
        return groups_from_recordings(list(dc.recordings)), group_by
    if group_by == "room":
        if dc.rooms is None:
            raise InputError(f"--group-by room: the cache's soundscapes table has no "
                             f"'{sc.ROOM}' column; use --group-by recording|COLUMN|none")
        return groups_from_labels(list(dc.rooms)), group_by
    if path is None:
        raise InputError(f"--group-by {group_by}: a column needs a cache directory")
    files = sorted(Path(path, "soundscapes").glob("part-*.parquet"))
    values = {}
    for f in files:
        t = pq.read_table(f)
        if group_by not in t.column_names:
            raise InputError(f"--group-by {group_by}: {f} has no column {group_by!r} (it has "
                             f"{t.column_names}); use recording, room, none or one of those")
        values.update(zip(t.column(sc.SOUNDSCAPE).to_pylist(), t.column(group_by).to_pylist()))
    return groups_from_labels([values.get(s) for s in dc.soundscape_ids]), group_by


def _policy_in_warning(policy_in, dc) -> str:
    """The warning for a start read from ``--policy-in``: every fold starts from it and its
    part of the gain is not held out, so a start tuned on these soundscapes makes the held-out
    figures optimistic. Says so outright when the file's provenance names this cache."""
    try:
        prov = (yaml.safe_load(Path(policy_in).read_text()) or {}).get("provenance") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        prov = {}
    where = f" (split {prov['split']!r})" if prov.get("split") else ""
    tuned = (f"its provenance says it was tuned on this cache{where}, so "
             if prov.get("cache_id") == dc.meta.cache_id
             else "if it was tuned on these soundscapes, ")
    return (f"WARNING: --policy-in {policy_in}: every fold starts from that policy and its part "
            f"of the gain is not held out; {tuned}the held-out gain and the start's part are "
            "optimistic (selection bias), and so is any difference the NOTE below reports")


def _check_storage(settings: SearchSettings) -> None:
    """Refuse studies of ``study_name`` already in the storage unless ``--resume``."""
    if settings.storage is None:
        return
    with open_storage(settings.storage) as storage:
        names = [n for n in optuna.get_all_study_names(storage)
                 if n.startswith(settings.study_name + ".")]
    if names and not settings.resume:
        raise InputError(
            f"--storage {settings.storage}: it already holds {len(names)} studies named "
            f"{settings.study_name}.* (e.g. {names[0]}); pass --resume to add trials to them "
            "(other workers of the same search do), or choose another --study-name")


#: the stages that sweep thresholds exactly (they replay pairs and trace change points)
SWEEP_STAGES = frozenset({"per-class", "refine"})


def search_kernels_cached(module, stages) -> bool:
    """Whether the kernels a search runs are compiled or in Numba's disk cache: the
    baseline's and the oracle's parallel driver (their values), the searched policy's serial
    driver (a chain runs on one thread: `search.cv`) and, when ``stages`` sweep
    (`SWEEP_STAGES`), its pairs driver, its trace (the change points) and the sweep's passes.
    `casdri.replay.kernels_cached`."""
    sweeps = bool(SWEEP_STAGES & set(stages))
    own = ("ser",) + (("pairs_ser", "trace") if sweeps else ())
    return (kernels_cached("baseline", uses=("par",)) and kernels_cached("oracle", uses=("par",))
            and kernels_cached(module, uses=own) and (not sweeps or sweep.kernels_cached()))


def run_search(cache=None, settings: Optional[SearchSettings] = None, policy_in=None,
               split: Optional[str] = None, test_split: Optional[str] = "auto",
               allow_incomplete: bool = False,
               on_status: Optional[Callable[[str], None]] = None,
               on_stage: Optional[Callable] = None, **kwargs) -> SearchResult:
    """Tune a registered policy (``settings.policy``, default ``refine``) on a decision cache
    with held-out validation.

    Args:
        cache: cache directory, a loaded ``DecisionCache``, or None for the bundled demo cache.
        settings: `search.settings.SearchSettings`; or its fields as keywords (``trials`` is
            accepted for ``n_trials``), e.g. ``run_search(path, stage="gates", folds=5)``.
        policy_in: YAML file of policy parameters to start from (default: its defaults).
        split: tune on this split only (default: every soundscape, or with ``test_split`` the
            split the cache has most soundscapes of).
        test_split: score the final policy once on this split (never tuned on);
            ``"auto"`` (default): ``eval`` when the cache has it and ``split`` is not
            ``eval``, else none; ``"none"`` or None: no test split.
        allow_incomplete: search a cache whose build has not finished every chunk (see
            `casdri.cache.load_cache`); refused by default.
        on_status: called with a status line ("compiling kernels", "r0.fold-1: ...").
        on_stage: callback after each stage (serial runs).

    Returns:
        `SearchResult` (write it with `search.report.write_outputs`).

    Raises:
        InputError: bad settings (named), an unknown split, studies present without
            ``resume``; CacheError / CacheSchemaError from the cache.
    """
    settings = (settings or SearchSettings()).with_(**kwargs).validate()
    settings = settings.with_(jobs=settings.auto_jobs())  # ("auto": the usable cores or 1)
    make_sampler(settings.sampler, 0)  # fail early on a missing optional dependency
    _check_storage(settings)
    say = on_status or (lambda line: None)
    say("loading the decision cache")
    path, dc = cp.open_cache(cache, allow_incomplete)
    problem = cp.CasdriProblem(dc, settings.policy)
    groups, group_by = cache_groups(dc, path, settings.group_by)
    test_split = resolve_test_split(dc, split, test_split)
    idx = _tune_idx(dc, split, test_split)
    n_src = problem.n_sources()
    sweeps_ready = sweep.kernels_cached() or not SWEEP_STAGES & set(settings.chains[0])
    say("scoring baseline and oracle" + (
        "" if search_kernels_cached(problem.module, settings.chains[0])
        else " (compiling kernels: first run only, about a minute)"))
    base, oracle = problem.policy_values("baseline"), problem.policy_values("oracle")
    if not sweeps_ready:  # compiled under the status line above, not silently mid-search
        sweep.warm_up()
    x_start = problem.start_vector(policy_in)
    factory = (cp.ProblemFactory(path, settings.policy, allow_incomplete)
               if (settings.jobs > 1 and path is not None) else None)
    tuned = problem
    if idx is not None:
        tuned = SubProblem(problem, idx)
        factory = None if factory is None else _SubFactory(factory, idx)
        n_src, groups = n_src[idx], None if groups is None else groups[idx]
        base_t, oracle_t = base[idx], oracle[idx]
    else:
        base_t, oracle_t = base, oracle
    if settings.folds > tuned.n_soundscapes:
        raise InputError(f"--folds must be in 1..{tuned.n_soundscapes} (tune soundscapes), "
                         f"got {settings.folds}")
    notes = []
    if settings.group_by == "auto" and groups is not None and settings.folds > 1:
        n_groups, largest = len(np.unique(groups)), np.bincount(np.unique(
            groups, return_inverse=True)[1]).max()
        if n_groups < settings.folds or largest > len(groups) / settings.folds:
            notes.append(f"WARNING: --group-by auto: the {group_by} groups ({n_groups}, the "
                         f"largest {largest} of {len(groups)} soundscapes) cannot make "
                         f"{settings.folds} balanced folds; folds are not grouped, so the "
                         f"held-out estimate may be optimistic if soundscapes share a {group_by}"
                         + ("" if settings.accept != "evidence" else
                            f" (each move's evidence test is still clustered by {group_by})"))
            groups, group_by = None, None
    if policy_in is not None:
        notes.append(_policy_in_warning(policy_in, dc))
    what = ("selecting stages (inner cross-validation), then tuning"
            if settings.stage == "auto" else "tuning")
    recordings = None if dc.recordings is None else list(
        dc.recordings if idx is None else dc.recordings[idx])
    result = search_problem(tuned, x_start, n_src, base_t, oracle_t, settings, groups,
                            group_by, factory, on_chain=lambda lab: say(f"{lab}: {what}"),
                            on_stage=on_stage, clusters=recordings)
    if test_split is not None:
        test = np.flatnonzero(dc.split_mask(test_split))
        v, v_start = problem.values(np.stack([result.x_final, x_start]), test)
        boot = functools.partial(paired_bootstrap_parts, v, v_start, base[test],
                                 n_boot=settings.n_boot, seed=settings.seed)
        gain, start, tuning = boot()
        rec_test = None if dc.recordings is None else list(dc.recordings[test])
        shift = functools.partial(gain_difference, result.start_values, base_t, v_start,
                                  base[test], n_boot=settings.n_boot, seed=settings.seed)
        result.test = TestFigure(
            test_split, gain, start=start, tuning=tuning,
            by_recording=None if rec_test is None else boot(clusters=rec_test),
            start_shift=(*shift(), None if rec_test is None else
                         shift(clusters_1=recordings, clusters_2=rec_test)[1]))
        if result.features:
            g, c = _worth(problem.values(_ablated(result.x_final, x_start,
                                                  feature_columns(problem)), test))
            result.features = [dataclasses.replace(f, test_gain_db=float(g[j]),
                                                   test_changed=int(c[j]))
                               for j, f in enumerate(result.features)]
        note = start_shift_note(result, from_file=policy_in is not None)
        if note:
            result.warnings.append(note)
    result.warnings[:0] = notes
    result.provenance = cp.provenance(problem, path, result, policy_in)
    tune_idx = np.arange(dc.n_soundscapes) if idx is None else idx
    result.provenance.update(split=split, test_split=test_split, group_by=group_by,
                             tune_soundscapes=int(len(tune_idx)),
                             tune_splits=sorted({str(v) for v in dc.splits[tune_idx]}))
    return result


#: the split ``test_split="auto"`` tests on when the cache has it
AUTO_TEST_SPLIT = "eval"


def resolve_test_split(dc, split: Optional[str], test_split: Optional[str]) -> Optional[str]:
    """The test split a search uses: ``"auto"`` → `AUTO_TEST_SPLIT` when the cache has that
    split and ``split`` is another (else None); ``"none"``/None → None; a name → itself."""
    if test_split is None or test_split == "none":
        return None
    if test_split != "auto":
        return test_split
    have = set(np.unique(dc.splits.astype(str)).tolist())
    return AUTO_TEST_SPLIT if AUTO_TEST_SPLIT in have and split != AUTO_TEST_SPLIT else None


def _tune_idx(dc, split, test_split):
    """Soundscapes to tune on (None: all), checking the split names."""
    names, counts = np.unique(dc.splits.astype(str), return_counts=True)
    have = ", ".join(f"{n} ({c})" for n, c in zip(names, counts))
    for flag, value in (("--split", split), ("--test-split", test_split)):
        if value is not None and value not in names:
            raise InputError(f"{flag} {value!r}: the cache has no such split; it has {have}")
    if test_split is None:
        return None if split is None else np.flatnonzero(dc.split_mask(split))
    if split is None:
        rest = [(c, n) for n, c in zip(names, counts) if n != test_split]
        if not rest:
            raise InputError(f"--test-split {test_split!r}: the cache has no other split to "
                             f"tune on (it has {have})")
        split = max(rest)[1]
    if split == test_split:
        raise InputError(f"--split and --test-split are both {split!r}; tune and test must "
                         "differ")
    return np.flatnonzero(dc.split_mask(split))
