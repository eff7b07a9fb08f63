"""The decision-cache format: the single truth of its tables, columns, units and metadata.

Conventions:
    * A cache is a directory of Parquet part files plus one metadata JSON (`META_FILE`)::

        cache/
          _casdri_cache.json          CacheMeta (schema version, label set, models, closure)
          soundscapes/part-*.parquet  SOUNDSCAPES: one row per soundscape
          tagger/part-*.parquet       TAGGER: one row per (soundscape, tagger, track)
          separations/part-*.parquet  SEPARATIONS: one row per (soundscape, separator, stage,
                                      query, slot)
          sed/part-*.parquet          SED (optional): one row per (soundscape, model)

    * Class indices follow ``CacheMeta.classes``; a softmax row has ``C + 1`` entries with
      silence **last**. A query is a multiset of class indices in canonical order
      (`QUERY_ORDER_RULE`): sorted ascending, slot ``i`` holds the stem for ``query[i]``.
    * Units live in each field's metadata (``{"unit": "dB"}``); dB values are float64,
      probabilities float32 (SED float16).
    * No other module spells a column name: they import the constants below, and build
      tables with `soundscapes_table`, `tagger_table`, `separations_table`, `sed_table`.

Schema versions (each part file records its own; a reader accepts `SUPPORTED_VERSIONS`, and
each version has a frozen cache under ``tests/data/frozen_cache_v<N>/``):
    1. separations held the retagger's whole softmax (``retag``: ``n_tracks x (C + 1)``
       float32 per stem);
    2. (this one) separations hold what the decisions read of it (`reduce_retag`):
       ``retag_max`` (``C`` float32, each class's maximum over the tracks) and
       ``retag_silence_min`` (float32, the silence probability's minimum over the tracks), a
       third of the values. A version-1 part is read as version 2 (`upgrade_separations`), so
       every replay is the same; a cache may hold parts of both (a build resumed by a newer
       casdri).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from .errors import CacheSchemaError

__all__ = [
    "SCHEMA_VERSION", "SUPPORTED_VERSIONS", "META_FILE", "PART_META_KEY", "QUERY_ORDER_RULE",
    "SOUNDSCAPES", "TAGGER", "SEPARATIONS", "SED", "TABLES", "REQUIRED_TABLES",
    "OPTIONAL_COLUMNS",
    "CacheMeta", "validate_table", "soundscapes_table", "tagger_table", "separations_table",
    "sed_table", "reduce_retag", "upgrade_separations", "part_version", "PROB_SUM_TOL",
]

SCHEMA_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
#: a softmax row (classes and silence) must sum to 1 within this
PROB_SUM_TOL = 1e-4
META_FILE = "_casdri_cache.json"
#: key of the small JSON each part file carries in its Arrow schema metadata
PART_META_KEY = b"casdri"
QUERY_ORDER_RULE = "sorted ascending by class index; slot i holds query[i]"

# ----------------------------------------------------------------------------- columns
SOUNDSCAPE = "soundscape"    # soundscape id (file stem), every table
SPLIT = "split"              # fold / split tag
REF_LABELS = "ref_labels"    # oracle class indices, oracle file order
SNR_MIX_DB = "snr_mix_db"    # SNR of mixture channel 0 against each oracle target
DURATION_S = "duration_s"
ROOM = "room"                # optional: room (RIR set) id of the soundscape
RECORDINGS = "recordings"    # optional: ids of the source recordings its events use
TAGGER_NAME = "tagger"
TRACK = "track"
PROBS = "probs"
SEPARATOR = "separator"
STAGE = "stage"
QUERY = "query"
SLOT = "slot"
ENERGY_DB = "energy_db"
SNR_DB = "snr_db"
RETAG = "retag"              # schema 1 only: the retagger's whole softmax
RETAG_MAX = "retag_max"      # per class: max over the retagger's tracks
RETAG_SILENCE_MIN = "retag_silence_min"  # silence: min over the retagger's tracks
MODEL = "model"
FRAME_HOP_S = "frame_hop_s"
N_FRAMES = "n_frames"


def _f(name, type_, unit=None, doc=None, nullable=False):
    md = {}
    if unit:
        md["unit"] = unit
    if doc:
        md["doc"] = doc
    return pa.field(name, type_, nullable=nullable, metadata=md or None)


SOUNDSCAPES = pa.schema([
    _f(SOUNDSCAPE, pa.string(), doc="soundscape id (file stem)"),
    _f(SPLIT, pa.string(), doc="fold or split tag"),
    _f(REF_LABELS, pa.list_(pa.int16()), doc="oracle class indices, oracle file order"),
    _f(SNR_MIX_DB, pa.list_(pa.float64()), "dB",
       "SNR of mixture channel 0 against each oracle target (same order)"),
    _f(DURATION_S, pa.float64(), "s"),
    _f(ROOM, pa.string(), doc="optional: room (RIR set) id; null = unknown", nullable=True),
    _f(RECORDINGS, pa.list_(pa.string()), nullable=True,
       doc="optional: ids of the source recordings the soundscape's events use; null = unknown"),
])
#: columns a reader fills with nulls when a part lacks them (caches written before they
#: existed stay readable without a schema version bump)
OPTIONAL_COLUMNS = {"soundscapes": (ROOM, RECORDINGS)}
TAGGER = pa.schema([
    _f(SOUNDSCAPE, pa.string()),
    _f(TAGGER_NAME, pa.string(), doc="tagger name from the cache metadata"),
    _f(TRACK, pa.int8()),
    _f(PROBS, pa.list_(pa.float32()), "probability", "softmax over C classes + silence (last)"),
])
SEPARATIONS = pa.schema([
    _f(SOUNDSCAPE, pa.string()),
    _f(SEPARATOR, pa.string(), doc="separator name from the cache metadata"),
    _f(STAGE, pa.int8(), doc="refinement stage, 0 = separator output"),
    _f(QUERY, pa.list_(pa.int16()), doc="class indices, sorted ascending"),
    _f(SLOT, pa.int8(), doc="slot i holds the stem for query[i]"),
    _f(ENERGY_DB, pa.float64(), "dB", "10 log10(sum stem^2 / sum mixture_ch0^2)"),
    _f(SNR_DB, pa.list_(pa.float64()), "dB", "SNR of the stem against each oracle target"),
    _f(RETAG_MAX, pa.list_(pa.float32()), "probability",
       "retagger: each class's probability, max over its tracks (C values)"),
    _f(RETAG_SILENCE_MIN, pa.float32(), "probability",
       "retagger: the silence probability, min over its tracks"),
])
#: schema version 1's SEPARATIONS (read only: `upgrade_separations` turns it into version 2)
SEPARATIONS_V1 = pa.schema([f for f in SEPARATIONS if f.name not in (RETAG_MAX, RETAG_SILENCE_MIN)]
                           + [_f(RETAG, pa.list_(pa.float32()), "probability",
                                 "retagger softmax of the stem, n_tracks x (C + 1) row-major")])
SED = pa.schema([
    _f(SOUNDSCAPE, pa.string()),
    _f(MODEL, pa.string()),
    _f(FRAME_HOP_S, pa.float64(), "s"),
    _f(N_FRAMES, pa.int32()),
    _f(PROBS, pa.list_(pa.float16()), "probability", "n_frames x C row-major"),
])
TABLES = {"soundscapes": SOUNDSCAPES, "tagger": TAGGER, "separations": SEPARATIONS, "sed": SED}
REQUIRED_TABLES = ("soundscapes", "tagger", "separations")
#: float columns stored with BYTE_STREAM_SPLIT (better zstd ratio on noisy floats; the SED's
#: float16 frames need a reader of Parquet format 2.11, pyarrow >= 16)
BYTE_STREAM_SPLIT = {"soundscapes": [f"{SNR_MIX_DB}.list.element"],
                     "tagger": [f"{PROBS}.list.element"],
                     "separations": [ENERGY_DB, f"{SNR_DB}.list.element",
                                     f"{RETAG_MAX}.list.element", RETAG_SILENCE_MIN],
                     "sed": [f"{PROBS}.list.element"]}
#: zstd level of every part file. Measured on the 300 + 200-soundscape demo cache: 5.33 MB at
#: level 9, 4.74 MB at 19 (with the SED's BYTE_STREAM_SPLIT); reading is as fast at any level,
#: writing the demo's parts takes 2.5 s instead of 0.3 s
ZSTD_LEVEL = 19


# ----------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class CacheMeta:
    """The metadata JSON of a cache (`META_FILE`).

    Attributes:
        label_set: label-set name (``"dcase2026t4"``); classes: its class names in index order.
        sample_rate_hz: audio sample rate of the soundscapes.
        n_tracks: tracks K of every tagger and of the retagger.
        taggers: tagger names (the ``tagger`` column values), in index order.
        separators: separator names (the ``separator`` column values), in index order.
        separator_sha256: checkpoint sha256 of each separator (same order).
        retagger: name of the model that re-tags stems.
        n_stages: refinement stages cached per separation (1 = separator output only).
        closure: the query closure the cache was built for, e.g.
            ``{"proposal_top_n": 1, "max_query_size": 3, "oracle": true}``.
        query_order_rule: canonical query order (`QUERY_ORDER_RULE`).
        schema_version: `SCHEMA_VERSION` of the writer that created the cache, or of
            `casdri.cache.upgrade_cache` once it has rewritten every part (each part file
            records the version that wrote it: `part_version`).
        casdri_version: casdri version of the writer.
        cache_id: random id given at creation, kept by appends.
        extra: free-form creator information (not compared).
    """

    label_set: str
    classes: tuple[str, ...]
    sample_rate_hz: int
    n_tracks: int
    taggers: tuple[str, ...]
    separators: tuple[str, ...]
    separator_sha256: tuple[str, ...]
    retagger: str
    n_stages: int = 1
    closure: Mapping[str, Any] = field(default_factory=dict)
    query_order_rule: str = QUERY_ORDER_RULE
    schema_version: int = SCHEMA_VERSION
    casdri_version: str = ""
    cache_id: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("classes", "taggers", "separators", "separator_sha256"):
            object.__setattr__(self, name, tuple(str(x) for x in getattr(self, name)))
        object.__setattr__(self, "closure", dict(self.closure))
        object.__setattr__(self, "extra", dict(self.extra))
        if len(self.separator_sha256) != len(self.separators):
            raise CacheSchemaError(
                f"{len(self.separators)} separators but {len(self.separator_sha256)} checkpoint "
                "sha256 values; give one per separator")
        for name in ("taggers", "separators"):
            v = getattr(self, name)
            if not v or len(set(v)) != len(v):
                raise CacheSchemaError(f"{name} must be unique and non-empty, got {list(v)}")
        for name in ("sample_rate_hz", "n_tracks", "n_stages"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise CacheSchemaError(f"{name} must be an integer >= 1, got {v!r}")

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def model_sha256(self) -> dict:
        """``{"<role>/<name>": checkpoint sha256 or None}`` of the models the cache was built
        with (the keys of ``cache_builder.system.System.sha256``: ``tagger/4ch``,
        ``separator/small``, ``stage/<name>``, ``sed/<name>``), read from ``extra["models"]``
        as the builder writes it; caches without it give their separators'
        ``separator_sha256``. The policy YAML of a search records it (``provenance.models``)
        and live apply compares it with its system's checkpoints."""
        models = (self.extra or {}).get("models") or {}
        out = {}
        for role in ("taggers", "separators"):
            for name, d in (models.get(role) or {}).items():
                out[f"{role[:-1]}/{name}"] = d.get("sha256")
        for d in models.get("stages") or []:
            out[f"stage/{d.get('name')}"] = d.get("sha256")
        if models.get("sed"):
            out[f"sed/{models['sed'].get('name')}"] = models["sed"].get("sha256")
        if not out:
            out = {f"separator/{n}": h or None
                   for n, h in zip(self.separators, self.separator_sha256)}
        return out

    def identity(self) -> dict:
        """What must match for two writers to append to one cache (all but versions and ids:
        a newer casdri resumes an older cache's build, each part in its own schema version)."""
        d = self.to_dict()
        for k in ("casdri_version", "schema_version", "cache_id", "extra"):
            d.pop(k)
        return d

    def to_dict(self) -> dict:
        d = asdict(self)
        d = {"format": "casdri-cache", **d}
        for k in ("classes", "taggers", "separators", "separator_sha256"):
            d[k] = list(d[k])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "metadata") -> "CacheMeta":
        """Parse and check a metadata dict.

        Raises:
            CacheSchemaError: not a casdri cache, unsupported schema version, missing keys.
        """
        if not isinstance(d, Mapping) or d.get("format") != "casdri-cache":
            raise CacheSchemaError(f"{where}: not a casdri cache metadata file "
                                   "(expected \"format\": \"casdri-cache\")")
        version = d.get("schema_version")
        if version not in SUPPORTED_VERSIONS:
            raise CacheSchemaError(
                f"{where}: schema version {version!r} is not supported by this casdri (reads "
                f"{list(SUPPORTED_VERSIONS)}); rebuild the cache or upgrade casdri")
        names = list(cls.__dataclass_fields__)
        required = ("label_set", "classes", "sample_rate_hz", "n_tracks", "taggers",
                    "separators", "separator_sha256", "retagger")
        missing = [k for k in required if k not in d]
        if missing:
            raise CacheSchemaError(f"{where}: metadata misses {missing}")
        try:
            return cls(**{k: d[k] for k in names if k in d})
        except (TypeError, ValueError) as e:
            raise CacheSchemaError(f"{where}: bad metadata: {e}") from None

    @classmethod
    def from_json(cls, text: str, where: str = "metadata") -> "CacheMeta":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise CacheSchemaError(f"{where}: not valid JSON ({e})") from None
        return cls.from_dict(d, where)


def part_metadata(table_name: str, meta: CacheMeta) -> dict:
    """Arrow schema metadata written into each part file (self-describing parts)."""
    return {PART_META_KEY: json.dumps({"table": table_name, "schema_version": SCHEMA_VERSION,
                                       "cache_id": meta.cache_id}).encode()}


# ----------------------------------------------------------------------------- validation


def part_version(table: pa.Table, where: str = "") -> int:
    """The schema version a table was written with: its part metadata's, or `SCHEMA_VERSION`
    for a table without one (built in memory by the builders below).

    Raises:
        CacheSchemaError: a version this casdri does not read (``where`` names the file).
    """
    md = table.schema.metadata or {}
    if PART_META_KEY not in md:
        return SCHEMA_VERSION
    try:
        pv = json.loads(md[PART_META_KEY]).get("schema_version")
    except (ValueError, AttributeError):
        pv = None
    if pv not in SUPPORTED_VERSIONS:
        raise CacheSchemaError(f"{where}: part written with schema version {pv!r}; this "
                               f"casdri reads {list(SUPPORTED_VERSIONS)}")
    return pv


def validate_table(table: pa.Table, name: str, where: str = "") -> pa.Table:
    """Check a table against `TABLES[name]` (a version-1 ``separations`` part against
    `SEPARATIONS_V1`: `upgrade_separations` then makes it version 2); return it with the
    schema's exact types.

    Extra columns are dropped; safe casts (``large_string`` → ``string``, ``int64`` → ``int8``
    when in range) are applied; a missing `OPTIONAL_COLUMNS` column comes back all null.

    Raises:
        CacheSchemaError: unknown table, missing column, incompatible type, nulls in a
            non-nullable column, or a part
            written by another schema version (``where`` names the file).
    """
    if name not in TABLES:
        raise CacheSchemaError(f"unknown cache table {name!r}; expected one of {list(TABLES)}")
    where = where or name
    version = part_version(table, where)
    cols_in = set(table.column_names)
    v1 = name == "separations" and (version == 1 or (RETAG in cols_in
                                                     and RETAG_MAX not in cols_in))
    schema = SEPARATIONS_V1 if v1 else TABLES[name]  # (v1 also when rewritten without metadata)
    cols = []
    optional = OPTIONAL_COLUMNS.get(name, ())
    for f in schema:
        if f.name not in table.column_names and f.name in optional:
            cols.append(pa.chunked_array([pa.nulls(table.num_rows, f.type)]))
            continue
        if f.name not in table.column_names:
            hint = (f"; a table with {RETAG!r} (the whole softmax, schema version 1) is built "
                    "with separations_table, which keeps what the decisions read"
                    if f.name == RETAG_SILENCE_MIN and RETAG in cols_in else "")
            raise CacheSchemaError(
                f"{where}: missing column {f.name!r} ({f.type}); table {name!r} needs "
                f"{schema.names}{hint}")
        col = table.column(f.name)
        if col.type != f.type:
            try:
                col = col.cast(f.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise CacheSchemaError(f"{where}: column {f.name!r} is {col.type}, expected "
                                       f"{f.type} ({e})") from None
        if col.null_count and not f.nullable:
            raise CacheSchemaError(f"{where}: column {f.name!r} holds {col.null_count} nulls")
        if pa.types.is_list(f.type) and col.num_chunks:
            inner = pa.concat_arrays([c.flatten() for c in col.chunks])
            if inner.null_count:
                raise CacheSchemaError(f"{where}: column {f.name!r} holds null list elements")
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)


def reduce_retag(retag: np.ndarray, tol: Optional[float] = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """What the decisions read of the retagger's output on stems: each class's probability,
    maximised over the retagger's tracks, and the silence probability, minimised over them.
    A stem is confirmed by its most confident track and called silent only when every track
    says so (casdri's ``refine`` verify and silence gates, `casdri.policies.refine`; the
    cache keeps these, schema version 2, and live apply reduces its stems the same way).

    Args:
        retag: ``(n_stems, n_tracks, C + 1)`` softmax over the C classes and silence (last).
        tol: when given, every row must be a softmax (values in [0, 1], summing to 1 within
            ``tol``): the reduced values could not show it afterwards.

    Returns:
        ``(retag_max, retag_silence_min)``: ``(n_stems, C) float32`` and ``(n_stems,)
        float32``.

    Raises:
        ValueError: ``retag`` is not 3-D or has fewer than 2 entries on its last axis, or
            (with ``tol``) a row that is not a softmax (stem and track named).
    """
    r = np.asarray(retag, dtype=np.float32)
    if r.ndim != 3 or r.shape[2] < 2:
        raise ValueError(f"retag: expected (n_stems, n_tracks, C + 1) probabilities, got shape "
                         f"{r.shape}")
    if tol is not None and r.size:
        sums = r.astype(np.float64).sum(axis=2)
        bad = ~((np.abs(sums - 1.0) <= tol) & (r >= 0).all(axis=2) & (r <= 1).all(axis=2))
        if bad.any():
            i, k = (int(v[0]) for v in np.nonzero(bad))
            raise ValueError(
                f"retag: stem {i}, track {k} is not a softmax (sum {float(sums[i, k]):.6g}, "
                f"values in [{float(r[i, k].min()):.6g}, {float(r[i, k].max()):.6g}]; "
                f"expected values in [0, 1] summing to 1 within {tol:g}): pass the "
                "retagger's softmax over the classes and silence, not logits or sigmoids")
    return (np.ascontiguousarray(r[:, :, :-1].max(axis=1)),
            np.ascontiguousarray(r[:, :, -1].min(axis=1)))


def upgrade_separations(table: pa.Table, n_tracks: int, n_classes: int,
                        where: str = "") -> pa.Table:
    """A `validate_table`-checked ``separations`` table of any supported version as version 2
    (the columns of `SEPARATIONS`, no part metadata): a version-1
    table's ``retag`` (``n_tracks * (C + 1)`` values per row) becomes `reduce_retag`'s
    columns; a version-2 table is returned as it is.

    Raises:
        CacheSchemaError: a ``retag`` row without ``n_tracks * (n_classes + 1)`` values
            (``where`` names the file).
    """
    if RETAG not in table.column_names:
        return table
    width = n_tracks * (n_classes + 1)
    col = table.column(RETAG)
    lengths = np.asarray(pa.compute.list_value_length(col).to_numpy(), np.int64)
    if (lengths != width).any():
        i = int(np.flatnonzero(lengths != width)[0])
        raise CacheSchemaError(
            f"{where or 'separations'}: row {i}: retag holds {int(lengths[i])} values, but "
            f"n_tracks * (C + 1) = {n_tracks} * {n_classes + 1} = {width}; the metadata's "
            "n_tracks or classes do not match the part: fix the metadata or rebuild the part")
    flat = pa.compute.list_flatten(col).to_numpy().astype(np.float32, copy=False)
    mx, smin = reduce_retag(flat.reshape(-1, n_tracks, n_classes + 1))
    base = table.drop_columns([RETAG])
    return pa.Table.from_arrays(
        [base.column(f.name) for f in SEPARATIONS if f.name in base.column_names]
        + [_list(mx, pa.float32()), pa.array(smin, pa.float32())], schema=SEPARATIONS)


# ----------------------------------------------------------------------------- builders


def _list(values: Sequence, type_) -> pa.Array:
    """A list array from a 2-D array (equal rows), a sequence of 1-D arrays (ragged), or a
    ready Arrow list array (cast)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.cast(pa.list_(type_))
    if isinstance(values, np.ndarray) and values.ndim == 2:
        n, w = values.shape
        offsets = np.arange(0, (n + 1) * w, w, dtype=np.int32) if w else np.zeros(n + 1, np.int32)
        flat = values.reshape(-1)
    else:
        arrs = [np.asarray(v).reshape(-1) for v in values]
        lengths = np.array([len(a) for a in arrs], dtype=np.int64)
        offsets = np.zeros(len(arrs) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(arrs) if arrs else np.zeros(0)
    inner = pa.array(np.asarray(flat).astype(type_.to_pandas_dtype(), copy=False), type_)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), inner)


def _table(schema: pa.Schema, columns: dict) -> pa.Table:
    n = {len(v) for v in columns.values()}
    if len(n) > 1:
        raise CacheSchemaError(f"columns of unequal length: "
                               f"{ {k: len(v) for k, v in columns.items()} }")
    arrays = []
    for f in schema:
        v = columns[f.name]
        if isinstance(v, pa.ChunkedArray):
            v = v.combine_chunks()
        if pa.types.is_list(f.type):
            arrays.append(_list(v, f.type.value_type))
        elif isinstance(v, pa.Array):
            arrays.append(v.cast(f.type))
        else:
            arrays.append(pa.array(np.asarray(v) if not isinstance(v, list) else v, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def soundscapes_table(soundscape: Sequence[str], split: Sequence[str],
                      ref_labels: Sequence[Sequence[int]], snr_mix_db: Sequence[Sequence[float]],
                      duration_s: Sequence[float], *, room: Optional[Sequence] = None,
                      recordings: Optional[Sequence] = None) -> pa.Table:
    """SOUNDSCAPES rows. ``ref_labels[i]`` class indices (oracle order), ``snr_mix_db[i]`` dB.

    Args:
        room: optional room id per soundscape (str or None = unknown); None: all unknown.
        recordings: optional per soundscape, the ids (str) of the source recordings its events
            use (or None = unknown); None: all unknown. Search folds group soundscapes that
            share one (``casdri-search --group-by recording``).
    """
    n = len(soundscape)
    rooms = [None] * n if room is None else [None if r is None else str(r) for r in room]
    recs = ([None] * n if recordings is None else
            [None if r is None else [str(x) for x in r] for r in recordings])
    return _table(SOUNDSCAPES, {SOUNDSCAPE: list(map(str, soundscape)),
                                SPLIT: list(map(str, split)), REF_LABELS: ref_labels,
                                SNR_MIX_DB: snr_mix_db, DURATION_S: duration_s,
                                ROOM: rooms, RECORDINGS: pa.array(recs, pa.list_(pa.string()))})


def tagger_table(soundscape: Sequence[str], tagger: Sequence[str], track: Sequence[int],
                 probs: np.ndarray) -> pa.Table:
    """TAGGER rows; ``probs`` ``(n_rows, C + 1)`` softmax, silence last."""
    return _table(TAGGER, {SOUNDSCAPE: list(map(str, soundscape)), TAGGER_NAME: list(tagger),
                           TRACK: np.asarray(track, np.int8), PROBS: probs})


def separations_table(soundscape: Sequence[str], separator: Sequence[str], stage: Sequence[int],
                      query: Sequence[Sequence[int]], slot: Sequence[int],
                      energy_db: Sequence[float], snr_db: Sequence[Sequence[float]],
                      retag: np.ndarray, prob_tol: float = PROB_SUM_TOL) -> pa.Table:
    """SEPARATIONS rows (one per stem).

    Args:
        query: canonical query of each row (sorted ascending class indices).
        slot: position of the row's stem in its query.
        energy_db: ``10 log10(Σ stem² / Σ mix0²)`` float64 dB.
        snr_db: per row, SNR against each oracle target of its soundscape, dB.
        retag: ``(n_rows, n_tracks, C + 1)`` (or a sequence of ``(n_tracks, C + 1)``)
            retagger softmax, silence last per track. The table keeps `reduce_retag` of it.
        prob_tol: how far a softmax row's sum may be from 1 (`PROB_SUM_TOL`).

    Raises:
        ValueError: ``retag`` of another shape (a 2-D array: reshape it to
            ``(n_rows, n_tracks, C + 1)``), or a row that is not a softmax.
    """
    if not (isinstance(retag, np.ndarray) and retag.ndim == 3):
        try:
            retag = np.stack([np.asarray(r, np.float32) for r in retag]) if len(retag) else \
                np.zeros((0, 1, 2), np.float32)
        except ValueError as e:
            raise ValueError(f"retag: expected (n_rows, n_tracks, C + 1) ({e})") from None
        if retag.ndim != 3:
            raise ValueError(f"retag: expected (n_rows, n_tracks, C + 1) probabilities; got "
                             f"rows of shape {retag.shape[1:]} (reshape each to "
                             "(n_tracks, C + 1))")
    mx, smin = reduce_retag(retag, tol=prob_tol)
    return _table(SEPARATIONS, {
        SOUNDSCAPE: list(map(str, soundscape)), SEPARATOR: list(separator),
        STAGE: np.asarray(stage, np.int8), QUERY: query, SLOT: np.asarray(slot, np.int8),
        ENERGY_DB: np.asarray(energy_db, np.float64), SNR_DB: snr_db, RETAG_MAX: mx,
        RETAG_SILENCE_MIN: smin})


def sed_table(soundscape: Sequence[str], model: Sequence[str], frame_hop_s: Sequence[float],
              probs: Sequence[np.ndarray]) -> pa.Table:
    """SED rows; ``probs[i]`` ``(n_frames, C)`` frame probabilities (stored float16)."""
    probs = [np.asarray(p) for p in probs]
    return _table(SED, {SOUNDSCAPE: list(map(str, soundscape)), MODEL: list(model),
                        FRAME_HOP_S: np.asarray(frame_hop_s, np.float64),
                        N_FRAMES: np.array([p.shape[0] for p in probs], np.int32),
                        PROBS: probs})
