"""`SearchSettings`: the one settings object of a search, from the CLI flags to the stages.

Conventions:
    * Every run setting is spelled once, here: ``casdri-search`` builds a `SearchSettings` from
      its flags, `search.run.run_search` takes one (or its fields as keywords), each chain
      passes it to its `search.stage_base.StageContext`, and the stages read it there.
    * ``stage`` is one stage name, ``"all"`` (the whole chain) or ``"auto"`` (the stages of
      ``auto_stages`` to keep, and one of ``auto_variants``, chosen by an inner
      cross-validation of each tune set, `search.nested`).
    * `validate` raises `casdri.errors.InputError` naming the flag and the fix; it runs once,
      at the boundary (`run_search`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Optional, Union

from casdri._cli import lazy_import
from casdri.errors import InputError

__all__ = ["SearchSettings", "STAGE_ORDER", "AUTO_STAGES", "stage_names"]

STAGE_ORDER = ("fusion", "verify", "gates", "per-class", "select", "refine")
#: the stages ``--stage auto`` chooses from by default: the joint, low-dimensional ones.
#: ``per-class`` and ``refine`` move one class at a time (many parameters, large optimism on
#: dev-sized caches, and 10x the cost); add them with ``--auto-stages``.
AUTO_STAGES = ("fusion", "verify", "gates", "select")


def stage_names(stage: str) -> tuple:
    """The stages ``--stage`` runs: one name, or the whole chain for ``"all"``.

    Raises:
        InputError: an unknown name (``"auto"`` is resolved by `search.nested`, not here).
    """
    if stage == "all":
        return STAGE_ORDER
    if stage not in STAGE_ORDER:
        raise InputError(f"unknown stage {stage!r}; expected one of {', '.join(STAGE_ORDER)}, "
                         "all, auto")
    return (stage,)


#: seconds an idle chain worker waits for work before it exits (`worker_pool`)
WORKER_IDLE_S = 120


def worker_pool(n_workers: int):
    """The search's worker processes (``n_workers >= 1``): joblib's reusable loky executor,
    the one `search._prestart` starts and `search.cv` and `search.report` then use (one call,
    the same arguments, or loky would rebuild it). Made by joblib's own factory
    (``joblib.executor.get_memmapping_executor``), so that a later ``joblib.Parallel`` in the
    same process (a notebook generating soundscapes after a search) can replace it: one made
    by loky's ``get_reusable_executor`` lacks what joblib adds, and that ``Parallel`` failed
    with ``AttributeError: ... '_temp_folder_manager'``. Arrays travel pickled, as with loky
    (``max_nbytes=None``: joblib would otherwise hand a worker arrays over 1 MB as read-only
    memory maps, in files kept until the process exits), and no shared-memory folder is made
    (``temp_folder``: the system's temporary folder, used only if something is written)."""
    return lazy_import("joblib.executor").get_memmapping_executor(
        n_workers, timeout=WORKER_IDLE_S, max_nbytes=None,
        temp_folder=lazy_import("tempfile").gettempdir())


@dataclass(frozen=True)
class SearchSettings:
    """Every setting of one search (units: dB, counts, seconds never).

    Attributes:
        policy: the registered policy to tune (`casdri.policies.POLICIES`).
        stage: ``"auto"``, ``"all"`` or one of `STAGE_ORDER`.
        folds: k of the outer k-fold split (1: no held-out validation).
        repeats: the k-fold split is repeated with seeds ``seed .. seed + repeats - 1``; the
            held-out gain is reported as the mean and spread over repeats.
        inner_folds: k of the inner split `--stage auto` selects its stages with.
        auto_stages: the stages `--stage auto` may keep, in chain order.
        auto_variants: settings overrides `--stage auto` chooses among (dicts of fields of
            this class, e.g. ``({}, {"margin": 0.1})``; ``{}``: as given), simplest first.
        auto_min_se: a stage is kept by `--stage auto` when its inner held-out gain exceeds
            this many standard errors (1: the one-standard-error rule; 0: any gain).
        group_by: soundscape grouping of the folds: ``"recording"``, ``"room"``, a column
            of the cache's soundscapes table, ``"none"``, or ``"auto"`` (the recordings when
            the cache has them, else its rooms, else none; see `search.run.cache_groups`).
            The evidence rule's paired test is clustered by the same source (the recordings
            or rooms; not a column) when the problem has them (`search.acceptance`, rule 5).
        n_trials: Optuna trials per joint stage and chain.
        margin: dB a per-class or coordinate move must gain to be kept (>= 0).
        sampler: ``"tpe"`` or ``"cmaes"``.
        seed: seed of folds, samplers and bootstrap (>= 0).
        storage: Optuna storage URL or None (in memory); study_name: prefix of the studies.
        resume: add trials to existing studies of ``study_name`` in ``storage`` (else refused).
        jobs: processes the chains run in (this one and ``jobs - 1`` workers), or ``"auto"``
            (`auto_jobs`: the usable cores when a chain tunes more than one stage, else 1).
        n_boot: bootstrap resamples; max_passes: refine passes at most.
        progress: status lines and tqdm bars on stderr.
        accept, alpha, stage_alpha, min_changed: the acceptance rule of every move and joint
            stage (`search.acceptance`: ``"evidence"``, the default, or ``"margin"``), its
            test levels (a coordinate move, a joint stage's result) and the soundscapes that
            must change.
    """

    policy: str = "refine"
    #: the default generalises best on the demo cache (seeds 0-4, 5 folds: mean held-out gain
    #: over baseline +0.445 dB for "all", +0.369 for "gates", +0.291 for "auto")
    stage: str = "all"
    folds: int = 5
    repeats: int = 1
    inner_folds: int = 3
    auto_stages: tuple = AUTO_STAGES
    auto_variants: tuple = ({},)
    auto_min_se: float = 1.0
    group_by: Optional[str] = "auto"
    n_trials: int = 64
    margin: float = 0.05
    sampler: str = "tpe"
    seed: int = 0
    storage: Optional[str] = None
    study_name: str = "casdri"
    resume: bool = False
    jobs: Union[int, str] = 1
    n_boot: int = 10_000
    max_passes: int = 8
    progress: bool = False
    # ---- acceptance (search.acceptance); one rule for every stage of a chain
    accept: str = "evidence"
    alpha: float = 0.01
    stage_alpha: float = 0.05
    min_changed: int = 5

    def with_(self, **changes) -> "SearchSettings":
        """A copy with ``changes`` (``trials`` is accepted for ``n_trials``).

        Raises:
            InputError: an unknown setting (named).
        """
        if "trials" in changes:
            changes["n_trials"] = changes.pop("trials")
        known = {f.name for f in fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise InputError(f"unknown search setting(s) {bad}; expected {sorted(known)}")
        return replace(self, **changes)

    @property
    def chains(self) -> tuple:
        """The fixed chain of ``stage`` as a 1-tuple (``auto``: the pool it selects from)."""
        if self.stage == "auto":
            return (tuple(self.auto_stages),)
        return (stage_names(self.stage),)

    @property
    def n_chains(self) -> int:
        """Chains a search runs: ``repeats * folds`` fold chains and the final one (only the
        final one with ``folds = 1``)."""
        return self.repeats * self.folds + 1 if self.folds > 1 else 1

    def auto_jobs(self, cores: Optional[int] = None) -> int:
        """The processes ``jobs="auto"`` runs the chains in: the usable cores (at most 8, as
        `casdri.scoring.default_jobs`, and at most one per chain) when a chain tunes more than
        one stage, else 1 (an integer ``jobs`` as it is).

        Why: a worker costs about 2 s to start (imports, the cache, the kernels), more than
        a one-stage chain. Measured on the demo cache, 2 cores: ``--stage gates`` 3.7–4.2 s
        with 1 job against 6.2 s with 2; the default chain (``all``) 9.2–10.2 s against
        8.0–8.2 s; at 1,512 soundscapes (`benchmarks/bench_search.py`) 7.7–9.7 s against
        6.8–7.0 s. The result does not depend on it (`search.cv`).

        Args:
            cores: usable cores (default: `casdri.scoring.default_jobs`).
        """
        if self.jobs != "auto":
            return int(self.jobs)
        if cores is None:
            cores = lazy_import("casdri.scoring").default_jobs()
        one_stage = len(self.chains[0]) < 2 and self.stage != "auto"
        return 1 if one_stage else max(1, min(int(cores), self.n_chains))

    def n_workers(self, cores: Optional[int] = None) -> int:
        """Worker processes beside this one: `auto_jobs`, at most one process per chain
        (`n_chains`), less this process (0: the chains run here alone)."""
        return max(0, min(self.auto_jobs(cores), self.n_chains) - 1)

    def validate(self) -> "SearchSettings":
        """Check every field; returns self.

        Raises:
            InputError: the first bad setting, named with its flag.
        """
        def whole(name, v, low):
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise InputError(f"--{name.replace('_', '-')} must be an integer >= {low}, "
                                 f"got {v!r}")

        whole("folds", self.folds, 1)
        whole("repeats", self.repeats, 1)
        whole("inner_folds", self.inner_folds, 2)
        whole("trials", self.n_trials, 1)
        if isinstance(self.jobs, str) and self.jobs != "auto":
            raise InputError(f"--jobs must be an integer >= 1 or auto, got {self.jobs!r}")
        if self.jobs != "auto":
            whole("jobs", self.jobs, 1)
        whole("seed", self.seed, 0)
        whole("n_boot", self.n_boot, 1)
        whole("max_passes", self.max_passes, 1)
        if not (isinstance(self.margin, (int, float)) and math.isfinite(self.margin)
                and self.margin >= 0):
            raise InputError(f"--margin must be a finite number >= 0 dB, got {self.margin}")
        if self.sampler not in ("tpe", "cmaes"):
            raise InputError(f"--sampler {self.sampler!r}: expected tpe or cmaes")
        if self.resume and not self.storage:  # was ignored: a fresh search in memory
            raise InputError("--resume adds trials to studies in a --storage; give the "
                             "--storage URL of the shared study (or drop --resume)")
        if self.stage != "auto":
            stage_names(self.stage)
        for s in self.auto_stages:
            stage_names(s)
        if not self.auto_variants:
            raise InputError("--stage auto needs at least one variant (auto_variants=({},))")
        known = {f.name for f in fields(self)}
        for v in self.auto_variants:
            bad = sorted(set(v) - known)
            if bad:
                raise InputError(f"auto_variants: unknown setting(s) {bad}")
        if not (isinstance(self.auto_min_se, (int, float)) and self.auto_min_se >= 0):
            raise InputError(f"auto_min_se must be a number >= 0, got {self.auto_min_se!r}")
        if not self.study_name:
            raise InputError("--study-name must not be empty")
        return self
