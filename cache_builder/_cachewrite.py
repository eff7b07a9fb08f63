"""Builder side of the cache format: metadata of a build, chunk → Arrow tables (through the
`casdri.schema` builders, so no column name is spelled here), part bookkeeping, validation
and summaries. Writing and reading go through `casdri.cache`.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import casdri
from casdri import schema as S
from casdri._cache_checks import BUILD_DIR
from casdri.cache import CacheWriter, load_cache
from casdri.errors import CacheError, CacheSchemaError

from .closure import query_closure
from .runner import ChunkResult
from .system import System

PROGRESS_DIR = BUILD_DIR


def cache_metadata(system: System, *, top_n: int, has_oracle: bool, closure_rule: str,
                   query_order: str) -> dict:
    """Metadata of a cache as a `casdri.schema.CacheMeta` dict: the models (with checkpoint
    SHA-256), closure and precision, what every build into the cache must share. Splits
    and soundscape lists live in the build manifests. ``cache_id`` is deterministic (the
    SHA-256 of the rest), so concurrent shards, or shards built in separate folders, agree."""
    spec = system.spec
    desc = system.describe()
    seps = list(spec.separators)
    meta = S.CacheMeta(
        label_set=spec.label_set.name, classes=spec.label_set.classes,
        sample_rate_hz=spec.sample_rate_hz, n_tracks=spec.n_tracks,
        taggers=tuple(spec.taggers), separators=tuple(seps),
        separator_sha256=tuple(desc["separators"][s]["sha256"] or "" for s in seps),
        retagger=spec.retagger, n_stages=spec.n_stages,
        closure={"proposal_top_n": int(top_n), "max_query_size": spec.n_tracks,
                 "oracle": bool(has_oracle), "multiplicity": "tagger_track",
                 "rule": closure_rule},
        query_order_rule=query_order, casdri_version=casdri.__version__,
        extra={"builder": "cache_builder", "models": desc, "top_n": int(top_n),
               "amp": system.amp, "has_oracle": bool(has_oracle),
               "stage_names": system.stage_names()})
    d = meta.to_dict()
    d["cache_id"] = cache_id(d)
    return d


def cache_id(meta: dict) -> str:
    """A build's cache id: 16 hex digits of the sha256 of its metadata dict, the versions and
    the id left out, so every casdri gives a build the same id and shards built apart merge.
    (The schema version sat in the hash until schema 2: it is pinned at 1, so no id changed.)
    """
    ident = {k: v for k, v in meta.items() if k not in ("casdri_version", "cache_id")}
    ident["schema_version"] = 1
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str)
                          .encode()).hexdigest()[:16]


def _short(v, width: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= width else text[:width - 3] + "..."


def _diff(old: dict, new: dict, prefix="") -> list[str]:
    """The differing fields of two metadata dicts, one short line each (nested dicts by their
    dotted path; long values cut, so a message stays readable)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {_short(a)} (on disk) vs {_short(b)} (this build)")
    return out


def prepare_folder(out: Path, meta: dict) -> "S.CacheMeta":
    """Create ``out`` with its metadata, or check that it holds the same build.

    Raises:
        CacheError: ``out`` is a file, a non-empty folder without a cache, or a cache of
            another build (the differing fields are named).
    """
    path = out / S.META_FILE
    if out.exists() and not out.is_dir():
        raise CacheError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and not path.exists() and any(p for p in out.iterdir()
                                                  if p.name != PROGRESS_DIR):
        raise CacheError(f"{out} is not empty and holds no cache ({S.META_FILE} missing); "
                         "choose an empty or new --out")
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CacheError(f"{path}: unreadable cache metadata ({e})") from None
        skip = ("casdri_version", "cache_id", "schema_version")  # (parts record their own)
        diffs = _diff({k: v for k, v in old.items() if k not in skip},
                      {k: v for k, v in meta.items() if k not in skip})
        if diffs:
            raise CacheError(
                f"{out} already holds a different cache ({'; '.join(diffs[:4])}"
                f"{'; ...' if len(diffs) > 4 else ''}); choose another --out or delete it")
    return CacheWriter(out, S.CacheMeta.from_dict(meta, str(path))).meta


def remove_part(out: Path, part: str) -> None:
    """Delete every table file of ``part`` (a chunk that did not finish)."""
    for table in S.TABLES:
        f = out / table / f"part-{part}.parquet"
        if f.exists():
            f.unlink()


def write_chunk(out: Path, part: str, res: ChunkResult, system: System, split: str,
                meta: "S.CacheMeta", provenance: Optional[Mapping] = None) -> None:
    """Write one chunk as part ``part`` of every table (atomic files, soundscapes last);
    ``provenance`` as in `chunk_tables`."""
    t = chunk_tables(res, system, split, provenance)
    CacheWriter(out, meta).write_part(part, t["soundscapes"], t["tagger"], t["separations"],
                                      t.get("sed"), overwrite=True)


def chunk_tables(res: ChunkResult, system: System, split: str,
                 provenance: Optional[Mapping] = None) -> dict:
    """Arrow tables (``soundscapes``, ``tagger``, ``separations``, and ``sed`` when the
    system has a SED model) of one chunk.

    ``provenance``: soundscape name → ``(room id, recording ids)`` of every soundscape of the
    chunk (`cache_builder.soundscapes.metadata.read_provenance` of the split's metadata),
    written to the soundscapes table's ``room`` and ``recordings`` columns; ``None``: not
    written.
    """
    spec = system.spec
    labels = spec.label_set
    rate = spec.sample_rate_hz
    extra = {} if provenance is None else dict(
        room=[provenance[n][0] for n in res.names],
        recordings=[list(provenance[n][1]) for n in res.names])
    sc = S.soundscapes_table(
        res.names, [split] * len(res.names),
        [[labels.index(x) for x in (o or [])] for o in res.oracle_labels],
        [np.zeros(0) if s is None else s for s in res.snr_mix_db],
        [n / rate for n in res.n_samples], **extra)
    t_sc, t_name, t_track, t_probs = [], [], [], []
    for name, probs in zip(res.names, res.tagger_probs):
        for tagger in spec.taggers:
            for k, row in enumerate(probs[tagger]):
                t_sc.append(name)
                t_name.append(tagger)
                t_track.append(k)
                t_probs.append(row)
    tg = S.tagger_table(t_sc, t_name, t_track, np.asarray(t_probs))
    cols = defaultdict(list)
    n_cls = labels.n_classes + 1
    for (i, sep, stage, query), info in sorted(res.stems.items(),
                                               key=lambda kv: (kv[0][0], kv[0][1], kv[0][2],
                                                               len(kv[0][3]), kv[0][3])):
        n_ref = 0 if res.oracle_labels[i] is None else len(res.oracle_labels[i])
        for slot in range(len(query)):
            cols["sc"].append(res.names[i])
            cols["sep"].append(sep)
            cols["stage"].append(stage)
            cols["query"].append(np.asarray(query, np.int16))
            cols["slot"].append(slot)
            cols["energy"].append(info.energy_db[slot])
            cols["snr"].append(info.snr_db[slot] if info.snr_db is not None else np.zeros(0))
            cols["retag"].append(info.retag[slot].reshape(spec.n_tracks, n_cls))
            assert n_ref == (0 if info.snr_db is None else info.snr_db.shape[1])
    sp = S.separations_table(cols["sc"], cols["sep"], cols["stage"], cols["query"],
                             cols["slot"], cols["energy"], cols["snr"],
                             np.asarray(cols["retag"]).reshape(-1, spec.n_tracks, n_cls))
    out = {"soundscapes": sc, "tagger": tg, "separations": sp}
    if res.sed is not None:
        ms = spec.sed
        out["sed"] = S.sed_table(res.names, [ms.name] * len(res.names),
                                 [ms.frame_hop_s] * len(res.names), res.sed)
    return out


# ----------------------------------------------------------------------------- checks


def names_sha256(names: Sequence[str]) -> str:
    """SHA-256 of a soundscape list (order-free)."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()


def read_manifests(path: Path) -> tuple[list[dict], list[str]]:
    """Build manifests ``_build/<split>.shard-<i>of<n>.json`` of a cache, and read errors."""
    out, problems = [], []
    d = path / PROGRESS_DIR
    for f in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            m = json.loads(f.read_text())
            if not isinstance(m, dict):
                raise ValueError(f"expected a JSON object, got {type(m).__name__}")
            m["_file"] = f
            out.append(m)
        except (OSError, ValueError) as e:
            problems.append(f"{f}: unreadable build manifest ({e}); delete it and rerun its "
                            "build command (its chunks are rebuilt)")
    return out, problems


def build_passes(path: Path) -> tuple[dict, int]:
    """Forward passes recorded by the build manifests (items by kind: ``tagger``
    soundscape-forwards summed over taggers, ``separator`` and ``stage`` queries, ``retag``
    stems), summed over the parts that record them, and the number of soundscapes in those
    parts."""
    manifests, _ = read_manifests(path)
    total: dict = defaultdict(int)
    n_sc = 0
    for m in manifests:
        for part, counts in m.get("passes", {}).items():
            if part in m.get("done", {}):
                n_sc += len(m["done"][part])
                for k, v in counts.items():
                    total[k] += int(v)
    order = ("tagger", "separator", "stage", "retag")
    return {k: total[k] for k in sorted(total, key=lambda k: (
        order.index(k) if k in order else len(order), k))}, n_sc


def _manifest_problems(path: Path, cache) -> list[str]:
    manifests, out = read_manifests(path)
    by_split: dict[str, list[dict]] = defaultdict(list)
    for m in manifests:
        by_split[m.get("split")].append(m)
        done = sum(len(v) for v in m.get("done", {}).values())
        if done != len(m.get("names", [])):
            i, n = m.get("shard", ["?", "?"])
            out.append(f"split {m.get('split')!r} shard {i}/{n} is unfinished ({done} of "
                       f"{len(m.get('names', []))} soundscapes): rerun its build command")
    splits = np.asarray(cache.splits).astype(str)
    ids = np.asarray(cache.soundscape_ids).astype(str)
    for split, ms in sorted(by_split.items(), key=lambda kv: str(kv[0])):
        want = {(m.get("n_total"), m.get("names_sha256")) for m in ms}
        if len(want) > 1:
            out.append(f"split {split!r}: its shards were built from different soundscape "
                       f"lists ({sorted(map(str, want))})")
            continue
        n_total, sha = want.pop()
        have = ids[splits == split].tolist()
        if len(have) != n_total:
            shards = {tuple(m.get("shard", (0, 1))) for m in ms}
            n_shards = max(int(n) for _, n in shards)
            absent = [f"{i}/{n_shards}" for i in range(n_shards) if (i, n_shards) not in shards]
            fix = (f"build shard(s) {', '.join(absent)} (--shard) into it" if absent else
                   "rerun the build commands of its shards (they resume)")
            out.append(f"split {split!r}: {len(have)} soundscapes in the parts, the build "
                       f"listed {n_total}: missing shards or chunks; {fix}")
        elif names_sha256(have) != sha:
            out.append(f"split {split!r}: the soundscape names differ from the list the build "
                       "was made for")
    for split in sorted(set(splits.tolist()) - set(map(str, by_split))):
        out.append(f"split {split!r} has no build manifest ({PROGRESS_DIR}/{split}.*.json): "
                   f"completeness cannot be checked; copy {PROGRESS_DIR}/ with the parts when "
                   "merging folders")
    return out


def _part_problems(path: Path, meta: S.CacheMeta) -> list[str]:
    out = []
    names = {}
    for table in S.TABLES:
        for f in sorted((path / table).glob("part-*.parquet")):
            names.setdefault(f.name, set()).add(table)
            try:
                md = pq.read_schema(f).metadata or {}
            except (pa.ArrowException, OSError) as e:
                size = f.stat().st_size
                out.append(f"{f}: unreadable Parquet part ({size} bytes; {type(e).__name__}: "
                           f"{e}); it is truncated or corrupt: delete the files of part "
                           f"{f.stem[5:]!r} and rerun the build (it resumes)")
                continue
            try:
                cid = json.loads(md.get(S.PART_META_KEY, b"{}")).get("cache_id")
            except ValueError:
                cid = None
            if cid != meta.cache_id:
                out.append(f"{f}: written for cache {cid!r}, the metadata says "
                           f"{meta.cache_id!r} (a part of another cache was merged in)")
    for name, tables in sorted(names.items()):
        missing = [t for t in S.REQUIRED_TABLES if t not in tables]
        if missing:
            out.append(f"part {name} has no {', '.join(missing)} file (an interrupted write): "
                       "delete its files and rerun the build")
    return out


def validate(path: Path) -> list[str]:
    """See `cache_builder.build.validate_cache`."""
    meta_file = path / S.META_FILE
    if not meta_file.is_file():
        return [f"{path}: no {S.META_FILE}; not a cache"]
    try:
        meta = S.CacheMeta.from_json(meta_file.read_text(), str(meta_file))
    except CacheSchemaError as e:
        return [str(e)]
    problems = _part_problems(path, meta)
    try:
        with warnings.catch_warnings():  # completeness is reported below, per shard
            warnings.simplefilter("ignore")
            cache = load_cache(path, allow_incomplete=True)
    except (CacheError, CacheSchemaError) as e:
        # unreadable or foreign parts are named above; loading would only repeat the first
        return problems or [str(e)]
    problems += _manifest_problems(path, cache)
    if any("has no " in p for p in problems):
        return problems  # a part without its separations is not a closure problem
    extra = meta.extra or {}
    ids = [str(x) for x in cache.soundscape_ids]
    top_n = int(meta.closure.get("proposal_top_n", extra.get("top_n", 1)))
    oracle = bool(meta.closure.get("oracle", extra.get("has_oracle", False)))
    n_missing = 0
    for s in range(cache.n_soundscapes):
        probs = {t: cache.tagger_probs[i, s] for i, t in enumerate(meta.taggers)}
        r0, r1 = cache.ref_offsets[s], cache.ref_offsets[s + 1]
        orc = [int(x) for x in cache.ref_labels[r0:r1]] if oracle else None
        for q in query_closure(probs, top_n, meta.n_tracks, orc, max_slots=meta.n_tracks):
            j = cache.find_key(s, q)
            have = cache.key_stem[j] >= 0 if j >= 0 else np.zeros(
                (len(meta.separators), meta.n_stages), bool)
            if not have.all():
                n_missing += 1
                if n_missing <= 10:
                    sep, st = (int(v[0]) for v in np.nonzero(~have))
                    problems.append(
                        f"soundscape {ids[s]!r}: closure query "
                        f"{tuple(meta.classes[k] for k in q)} missing for separator "
                        f"{meta.separators[sep]!r} stage {st}")
    if n_missing > 10:
        problems.append(f"... {n_missing} closure queries missing in all")
    return problems


def info(path: Path, allow_incomplete: bool = False) -> dict:
    """See `cache_builder.build.cache_info`."""
    cache = load_cache(path, allow_incomplete=allow_incomplete)
    meta = cache.meta
    extra = meta.extra or {}
    files = [p for p in path.rglob("*") if p.is_file()]
    n_keys = np.diff(cache.key_offsets)
    models = extra.get("models", {})
    passes, n_sc = build_passes(path)

    def ordered(d: dict, names) -> dict:
        return {k: d[k] for k in names if k in d} | {k: v for k, v in d.items()
                                                     if k not in names}
    return {
        "cache_id": meta.cache_id, "label_set": meta.label_set,
        "splits": {str(k): int(v) for k, v in zip(*np.unique(
            np.asarray(cache.splits).astype(str), return_counts=True))},
        "n_soundscapes": cache.n_soundscapes,
        "n_with_oracle": int((cache.n_ref > 0).sum()),
        "n_queries": int(n_keys.sum()),
        "queries_per_soundscape": round(float(n_keys.mean()), 2) if len(n_keys) else 0.0,
        "n_stem_rows": int(len(cache.stem_key)),
        "top_n": meta.closure.get("proposal_top_n"), "closure": meta.closure,
        "amp": extra.get("amp"), "n_stages": meta.n_stages,
        "stage_names": extra.get("stage_names"), "retagger": meta.retagger,
        "taggers": ordered(models.get("taggers", {t: {} for t in meta.taggers}),
                           meta.taggers),
        "separators": ordered(models.get("separators", {
            s: {"sha256": h} for s, h in zip(meta.separators, meta.separator_sha256)}),
            meta.separators),
        "passes": passes,
        "passes_per_soundscape": {k: round(v / n_sc, 3) for k, v in passes.items()}
        if n_sc else {},
        "stages": models.get("stages", []),
        "sed": None if cache.sed is None else {
            "models": list(cache.sed.models), "model": models.get("sed"),
            "n_with_sed": int(np.isfinite(cache.sed.frame_hop_s).any(axis=0).sum())},
        "n_parts": len(list((path / "soundscapes").glob("part-*.parquet"))),
        "size_mb": round(sum(p.stat().st_size for p in files) / 1e6, 3),  # MB = 10**6 bytes
        "casdri_version": meta.casdri_version, "schema_version": meta.schema_version,
    }
