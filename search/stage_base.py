"""What every stage shares: its context (`StageContext`) and its record (`StageRecord`).

A small base module: `search.stages` (the registry and the chain) and the ``stage_*`` modules
(the stages) both import it, so neither imports the other's internals (no import cycle).

Conventions:
    * A stage is a function ``(x, start_score_db, ctx) -> StageRecord`` that never ends below
      its start (the start is always a candidate).
    * Stages are seeded **by name** (`StageContext.stage_seed`): adding or reordering stages
      does not change the trials of another stage for the same ``--seed``.
"""
from __future__ import annotations

import os
import socket
import zlib
from dataclasses import dataclass, field

import numpy as np

from .acceptance import Acceptance, cluster_links, halves
from .objective import Objective
from .settings import SearchSettings

__all__ = ["StageContext", "StageRecord"]


def _word(text: str) -> int:
    return zlib.crc32(text.encode())


@dataclass
class StageContext:
    """One chain's view of the search: its tune objective, the settings, its label.

    Attributes:
        objective: the tune `Objective`.
        settings: the `search.settings.SearchSettings` of the search (read through the
            properties below).
        fold: label of the chain (``"r0.fold-0"``, ..., ``"final"``), used in study names
            and seeds.
        storage: the opened Optuna storage of this chain (None: in memory).
    """

    objective: Objective
    settings: SearchSettings = field(default_factory=SearchSettings)
    fold: str = "final"
    storage: object = None

    # read-only views of the settings the stages use (one truth: ``settings``)
    @property
    def margin(self) -> float:
        return self.settings.margin

    @property
    def n_trials(self) -> int:
        return self.settings.n_trials

    @property
    def sampler(self) -> str:
        return self.settings.sampler

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def study_name(self) -> str:
        return self.settings.study_name

    @property
    def progress(self) -> bool:
        return self.settings.progress

    @property
    def max_passes(self) -> int:
        return self.settings.max_passes

    @property
    def accept(self) -> str:
        return self.settings.accept

    @property
    def alpha(self) -> float:
        return self.settings.alpha

    @property
    def stage_alpha(self) -> float:
        return self.settings.stage_alpha

    @property
    def min_changed(self) -> int:
        return self.settings.min_changed

    def acceptance(self):
        """The chain's `search.acceptance.Acceptance`, bound to halves of its tune set (one
        split per chain, seeded by ``seed`` and ``fold``; built once) and, under the evidence
        rule, to the links between its tune soundscapes that share a source recording (or
        room: the problem's ``clusters(group_by)``, when it has them)."""
        key = (self.accept, self.alpha, self.stage_alpha, self.min_changed, self.margin,
               self.seed, self.fold, id(self.objective), self.objective.idx.shape[0],
               self.settings.group_by)
        cached = self.__dict__.get("_acceptance")
        if cached is None or cached[0] != key:
            parts = halves(self.objective.idx.shape[0], self.seed, self.fold)
            links, g, name = None, 0, "recording"
            clusters = getattr(self.objective.problem, "clusters", None)
            clusters = None if clusters is None else clusters(self.settings.group_by)
            if clusters is not None and self.accept == "evidence":
                name, ids = clusters
                links, g = cluster_links([ids[i] for i in self.objective.idx])
            cached = (key, Acceptance(self.accept, self.alpha, self.min_changed, self.margin,
                                      parts, self.stage_alpha, links, g, name))
            self.__dict__["_acceptance"] = cached
        return cached[1]

    def stage_seed(self, stage: str) -> int:
        """A seed per (seed, chain label, stage name), so chains and stages draw independent
        trials. A worker joining a shared study (``--resume``) also mixes in its host and
        process, so workers started with one ``--seed`` do not propose the same trials; a
        single fresh run is reproducible on every storage."""
        words = [self.seed, _word(self.fold), _word(stage)]
        if self.storage is not None and self.settings.resume:
            words.append(_word(f"{socket.gethostname()}:{os.getpid()}"))
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
