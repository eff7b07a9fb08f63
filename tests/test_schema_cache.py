"""The cache format: frozen cache per schema version, writing (atomic, appends, conflicts),
loading (array invariants against the raw tables) and a table of bad inputs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from casdri import schema as sc
from casdri.cache import CacheWriter, load_cache, upgrade_cache
from casdri.errors import CacheError, CacheSchemaError
from casdri.policies import params_class
from casdri.replay import replay
from casdri.synthetic import make_synthetic_cache

from .conftest import DATA

FROZEN = {1: DATA / "frozen_cache_v1", 2: DATA / "frozen_cache_v2"}


@pytest.mark.parametrize("version", sorted(FROZEN))
def test_frozen_cache_replays_the_frozen_numbers(version):
    assert version in sc.SUPPORTED_VERSIONS
    cache = load_cache(FROZEN[version], label_set="dcase2026t4")
    assert cache.meta.schema_version == version
    assert cache.sed is not None and cache.sed.probs.dtype == np.float16
    expected = json.loads((FROZEN[version] / "expected.json").read_text())
    for name, e in expected.items():
        cls = params_class(e["policy"])
        params = cls.from_yaml({"policy": e["policy"], "params": e["params"]},
                               cache.label_set)
        r = replay(cache, e["policy"], params, per_soundscape=True)
        assert r.capi_sdri[0] == pytest.approx(e["capi_sdri"], abs=1e-12), name
        assert r.accuracy_mix[0] == pytest.approx(e["accuracy_mix"], abs=1e-12), name
        assert r.accuracy_src[0] == pytest.approx(e["accuracy_src"], abs=1e-12), name
        got = [None if v != v else v for v in r.per_soundscape.capi_sdri]
        assert got == pytest.approx(e["per_soundscape"], abs=1e-12), name


def test_every_supported_version_has_a_frozen_cache():
    assert sorted(FROZEN) == list(sc.SUPPORTED_VERSIONS)
    assert sc.SCHEMA_VERSION == max(sc.SUPPORTED_VERSIONS)


def test_frozen_caches_of_both_versions_replay_the_same_numbers():
    """Version 2's frozen cache is version 1's (same seed) written by version 2's writer:
    reducing the retagger's softmax at write time changes no replayed number."""
    e1, e2 = (json.loads((FROZEN[v] / "expected.json").read_text()) for v in (1, 2))
    assert e1.keys() == e2.keys()
    for name in e1:
        for k in ("capi_sdri", "accuracy_mix", "accuracy_src", "per_soundscape"):
            assert e1[name][k] == e2[name][k], (name, k)
    a, b = load_cache(FROZEN[1]), load_cache(FROZEN[2])
    np.testing.assert_array_equal(a.stem_retag_max, b.stem_retag_max)
    np.testing.assert_array_equal(a.stem_retag_silence_min, b.stem_retag_silence_min)


def _arrays_equal(a, b) -> int:
    """Every array of two loaded caches is equal (dtype, shape, values); returns how many."""
    n = 0
    for f in a.__dataclass_fields__:
        x, y = getattr(a, f), getattr(b, f)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f
            np.testing.assert_array_equal(x, y, err_msg=f)
            n += 1
    return n


def test_upgrade_cache_rewrites_version_1_parts_and_keeps_every_array(tmp_path):
    path = tmp_path / "cache"
    shutil.copytree(FROZEN[1], path)
    before = load_cache(path)
    files = sorted((path / "separations").glob("part-*.parquet"))
    assert upgrade_cache(path) == files
    for f in files:
        t = pq.read_table(f)
        assert sc.part_version(t) == 2 and sc.RETAG not in t.column_names
        assert t.schema.field(sc.RETAG_MAX).metadata[b"unit"] == b"probability"
    after = load_cache(path)
    assert before.meta.schema_version == 1 and after.meta.schema_version == 2
    assert after.meta.cache_id == before.meta.cache_id
    assert _arrays_equal(before, after) >= 20
    assert upgrade_cache(path) == []  # a rerun has nothing left to do
    assert not list(path.rglob(".*tmp*"))


def test_upgrade_cache_stops_at_a_bad_part_and_resumes_after_it(tmp_path):
    """The second of two parts is bad: the first is rewritten, the second and the metadata
    stay as they were; once the part is mended, a rerun rewrites it alone."""
    path = tmp_path / "cache"
    shutil.copytree(FROZEN[1], path)
    first, second = sorted((path / "separations").glob("part-*.parquet"))
    good = second.read_bytes()
    t = pq.read_table(second)
    rows = t.column(sc.RETAG).to_pylist()
    rows[0] = [1.5] * len(rows[0])
    pq.write_table(t.set_column(t.schema.get_field_index(sc.RETAG), t.schema.field(sc.RETAG),
                                pa.array(rows, pa.list_(pa.float32()))), second)
    raw = second.read_bytes()
    with pytest.raises(CacheSchemaError, match=r"separations/part-001.parquet: retag value 1.5"):
        upgrade_cache(path)
    assert second.read_bytes() == raw and sc.part_version(pq.read_table(first)) == 2
    meta = json.loads((path / sc.META_FILE).read_text())
    assert meta["schema_version"] == 1
    second.write_bytes(good)
    done_first = first.read_bytes()
    meta["note"] = "a key of the user's own"
    (path / sc.META_FILE).write_text(json.dumps(meta))
    assert upgrade_cache(path) == [second]
    assert first.read_bytes() == done_first  # (not redone)
    meta = json.loads((path / sc.META_FILE).read_text())
    assert meta["schema_version"] == 2 and meta["note"] == "a key of the user's own"
    assert _arrays_equal(load_cache(FROZEN[1]), load_cache(path)) >= 20
    assert not list(path.rglob(".*tmp*"))
    with pytest.raises(CacheError, match="is not a casdri cache"):
        upgrade_cache(tmp_path)


def test_a_version_1_part_without_its_metadata_loads_and_upgrades(tmp_path):
    """A part rewritten by another tool (pandas, pyarrow) loses casdri's part metadata: its
    columns still say which version it is."""
    path = tmp_path / "cache"
    shutil.copytree(FROZEN[1], path)
    for f in (path / "separations").glob("part-*.parquet"):
        pq.write_table(pq.read_table(f).replace_schema_metadata(None), f)
    assert _arrays_equal(load_cache(FROZEN[1]), load_cache(path)) >= 20
    assert len(upgrade_cache(path)) == 2
    assert _arrays_equal(load_cache(FROZEN[1]), load_cache(path)) >= 20


def test_write_part_checks_a_version_1_softmax_before_reducing_it(tmp_path):
    """Reduced values cannot show that a row was not a softmax, so a version-1 table given to
    the writer is checked first (sigmoid-like rows, all 0.9, are refused)."""
    meta = load_cache(FROZEN[1]).meta
    sub = {k: pq.read_table(sorted((FROZEN[1] / k).glob("*.parquet"))[0])
           for k in (*sc.REQUIRED_TABLES, "sed")}
    t = sub["separations"]
    rows = [[0.9] * len(v) for v in t.column(sc.RETAG).to_pylist()]
    bad = t.set_column(t.schema.get_field_index(sc.RETAG), t.schema.field(sc.RETAG),
                       pa.array(rows, pa.list_(pa.float32())))
    with pytest.raises(CacheSchemaError, match=r"part 'a' table 'separations': retag row 0 sums "
                                               r"to 17.1, not 1.*softmax"):
        CacheWriter(tmp_path / "c", meta).write_part("a", sub["soundscapes"], sub["tagger"],
                                                     bad, sub["sed"])
    assert not (tmp_path / "c" / "separations").exists()


def test_a_build_resumes_into_a_version_1_cache_with_the_same_id(tmp_path):
    """`casdri-cache build` into a cache an older casdri began: the folder is accepted (the
    schema version is no part of a build's identity) and the build's cache id is the one the
    older casdri gave it (the shipped demo cache was built at schema 1)."""
    from cache_builder._cachewrite import cache_id, prepare_folder
    demo = json.loads((Path(__import__("casdri").__file__).parent / "data" / "demo_cache"
                       / sc.META_FILE).read_text())
    assert cache_id(demo) == demo["cache_id"] == "fda759350c13dc1c"
    assert cache_id({**demo, "schema_version": 1}) == cache_id({**demo, "schema_version": 2})
    path = tmp_path / "cache"
    shutil.copytree(FROZEN[1], path)
    meta = json.loads((path / sc.META_FILE).read_text())
    got = prepare_folder(path, {**meta, "schema_version": 2})
    assert got.cache_id == meta["cache_id"] and got.schema_version == 1
    with pytest.raises(CacheError, match=r"n_tracks: 3 \(on disk\) vs 2 \(this build\)"):
        prepare_folder(path, {**meta, "schema_version": 2, "n_tracks": 2})


def test_a_newer_writer_resumes_a_version_1_cache(tmp_path):
    """A build begun by a version-1 casdri goes on with version-2 parts (the metadata's
    identity leaves the version out); the mixed cache loads, the old parts unchanged, and a
    version-1 table given to the writer is stored as version 2."""
    path = tmp_path / "cache"
    shutil.copytree(FROZEN[1], path)
    before = load_cache(path)
    w = CacheWriter(path, sc.CacheMeta(**{**{k: getattr(before.meta, k)
                                             for k in before.meta.__dataclass_fields__},
                                          "schema_version": 2}))
    assert w.meta.schema_version == 1  # the cache's own metadata is kept
    other = tmp_path / "other"
    make_synthetic_cache(other, n_soundscapes=3, seed=5, n_stages=2, n_parts=1, sed_frames=4,
                         load=False)
    tabs = {}
    for k in (*sc.REQUIRED_TABLES, "sed"):
        t = pq.read_table(other / k / "part-000.parquet")
        new_ids = pa.array([i.replace("synth", "later") for i in
                            t.column(sc.SOUNDSCAPE).to_pylist()])
        tabs[k] = t.set_column(t.schema.get_field_index(sc.SOUNDSCAPE), sc.SOUNDSCAPE, new_ids)
    v1 = pq.read_table(sorted((FROZEN[1] / "separations").glob("*.parquet"))[0])
    assert sc.part_version(v1) == 1 and sc.RETAG in v1.column_names
    ids = set(v1.column(sc.SOUNDSCAPE).to_pylist())
    w.write_part("zz-new", tabs["soundscapes"], tabs["tagger"], tabs["separations"], tabs["sed"])
    mixed = load_cache(path)
    assert mixed.n_soundscapes == before.n_soundscapes + 3
    new = pq.read_table(path / "separations" / "part-zz-new.parquet")
    assert sc.part_version(new) == 2
    # the version-1 part re-written through the writer (as a table read back) becomes v2
    fresh = tmp_path / "fresh"
    w2 = CacheWriter(fresh, before.meta)
    sub = {k: pq.read_table(sorted((FROZEN[1] / k).glob("*.parquet"))[0])
           for k in (*sc.REQUIRED_TABLES, "sed")}
    assert set(sub["soundscapes"].column(sc.SOUNDSCAPE).to_pylist()) == ids
    w2.write_part("a", sub["soundscapes"], sub["tagger"], sub["separations"], sub["sed"])
    t = pq.read_table(fresh / "separations" / "part-a.parquet")
    assert sc.part_version(t) == 2 and sc.RETAG not in t.column_names
    one = load_cache(fresh)
    for i, sid in enumerate(one.soundscape_ids):
        j = list(before.soundscape_ids).index(sid)
        a0, a1 = one.key_offsets[i], one.key_offsets[i + 1]
        b0, b1 = before.key_offsets[j], before.key_offsets[j + 1]
        np.testing.assert_array_equal(one.key_codes[a0:a1], before.key_codes[b0:b1])
        rows_a = np.flatnonzero(np.isin(one.stem_key, np.arange(a0, a1)))
        rows_b = np.flatnonzero(np.isin(before.stem_key, np.arange(b0, b1)))
        np.testing.assert_array_equal(one.stem_retag_max[rows_a], before.stem_retag_max[rows_b])
        np.testing.assert_array_equal(one.stem_retag_silence_min[rows_a],
                                      before.stem_retag_silence_min[rows_b])


def test_reduce_retag_and_separations_table_shapes():
    r = np.zeros((2, 3, 4), np.float32)
    r[0, :, :] = [[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.1, 0.2], [0.0, 0.0, 0.1, 0.9]]
    r[1, :, 3] = 1.0
    mx, smin = sc.reduce_retag(r)
    np.testing.assert_array_equal(mx, np.float32([[0.7, 0.6, 0.1], [0, 0, 0]]))
    np.testing.assert_array_equal(smin, np.float32([0.1, 1.0]))
    assert mx.dtype == smin.dtype == np.float32
    with pytest.raises(ValueError, match=r"expected \(n_stems, n_tracks, C \+ 1\)"):
        sc.reduce_retag(r[0])
    args = (["a", "a"], ["s", "s"], [0, 0], [[0, 1], [0, 1]], [0, 1], [-3.0, -4.0], [[], []])
    t = sc.separations_table(*args, r)
    assert t.column(sc.RETAG_MAX).to_pylist()[0] == pytest.approx([0.7, 0.6, 0.1])
    assert t.column(sc.RETAG_SILENCE_MIN).to_pylist() == pytest.approx([0.1, 1.0])
    assert sc.separations_table(*args, list(r)).equals(t)
    with pytest.raises(ValueError, match=r"reshape each to \(n_tracks, C \+ 1\)"):
        sc.separations_table(*args, r.reshape(2, -1))
    logits = r.copy()
    logits[1, 2] = [2.0, -1.0, 0.5, 0.1]
    with pytest.raises(ValueError, match=r"retag: stem 1, track 2 is not a softmax \(sum 1.6, "
                                         r"values in \[-1, 2\].*not logits or sigmoids"):
        sc.separations_table(*args, logits)
    loose = r.copy()
    loose[0, 0, 0] += 0.05  # a sum of 1.05: refused at the default tolerance, kept at 0.1
    with pytest.raises(ValueError, match="stem 0, track 0 is not a softmax"):
        sc.separations_table(*args, loose)
    assert sc.separations_table(*args, loose, prob_tol=0.1).num_rows == 2


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "cache"
    make_synthetic_cache(path, n_soundscapes=10, seed=4, n_stages=2, n_parts=2, load=False)
    return path


def test_arrays_match_raw_tables(small):
    c = load_cache(small)
    S, C = c.n_soundscapes, c.n_classes
    assert list(c.soundscape_ids) == sorted(c.soundscape_ids)
    assert c.tagger_probs.shape == (2, S, 3, C + 1) and np.isfinite(c.tagger_probs).all()
    for s in range(S):
        codes = c.key_codes[c.key_offsets[s]:c.key_offsets[s + 1]]
        assert (np.diff(codes) > 0).all() and (c.key_sc[c.key_offsets[s]:c.key_offsets[s + 1]]
                                              == s).all()
    assert (c.stem_label == c.key_labels[c.stem_key, c.stem_slot]).all()
    j, sep, st = np.nonzero(c.key_stem >= 0)
    rows = c.key_stem[j, sep, st]
    assert (c.stem_key[rows] == j).all() and (c.stem_separator[rows] == sep).all()
    assert (c.stem_stage[rows] == st).all() and (c.stem_slot[rows] == 0).all()
    n_snr = np.diff(c.stem_snr_offsets)
    assert (n_snr == c.n_ref[c.key_sc[c.stem_key]]).all()
    sep_tab = pd.concat(pd.read_parquet(f) for f in sorted((small / "separations").glob("*")))
    rng = np.random.default_rng(0)
    for r in rng.choice(len(c.stem_label), 50, replace=False):
        s = c.key_sc[c.stem_key[r]]
        q = tuple(c.key_labels[c.stem_key[r], :c.key_len[c.stem_key[r]]])
        hit = sep_tab[(sep_tab[sc.SOUNDSCAPE] == c.soundscape_ids[s])
                      & (sep_tab[sc.SEPARATOR] == c.separators[c.stem_separator[r]])
                      & (sep_tab[sc.STAGE] == c.stem_stage[r])
                      & (sep_tab[sc.SLOT] == c.stem_slot[r])
                      & sep_tab[sc.QUERY].map(lambda v: tuple(v) == q)]
        assert len(hit) == 1
        row = hit.iloc[0]
        assert row[sc.ENERGY_DB] == c.stem_energy_db[r]
        assert list(row[sc.SNR_DB]) == list(c.stem_snr_db[c.stem_snr_offsets[r]:
                                                          c.stem_snr_offsets[r + 1]])
        assert list(row[sc.RETAG_MAX]) == list(c.stem_retag_max[r])
        assert row[sc.RETAG_SILENCE_MIN] == c.stem_retag_silence_min[r]


def test_append_conflict_and_atomicity(tmp_path):
    a = make_synthetic_cache(tmp_path / "a", n_soundscapes=4, seed=1, n_parts=1)
    b = tmp_path / "b"
    make_synthetic_cache(b, n_soundscapes=4, seed=1, n_parts=1, load=False)
    # append a part with other soundscapes to `a`, through a writer with the same metadata
    other = tmp_path / "other"
    make_synthetic_cache(other, n_soundscapes=3, seed=2, n_parts=1, load=False)
    tabs = {k: pq.read_table(other / k / "part-000.parquet") for k in sc.REQUIRED_TABLES}
    ids = {k: t.column(sc.SOUNDSCAPE).to_pylist() for k, t in tabs.items()}
    ren = {i: i.replace("synth", "extra") for i in ids["soundscapes"]}
    for k, t in tabs.items():
        col = pa.array([ren[i] for i in ids[k]])
        tabs[k] = t.set_column(t.schema.get_field_index(sc.SOUNDSCAPE), sc.SOUNDSCAPE, col)
    w = CacheWriter(a.path, a.meta)
    assert w.meta.cache_id == a.meta.cache_id
    w.write_part("extra", tabs["soundscapes"], tabs["tagger"], tabs["separations"])
    c = load_cache(a.path)
    assert c.n_soundscapes == 7 and c.meta.cache_id == a.meta.cache_id
    with pytest.raises(CacheError, match="exists"):
        w.write_part("extra", tabs["soundscapes"], tabs["tagger"], tabs["separations"])
    other_meta = sc.CacheMeta(**{**{k: getattr(a.meta, k) for k in a.meta.__dataclass_fields__},
                                 "separators": ("x", "y")})
    with pytest.raises(CacheError, match=r"separators: cache has \['sepA', 'sepB'\], writer "
                                         r"has \['x', 'y'\]"):
        CacheWriter(b, other_meta)
    assert not list(Path(a.path).rglob(".*tmp*"))


def _truncate(p):
    f = sorted((p / "separations").glob("*.parquet"))[0]
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _garble(p):
    f = sorted((p / "tagger").glob("*.parquet"))[0]
    b = bytearray(f.read_bytes())
    b[-8:-4] = b"\x00\x00\xff\x7f"  # footer length beyond the file
    f.write_bytes(bytes(b))


def _set_meta(p, **kw):
    d = json.loads((p / sc.META_FILE).read_text())
    d.update(kw)
    (p / sc.META_FILE).write_text(json.dumps(d))


def _rewrite(p, table, fn, idx=0):
    f = sorted((p / table).glob("*.parquet"))[idx]
    pq.write_table(fn(pq.read_table(f)), f)


def _reverse_queries(t):
    q = [list(reversed(v)) for v in t.column(sc.QUERY).to_pylist()]
    return t.set_column(t.schema.get_field_index(sc.QUERY), sc.QUERY,
                        pa.array(q, pa.list_(pa.int16())))


def _drop_slot1(t):
    i = t.column(sc.SLOT).to_pylist().index(1)
    return pa.concat_tables([t.slice(0, i), t.slice(i + 1)])


BAD = [
    ("truncated parquet", _truncate, {}, CacheError, r"separations/part-000\.parquet.*truncated"),
    ("corrupt parquet", _garble, {}, CacheError, r"tagger/part-000\.parquet: unreadable"),
    ("other label set", lambda p: None, {"label_set": "dcase2025t4"}, CacheSchemaError,
     r"label set 'dcase2026t4' .* != expected label set 'dcase2025t4'"),
    ("schema version", lambda p: _set_meta(p, schema_version=99), {}, CacheSchemaError,
     r"schema version 99 is not supported"),
    ("not a cache", lambda p: (p / sc.META_FILE).unlink(), {}, CacheError,
     "is not a casdri cache"),
    ("missing column", lambda p: _rewrite(p, "separations", lambda t: t.drop([sc.ENERGY_DB])),
     {}, CacheSchemaError, r"missing column 'energy_db'"),
    ("wrong column type", lambda p: _rewrite(p, "soundscapes", lambda t: t.set_column(
        1, sc.SPLIT, pa.array([[1]] * len(t), pa.list_(pa.int8())))), {}, CacheSchemaError,
     r"column 'split' is list<.*int8>, expected string"),
    ("duplicate soundscape", lambda p: shutil.copy(p / "soundscapes/part-000.parquet",
                                                   p / "soundscapes/part-zzz.parquet"),
     {}, CacheSchemaError, r"appears twice: in .*part-000.parquet and .*part-zzz.parquet"),
    ("orphan rows", lambda p: (p / "soundscapes/part-001.parquet").unlink(), {},
     CacheSchemaError, r"tagger/part-001.parquet: soundscape 'synth_\d+' is not in the "
                       r"soundscapes table"),
    ("missing table", lambda p: shutil.rmtree(p / "tagger"), {}, CacheError,
     r"no tagger/part-\*.parquet"),
    ("missing slot", lambda p: _rewrite(p, "separations", _drop_slot1), {},
     CacheSchemaError, r"slots must be 0\.\.\d exactly once"),
    ("missing tagger row", lambda p: _rewrite(p, "tagger", lambda t: t.slice(1)), {},
     CacheSchemaError, r"tagger rows missing: soundscape 'synth_"),
    ("deleted tagger part", lambda p: (p / "tagger/part-001.parquet").unlink(), {},
     CacheSchemaError, r"^/.*: tagger rows missing: soundscape 'synth_\d+', tagger '\w+', track "
                       r"\d \(a tagger part file is missing or incomplete; 'casdri-cache "
                       r"validate' on this cache names the part to delete and rebuild\)"),
    ("query order", lambda p: _rewrite(p, "separations", _reverse_queries), {},
     CacheSchemaError, "not in canonical order"),
    ("unknown separator", lambda p: _set_meta(p, separators=["sepA", "zzz"]), {},
     CacheSchemaError, r"separator 'sepB' is not in the cache metadata"),
    ("short retag_max", lambda p: _rewrite(p, "separations", lambda t: t.set_column(
        t.schema.get_field_index(sc.RETAG_MAX), t.schema.field(sc.RETAG_MAX),
        pa.array([v[:-1] for v in t.column(sc.RETAG_MAX).to_pylist()],
                 pa.list_(pa.float32())))),
     {}, CacheSchemaError, r"separations/part-000.parquet: retag_max must hold C = 18 values"),
    ("retag_max above 1", lambda p: _rewrite(p, "separations", lambda t: t.set_column(
        t.schema.get_field_index(sc.RETAG_MAX), t.schema.field(sc.RETAG_MAX),
        pa.array([[1.5] * len(v) for v in t.column(sc.RETAG_MAX).to_pylist()],
                 pa.list_(pa.float32())))),
     {}, CacheSchemaError, r"separations/part-000.parquet: retag_max value 1.5"),
]


def _short_v1_retag(p):
    f = sorted((p / "separations").glob("*.parquet"))[0]
    t = pq.read_table(f)
    rows = [v[:-1] for v in t.column(sc.RETAG).to_pylist()]
    pq.write_table(t.set_column(t.schema.get_field_index(sc.RETAG), t.schema.field(sc.RETAG),
                                pa.array(rows, pa.list_(pa.float32()))), f)


def test_a_version_1_part_with_a_short_retag_is_named(tmp_path):
    path = tmp_path / "cache"
    shutil.copytree(FROZEN[1], path)
    _short_v1_retag(path)
    with pytest.raises(CacheSchemaError, match=r"separations/part-.*\.parquet: row 0: retag "
                                               r"holds 56 values, but n_tracks \* \(C \+ 1\) = "
                                               r"3 \* 19 = 57; the metadata's n_tracks or "
                                               r"classes do not match the part"):
        load_cache(path)


@pytest.mark.parametrize("name,damage,kw,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_caches(small, name, damage, kw, exc, match):
    damage(small)
    with pytest.raises(exc, match=match):
        load_cache(small, **kw)


def test_validate_table_casts_and_refuses():
    t = pa.table({sc.SOUNDSCAPE: ["a"], sc.TAGGER_NAME: ["4ch"],
                  sc.TRACK: pa.array([1], pa.int64()),
                  sc.PROBS: pa.array([[0.5, 0.5]], pa.list_(pa.float64())), "extra": [1]})
    v = sc.validate_table(t, "tagger")
    assert v.schema == sc.TAGGER and v.column(sc.TRACK).type == pa.int8()
    bad = t.set_column(2, sc.TRACK, pa.array([None], pa.int64()))
    with pytest.raises(CacheSchemaError, match="nulls"):
        sc.validate_table(bad, "tagger", "somewhere.parquet")
    with pytest.raises(CacheSchemaError, match="unknown cache table"):
        sc.validate_table(t, "nope")


def test_meta_round_trip_and_units(small):
    m = sc.CacheMeta.from_json((small / sc.META_FILE).read_text())
    assert sc.CacheMeta.from_json(m.to_json()) == m
    assert m.closure == {"proposal_top_n": 1, "max_query_size": 3, "oracle": True}
    with pytest.raises(CacheSchemaError, match="not a casdri cache metadata"):
        sc.CacheMeta.from_dict({"schema_version": 1})
    assert sc.SEPARATIONS.field(sc.ENERGY_DB).metadata[b"unit"] == b"dB"
    schema = pq.read_schema(sorted((small / "separations").glob("*"))[0])
    assert schema.field(sc.SNR_DB).metadata[b"unit"] == b"dB"
    assert json.loads(schema.metadata[sc.PART_META_KEY])["schema_version"] == sc.SCHEMA_VERSION


@pytest.mark.parametrize("field,value", [("n_tracks", "three"), ("n_tracks", 0),
                                         ("n_stages", 1.5), ("sample_rate_hz", True)])
def test_meta_names_a_bad_integer_field(small, field, value):
    """``"n_tracks": "three"`` gave ``bad metadata: '<' not supported between instances of
    'str' and 'int'``, naming no field."""
    d = json.loads((small / sc.META_FILE).read_text())
    d[field] = value
    with pytest.raises(CacheSchemaError, match=rf"cache\.json: bad metadata: {field} must be an "
                       rf"integer >= 1, got {value!r}"):
        sc.CacheMeta.from_dict(d, where="cache.json")


def test_optional_group_columns_round_trip_and_stay_optional():
    t = sc.soundscapes_table(["b", "a", "c"], ["dev"] * 3, [[0], [], [1, 2]],
                             [[1.0], [], [2.0, 3.0]], [10.0] * 3,
                             room=["r1", None, "r2"], recordings=[["x", "y"], None, []])
    assert t.schema == sc.SOUNDSCAPES
    assert t.column(sc.ROOM).to_pylist() == ["r1", None, "r2"]
    assert t.column(sc.RECORDINGS).to_pylist() == [["x", "y"], None, []]
    plain = sc.soundscapes_table(["a"], ["dev"], [[0]], [[1.0]], [1.0])
    assert plain.column(sc.ROOM).null_count == 1 and plain.column(sc.RECORDINGS).null_count == 1
    old = plain.drop([sc.ROOM, sc.RECORDINGS])  # a part written before the columns existed
    v = sc.validate_table(old, "soundscapes")
    assert v.schema == sc.SOUNDSCAPES and v.column(sc.ROOM).null_count == 1
    with pytest.raises(CacheSchemaError, match="null list elements"):
        sc.validate_table(t.set_column(t.schema.get_field_index(sc.RECORDINGS), sc.RECORDINGS,
                                       pa.array([["x", None], None, []],
                                                pa.list_(pa.string()))), "soundscapes")
    with pytest.raises(CacheSchemaError, match="column 'split' holds 1 nulls"):
        sc.validate_table(plain.set_column(1, sc.SPLIT, pa.array([None], pa.string())),
                          "soundscapes")


def test_loaded_cache_exposes_rooms_and_recordings_in_id_order(small):
    f = sorted((small / "soundscapes").glob("*.parquet"))
    for part in f:
        t = pq.read_table(part)
        ids = t.column(sc.SOUNDSCAPE).to_pylist()
        new = sc.soundscapes_table(
            ids, t.column(sc.SPLIT).to_pylist(), t.column(sc.REF_LABELS).to_pylist(),
            t.column(sc.SNR_MIX_DB).to_pylist(), t.column(sc.DURATION_S).to_pylist(),
            room=[f"room-{s}" for s in ids], recordings=[[f"rec-{s}", "shared"] for s in ids])
        pq.write_table(new.replace_schema_metadata(t.schema.metadata), part)
    dc = load_cache(small)
    assert [r for r in dc.rooms] == [f"room-{s}" for s in dc.soundscape_ids]
    assert [r for r in dc.recordings] == [(f"rec-{s}", "shared") for s in dc.soundscape_ids]


def test_casdri_cache_upgrade_command(tmp_path, capsys):
    from cache_builder.cli import main
    path = tmp_path / "cache"
    shutil.copytree(FROZEN[1], path)
    n = len(list((path / "separations").glob("part-*.parquet")))
    assert main(["upgrade", str(path)]) == 0
    assert capsys.readouterr().out == (f"{path}: {n} part(s) rewritten; every part is in "
                                       f"schema version {sc.SCHEMA_VERSION}\n")
    assert main(["upgrade", str(path)]) == 0
    assert f"{path}: 0 part(s) rewritten" in capsys.readouterr().out
    assert main(["upgrade", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "is not a casdri cache" in err and len(err.strip().splitlines()) == 1


def test_float_columns_are_written_byte_stream_split_and_load(tmp_path):
    """Every float column `schema.BYTE_STREAM_SPLIT` names (the SED's float16 frames too) is
    stored with that encoding, and the cache loads."""
    path = make_synthetic_cache(tmp_path / "c", n_soundscapes=20, seed=1, sed_frames=16,
                                load=False)
    for table, columns in sc.BYTE_STREAM_SPLIT.items():
        part = sorted((path / table).glob("part-*.parquet"))[0]
        meta = pq.ParquetFile(part).metadata.row_group(0)
        enc = {meta.column(i).path_in_schema: meta.column(i).encodings
               for i in range(meta.num_columns)}
        for col in columns:
            assert "BYTE_STREAM_SPLIT" in enc[col], (table, col, enc[col])
    sed = load_cache(path).sed
    probs = np.asarray(sed.probs, np.float32)
    assert probs.shape[0] == sed.offsets[-1] > 0 and ((probs >= 0) & (probs <= 1)).all()
