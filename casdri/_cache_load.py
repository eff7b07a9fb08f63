"""Reading a cache directory into flat arrays (private; the API is `casdri.cache.load_cache`).

Conventions: every check names the part file it failed on; arrays come out C-contiguous in the
layout documented on `casdri.cache.DecisionCache`.
"""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import schema as sc
from ._cache_checks import check_values
from .errors import CacheError, CacheSchemaError

__all__ = ["read_tables", "build_arrays"]

#: threads reading Parquet parts (I/O and decoding; more than the cores helps little)
_READERS = 4


def _read_part(f: Path):
    """``pq.read_table(f)`` or the exception it raised (read in a thread pool)."""
    try:
        return pq.read_table(f, use_threads=False)
    except (pa.ArrowException, OSError) as e:
        return e


def read_tables(path: Path, meta: sc.CacheMeta) -> dict[str, list[tuple[Path, pa.Table]]]:
    """``{table: [(file, validated table), ...]}``, files sorted by name, each part's values
    range-checked (`check_values`) and every ``separations`` part in the current schema version
    (`casdri.schema.upgrade_separations`). The parts are read by a few threads
    (Arrow decodes without the GIL: about 2x faster on a cache of many small parts); they are
    checked in file order, so the first bad file is the one named."""
    files = {}
    for name in sc.TABLES:
        d = path / name
        files[name] = sorted(d.glob("part-*.parquet")) if d.is_dir() else []
        if not files[name] and name in sc.REQUIRED_TABLES:
            raise CacheError(f"{path}: no {name}/part-*.parquet files; the cache is incomplete")
    flat = [f for name in sc.TABLES for f in files[name]]
    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        read = dict(zip(flat, pool.map(_read_part, flat)))
    out = {}
    for name in sc.TABLES:
        parts = []
        for f in files[name]:
            t = read[f]
            if isinstance(t, BaseException):
                raise CacheError(f"{f}: unreadable Parquet part ({type(t).__name__}: {t}); it is "
                                 "truncated or corrupt: delete it and rebuild that part") from None
            t = sc.validate_table(t, name, str(f))
            check_values(meta, name, f, t)
            if name == "separations":  # (a version-1 part: read as version 2)
                t = sc.upgrade_separations(t, meta.n_tracks, meta.n_classes, str(f))
            parts.append((f, t))
        out[name] = parts
    return out


def check_parts(path: Path, tables: dict, meta, allow_incomplete: bool = False) -> None:
    """Every part of ``soundscapes`` has its namesake in ``tagger`` and ``separations`` (a
    writer writes them together, ``soundscapes`` last), and in ``sed`` when the cache has SED
    parts or its metadata names a SED model: a part copied without its namesakes would
    otherwise load, and its soundscapes lose their queries (or their SED gates) silently.
    ``tables``: `read_tables`' output (run after `build_arrays`, whose checks name the
    duplicated or orphaned rows more precisely). Raises `CacheError` naming the first missing
    file (warns instead with ``allow_incomplete``)."""
    models = (meta.extra or {}).get("models") or {}
    have = {name: {f.name for f, _ in tables.get(name, [])} for name in sc.TABLES}
    need = ["tagger", "separations"] + (["sed"] if have["sed"] or models.get("sed") else [])
    for name in need:
        missing = sorted(have["soundscapes"] - have[name])
        if missing:
            msg = (
                f"{path / name / missing[0]}: missing, though soundscapes/{missing[0]} exists "
                f"({len(missing)} of {len(have['soundscapes'])} parts missing from {name}/); "
                f"the cache is incomplete: copy the part again, or delete "
                f"soundscapes/{missing[0]} and rebuild that part")
            if not allow_incomplete:
                raise CacheError(msg)
            warnings.warn(msg, stacklevel=3)


def _lists(col: pa.ChunkedArray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(lengths int64, flat values)`` of a list column."""
    lengths = pc.list_value_length(col).to_numpy().astype(np.int64)
    values = pc.list_flatten(col).to_numpy().astype(dtype, copy=False)
    return lengths, values


def _offsets(lengths: np.ndarray) -> np.ndarray:
    off = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=off[1:])
    return off


def _ragged_take(lengths: np.ndarray, values: np.ndarray, perm: np.ndarray):
    """Rows ``perm`` of a ragged array → ``(new offsets, new flat values)``."""
    old = _offsets(lengths)
    new_len = lengths[perm]
    new = _offsets(new_len)
    idx = np.repeat(old[:-1][perm] - new[:-1], new_len) + np.arange(new[-1], dtype=np.int64)
    return new, np.ascontiguousarray(values[idx])


def _index(names: list, values: pa.ChunkedArray, f: Path, what: str) -> np.ndarray:
    """Position of each value in ``names`` (CacheSchemaError naming ``f`` when absent)."""
    idx = pc.fill_null(pc.index_in(values, value_set=pa.array(names, pa.string())), -1)
    idx = idx.to_numpy().astype(np.int64)
    if (idx < 0).any():
        bad = values.to_numpy(zero_copy_only=False)[idx < 0][0]
        where = "soundscapes table" if what == "soundscape" else "cache metadata"
        raise CacheSchemaError(f"{f}: {what} {bad!r} is not in the {where}")
    return idx


def _optional(values: list, order: np.ndarray):
    """``(S,) object`` array of an optional column in id order, or None when every row is
    null (a cache written without it)."""
    if all(v is None for v in values):
        return None
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr[order]


def build_arrays(meta: sc.CacheMeta, tables: dict) -> dict:
    C, K = meta.n_classes, meta.n_tracks
    out = {}
    # ---- soundscapes
    ids, splits, dur, rl_len, rl_val, sm_val, src = [], [], [], [], [], [], []
    rooms, recordings = [], []
    for f, t in tables["soundscapes"]:
        ids += t.column(sc.SOUNDSCAPE).to_pylist()
        splits += t.column(sc.SPLIT).to_pylist()
        rooms += t.column(sc.ROOM).to_pylist()
        recordings += [None if r is None else tuple(r)
                       for r in t.column(sc.RECORDINGS).to_pylist()]
        dur.append(t.column(sc.DURATION_S).to_numpy())
        a, b = _lists(t.column(sc.REF_LABELS), np.int64)
        c, d = _lists(t.column(sc.SNR_MIX_DB), np.float64)
        if (a != c).any():
            i = int(np.flatnonzero(a != c)[0])
            raise CacheSchemaError(f"{f}: soundscape {t.column(sc.SOUNDSCAPE)[i]} has {a[i]} "
                                   f"reference labels but {c[i]} snr_mix_db values")
        if len(b) and (b.min() < 0 or b.max() >= C):
            raise CacheSchemaError(f"{f}: reference label outside 0..{C - 1}")
        if not np.isfinite(d).all():
            raise CacheSchemaError(f"{f}: snr_mix_db holds NaN/Inf")
        rl_len.append(a)
        rl_val.append(b)
        sm_val.append(d)
        src += [f] * len(a)
    ids_arr = np.array(ids, dtype=object)
    order = np.argsort(ids_arr, kind="stable")
    sorted_ids = ids_arr[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if len(dup):
        a, b = order[dup[0]], order[dup[0] + 1]
        raise CacheSchemaError(f"soundscape {sorted_ids[dup[0]]!r} appears twice: in {src[a]} "
                               f"and {src[b]}; remove one of the parts")
    S = len(ids)
    rl_len = np.concatenate(rl_len) if rl_len else np.zeros(0, np.int64)
    ref_off, ref_labels = _ragged_take(rl_len, np.concatenate(rl_val), order)
    _, snr_mix = _ragged_take(rl_len, np.concatenate(sm_val), order)
    names = sorted_ids.tolist()
    out.update(soundscape_ids=sorted_ids, splits=np.array(splits, dtype=object)[order],
               duration_s=np.concatenate(dur)[order].astype(np.float64), ref_offsets=ref_off,
               ref_labels=ref_labels, snr_mix_db=snr_mix,
               rooms=_optional(rooms, order), recordings=_optional(recordings, order))
    n_ref = np.diff(ref_off)
    # ---- tagger
    probs = np.full((len(meta.taggers), S, K, C + 1), np.nan, np.float32)
    seen = np.zeros((len(meta.taggers), S, K), np.int64)
    for f, t in tables["tagger"]:
        s = _index(names, t.column(sc.SOUNDSCAPE), f, "soundscape")
        ti = _index(list(meta.taggers), t.column(sc.TAGGER_NAME), f, "tagger")
        k = t.column(sc.TRACK).to_numpy().astype(np.int64)
        ln, val = _lists(t.column(sc.PROBS), np.float32)
        if len(k) and (k.min() < 0 or k.max() >= K):
            raise CacheSchemaError(f"{f}: track outside 0..{K - 1} (n_tracks = {K})")
        if (ln != C + 1).any():
            raise CacheSchemaError(f"{f}: tagger probs must have C + 1 = {C + 1} entries, "
                                   f"found {int(ln[ln != C + 1][0])}")
        probs[ti, s, k] = val.reshape(-1, C + 1)
        np.add.at(seen, (ti, s, k), 1)
    if (seen != 1).any():
        ti, s, k = (int(v[0]) for v in np.nonzero(seen != 1))
        what = "missing" if seen[ti, s, k] == 0 else "duplicated"
        fix = ("a tagger part file is missing or incomplete; 'casdri-cache validate' on this "
               "cache names the part to delete and rebuild" if what == "missing" else
               "two parts hold the same rows; remove one of them")
        raise CacheSchemaError(f"tagger rows {what}: soundscape {names[s]!r}, tagger "
                               f"{meta.taggers[ti]!r}, track {k} ({fix})")
    out["tagger_probs"] = probs
    out.update(_separations(meta, tables["separations"], names, n_ref))
    if tables.get("sed"):
        out["sed"] = _sed(meta, tables["sed"], names)
    return out


def _separations(meta, parts, names, n_ref) -> dict:
    C, n_sep, n_st = meta.n_classes, len(meta.separators), meta.n_stages
    max_len = int(62 // np.log2(C + 1))  # key codes stay below 2**62
    cols = {k: [] for k in ("s", "sep", "st", "slot", "qlen", "q", "code", "e", "snrlen", "snr",
                            "rmax", "smin", "file")}
    for fi, (f, t) in enumerate(parts):
        s = _index(names, t.column(sc.SOUNDSCAPE), f, "soundscape")
        sep = _index(list(meta.separators), t.column(sc.SEPARATOR), f, "separator")
        st = t.column(sc.STAGE).to_numpy().astype(np.int64)
        slot = t.column(sc.SLOT).to_numpy().astype(np.int64)
        qlen, q = _lists(t.column(sc.QUERY), np.int64)
        e = t.column(sc.ENERGY_DB).to_numpy().astype(np.float64)
        snrlen, snr = _lists(t.column(sc.SNR_DB), np.float64)
        rlen, rmax = _lists(t.column(sc.RETAG_MAX), np.float32)
        smin = t.column(sc.RETAG_SILENCE_MIN).to_numpy().astype(np.float32)
        bad = None
        if len(st) and (st.min() < 0 or st.max() >= n_st):
            bad = f"stage outside 0..{n_st - 1} (n_stages = {n_st})"
        elif (qlen < 1).any() or (qlen > max_len).any():
            bad = f"a query with 0 or more than {max_len} classes"
        elif len(q) and (q.min() < 0 or q.max() >= C):
            bad = f"a query class outside 0..{C - 1}"
        elif (slot < 0).any() or (slot >= qlen).any():
            bad = "slot outside its query"
        elif (snrlen != n_ref[s]).any():
            bad = "snr_db length differs from the soundscape's number of references"
        elif (rlen != C).any():
            bad = f"retag_max must hold C = {C} values"
        elif np.isnan(e).any() or not np.isfinite(snr).all():
            bad = "NaN in energy_db or NaN/Inf in snr_db"
        if bad is None:
            qoff = _offsets(qlen)
            pos = np.arange(len(q)) - np.repeat(qoff[:-1], qlen)
            if (np.diff(q)[pos[1:] > 0] < 0).any():
                bad = "a query not in canonical order (sorted ascending)"
            code = np.add.reduceat((q + 1) * (C + 1) ** pos, qoff[:-1]) if len(q) else q
        if bad is not None:
            raise CacheSchemaError(f"{f}: {bad}")
        for k, v in (("s", s), ("sep", sep), ("st", st), ("slot", slot), ("qlen", qlen),
                     ("q", q), ("code", code), ("e", e), ("snrlen", snrlen), ("snr", snr),
                     ("rmax", rmax), ("smin", smin), ("file", np.full(len(s), fi))):
            cols[k].append(v)
    c = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
    s, code, sep, st, slot = (c[k].astype(np.int64) for k in ("s", "code", "sep", "st", "slot"))
    perm = np.lexsort((slot, st, sep, code, s))
    s, code, sep, st, slot = s[perm], code[perm], sep[perm], st[perm], slot[perm]
    qlen_all = c["qlen"].astype(np.int64)
    qoff_all = _offsets(qlen_all)
    qlen = qlen_all[perm]
    N = len(s)
    same = np.ones(N, bool)
    if N:
        same[1:] = (s[1:] == s[:-1]) & (code[1:] == code[:-1])
        same[0] = False
    new_key = ~same
    grp_new = new_key.copy()
    grp_new[1:] |= (sep[1:] != sep[:-1]) | (st[1:] != st[:-1])
    dupe = np.flatnonzero(~grp_new[1:] & (slot[1:] == slot[:-1])) + 1
    key_of = np.cumsum(new_key) - 1
    gstart = np.flatnonzero(grp_new)
    gsize = np.diff(np.append(gstart, N))
    pos = np.arange(N) - np.repeat(gstart, gsize)
    wrong = np.flatnonzero((slot != pos) | (np.repeat(gsize, gsize) != qlen))
    if len(dupe) or len(wrong):
        i = int(dupe[0]) if len(dupe) else int(wrong[0])
        f = parts[int(c["file"][perm[i]])][0]
        r0 = qoff_all[perm[i]]
        q = tuple(meta.classes[int(x)] for x in c["q"][r0:r0 + qlen[i]])
        raise CacheSchemaError(
            f"{f}: soundscape {names[s[i]]!r}, separator {meta.separators[sep[i]]!r}, stage "
            f"{st[i]}, query {q}: slots must be 0..{qlen[i] - 1} exactly once each "
            f"({'duplicate' if len(dupe) else 'missing or extra'} slot {slot[i]})")
    kstart = np.flatnonzero(new_key)
    NK = len(kstart)
    maxs = int(qlen.max()) if N else 1
    key_labels = np.full((NK, maxs), -1, np.int64)
    k_qoff = qoff_all[perm[kstart]]
    for i in range(maxs):
        has = qlen[kstart] > i
        key_labels[has, i] = c["q"].astype(np.int64)[k_qoff[has] + i]
    key_stem = np.full((NK, n_sep, n_st), -1, np.int64)
    key_stem[key_of[gstart], sep[gstart], st[gstart]] = gstart
    snr_off, snr = _ragged_take(c["snrlen"].astype(np.int64), c["snr"].astype(np.float64), perm)
    key_sc = s[kstart]
    return dict(
        key_offsets=np.searchsorted(key_sc, np.arange(len(names) + 1)).astype(np.int64),
        key_codes=np.ascontiguousarray(code[kstart]), key_sc=np.ascontiguousarray(key_sc),
        key_len=np.ascontiguousarray(qlen[kstart]), key_labels=key_labels, key_stem=key_stem,
        stem_key=key_of.astype(np.int64), stem_separator=sep, stem_stage=st, stem_slot=slot,
        stem_label=np.ascontiguousarray(key_labels[key_of, slot]) if N else slot.copy(),
        stem_energy_db=np.ascontiguousarray(c["e"].astype(np.float64)[perm]),
        stem_snr_offsets=snr_off, stem_snr_db=snr,
        stem_retag_max=np.ascontiguousarray(
            c["rmax"].astype(np.float32, copy=False).reshape(-1, C)[perm]),
        stem_retag_silence_min=np.ascontiguousarray(c["smin"].astype(np.float32)[perm]))


def _sed(meta, parts, names) -> dict:
    C, S = meta.n_classes, len(names)
    models = sorted({m for _, t in parts for m in t.column(sc.MODEL).unique().to_pylist()})
    hop = np.full((len(models), S), np.nan)
    lens = np.zeros(len(models) * S, np.int64)
    chunks = {}
    for f, t in parts:
        s = _index(names, t.column(sc.SOUNDSCAPE), f, "soundscape")
        m = _index(models, t.column(sc.MODEL), f, "model")
        nf = t.column(sc.N_FRAMES).to_numpy().astype(np.int64)
        ln, val = _lists(t.column(sc.PROBS), np.float16)
        if (ln != nf * C).any():
            raise CacheSchemaError(f"{f}: SED probs must hold n_frames * C values")
        off = _offsets(ln)
        for i in range(len(s)):
            if (m[i], s[i]) in chunks:
                raise CacheSchemaError(f"{f}: SED of {names[s[i]]!r} / {models[m[i]]!r} twice")
            chunks[(m[i], s[i])] = val[off[i]:off[i + 1]].reshape(-1, C)
            hop[m[i], s[i]] = t.column(sc.FRAME_HOP_S)[i].as_py()
            lens[m[i] * S + s[i]] = nf[i]
    probs = [chunks.get((mi, si), np.zeros((0, C), np.float16))
             for mi in range(len(models)) for si in range(S)]
    return dict(models=tuple(models), frame_hop_s=hop, offsets=_offsets(lens),
                probs=np.ascontiguousarray(np.concatenate(probs) if probs else
                                           np.zeros((0, C), np.float16)))
