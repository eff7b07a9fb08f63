"""`run_search`: the stage chain with k-fold held-out validation, on a decision cache.

Conventions:
    * Objective: the dataset CAPI-SDRi (official mean over non-None soundscapes) of the
      ``refine`` policy on the tune soundscapes.
    * Held-out: every soundscape is scored once by the policy tuned without its fold; the
      pooled per-soundscape values are compared with the ``baseline`` policy on the same
      soundscapes by a paired bootstrap (`search.stats.paired_bootstrap`). The tune-set gain
      (mean over folds of tuned − baseline on the fold's tune set) stands beside it; their
      difference is the optimism of tuning. The ``oracle`` policy (true labels) bounds what
      label decisions can reach; ``gap_closed`` = held-out gain / (oracle − baseline).
    * The policy written out is the ``final`` chain, tuned on every soundscape.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pandas as pd

from casdri.errors import InputError

from .cv import ChainResult, ChainSettings, cross_validate
from .folds import Folds, stratified_folds
from .stages import StageRecord, stage_names
from .stats import BootstrapGain, dataset_mean, paired_bootstrap

__all__ = ["SearchResult", "run_search", "summarize"]


@dataclass
class SearchResult:
    """Everything one search produced (see module conventions; scores in dB).

    Attributes:
        stages: stage names run, in order.
        settings: the `search.cv.ChainSettings`; folds: the `search.folds.Folds` split.
        problem: the problem searched (gives names, decoding and replays to the report).
        x_start, x_final: encoded start and final settings.
        final: the final `search.cv.ChainResult`; fold_results: the fold chains.
        baseline_values, oracle_values, start_values, final_values, heldout_values:
            ``(S,)`` per-soundscape values (NaN = None); ``heldout_values`` pools the fold
            policies (NaN everywhere when ``k == 1``).
        heldout: paired bootstrap of held-out vs baseline (None when ``k == 1``).
        tune_gain_db: mean over folds of the tune-set gain over baseline (the final chain's
            gain on all soundscapes when ``k == 1``).
        warnings: plain-language warnings (CI includes zero, ...).
        provenance: cache id / hash, versions, seed, ...
    """

    stages: tuple
    settings: ChainSettings
    folds: Folds
    problem: object
    x_start: np.ndarray
    x_final: np.ndarray
    final: ChainResult
    fold_results: list
    baseline_values: np.ndarray
    oracle_values: np.ndarray
    start_values: np.ndarray
    final_values: np.ndarray
    heldout_values: np.ndarray
    heldout: Optional[BootstrapGain]
    tune_gain_db: float
    seconds: float = 0.0
    warnings: list = field(default_factory=list)
    provenance: dict = field(default_factory=dict)

    @property
    def baseline_db(self) -> float:
        return dataset_mean(self.baseline_values)

    @property
    def oracle_db(self) -> float:
        return dataset_mean(self.oracle_values)

    @property
    def start_db(self) -> float:
        """The start policy (``--policy-in`` or the refine defaults) on every soundscape."""
        return dataset_mean(self.start_values)

    @property
    def final_tune_db(self) -> float:
        """The final policy on every soundscape (its own tune set)."""
        return dataset_mean(self.final_values)

    @property
    def gap_closed(self) -> float:
        """Share of the baseline-to-oracle gap closed by the held-out gain (NaN if no gap)."""
        gap = self.oracle_db - self.baseline_db
        gain = (self.heldout.gain_db if self.heldout is not None
                else self.final_tune_db - self.baseline_db)
        return float(gain / gap) if gap > 0 else float("nan")

    def stage_table(self) -> pd.DataFrame:
        """Per stage: tune gain of the final chain, pooled held-out gain, evaluations, time."""
        rows = []
        for i, rec in enumerate(self.final.records):
            held = float("nan")
            if self.fold_results:
                before = _pool(self.fold_results, i, self.folds.n_soundscapes)
                after = _pool(self.fold_results, i + 1, self.folds.n_soundscapes)
                held = dataset_mean(after) - dataset_mean(before)
            fold_evals = sum(f.records[i].n_settings for f in self.fold_results)
            fold_clips = sum(f.records[i].n_clip_evals for f in self.fold_results)
            fold_secs = sum(f.records[i].seconds for f in self.fold_results)
            rows.append({
                "stage": rec.stage, "engine": rec.engine,
                "tune_start_db": rec.start_score_db, "tune_end_db": rec.end_score_db,
                "tune_gain_db": rec.gain_db, "heldout_gain_db": held,
                "settings": rec.n_settings + fold_evals,
                "clip_evals": rec.n_clip_evals + fold_clips,
                "seconds": rec.seconds + fold_secs, "note": rec.note,
            })
        return pd.DataFrame(rows)

    def trials_table(self) -> pd.DataFrame:
        """Every trial / sweep move of every chain, one row each."""
        rows = []
        for chain in [*self.fold_results, self.final]:
            for rec in chain.records:
                rows.extend(rec.trials)
        df = pd.DataFrame(rows)
        if "class" in df:
            df["class"] = df["class"].astype("string")
        return df


def _pool(fold_results, step: int, S: int) -> np.ndarray:
    out = np.full(S, np.nan)
    for f in fold_results:
        out[f.heldout_idx] = f.heldout_values[step]
    return out


def search_problem(problem, x_start: np.ndarray, stage: str, n_sources: np.ndarray,
                   baseline_values: np.ndarray, oracle_values: np.ndarray, folds: int = 5,
                   settings: ChainSettings = ChainSettings(), jobs: int = 1, n_boot: int = 10_000,
                   problem_factory: Optional[Callable] = None,
                   on_stage: Optional[Callable[[StageRecord], None]] = None) -> SearchResult:
    """`run_search` on any `search.objective.Problem` (the cache-free core; see `run_search`)."""
    t0 = time.perf_counter()
    stages = stage_names(stage)
    split = stratified_folds(np.asarray(n_sources, dtype=np.int64), folds, settings.seed)
    fold_results, final = cross_validate(problem, x_start, stages, split, settings, jobs,
                                         problem_factory, on_stage)
    S = split.n_soundscapes
    X = np.stack([np.asarray(x_start, np.float64), final.x_end])
    start_values, final_values = problem.values(X)
    base = np.asarray(baseline_values, np.float64)
    warnings = []
    heldout, heldout_values = None, np.full(S, np.nan)
    if fold_results:
        heldout_values = _pool(fold_results, len(stages), S)
        heldout = paired_bootstrap(heldout_values, base, n_boot=n_boot, seed=settings.seed)
        tune_gains = [f.tune_end_db - dataset_mean(base[f.tune_idx]) for f in fold_results]
        tune_gain = float(np.mean(tune_gains))
        if heldout.ci_includes_zero:
            lo, hi = heldout.gain_ci_db
            warnings.append(
                f"WARNING: the held-out gain over baseline ({heldout.gain_db:+.3f} dB, 95% CI "
                f"[{lo:+.3f}, {hi:+.3f}]) includes zero: the tuned policy is not shown to beat "
                "the baseline on unseen soundscapes")
    else:
        tune_gain = dataset_mean(final_values) - dataset_mean(base)
        warnings.append("WARNING: --folds 1: no held-out validation; the gain shown is the "
                        "tune-set gain and is optimistic")
    return SearchResult(
        stages=stages, settings=settings, folds=split, problem=problem,
        x_start=np.asarray(x_start, np.float64), x_final=final.x_end, final=final,
        fold_results=fold_results, baseline_values=base,
        oracle_values=np.asarray(oracle_values, np.float64), start_values=start_values,
        final_values=final_values, heldout_values=heldout_values, heldout=heldout,
        tune_gain_db=tune_gain, seconds=time.perf_counter() - t0, warnings=warnings)


def run_search(cache=None, stage: str = "all", policy_in=None, folds: int = 5, trials: int = 64,
               margin: float = 0.05, storage: Optional[str] = None, study_name: str = "casdri",
               seed: int = 0, jobs: int = 1, sampler: str = "tpe", progress: bool = False,
               n_boot: int = 10_000, max_passes: int = 8,
               on_stage: Optional[Callable[[StageRecord], None]] = None,
               policy: str = "refine") -> SearchResult:
    """Tune a registered policy (default ``refine``) on a decision cache with held-out
    validation.

    Args:
        cache: cache directory, a loaded ``DecisionCache``, or None for the bundled demo cache.
        stage: one of ``fusion, verify, gates, per-class, select, refine`` or ``all``.
        policy_in: YAML file of ``refine`` parameters to start from (default: its defaults).
        folds: k of the stratified k-fold split (1: no held-out validation).
        trials: Optuna trials per joint stage and chain (per worker on a shared storage).
        margin: dB a per-class or coordinate move must gain to be kept (>= 0).
        storage: Optuna storage URL (see `search.engines.make_storage`), None in memory.
        study_name: prefix of the study names (``NAME.fold-0.fusion``, ``NAME.final.verify``).
        seed: seed of folds, samplers and the bootstrap.
        jobs: chains run in parallel processes.
        sampler: ``"tpe"`` or ``"cmaes"``.
        progress: tqdm bars on stderr.
        n_boot: bootstrap resamples.
        max_passes: refine passes at most.
        policy: the registered policy to tune (`casdri.policies.POLICIES`).

    Returns:
        `SearchResult` (write it with `search.report.write_outputs`).

    Raises:
        InputError: bad arguments (named); CacheError / CacheSchemaError from the cache.
    """
    from . import casdri_problem as cp

    if margin < 0 or not np.isfinite(margin):
        raise InputError(f"--margin must be a finite number >= 0 dB, got {margin}")
    if trials < 1:
        raise InputError(f"--trials must be >= 1, got {trials}")
    if jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {jobs}")
    stage_names(stage)
    path, dc = cp.open_cache(cache)
    problem = cp.CasdriProblem(dc, policy)
    if folds < 1 or folds > problem.n_soundscapes:
        raise InputError(
            f"--folds must be in 1..{problem.n_soundscapes} (soundscapes), got {folds}")
    x_start = problem.start_vector(policy_in)
    settings = ChainSettings(margin=float(margin), n_trials=int(trials), sampler=sampler,
                             seed=int(seed), storage=storage, study_name=study_name,
                             progress=progress, max_passes=int(max_passes))
    from .engines import make_sampler

    make_sampler(sampler, 0)  # fail early on a missing optional dependency
    factory = cp.ProblemFactory(path, policy) if (jobs > 1 and path is not None) else None
    result = search_problem(
        problem, x_start, stage, problem.n_sources(), problem.policy_values("baseline"),
        problem.policy_values("oracle"), folds, settings, jobs, n_boot, factory, on_stage)
    result.provenance = cp.provenance(problem, path, result, policy_in)
    return result


def summarize(result: SearchResult) -> list:
    """The printed result, one line each (the CLI prints these)."""
    lines = []
    h = result.heldout
    lines.append(f"baseline policy          : {result.baseline_db:8.3f} dB CAPI-SDRi "
                 f"({result.folds.n_soundscapes} soundscapes)")
    lines.append(f"start policy (untuned)   : {result.start_db:8.3f} dB (the stages start here)")
    if result.fold_results:
        tune = np.mean([f.tune_end_db for f in result.fold_results])
        lines.append(f"tuned, tune folds        : {tune:8.3f} dB (mean over {result.folds.k} "
                     f"folds; gain {result.tune_gain_db:+.3f} dB)")
        lines.append(f"tuned, held-out          : {h.tuned_db:8.3f} dB, 95% CI "
                     f"[{h.tuned_ci_db[0]:.3f}, {h.tuned_ci_db[1]:.3f}]")
        lines.append(f"held-out gain vs baseline: {h.gain_db:+8.3f} dB, 95% CI "
                     f"[{h.gain_ci_db[0]:+.3f}, {h.gain_ci_db[1]:+.3f}] (paired bootstrap, "
                     f"{h.n_boot} resamples)")
        lines.append(f"optimism (tune - held-out): {result.tune_gain_db - h.gain_db:+7.3f} dB")
    lines.append(f"final policy, all (tune) : {result.final_tune_db:8.3f} dB")
    lines.append(f"oracle labelling bound   : {result.oracle_db:8.3f} dB")
    lines.append(f"share of gap closed      : {100 * result.gap_closed:8.1f} %")
    lines.append("per-stage gains (final chain tune / pooled held-out, dB):")
    for _, r in result.stage_table().iterrows():
        held = "" if np.isnan(r.heldout_gain_db) else f" / {r.heldout_gain_db:+.3f}"
        note = f"  ({r.note})" if r.note else ""
        lines.append(f"  {r.stage:<10} {r.engine:<7} {r.tune_gain_db:+.3f}{held}  "
                     f"[{int(r.settings)} settings, {r.seconds:.1f} s]{note}")
    lines.extend(result.warnings)
    return lines
