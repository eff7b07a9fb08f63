"""The search stages, their registry and the chain that runs them in order.

Conventions:
    * Every stage maps a start setting ``x`` (encoded ``refine`` parameters) to a setting whose
      tune score is **never lower** (the start is always a candidate) and records a
      `StageRecord`.
    * Order of the chain (``--stage all``): ``fusion`` → ``verify`` → ``gates`` → ``per-class``
      → ``select`` → ``refine``; each starts from the best setting of the stages before it.
    * Stage parameters are looked up by name in the problem; a name the policy does not have is
      skipped (a stage with none left is a no-op, recorded as such).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from casdri.errors import InputError

from .objective import Objective

__all__ = ["STAGES", "STAGE_ORDER", "StageContext", "StageRecord", "run_stage",
           "run_chain", "stage_names"]

STAGE_ORDER = ("fusion", "verify", "gates", "per-class", "select", "refine")


@dataclass
class StageContext:
    """Settings shared by the stages of one chain (one CV fold, or the final tuning).

    Attributes:
        objective: the tune `Objective`.
        margin: dB a per-class or coordinate move must gain to be kept.
        n_trials, sampler, seed, storage, study_name: Optuna settings of the joint stages.
        fold: label of the chain (``"fold-0"``, ..., ``"final"``), used in study names.
        progress: tqdm bars on stderr.
        max_passes: coordinate-descent passes of ``refine`` at most.
        accept, alpha, stage_alpha, min_changed: the acceptance rule of every move and joint
            stage (`search.acceptance`: ``"evidence"``, the default, or ``"margin"``), its
            test levels (a coordinate move, a joint stage's result) and the soundscapes that
            must change.
    """

    objective: Objective
    margin: float = 0.05
    n_trials: int = 64
    sampler: str = "tpe"
    seed: int = 0
    storage: object = None
    study_name: str = "casdri"
    fold: str = "final"
    progress: bool = False
    max_passes: int = 8
    # ---- acceptance (search.acceptance); one rule for every stage of the chain
    accept: str = "evidence"
    alpha: float = 0.01
    stage_alpha: float = 0.05
    min_changed: int = 5

    def acceptance(self):
        """The chain's `search.acceptance.Acceptance`, bound to halves of its tune set (one
        split per chain, seeded by ``seed`` and ``fold``; built once)."""
        from .acceptance import Acceptance, halves

        key = (self.accept, self.alpha, self.stage_alpha, self.min_changed, self.margin,
               self.seed, self.fold, id(self.objective), self.objective.idx.shape[0])
        cached = self.__dict__.get("_acceptance")
        if cached is None or cached[0] != key:
            parts = halves(self.objective.idx.shape[0], self.seed, self.fold)
            cached = (key, Acceptance(self.accept, self.alpha, self.min_changed, self.margin,
                                      parts, self.stage_alpha))
            self.__dict__["_acceptance"] = cached
        return cached[1]

    def stage_seed(self, stage: str) -> int:
        """A seed per (seed, fold, stage), so folds and stages draw independent trials; on a
        shared storage also per worker (host and process), so workers started with one
        ``--seed`` (hence one fold split) do not propose the same trials."""
        words = [self.seed, sum(map(ord, self.fold)) + 7919 * len(self.fold),
                 STAGE_ORDER.index(stage)]
        if self.storage is not None:
            import os
            import socket
            import zlib

            words.append(zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()))
        return int(np.random.SeedSequence(words).generate_state(1)[0])


@dataclass
class StageRecord:
    """What one stage did.

    Attributes:
        stage, fold: names; engine: ``"tpe"``, ``"cmaes"``, ``"sweep"``, ``"choices"``,
            ``"none"``.
        start_score_db, end_score_db: tune scores before and after.
        x_start, x_end: encoded settings before and after.
        n_settings, n_clip_evals: settings scored, soundscape-settings replayed.
        seconds: wall time.
        trials: rows for the trials table (dicts).
        moves: `search.moves.Move` objects of sweep stages (for the report's plots).
        note: why a stage did nothing, if it did nothing.
        evidence: the `search.acceptance.Evidence` that kept or dropped a joint stage's result.
    """

    stage: str
    fold: str
    engine: str
    start_score_db: float
    end_score_db: float
    x_start: np.ndarray
    x_end: np.ndarray
    n_settings: int = 0
    n_clip_evals: int = 0
    seconds: float = 0.0
    trials: list = field(default_factory=list)
    moves: list = field(default_factory=list)
    note: str = ""
    evidence: object = None

    @property
    def gain_db(self) -> float:
        return self.end_score_db - self.start_score_db


def _registry() -> dict:
    from .stage_joint import run_fusion, run_gates, run_select, run_verify
    from .stage_per_class import run_per_class
    from .stage_refine import run_refine

    return {"fusion": run_fusion, "verify": run_verify, "gates": run_gates,
            "per-class": run_per_class, "select": run_select, "refine": run_refine}


STAGES: tuple = STAGE_ORDER


def stage_names(stage: str) -> tuple:
    """The stages ``--stage`` runs: one name, or the whole chain for ``"all"``."""
    if stage == "all":
        return STAGE_ORDER
    if stage not in STAGE_ORDER:
        raise InputError(f"unknown stage {stage!r}; expected one of {', '.join(STAGE_ORDER)}, all")
    return (stage,)


def run_stage(stage: str, x: np.ndarray, ctx: StageContext) -> StageRecord:
    """Run one stage from setting ``x``; returns its `StageRecord` (``x_end`` is the result)."""
    fn: Callable = _registry()[stage]
    obj = ctx.objective
    n0, c0, t0 = obj.n_settings, obj.n_clip_evals, time.perf_counter()
    x = np.array(x, dtype=np.float64)
    start = obj.score(x)
    rec: StageRecord = fn(x, start, ctx)
    if not rec.end_score_db >= rec.start_score_db - 1e-12 and np.isfinite(start):
        raise RuntimeError(f"stage {stage} ended below its start ({rec.end_score_db} < {start})")
    rec.n_settings = obj.n_settings - n0
    rec.n_clip_evals = obj.n_clip_evals - c0
    rec.seconds = time.perf_counter() - t0
    return rec


def run_chain(stages, x: np.ndarray, ctx: StageContext,
              on_stage: Optional[Callable[[StageRecord], None]] = None) -> list:
    """Run ``stages`` in order, each from the previous one's result; returns the records."""
    records = []
    for stage in stages:
        rec = run_stage(stage, x, ctx)
        records.append(rec)
        x = rec.x_end
        if on_stage is not None:
            on_stage(rec)
    return records
