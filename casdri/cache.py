"""Writing and loading decision caches (format: `casdri.schema`).

Conventions:
    * Writes are atomic (`casdri._io.atomic_path`: a temp file in the same directory, then
      ``os.replace``). A part's ``soundscapes`` file is written last, so a
      crashed writer leaves orphan rows that `load_cache` names (delete that part and rerun).
    * Appending needs no rewrite: each writer adds ``part-<name>.parquet`` files; its
      `CacheMeta` must match the cache's (`CacheMeta.identity`).
    * `load_cache` returns a `DecisionCache` of flat, C-contiguous numpy arrays. Soundscapes
      are sorted by id; stem rows by (soundscape, key code, separator, stage, slot), so the
      slots of one (key, separator, stage) are consecutive rows.
    * Key code of a canonical query ``q`` (sorted ascending): ``Σ_i (q_i + 1) (C + 1)^i``.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from . import schema as sc
from . import _cache_checks as _load
from ._cache_load import build_arrays, check_parts, read_tables
from ._decide_io import SlotStem, SoundscapeInputs
from ._io import atomic_path, atomic_write_bytes
from .errors import CacheError, CacheKeyError, CacheSchemaError, InputError
from .labels import LabelSet, get_label_set
from .sed import summary_of_cache

__all__ = ["CacheWriter", "write_part", "load_cache", "DecisionCache", "key_code",
           "key_code_sorted", "demo_cache_path", "upgrade_cache"]

_PART_NAME = re.compile(r"^[A-Za-z0-9_.=-]+$")


def key_code_sorted(labels, n: int, n_classes: int) -> int:
    """The key-code rule, written once: ``Σ_i (q_i + 1)·(C + 1)^i`` of the first ``n``
    (sorted ascending) class indices of ``labels``; ``n = 0`` → 0. The kernels jit this very
    function (`casdri._kernels_capi.key_code`)."""
    code = 0
    p = 1
    for i in range(n):
        code += (labels[i] + 1) * p
        p *= n_classes + 1
    return code


def key_code(query, n_classes: int) -> int:
    """Key code of a query (any order; sorted here). ``()`` → 0."""
    q = sorted(int(x) for x in query)
    return key_code_sorted(q, len(q), n_classes)


# ----------------------------------------------------------------------------- writing


def _atomic_table(table: pa.Table, path: Path, name: str, meta: sc.CacheMeta) -> None:
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           **sc.part_metadata(name, meta)})
    strings = [f.name for f in sc.TABLES[name] if pa.types.is_string(f.type)]
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", compression_level=sc.ZSTD_LEVEL,
                       use_dictionary=strings, use_byte_stream_split=sc.BYTE_STREAM_SPLIT[name],
                       row_group_size=1 << 17)


class CacheWriter:
    """Writes part files into one cache directory.

    Args:
        cache_dir: the cache directory (created if missing).
        meta: the cache's `CacheMeta`; ``cache_id`` and ``casdri_version`` are filled in.

    Raises:
        CacheError: the directory holds a cache with other metadata (both are named).
    """

    def __init__(self, cache_dir: Union[str, Path], meta: sc.CacheMeta):
        self.path = Path(cache_dir)
        self.path.mkdir(parents=True, exist_ok=True)
        meta_file = self.path / sc.META_FILE
        if meta_file.exists():
            old = sc.CacheMeta.from_json(meta_file.read_text(), str(meta_file))
            a, b = old.identity(), meta.identity()
            if a != b:
                diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
                raise CacheError(
                    f"{self.path} holds a cache with other metadata: "
                    + "; ".join(f"{k}: cache has {x!r}, writer has {y!r}"
                                for k, (x, y) in diff.items())
                    + ". Write to a new directory or rebuild the cache")
            self.meta = old
        else:
            self.meta = replace(meta, cache_id=meta.cache_id or uuid.uuid4().hex,
                                casdri_version=__version__)
            atomic_write_bytes(meta_file, self.meta.to_json().encode())

    def write_part(self, part_name: str, soundscapes: pa.Table, tagger: pa.Table,
                   separations: pa.Table, sed: Optional[pa.Table] = None,
                   overwrite: bool = False) -> list[Path]:
        """Write one part of every table (build them with the `casdri.schema` builders).

        Raises:
            CacheSchemaError: a table does not follow its schema, or a tagger/separation row
                names a soundscape missing from this part's ``soundscapes``.
            CacheError: the part exists (and ``overwrite`` is False), or a bad part name.
        """
        if not _PART_NAME.match(part_name):
            raise CacheError(f"part name {part_name!r}: use letters, digits, '_', '.', '-', '='")
        tables = {"soundscapes": soundscapes, "tagger": tagger, "separations": separations}
        if sed is not None:
            tables["sed"] = sed
        checked = {k: sc.validate_table(t, k, f"part {part_name!r} table {k!r}")
                   for k, t in tables.items()}
        if sc.RETAG in checked["separations"].column_names:  # a version-1 table read back:
            where = f"part {part_name!r} table 'separations'"  # its softmax checked, reduced
            _load.check_values(self.meta, "separations", Path(where), checked["separations"])
            checked["separations"] = sc.upgrade_separations(
                checked["separations"], self.meta.n_tracks, self.meta.n_classes, where)
        ids = set(checked["soundscapes"].column(sc.SOUNDSCAPE).to_pylist())
        for k in ("tagger", "separations", "sed"):
            if k in checked:
                extra = set(checked[k].column(sc.SOUNDSCAPE).unique().to_pylist()) - ids
                if extra:
                    raise CacheSchemaError(
                        f"part {part_name!r}: table {k!r} has rows of soundscapes missing from "
                        f"its soundscapes table: {sorted(extra)[:5]}")
        paths = {k: self.path / k / f"part-{part_name}.parquet" for k in checked}
        if not overwrite:
            for p in paths.values():
                if p.exists():
                    raise CacheError(f"{p} exists; choose another part name or overwrite=True")
        order = [k for k in ("separations", "tagger", "sed") if k in checked] + ["soundscapes"]
        for k in order:
            paths[k].parent.mkdir(exist_ok=True)
            _atomic_table(checked[k], paths[k], k, self.meta)
        return [paths[k] for k in order]


def write_part(cache_dir: Union[str, Path], meta: sc.CacheMeta, part_name: str,
               soundscapes: pa.Table, tagger: pa.Table, separations: pa.Table,
               sed: Optional[pa.Table] = None, overwrite: bool = False) -> list[Path]:
    """`CacheWriter` ``(cache_dir, meta).write_part(...)`` in one call; returns the paths."""
    return CacheWriter(cache_dir, meta).write_part(part_name, soundscapes, tagger, separations,
                                                   sed, overwrite)


def upgrade_cache(cache_dir: Union[str, Path]) -> list[Path]:
    """Rewrite a cache's older ``separations`` parts in the current schema version
    (`casdri.schema.SCHEMA_VERSION`; version 1 → 2 keeps `casdri.schema.reduce_retag` of the
    retagger's softmax: a third of its values, the same replay). Each part is checked
    (`validate_table`, the value checks of `load_cache`) and replaced atomically; a part
    already current is left alone, so an interrupted upgrade resumes where it stopped.
    The metadata's ``schema_version`` becomes the current one at the end.

    Args:
        cache_dir: the cache directory.

    Returns:
        the part files rewritten (empty when every part was current).

    Raises:
        CacheError: not a cache directory; CacheSchemaError: a part that fails its checks
            (named; it is left as it was, and so are the parts after it).
    """
    path = Path(cache_dir)
    meta_file = path / sc.META_FILE
    if not meta_file.is_file():
        raise CacheError(f"{path} is not a casdri cache: no {sc.META_FILE}")
    meta = sc.CacheMeta.from_json(meta_file.read_text(), str(meta_file))
    _load.check_meta(meta, meta_file)
    done = []
    for f in sorted((path / "separations").glob("part-*.parquet")):
        try:
            schema = pq.read_schema(f)  # (enough to see that a part is current)
            if sc.part_version(schema.empty_table(), str(f)) == sc.SCHEMA_VERSION \
                    and sc.RETAG not in schema.names:
                continue
            t = pq.read_table(f, use_threads=False)
        except (pa.ArrowException, OSError) as e:
            raise CacheError(f"{f}: unreadable Parquet part ({type(e).__name__}: {e}); it is "
                             "truncated or corrupt: delete it and rebuild that part") from None
        t = sc.validate_table(t, "separations", str(f))
        _load.check_values(meta, "separations", f, t)
        _atomic_table(sc.upgrade_separations(t, meta.n_tracks, meta.n_classes, str(f)), f,
                      "separations", meta)
        done.append(f)
    if meta.schema_version != sc.SCHEMA_VERSION:  # (other keys of the file kept as they are)
        d = json.loads(meta_file.read_text())
        d["schema_version"] = sc.SCHEMA_VERSION
        atomic_write_bytes(meta_file, (json.dumps(d, indent=2) + "\n").encode())
    return done


# ----------------------------------------------------------------------------- the cache


@dataclass(frozen=True, eq=False)
class DecisionCache:
    """A loaded cache: flat contiguous arrays with offsets (S soundscapes, N stems, NK keys).

    Attributes:
        meta: `casdri.schema.CacheMeta`; path: the directory (None if built in memory).
        soundscape_ids, splits: ``(S,)`` object (str), sorted by id.
        duration_s: ``(S,) float64`` seconds.
        ref_offsets: ``(S+1,) int64``; ref_labels ``(R,) int64`` class indices (oracle file
            order); snr_mix_db ``(R,) float64`` dB.
        tagger_probs: ``(n_taggers, S, K, C+1) float32`` softmax, silence last.
        key_offsets: ``(S+1,) int64``; key_codes ``(NK,) int64`` sorted per soundscape;
            key_sc ``(NK,)`` soundscape; key_len ``(NK,)`` slots; key_labels ``(NK, MAXS)``
            slot classes (-1 pad); key_stem ``(NK, n_separators, n_stages) int64`` stem row of
            slot 0 (-1: not cached).
        stem_key, stem_separator, stem_stage, stem_slot, stem_label: ``(N,) int64``.
        stem_energy_db: ``(N,) float64`` dB re mixture channel 0.
        stem_snr_offsets: ``(N+1,) int64`` into stem_snr_db ``float64`` dB (one per reference).
        stem_retag_max: ``(N, C) float32`` max over retagger tracks of each class probability.
        stem_retag_silence_min: ``(N,) float32`` min over tracks of the silence probability.
        sed: optional `SedData`.
        rooms: ``(S,) object`` room id (str, None = unknown) of each soundscape, or None when
            the cache has no room column (optional ``room`` column).
        recordings: ``(S,) object`` tuple of source recording ids (None = unknown) of each
            soundscape, or None when the cache has none (optional ``recordings`` column).
        memo: derived arrays memoised by `casdri.replay` (not part of the data).
    """

    meta: sc.CacheMeta
    path: Optional[Path]
    soundscape_ids: np.ndarray
    splits: np.ndarray
    duration_s: np.ndarray
    ref_offsets: np.ndarray
    ref_labels: np.ndarray
    snr_mix_db: np.ndarray
    tagger_probs: np.ndarray
    key_offsets: np.ndarray
    key_codes: np.ndarray
    key_sc: np.ndarray
    key_len: np.ndarray
    key_labels: np.ndarray
    key_stem: np.ndarray
    stem_key: np.ndarray
    stem_separator: np.ndarray
    stem_stage: np.ndarray
    stem_slot: np.ndarray
    stem_label: np.ndarray
    stem_energy_db: np.ndarray
    stem_snr_offsets: np.ndarray
    stem_snr_db: np.ndarray
    stem_retag_max: np.ndarray
    stem_retag_silence_min: np.ndarray
    sed: Optional["SedData"] = None
    rooms: Optional[np.ndarray] = None
    recordings: Optional[np.ndarray] = None
    memo: dict = field(default_factory=dict, repr=False)

    @property
    def n_soundscapes(self) -> int:
        return len(self.soundscape_ids)

    @property
    def n_classes(self) -> int:
        return self.meta.n_classes

    @property
    def n_tracks(self) -> int:
        return self.meta.n_tracks

    @property
    def n_stages(self) -> int:
        return self.meta.n_stages

    @property
    def taggers(self) -> tuple[str, ...]:
        return self.meta.taggers

    @property
    def separators(self) -> tuple[str, ...]:
        return self.meta.separators

    @property
    def label_set(self) -> LabelSet:
        return _label_set_of(self.meta)

    @property
    def n_ref(self) -> np.ndarray:
        """``(S,) int64`` references per soundscape."""
        return np.diff(self.ref_offsets)

    def index_of(self, soundscape: str) -> int:
        """Row of a soundscape id. Raises `CacheKeyError` when absent."""
        i = int(np.searchsorted(self.soundscape_ids, soundscape))
        if i >= self.n_soundscapes or self.soundscape_ids[i] != soundscape:
            raise CacheKeyError(f"soundscape {soundscape!r} is not in the cache {self.path}")
        return i

    def split_mask(self, *splits: str) -> np.ndarray:
        """``(S,) bool``: soundscapes whose split tag is one of ``splits``.

        Raises:
            InputError: a name that no soundscape carries (a typo would select nothing, and
                a replay of nothing scores NaN), or no name.
        """
        names, counts = np.unique(self.splits.astype(str), return_counts=True)
        unknown = [s for s in splits if str(s) not in names]
        if unknown or not splits:
            have = ", ".join(f"{str(n)!r} ({c})" for n, c in zip(names, counts))
            what = f"no split named {unknown[0]!r} in" if unknown else "no split name given for"
            raise InputError(f"split_mask: {what} the cache {self.path}; it holds {have}")
        return np.isin(self.splits, list(splits))

    def find_key(self, s: int, query) -> int:
        """Key index of ``query`` (class indices) in soundscape ``s``, or -2 when not cached
        (-1 for the empty query)."""
        if len(query) == 0:
            return -1
        code = key_code(query, self.n_classes)
        lo, hi = self.key_offsets[s], self.key_offsets[s + 1]
        i = lo + int(np.searchsorted(self.key_codes[lo:hi], code))
        return i if i < hi and self.key_codes[i] == code else -2

    def query_names(self, query) -> tuple[str, ...]:
        return tuple(self.meta.classes[int(q)] for q in query)

    def inputs(self, s: int):
        """`casdri.policies.SoundscapeInputs` of soundscape ``s`` (for ``decide``)."""
        r0, r1 = self.ref_offsets[s], self.ref_offsets[s + 1]
        sed = summary_of_cache(self)[s] if self.sed is not None else None
        return SoundscapeInputs(
            soundscape=str(self.soundscape_ids[s]), label_set=self.label_set,
            tagger_probs={t: self.tagger_probs[i, s] for i, t in enumerate(self.taggers)},
            ref_labels=tuple(int(x) for x in self.ref_labels[r0:r1]),
            n_separators=len(self.separators), n_stages=self.n_stages, sed_summary=sed)

    def lookup(self, s: int):
        """``lookup(query, separator, stage) -> [SlotStem]`` reading soundscape ``s``'s stems.

        Raises (when called): `CacheKeyError` naming the soundscape and the query classes.
        """

        def lookup(query, separator: int, stage: int):
            q = tuple(sorted(int(x) for x in query))
            j = self.find_key(s, q)
            row = self.key_stem[j, separator, stage] if j >= 0 else -1
            if row < 0:
                raise CacheKeyError(
                    f"soundscape {self.soundscape_ids[s]!r}: query {self.query_names(q)} "
                    f"(separator {self.separators[separator]!r}, stage {stage}) is not in the "
                    f"cache {self.path}; rebuild it with a closure that holds this query")
            return [SlotStem(label=q[i], energy_db=float(self.stem_energy_db[row + i]),
                             retag_max=self.stem_retag_max[row + i],
                             retag_silence_min=float(self.stem_retag_silence_min[row + i]),
                             ref=int(row + i)) for i in range(len(q))]
        return lookup


@dataclass(frozen=True, eq=False)
class SedData:
    """Optional frame-level SED probabilities.

    Attributes:
        models: model names; frame_hop_s ``(n_models, S) float64`` (NaN: none cached).
        offsets: ``(n_models * S + 1,) int64`` frame rows of (model m, soundscape s) at
            ``offsets[m*S + s] : offsets[m*S + s + 1]``; probs ``(F, C) float16``.
    """

    models: tuple[str, ...]
    frame_hop_s: np.ndarray
    offsets: np.ndarray
    probs: np.ndarray


def _label_set_of(meta: sc.CacheMeta) -> LabelSet:
    try:
        ls = get_label_set(meta.label_set)
        if ls.classes == meta.classes:
            return ls
    except Exception:  # noqa: BLE001 - a custom name: build it below
        pass
    return LabelSet(meta.label_set, meta.classes)


def demo_cache_path() -> Optional[Path]:
    """Path of the demo cache casdri ships (``casdri/data/demo_cache``: the reference system
    on a 1,512-soundscape ``dev`` and a 500-soundscape ``eval`` split; what ``casdri-search``
    tunes without ``--cache``), or None when this installation carries none.

    Example:
        >>> cache = load_cache(demo_cache_path())
        >>> sorted(set(cache.splits))
        ['dev', 'eval']
    """
    try:
        root = resources.files("casdri") / "data" / "demo_cache"
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover
        return None
    if root.is_dir() and (root / sc.META_FILE).is_file():
        return Path(str(root))
    return None


def load_cache(path: Union[str, Path], label_set=None, *,
               allow_incomplete: bool = False) -> DecisionCache:
    """Load and validate a cache directory.

    Values are range-checked (`casdri._cache_checks.check_values`: finite SNRs within ±1000 dB,
    finite energies, probabilities in [0, 1], tagger rows summing to 1 and the retagger's
    reduced columns consistent with such rows), the class list must equal the named label
    set's, and a cache whose build manifests list soundscapes the parts lack is refused. Parts
    of every supported schema version load (a version-1 ``separations`` part is read as
    version 2: `casdri.schema.upgrade_separations`).

    Args:
        path: the cache directory.
        label_set: optional expected label set: a name (name and classes must match), or a
            class list or `LabelSet` (its classes must match, in order).
        allow_incomplete: use a cache the build did not finish, or one with a part missing
            from a table (warns instead of raising).

    Returns:
        `DecisionCache`.

    Raises:
        CacheError: not a cache directory, a missing table, an unreadable (truncated or
            corrupt) Parquet part (named), a part missing from one table beside its
            ``soundscapes`` part (named), an incomplete build (these two unless
            ``allow_incomplete``).
        CacheSchemaError: unsupported schema version, wrong label set, missing column,
            duplicate soundscapes across parts, inconsistent rows (file and soundscape named).
    """
    path = Path(path)
    meta_file = path / sc.META_FILE
    if not meta_file.is_file():
        raise CacheError(f"{path} is not a casdri cache: no {sc.META_FILE}; build one with "
                         "casdri-cache or casdri.cache.CacheWriter")
    meta = sc.CacheMeta.from_json(meta_file.read_text(), str(meta_file))
    _load.check_meta(meta, meta_file)
    if label_set is not None:
        want = get_label_set(label_set)
        named = isinstance(label_set, str)  # a name must match; a class list, its classes
        if tuple(want.classes) != meta.classes or (named and want.name != meta.label_set):
            raise CacheSchemaError(
                f"{path}: label set {meta.label_set!r} ({meta.n_classes} classes) != expected "
                f"label set {want.name!r} ({want.n_classes} classes); rebuild the cache for "
                "this label set or pass the cache's label set")
    tables = read_tables(path, meta)
    try:
        arrays = build_arrays(meta, tables)
    except CacheSchemaError as e:  # name the cache where no part file is named
        if str(path) in str(e):
            raise
        raise CacheSchemaError(f"{path}: {e}") from None
    check_parts(path, tables, meta, allow_incomplete)
    _load.check_complete(path, arrays["soundscape_ids"], arrays["splits"], allow_incomplete)
    sed = arrays.pop("sed", None)
    return DecisionCache(meta=meta, path=path,
                         sed=None if sed is None else SedData(**sed), **arrays)
