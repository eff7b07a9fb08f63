"""The replay is exact: it equals `casdri.capi_sdri` on the waveforms of the stems it selects,
the slow obvious replay of tests/naive_replay.py on random caches, and itself in parallel."""
from __future__ import annotations

import itertools
from collections import Counter
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import casdri
from casdri import schema as sc
from casdri.accumulator import CapiSdri
from casdri.cache import CacheWriter, load_cache
from casdri.labels import DCASE2026T4, SILENCE
from casdri.policies import BaselineParams, OracleParams, RefineParams, params_class
from casdri.replay import decisions, replay, replay_matrix, replay_pairs
from casdri.synthetic import make_synthetic_cache, random_settings

from .conftest import GOLDEN, TOL_REPLAY_DB
from .naive_replay import load_raw, naive_replay

T = 8000
K = 3
C = DCASE2026T4.n_classes


# ----------------------------------------------------------------------------- helpers


def naive_params(cache, policy, x):
    """The naive replay's view of a setting: per-class thresholds as ``(C,)`` arrays."""
    p = params_class(policy).decode(x, cache)
    if policy != "refine":
        return dict(p.__dict__)
    return {r.name: p.per_class(r.name, cache.label_set) if r.per_class else getattr(p, r.name)
            for r in p.search_space(cache)}


def _sources():
    """Real recordings (golden cases 46-48, cropped to T samples) and shaped noise."""
    out = []
    for name in ("46_real_bell_typing_short", "47_real_speech_alarm_long",
                 "48_real_dup_speech_long", "07_noisy_mixed_snrs_three",
                 "45_four_refs_two_classes"):
        d = np.load(GOLDEN / "cases" / f"{name}.npz")
        for lab, w in zip(d["ref_labels"], d["ref_wavs"]):
            if str(lab) != SILENCE and np.abs(w[:T]).sum() > 0:
                out.append((str(lab), np.ascontiguousarray(w[:T], np.float32)))
    return out


@pytest.fixture(scope="module")
def wave_cache(tmp_path_factory):
    """A cache built from waveforms: every entry computed with `casdri.snr_db`."""
    rng = np.random.default_rng(7)
    srcs = _sources()
    path = tmp_path_factory.mktemp("wave_cache")
    meta = sc.CacheMeta(label_set=DCASE2026T4.name, classes=DCASE2026T4.classes,
                        sample_rate_hz=32000, n_tracks=K, taggers=("1ch", "4ch"),
                        separators=("sepA", "sepB"), separator_sha256=("a" * 64, "b" * 64),
                        retagger="rt", n_stages=2,
                        closure={"proposal_top_n": 1, "max_query_size": K, "oracle": True})
    waves, world = {}, {}
    rows_sc, rows_tg, rows_sep = [], [], {k: [] for k in range(8)}
    for s in range(14):
        sid = f"wave_{s:02d}"
        n_ref = [0, 1, 2, 3, 2, 1, 3][s % 7]
        pick = rng.choice(len(srcs), n_ref, replace=False)
        refs_l = [DCASE2026T4.index(srcs[i][0]) for i in pick]
        ref_w = np.stack([srcs[i][1] * rng.uniform(0.3, 1.5) for i in pick]).astype(
            np.float32) if n_ref else np.zeros((0, T), np.float32)
        if s % 5 == 3 and n_ref >= 2:  # a duplicate class
            refs_l[1] = refs_l[0]
        mix = (ref_w.sum(0) + 0.05 * rng.standard_normal(T)).astype(np.float32)
        snr_mix = casdri.snr_db(mix, ref_w)[0] if n_ref else np.zeros(0)
        world[sid] = (refs_l, ref_w, mix)
        rows_sc.append((sid, f"f{s % 3}", refs_l, snr_mix))
        top = []
        for name, err in (("1ch", 0.3), ("4ch", 0.15)):
            logits = rng.normal(0, 1, (K, C + 1)).astype(np.float32)
            for t in range(K):
                if t < n_ref:
                    c = refs_l[t] if rng.random() > err else int(rng.integers(C))
                    logits[t, c] += rng.uniform(1.0, 5.0)
                else:
                    logits[t, C] += rng.uniform(0.0, 5.0)
            p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            p = p.astype(np.float32)
            rows_tg.append((sid, name, p))
            top += [int(np.argmax(r[:C])) for r in p]
        pool = Counter(top)
        keys = {tuple(c for c, n in zip(sorted(pool), cnt) for _ in range(n))
                for cnt in itertools.product(*(range(min(pool[c], K) + 1) for c in sorted(pool)))
                if 1 <= sum(cnt) <= K}
        if 0 < n_ref <= K:
            keys.add(tuple(sorted(refs_l)))
        for q in sorted(keys):
            for si, stg in itertools.product(range(2), range(2)):
                for i, c in enumerate(q):
                    occ = q[:i].count(c)
                    same = [r for r, lab in enumerate(refs_l) if lab == c]
                    if occ < len(same):
                        tgt = ref_w[same[occ]]
                        a = rng.uniform(0.0, 0.6) / (1 + stg)
                        stem = tgt + a * (mix - tgt) + 0.02 * rng.standard_normal(T)
                    elif rng.random() < 0.15:
                        stem = np.zeros(T)  # an all-zero stem: energy -inf, SNR 0 dB
                    else:
                        stem = rng.uniform(0.01, 0.5) * mix
                    stem = stem.astype(np.float32)
                    waves[(sid, si, stg, q, i)] = stem
                    with np.errstate(divide="ignore"):
                        e = 10 * np.log10(np.sum(stem.astype(np.float64) ** 2)
                                          / np.sum(mix.astype(np.float64) ** 2))
                    snr = casdri.snr_db(stem, ref_w)[0] if n_ref else np.zeros(0)
                    rt = rng.dirichlet(np.ones(C + 1) * 0.3, K).astype(np.float32)
                    for k, v in enumerate((sid, meta.separators[si], stg, q, i, e, snr, rt)):
                        rows_sep[k].append(v)
    w = CacheWriter(path, meta)
    w.write_part("0", sc.soundscapes_table([r[0] for r in rows_sc], [r[1] for r in rows_sc],
                                           [r[2] for r in rows_sc], [r[3] for r in rows_sc],
                                           [T / 32000] * len(rows_sc)),
                 sc.tagger_table([r[0] for r in rows_tg for _ in range(K)],
                                 [r[1] for r in rows_tg for _ in range(K)],
                                 [t for _ in rows_tg for t in range(K)],
                                 np.concatenate([r[2] for r in rows_tg])),
                 sc.separations_table(*[rows_sep[k] for k in range(7)],
                                      np.stack(rows_sep[7])))
    return load_cache(path), waves, world


# ----------------------------------------------------------------------------- (i) waveforms

WAVE_SETTINGS = [
    ("baseline", BaselineParams()),
    ("baseline", BaselineParams(tagger="1ch", separator=1, stage=1)),
    ("oracle", OracleParams()),
    ("oracle", OracleParams(select_separator=2, stage=1)),
    ("refine", RefineParams()),
    ("refine", RefineParams(w=0.3, solo_keep_1ch=0.2, verify_thr=0.2, drop_thr=0.6,
                            energy_gate_db=-12.0, prob_gate=0.3, silence_thr=0.5,
                            select_separator=2, stage=1)),
    ("refine", RefineParams(verify_mode="argmax", drop_thr=1.0, select_separator=1)),
]


@pytest.mark.parametrize("policy,params", WAVE_SETTINGS)
def test_replay_equals_metric_on_selected_waveforms(wave_cache, policy, params):
    cache, waves, world = wave_cache
    res = replay(cache, policy, params, per_soundscape=True)
    dec = decisions(cache, policy, params)
    acc = CapiSdri(DCASE2026T4)
    for p, sid in enumerate(cache.soundscape_ids):
        refs_l, ref_w, mix = world[sid]
        rows = dec[dec.soundscape == sid]
        est_labels = list(rows.label)
        est = np.stack([waves[(sid, cache.separators.index(r.separator), r.stage, r.query,
                               r.slot)] for r in rows.itertuples()]) if len(rows) else \
            np.zeros((0, T), np.float32)
        ref_labels = [DCASE2026T4.classes[c] for c in refs_l]
        want = casdri.capi_sdri(est_labels, est, ref_labels, ref_w, mix)
        got = res.per_soundscape.capi_sdri[p]
        assert (want is None) == np.isnan(got), sid
        if want is not None:
            assert abs(got - want) <= TOL_REPLAY_DB, (sid, got, want)
        acc.update(sid, est_labels, est, ref_labels, ref_w, mix)
    ref = acc.compute()
    assert abs(res.capi_sdri[0] - ref.capi_sdri) <= TOL_REPLAY_DB
    assert res.accuracy_mix[0] == pytest.approx(ref.accuracy_mix, abs=1e-12)
    assert res.accuracy_src[0] == pytest.approx(ref.accuracy_src, abs=1e-12)


def test_per_class_table_equals_accumulator(wave_cache):
    cache, waves, world = wave_cache
    params = WAVE_SETTINGS[5][1]
    res = replay(cache, "refine", params, per_class=True)
    dec = decisions(cache, "refine", params)
    acc = CapiSdri(DCASE2026T4)
    for sid in cache.soundscape_ids:
        refs_l, ref_w, mix = world[sid]
        rows = dec[dec.soundscape == sid]
        est = np.stack([waves[(sid, cache.separators.index(r.separator), r.stage, r.query,
                               r.slot)] for r in rows.itertuples()]) if len(rows) else \
            np.zeros((0, T), np.float32)
        acc.update(sid, list(rows.label), est, [DCASE2026T4.classes[c] for c in refs_l],
                   ref_w, mix)
    want = acc.compute().per_class.set_index("label")
    got = res.per_class.set_index("label")
    assert sorted(got.index) == sorted(want.index)
    for col in ("n_entries", "tp", "fp", "fn"):
        assert (got[col] == want.loc[got.index, col]).all(), col
    np.testing.assert_allclose(got.sdri_mean, want.loc[got.index, "sdri_mean"], atol=1e-9)


# ----------------------------------------------------------------------------- (ii) naive

@st.composite
def random_caches(draw):
    return dict(seed=draw(st.integers(0, 2**31 - 1)), n_soundscapes=draw(st.integers(1, 12)),
                n_classes=draw(st.integers(2, 6)), n_tracks=draw(st.integers(1, 3)),
                n_stages=draw(st.integers(1, 2)), quantize=draw(st.booleans()),
                zero_target=draw(st.sampled_from([0.0, 0.2, 0.6])),
                duplicate=draw(st.sampled_from([0.0, 0.5])),
                taggers=draw(st.sampled_from([("1ch", "4ch"), ("4ch", "1ch"), ("a", "b"),
                                              ("solo",)])),
                separators=draw(st.sampled_from([("s0", "s1"), ("only",)])))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=random_caches(), setting_seed=st.integers(0, 2**31 - 1))
def test_kernel_equals_naive_replay(tmp_path_factory, spec, setting_seed):
    path = tmp_path_factory.mktemp("rc")
    cache = make_synthetic_cache(path, n_parts=2, **spec)
    raw = load_raw(path)
    rng = np.random.default_rng(setting_seed)
    ids = list(cache.soundscape_ids)
    for policy in ("baseline", "oracle", "refine"):
        X = random_settings(cache, policy, 6, rng, grid=0.125 if spec["quantize"] else None)
        m = replay_matrix(cache, policy, X, counts=True)
        for n in range(len(X)):
            want = naive_replay(raw, policy, naive_params(cache, policy, X[n]), ids)
            for p, sid in enumerate(ids):
                v, lc = want[sid]
                got = m.values[n, p]
                assert (v is None) == np.isnan(got) == m.is_none[n, p], (policy, n, sid)
                if v is not None:
                    assert abs(got - v) <= TOL_REPLAY_DB, (policy, n, sid, got, v)
                assert tuple(m.labels[n, p]) == (lc.tp, lc.fp, lc.fn), (policy, n, sid)
            assert m.n_acc[n] == sum(want[s][1].acc for s in ids)


# ----------------------------------------------------------------------------- (iii) parallel


def test_parallel_equals_serial_and_pairs(tmp_path):
    cache = make_synthetic_cache(tmp_path / "c", n_soundscapes=60, seed=11, n_stages=2)
    rng = np.random.default_rng(0)
    for policy in ("baseline", "oracle", "refine"):
        X = random_settings(cache, policy, 150, rng)
        a = replay_matrix(cache, policy, X, counts=True, parallel=True)
        b = replay_matrix(cache, policy, X, counts=True, parallel=False)
        assert np.array_equal(a.values, b.values, equal_nan=True)
        assert np.array_equal(a.labels, b.labels)
        for f in ("n_acc", "tp", "fp", "fn"):
            assert np.array_equal(getattr(a, f), getattr(b, f))
        ra, rb = replay(cache, policy, X), replay(cache, policy, X, parallel=False)
        assert np.array_equal(ra.capi_sdri, rb.capi_sdri, equal_nan=True)
        idx = rng.integers(0, cache.n_soundscapes, len(X))
        pv = replay_pairs(cache, policy, X, idx)
        want = a.values[np.arange(len(X)), idx]
        assert np.array_equal(pv, want, equal_nan=True)
        assert np.array_equal(replay_pairs(cache, policy, X, idx, parallel=False), want,
                              equal_nan=True)


def test_mask_and_dataset_mean(tmp_path):
    cache = make_synthetic_cache(tmp_path / "c", n_soundscapes=40, seed=5)
    mask = cache.split_mask("fold0", "fold2")
    res = replay(cache, "refine", RefineParams(), mask=mask, per_soundscape=True)
    ps = res.per_soundscape
    assert len(ps) == mask.sum() == res.n_soundscapes
    assert set(ps.split) <= {"fold0", "fold2"}
    vals = ps.capi_sdri.dropna().tolist()
    assert res.capi_sdri[0] == sum(vals) / len(vals)  # summed in soundscape order
    assert res.n_scored[0] == len(vals)
    assert res.accuracy_mix[0] == pytest.approx(100 * ps.acc.mean())
    tp, fp, fn = ps.tp.sum(), ps.fp.sum(), ps.fn.sum()
    assert res.accuracy_src[0] == pytest.approx(100 * tp / (tp + fp + fn))
    full = replay_matrix(cache, "refine", RefineParams())
    part = replay_matrix(cache, "refine", RefineParams(), mask=np.flatnonzero(mask))
    assert np.array_equal(full.values[:, mask], part.values, equal_nan=True)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_clip_kernel_equals_metric_up_to_six_per_class(data):
    """`clip_capi` alone: up to 6 stems and 6 references per class, tie-heavy SNRs."""
    from casdri._kernels import clip_capi

    n_est = data.draw(st.integers(0, 7))
    n_ref = data.draw(st.integers(0, 7))
    est = np.array(data.draw(st.lists(st.integers(-1, 2), min_size=n_est, max_size=n_est)),
                   np.int64)
    ref = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n_ref, max_size=n_ref)),
                   np.int64)
    snr = np.array(data.draw(st.lists(st.sampled_from([-3.0, 0.0, 0.5, 2.0, 7.25]),
                                      min_size=n_est * n_ref, max_size=n_est * n_ref)),
                   np.float64).reshape(n_est, n_ref)
    mix = np.array(data.draw(st.lists(st.sampled_from([-1.0, 0.0, 1.5]), min_size=n_ref,
                                      max_size=n_ref)), np.float64)
    names = ["a", "b", "c"]
    want = casdri.capi_sdri_from_snr([names[c] if c >= 0 else SILENCE for c in est],
                                     [names[c] for c in ref], snr, mix)
    nm = max(n_est, n_ref) + 1
    acc = np.zeros((3, 5))
    total, count, tp, fp, fn = clip_capi(
        np.arange(n_est, dtype=np.int64), est, n_est, ref, mix, np.ascontiguousarray(snr.ravel()),
        np.arange(n_est + 1, dtype=np.int64) * n_ref, acc,
        np.empty(7 * nm, np.int64), np.empty(nm + 1))
    assert (want is None) == (count == 0)
    if want is not None:
        assert total / count == want  # same additions in the same order: bit-exact
    lc = casdri.label_counts([names[c] if c >= 0 else SILENCE for c in est],
                             [names[c] for c in ref])
    assert (tp, fp, fn) == (lc.tp, lc.fp, lc.fn)
    assert acc[:, 1].sum() == count and acc[:, 0].sum() == pytest.approx(total)
