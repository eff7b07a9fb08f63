"""Optuna plumbing for the joint stages: storages, samplers and a batched ask/tell loop.

Conventions:
    * A study maximises the dataset CAPI-SDRi (dB) on the tune soundscapes.
    * Storage URLs: ``None`` (in memory), ``sqlite:///file.db``, ``postgresql://...`` (any
      SQLAlchemy URL Optuna's ``RDBStorage`` takes), ``journal:///abs/path.log`` or a plain
      path ending in ``.log`` (``JournalStorage(JournalFileBackend(path))``, safe on a shared
      file system). Workers on several machines share a study by passing the same storage and
      study name; each worker adds its own ``n_trials``. A sqlite file runs in WAL mode
      (a local disk; on a shared file system use a journal file or PostgreSQL).
    * The stage's start setting is enqueued once per study (``skip_if_exists``) and counts as
      one of the requested trials, so a stage never ends below its start and the total number
      of trials of a shared study is the sum of what its workers requested.
    * Reproducible: the sampler is seeded and trials are asked in a fixed order (a batch of
      ``batch_size`` asks, one batch replay, then the tells), so the same seed gives the same
      trials. A single worker runs its study in memory and copies it into the storage at the
      end (``live=False``: same result on every storage; an RDB storage gets every trial in
      one transaction, a journal one log line per trial); workers of a
      shared study (``--resume``) ask and tell through the storage and interleave, so their
      results are not reproducible.
"""
from __future__ import annotations

import importlib.util
import json
import math
import sqlite3
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import optuna
from optuna.distributions import distribution_to_json
from optuna.storages.journal import JournalFileBackend
from tqdm.auto import tqdm

from casdri._cli import lazy_import
from casdri.errors import InputError

from .objective import Param

__all__ = [
    "BatchTPESampler", "distribution", "JointResult", "SAMPLERS", "make_storage", "rdb_url",
    "open_storage", "close_storage",
    "dashboard_target", "make_sampler", "optimize_joint", "study_knobs",
]

SAMPLERS = ("tpe", "cmaes")
_STORAGE_FORMS = ("sqlite:///FILE.db, postgresql://USER@HOST:PORT/DB, journal:///PATH.log or "
                  "a PATH.log")
_FAILED_SCORE = -1e9  # told for a setting whose every clip is None (keeps every trial COMPLETE)


def distribution(param: Param) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution of a `search.objective.Param` (its encoded values, floats).

    A categorical param is a `CategoricalDistribution` over its ``choices``; an integer one
    a `CategoricalDistribution` over ``low, low + 1, ..., high``; a numeric one a
    `FloatDistribution` over ``[low, high]`` (its ``off`` value is not sampled).

    Example:
        >>> distribution(Param("k", np.array([0]), 1.0, 3.0, integer=True)).choices
        (1.0, 2.0, 3.0)
    """
    if param.categorical:
        return optuna.distributions.CategoricalDistribution([float(c) for c in param.choices])
    if param.integer:
        return optuna.distributions.CategoricalDistribution(
            [float(v) for v in range(int(param.low), int(param.high) + 1)])
    return optuna.distributions.FloatDistribution(float(param.low), float(param.high))


@dataclass
class JointResult:
    """Outcome of one Optuna stage.

    Attributes:
        best: ``{name: value}`` of the best trial (the start setting if nothing beat it).
        best_score_db: its score; start_score_db: the start setting's score.
        n_trials: trials this call ran; n_evaluations: soundscape-settings replayed.
        study_name: the study's name; trials: ``[(number, params, value, state)]`` of the study.
    """

    best: dict
    best_score_db: float
    start_score_db: float
    n_trials: int
    n_evaluations: int
    study_name: str
    trials: list = field(default_factory=list)
    seconds: float = 0.0


def rdb_url(url: str) -> str:
    """``url`` with an explicit PostgreSQL driver when the default one is missing.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to the ``psycopg`` (3) driver; casdri's test
    extra installs ``psycopg2-binary``, so a bare URL becomes ``postgresql+psycopg2://`` when
    only psycopg2 is importable. Other URLs are returned unchanged.

    Example:
        >>> rdb_url("sqlite:///x.db")
        'sqlite:///x.db'
    """
    if not url.startswith("postgresql://"):
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def dashboard_target(storage: str) -> str:
    """What to pass to ``optuna-dashboard`` to open a ``--storage`` (a journal file path or
    the database URL).

    Example:
        >>> dashboard_target("journal:///shared/study.log")
        '/shared/study.log'
    """
    return storage[len("journal://"):] if storage.startswith("journal://") else rdb_url(storage)


def make_storage(url: Optional[str]):
    """Optuna storage for ``url`` (see module conventions); ``None`` is in memory.

    Raises:
        InputError: a URL of no known kind (names it and lists the accepted forms).
    """
    if url is None or url == "" or url == ":memory:":
        return None
    text = str(url)
    if text.startswith("journal://") or text.endswith(".log"):
        path = text[len("journal://"):] if text.startswith("journal://") else text
        if not path:
            raise InputError(f"--storage {url!r}: journal URL without a file path")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _check_journal(Path(path))
        try:  # replays the log: a line of no known operation fails
            storage = optuna.storages.JournalStorage(JournalFileBackend(path))
            storage.get_all_studies()
        except (KeyError, ValueError, TypeError, AssertionError) as exc:
            raise InputError(_journal_fix(
                path, f"its operations do not replay ({type(exc).__name__}: {exc})")) from None
        return storage
    if "://" in text:
        sa_exc = lazy_import("sqlalchemy.exc")  # 0.2 s to import: only RDB storages need it
        for attempt in range(5):  # concurrent first-time schema creation can race on servers
            try:
                kwargs = {"pool_pre_ping": True}
                if text.startswith("sqlite"):  # concurrent workers: wait for the file lock
                    kwargs["connect_args"] = {"timeout": 120}
                storage = optuna.storages.RDBStorage(rdb_url(text), engine_kwargs=kwargs,
                                                     heartbeat_interval=None)
                if text.startswith("sqlite"):
                    _sqlite_wal(storage.engine)
                return storage
            except Exception as exc:  # sqlalchemy / alembic errors of a racing worker
                if attempt == 4 or isinstance(
                        exc, (sa_exc.ArgumentError, sa_exc.NoSuchModuleError)):
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                    raise InputError(f"--storage {url!r}: cannot open ({first}); expected "
                                     f"{_STORAGE_FORMS}") from exc
                time.sleep(0.2 * (attempt + 1))
    raise InputError(f"--storage {url!r}: expected {_STORAGE_FORMS}")


def _journal_fix(path, what: str) -> str:
    return (f"--storage {path}: the Optuna journal file is corrupt: {what}; move it aside "
            "(or delete it) and start the study again, or pass another --storage")


def _check_journal(path: Path) -> None:
    """Refuse a journal file with a line that is not a JSON object (a crash, a disk full or a
    hand edit): Optuna raises a bare ``JSONDecodeError`` naming no file on every later read,
    so every rerun failed. A last line without its newline is a write in progress by another
    worker (Optuna skips it) and is left alone.

    Raises:
        InputError: naming the file, the line and the remedy.
    """
    if not path.is_file():
        return
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                break  # another worker's write in progress
            try:
                ok = isinstance(json.loads(line), dict)
            except ValueError:  # JSONDecodeError, UnicodeDecodeError
                ok = False
            if not ok:
                raise InputError(_journal_fix(path, f"line {number} is not a JSON object "
                                              f"({line[:40]!r})"))


def _sqlite_wal(engine) -> None:
    """Write-ahead log for a sqlite storage (set once; it stays in the file) and
    ``synchronous=NORMAL`` on every connection of a WAL file: a commit no longer waits for a
    full sync (a crash of the process loses nothing committed; the file stays consistent),
    about 3x faster bookkeeping. A file another worker holds keeps its mode (both correct).

    Every transaction also begins with ``BEGIN IMMEDIATE`` (SQLAlchemy's recipe for pysqlite,
    whose driver otherwise begins a transaction only at the first write): a read-then-write
    such as Optuna's "take the waiting trial if it still waits" is then atomic across
    workers. Without it two workers of a shared study could both take the enqueued start
    trial, and the second one's tell failed ("Cannot tell a COMPLETE trial")."""
    sqlalchemy = lazy_import("sqlalchemy")

    def on_connect(conn, _record):
        conn.isolation_level = None  # the driver emits no BEGIN; on_begin does
        cur = conn.cursor()
        mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            try:
                mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            except sqlite3.OperationalError:  # locked by another worker: keep its mode
                pass
        if str(mode).lower() == "wal":
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    def on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    sqlalchemy.event.listen(engine, "connect", on_connect)
    sqlalchemy.event.listen(engine, "begin", on_begin)
    engine.dispose()  # connections opened before the listener get it on reconnect


class BatchTPESampler(optuna.samplers.TPESampler):
    """Optuna's ``TPESampler`` for batches of asks: estimators reused and evaluated vectorised.

    `optimize_joint` asks a batch of trials before it tells any. Every ask of a batch sees the
    same finished trials, so Optuna rebuilds the same "below" estimator for each; the "above"
    one also holds the batch's running trials and changes with every ask. Here the last
    estimator of each kind is kept, keyed by its trials' numbers and the search space, and
    reused while they are the same (building one draws no random numbers). On the Optuna
    versions it follows (`search.parzen.optuna_supported`) the estimators are
    `search.parzen.VectorParzenEstimator`: Optuna's kernels, evaluated with SciPy instead of
    one Python call per element (that was 40 % of a ``--stage gates`` search). The trials
    equal the plain sampler's to rounding (1e-9; tested): the same draws, the same rule. On
    other versions Optuna's own estimator is used, and the trials are the plain sampler's.

    Two bookkeeping costs of every ask are also gone on those versions, with the same result
    by construction: the search space is Optuna's intersection over the trials, without the
    deep copy Optuna returns it in (`_SharedIntersection`), and a finished trial's parameters
    are converted to Optuna's internal values once, not on every estimator build (a finished
    trial never changes; running ones are read afresh, as Optuna does).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        vector = _vector_estimator()
        self._followed = vector is not None  # Optuna's private modules are the ones we read
        if self._followed:
            self._parzen_estimator_cls = vector
            self._search_space = _SharedIntersection(include_pruned=True)
        self._last: dict = {}  # handle_below -> (key, estimator)
        self._finished: dict = {}  # "space": (study, search space); trial number: its row

    def _get_internal_repr(self, trials, search_space, *study):
        """Optuna's ``_get_internal_repr`` (the same arrays), a finished trial's row kept.
        ``study`` is passed where Optuna passes it (5.x; 4.5-4.7 do not)."""
        if not self._followed:
            return super()._get_internal_repr(trials, search_space, *study)
        names = tuple(search_space)
        owner = (id(study[0]._storage), study[0]._study_id) if study else ()
        space = (owner, tuple(search_space.items()))
        if self._finished.get("space") != space:  # one study and space per sampler in practice
            self._finished = {"space": space}
        rows = []
        for trial in trials:
            finished = trial.state.is_finished()
            row = self._finished.get(trial.number) if finished else None
            if row is None:
                params = self._get_params(trial, *study)
                row = (tuple(search_space[n].to_internal_repr(params[n]) for n in names)
                       if search_space.keys() <= params.keys() else ())
                if finished:
                    self._finished[trial.number] = row
            if row:
                rows.append(row)
        columns = zip(*rows) if rows else (() for _ in names)
        return {n: np.asarray(list(col)) for n, col in zip(names, columns)}

    def _build_parzen_estimator(self, study, search_space, trials, handle_below=False):
        key = (id(study._storage), study._study_id, tuple(search_space.items()),
               tuple(t.number for t in trials))
        kept = self._last.get(bool(handle_below))
        if kept is not None and kept[0] == key:
            return kept[1]
        est = super()._build_parzen_estimator(study, search_space, trials, handle_below)
        self._last[bool(handle_below)] = (key, est)
        return est


@contextmanager
def open_storage(url: Optional[str]):
    """`make_storage` (``url``) for a ``with`` block: an RDB storage's connections are closed
    when the block ends (`close_storage`); None stays None."""
    storage = make_storage(url)
    try:
        yield storage
    finally:
        close_storage(storage)


def close_storage(storage) -> None:
    """Close an RDB storage's session and pooled connections (SQLite then folds its
    write-ahead log into the ``.db`` file, so the file alone holds every trial); other
    storages hold nothing open between operations."""
    if isinstance(storage, optuna.storages.RDBStorage):
        storage.remove_session()
        storage.engine.dispose()


class _SharedIntersection(optuna.search_space.IntersectionSearchSpace):
    """Optuna's ``IntersectionSearchSpace`` (the same incremental rule, Optuna's own
    ``_calculate``), returning its cached distributions in a new sorted dict instead of a deep
    copy: the TPE sampler only reads them. Used where `_vector_estimator` is (Optuna 4.5-5.x)."""

    def calculate(self, study, use_cache=False):
        _calculate = lazy_import("optuna.search_space.intersection")._calculate
        if self._study_id is None:
            self._study_id = study._study_id
        elif self._study_id != study._study_id:
            raise ValueError("`IntersectionSearchSpace` cannot handle multiple studies.")
        self._search_space, self._cached_trial_number = _calculate(
            study._get_trials(deepcopy=False, use_cache=use_cache), self._include_pruned,
            self._search_space, self._cached_trial_number)
        return dict(sorted((self._search_space or {}).items(), key=lambda x: x[0]))


def _teller() -> Callable:
    """``tell(study, trial, value)``: Optuna's ``Study.tell`` without the deep copy of the
    finished trial that it returns (unused here), on the Optuna versions `search.parzen`
    follows; ``Study.tell`` itself on others."""
    if _vector_estimator() is None:
        return lambda study, trial, value: study.tell(trial, value)
    _tell_with_warning = lazy_import("optuna.study._tell")._tell_with_warning
    return lambda study, trial, value: _tell_with_warning(
        study=study, trial=trial, value_or_values=value)


def _vector_estimator():
    """`search.parzen.VectorParzenEstimator` where this Optuna is one it follows
    (`search.parzen.optuna_supported`), else None: Optuna's own estimator (slower, the same
    rule)."""
    try:
        parzen = importlib.import_module("search.parzen")
    except ImportError:  # Optuna's private estimator modules moved
        return None
    return parzen.VectorParzenEstimator if parzen.optuna_supported() else None


def make_sampler(name: str, seed: int, n_startup_trials: int = 10):
    """Seeded Optuna sampler: ``"tpe"`` (multivariate TPE, as `BatchTPESampler`) or ``"cmaes"``
    (needs ``cmaes``).

    Raises:
        InputError: unknown name, or ``cmaes`` without the ``cmaes`` package.
    """
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return BatchTPESampler(
                seed=seed, multivariate=True, n_startup_trials=n_startup_trials)
    if name == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise InputError(
                "--sampler cmaes needs the 'cmaes' package: python -m pip install cmaes")
        return optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=0, warn_independent_sampling=False,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed))
    raise InputError(f"--sampler {name!r}: expected one of {', '.join(SAMPLERS)}")


def study_knobs(study: optuna.Study) -> dict:
    """``{param name: distribution}`` over every trial of a study (the search space it saw)."""
    space: dict = {}
    for t in study.get_trials(deepcopy=False):
        space.update(t.distributions)
    return space


def optimize_joint(
    score_batch: Callable[[Sequence[dict]], np.ndarray],
    params: Sequence[Param],
    start: dict,
    n_trials: int,
    sampler: str = "tpe",
    seed: int = 0,
    storage=None,
    study_name: str = "casdri",
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "",
    study_attrs: Optional[dict] = None,
    n_recheck: int = 5,
    live: bool = True,
) -> JointResult:
    """Maximise ``score_batch`` over ``params`` with Optuna, starting from ``start``.

    Args:
        score_batch: maps a list of ``{name: value}`` dicts to ``(n,)`` dataset scores (one
            batch replay).
        params: the parameters this stage tunes (`search.objective.Param`; each becomes
            `distribution` ``(param)``).
        start: ``{name: value}`` of the current policy (enqueued once, counts as a trial).
        n_trials: trials this worker runs (>= 1).
        sampler: ``"tpe"`` or ``"cmaes"``; seed: its seed.
        storage: an Optuna storage (see `make_storage`) or ``None``.
        study_name: shared between workers of one study.
        batch_size: asks per batch replay.
        progress: show a tqdm bar on stderr.
        study_attrs: ``{key: value}`` every worker of a shared study must agree on (e.g. a
            digest of the tune soundscapes); the first worker stores them.
        n_recheck: the best trials of the study are re-scored here before one is taken (on a
            shared study, other workers' trials may come from another start setting).
        live: ask and tell through ``storage`` trial by trial (workers sharing a study see
            each other's trials). ``False`` (a single worker): the study runs in memory and its
            trials are copied into ``storage`` at the end in one go, so the result equals the
            in-memory run and the bookkeeping is one transaction (RDB) or one log line per
            trial (journal), not ten queries per trial.

    Returns:
        `JointResult`; ``best`` is the start unless a trial scores strictly higher here.

    Raises:
        InputError: ``n_trials < 1``, or a shared study whose ``study_attrs`` differ (a worker
            with another cache, seed or number of folds).
    """
    if n_trials < 1:
        raise InputError(f"--trials must be >= 1, got {n_trials}")
    t0 = time.perf_counter()
    dists = {p.name: distribution(p) for p in params}
    start = {p.name: _clip(p.name, dists[p.name], start[p.name]) for p in params}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    target = storage
    storage = storage if live else None
    study = optuna.create_study(
        storage=storage, sampler=make_sampler(sampler, seed, min(10, max(1, n_trials // 4))),
        study_name=study_name, direction="maximize", load_if_exists=True)
    for key, value in (study_attrs or {}).items():
        have = study.user_attrs.get(key)
        if have is None:
            study.set_user_attr(key, value)
        elif have != value:
            raise InputError(
                f"study {study_name!r}: {key} {have!r} of the shared study != this worker's "
                f"{value!r}; every worker needs the same cache, --seed and --folds")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        study.enqueue_trial(start, skip_if_exists=True)
    start_score = float(np.asarray(score_batch([start]), dtype=np.float64)[0])
    n_eval = 1
    done = 0
    bar = tqdm(total=n_trials, desc=desc or study_name, disable=not progress, leave=False)
    tell = _teller()
    while done < n_trials:
        k = min(batch_size, n_trials - done)
        trials = [study.ask(dists) for _ in range(k)]
        params = [{name: p[name] for name in dists} for p in (t.params for t in trials)]
        scores = np.asarray(score_batch(params), dtype=np.float64)
        n_eval += k
        for t, s in zip(trials, scores):
            tell(study, t, float(s) if math.isfinite(s) else _FAILED_SCORE)
        done += k
        bar.update(k)
    bar.close()
    best, best_score = dict(start), start_score
    done_trials = [t for t in study.get_trials(deepcopy=False,
                                               states=(optuna.trial.TrialState.COMPLETE,))
                   if t.value is not None and set(dists) <= set(t.params)]
    done_trials.sort(key=lambda t: (-t.value, t.number))  # ties: the earlier trial
    top = [{n: t.params[n] for n in dists} for t in done_trials[:max(1, n_recheck)]]
    if top:
        local = np.asarray(score_batch(top), dtype=np.float64)
        n_eval += len(top)
        for params, value in zip(top, local):
            if math.isfinite(value) and value > best_score:
                best, best_score = params, float(value)
    if target is not None and not live:
        _copy_study(study, target, study_name, study_attrs or {})
    trials = [(t.number, dict(t.params), t.value, t.state.name)
              for t in study.get_trials(deepcopy=False)]
    return JointResult(best, best_score, start_score, done, n_eval, study_name, trials,
                       time.perf_counter() - t0)


def _copy_study(study: optuna.Study, storage, study_name: str, attrs: dict) -> None:
    """Copy an in-memory study's trials into a new study of ``storage`` (one batch).

    Raises:
        InputError: the storage already has a study of that name (a second run needs
            ``--resume``; see `search.run`).
    """
    try:
        saved = optuna.create_study(storage=storage, study_name=study_name,
                                    direction="maximize", load_if_exists=False)
    except optuna.exceptions.DuplicatedStudyError:
        raise InputError(f"study {study_name!r} already exists in the storage; pass --resume "
                         "to add trials to it, or choose another --study-name") from None
    for key, value in attrs.items():
        saved.set_user_attr(key, value)
    trials = study.get_trials(deepcopy=False)
    if isinstance(storage, optuna.storages.RDBStorage) and _rdb_internals_present():
        _insert_trials(storage, storage.get_study_id_from_name(study_name), trials)
    else:  # a journal file (one log line per trial already), or an Optuna whose RDB
        saved.add_trials(trials)  # internals moved: the public, slower path


def _rdb_internals_present() -> bool:
    """Whether this Optuna has the RDB table models and session factory `_insert_trials` uses
    (private names: another Optuna version falls back to ``add_trials``, same rows, slower)."""
    return (importlib.util.find_spec("optuna.storages._rdb.models") is not None
            and hasattr(lazy_import("optuna.storages._rdb.storage"), "_create_scoped_session"))


def _insert_trials(storage, study_id: int, trials: Sequence) -> None:
    """Write finished ``trials`` into the empty study ``study_id`` of an RDB storage in one
    transaction: the rows `optuna.Study.add_trials` writes (Optuna's own table models, numbers
    ``0..n-1``, params in their internal representation with their distribution's JSON), but
    one ORM flush instead of ten queries and a commit per trial (``add_trials`` took 18 ms a
    trial on sqlite, most of ``--stage gates``). `tests/test_search_engines.py` checks that the
    stored study reads back equal to the in-memory one.

    Raises:
        InputError: the study already holds trials (only a fresh study is copied).
    """
    models = lazy_import("optuna.storages._rdb.models")  # SQLAlchemy's ORM: RDB storages only
    scoped = lazy_import("optuna.storages._rdb.storage")._create_scoped_session
    with scoped(storage.scoped_session) as session:
        study = models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        if models.TrialModel.count(session, study):
            raise InputError(f"study {study_id} is not empty; cannot copy trials into it")
        rows = []
        for number, t in enumerate(trials):
            row = models.TrialModel(study_id=study_id, number=number, state=t.state,
                                    datetime_start=t.datetime_start,
                                    datetime_complete=t.datetime_complete)
            rows.append(row)
            for name, value in t.params.items():
                dist = t.distributions[name]
                rows.append(models.TrialParamModel(
                    trial=row, param_name=name, param_value=dist.to_internal_repr(value),
                    distribution_json=distribution_to_json(dist)))
            for objective, value in enumerate(t.values or ()):
                stored, kind = models.TrialValueModel.value_to_stored_repr(value)
                rows.append(models.TrialValueModel(trial=row, objective=objective,
                                                   value=stored, value_type=kind))
            for model, items in ((models.TrialUserAttributeModel, t.user_attrs),
                                 (models.TrialSystemAttributeModel, t.system_attrs)):
                rows += [model(trial=row, key=k, value_json=json.dumps(v))
                         for k, v in items.items()]
            for step, value in t.intermediate_values.items():
                stored, kind = models.TrialIntermediateValueModel \
                    .intermediate_value_to_stored_repr(value)
                rows.append(models.TrialIntermediateValueModel(
                    trial=row, step=step, intermediate_value=stored,
                    intermediate_value_type=kind))
        session.add_all(rows)


def _clip(name: str, dist, value):
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        if value not in dist.choices:
            raise InputError(f"start value {value!r} of {name!r} not in {dist.choices}")
        return value
    return float(min(max(float(value), dist.low), dist.high))
