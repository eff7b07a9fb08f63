"""Policies: parameter sets (encoding, YAML, search spaces), the plain-Python ``decide``
against the jitted kernel, missing query keys, required keys, and the planted optimum."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import casdri
from casdri import schema as sc
from casdri.cache import load_cache
from casdri.errors import CacheKeyError, PolicyError
from casdri.labels import DCASE2026T4
from casdri.policies import (POLICIES, BaselineParams, OracleParams, RefineParams, get_policy,
                             load_policy_yaml, params_class, register_policy, required_keys)
from casdri.replay import decisions, replay, replay_matrix
from casdri.synthetic import make_synthetic_cache, random_settings
from search.casdri_problem import CasdriProblem

C = DCASE2026T4.n_classes


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_synthetic_cache(tmp_path_factory.mktemp("pc"), n_soundscapes=40, seed=3,
                                n_stages=2)


# ----------------------------------------------------------------------------- parameters


def test_encoded_layout_and_offsets():
    lay = RefineParams.layout(DCASE2026T4)
    names = ["solo_keep_1ch", "solo_keep_4ch", "verify_thr", "drop_thr", "energy_gate_db",
             "prob_gate", "silence_thr"]
    assert list(lay["w"]) == [0]
    for k, name in enumerate(names):  # the documented refine layout: thresholds at 1 + k*C
        assert list(lay[name]) == list(range(1 + k * C, 1 + (k + 1) * C))
    assert [lay[n][0] for n in ("verify_mode", "select_separator", "stage",
                                "tagger_silence_margin")] == \
        [1 + 7 * C, 2 + 7 * C, 3 + 7 * C, 4 + 7 * C]
    assert list(lay["tagger_silence_gate"]) == list(range(5 + 7 * C, 5 + 8 * C))
    assert RefineParams.n_params(DCASE2026T4) == 5 + 8 * C
    assert [v[0] for v in BaselineParams.layout(DCASE2026T4).values()] == [0, 1, 2]
    assert [v[0] for v in OracleParams.layout(DCASE2026T4).values()] == [0, 1]


@pytest.mark.parametrize("name", list(POLICIES))
def test_plugin_contract(name, cache):
    """Every registered policy: offsets from its dataclass, a search plan over its fields, a
    searchable problem (the kernels read ``offsets``, never fixed columns)."""
    mod = POLICIES[name]
    P = mod.PARAMS
    lay = P.layout(cache)
    assert list(P.offsets(cache)) == [int(c[0]) for c in lay.values()]
    assert list(P.field_index()) == list(lay)
    assert get_policy(name) is mod and get_policy(mod) is mod and params_class(name) is P
    fields = set(lay)
    assert mod.SEARCH_PLAN and all(set(v) <= fields for v in mod.SEARCH_PLAN.values())
    problem = CasdriProblem(cache, name)
    assert problem.policy == name and set(problem.plan) == set(mod.SEARCH_PLAN)
    x = problem.start_vector()
    start = getattr(mod, "START", P())
    assert isinstance(start, P) and np.array_equal(x, start.encode(cache))
    v = problem.values(x[None, :])
    assert v.shape == (1, cache.n_soundscapes)
    for p in problem.params.values():
        cp = problem.change_points(p.name, None, x, np.arange(cache.n_soundscapes))
        assert cp is None or (len(cp) == 2 and len(cp[0]) == len(cp[1]))


class _Fake:
    NAME = "fake"
    PARAMS = OracleParams
    SEARCH_PLAN = {"select": ("stage",)}
    prepare = kernel_decide = decide = required_keys = staticmethod(lambda *a: None)


BAD_PLUGINS = [
    (type("NoDecide", (), {"NAME": "x"}), "missing"),
    (_Fake, "OracleParams.policy is 'oracle'"),
    (type("Taken", (_Fake,), {"NAME": "oracle", "PARAMS": OracleParams}), "taken"),
    (type("BadPlan", (_Fake,), {"NAME": "oracle", "PARAMS": OracleParams,
                                "SEARCH_PLAN": {"gates": ("nope",)}}), "unknown fields"),
    (type("BadFeature", (_Fake,), {"NAME": "oracle", "PARAMS": OracleParams,
                                   "FEATURES": {"stage": ("stage", "nope")}}),
     r"FEATURES\['stage'\] names unknown fields \['nope'\]"),
]


@pytest.mark.parametrize("plugin,match", BAD_PLUGINS)
def test_register_policy_refuses(plugin, match):
    before = dict(POLICIES)
    with pytest.raises(PolicyError, match=match):
        register_policy(plugin)
    assert POLICIES == before
    with pytest.raises(PolicyError, match="not a registered policy"):
        get_policy(plugin)


def test_encode_decode_yaml_round_trip(cache):
    p = RefineParams(w=0.25, verify_thr={"Speech": 0.7, "default": 0.4},
                     energy_gate_db=float("-inf"), silence_thr=0.9, verify_mode="argmax",
                     select_separator=2, stage=1)
    x = p.encode(cache)
    assert x[RefineParams.layout(cache)["verify_thr"]][DCASE2026T4.index("Speech")] == 0.7
    q = RefineParams.decode(x, cache)
    assert np.array_equal(q.encode(cache), x)
    text = p.to_yaml(DCASE2026T4)
    assert "Speech: 0.7" in text and "policy: refine" in text
    r = RefineParams.from_yaml(text, DCASE2026T4)
    assert np.array_equal(r.encode(cache), x)
    mod, r2 = load_policy_yaml(text)
    assert mod is POLICIES["refine"] and np.array_equal(r2.encode(cache), x)
    b = BaselineParams(tagger="1ch")
    assert b.encode(cache)[0] == 0.0 and BaselineParams().encode(cache)[0] == 1.0  # "4ch"
    assert BaselineParams.decode(b.encode(cache), cache).tagger == "1ch"
    lst = RefineParams.from_yaml({"prob_gate": list(np.linspace(0, 1, C))}, DCASE2026T4)
    assert lst.per_class("prob_gate", DCASE2026T4)[-1] == 1.0


BAD_YAML = [
    ({"params": {"verify_thr": {"Spech": 0.4}}, "policy": "refine"}, "unknown labels"),
    ({"params": {"verify_thr": {"Speech": 0.4}}, "policy": "refine"}, "give every class"),
    ({"params": {"nope": 1}, "policy": "refine"}, "unknown parameters"),
    ({"params": {}, "policy": "oracle"}, "not 'refine'"),
    ({"params": {"verify_thr": [0.1, 0.2]}, "policy": "refine"}, "18 numbers"),
    ({"params": {}, "policy": "refine", "label_set": "dcase2025t4"},
     "label_set .dcase2025t4. of the policy YAML differs"),
]


@pytest.mark.parametrize("doc,match", BAD_YAML)
def test_bad_yaml(doc, match):
    with pytest.raises(PolicyError, match=match):
        RefineParams.from_yaml(doc, DCASE2026T4)


def test_search_space_and_checks(tmp_path, cache):
    ss = {r.name: r for r in RefineParams.search_space(cache)}
    assert ss["select_separator"].choices == (0.0, 1.0, 2.0)
    assert ss["stage"].choices == (0.0, 1.0)
    assert ss["verify_thr"].per_class and len(ss["verify_thr"].columns) == C
    one = make_synthetic_cache(tmp_path / "one", n_soundscapes=3, separators=("only",))
    assert {r.name: r for r in RefineParams.search_space(one)}["select_separator"].choices == \
        (0.0, 2.0)
    x = RefineParams().encode(cache)
    lay = RefineParams.layout(cache)
    for col, value, match in ((lay["stage"][0], 5.0, "stage"),
                              (lay["select_separator"][0], 1.5, "select_separator"),
                              (0, np.nan, "NaN")):
        bad = x.copy()
        bad[col] = value
        with pytest.raises(PolicyError, match=match):
            replay(cache, "refine", bad[None])
    with pytest.raises(PolicyError, match="select_separator"):
        replay(one, "refine", RefineParams(select_separator=1))
    with pytest.raises(PolicyError, match=r"\(n, 149\)"):
        replay(cache, "refine", x[None, :-1])
    with pytest.raises(PolicyError, match="unknown policy"):
        get_policy("nope")
    with pytest.raises(PolicyError, match="one setting"):
        replay(cache, "refine", [RefineParams(), RefineParams()], per_class=True)


# ----------------------------------------------------------------------------- decide vs kernel


def _check_decide(cache, policy, X):
    cls = params_class(policy)
    mod = get_policy(policy)
    for x in X:
        params = cls.decode(x, cache)
        dec = decisions(cache, policy, params)
        by = {sid: g for sid, g in dec.groupby("soundscape")}
        for s, sid in enumerate(cache.soundscape_ids):
            d = mod.decide(cache.inputs(s), params, cache.lookup(s))
            rows = by.get(sid)
            got_rows = [] if rows is None else list(rows.stem_row)
            got_lab = [] if rows is None else list(rows.label)
            assert [st.ref for st in d.stems] == got_rows, (policy, sid, params)
            assert d.est_labels(cache.label_set) == got_lab, (policy, sid, params)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), quantize=st.booleans(),
       taggers=st.sampled_from([("1ch", "4ch"), ("t0", "t1"), ("solo",)]),
       n_classes=st.integers(2, 18))
def test_decide_equals_kernel(tmp_path_factory, seed, quantize, taggers, n_classes):
    c = make_synthetic_cache(tmp_path_factory.mktemp("dk"), n_soundscapes=10, seed=seed,
                             quantize=quantize, taggers=taggers, n_classes=n_classes,
                             n_stages=2, n_parts=1)
    rng = np.random.default_rng(seed)
    for policy in POLICIES:
        _check_decide(c, policy, random_settings(c, policy, 4, rng,
                                                 grid=0.125 if quantize else None))


# ----------------------------------------------------------------------------- keys


def _drop_rows(path, sid, query, separator=None):
    """Delete the separation rows of one query (of one separator) from the cache parts."""
    import pyarrow as pa

    for f in sorted((path / "separations").glob("part-*.parquet")):
        t = pq.read_table(f)
        hit = [a == sid and tuple(b) == tuple(query) and (separator is None or c == separator)
               for a, b, c in zip(t[sc.SOUNDSCAPE].to_pylist(), t[sc.QUERY].to_pylist(),
                                  t[sc.SEPARATOR].to_pylist())]
        if any(hit):
            pq.write_table(t.filter(pc.invert(pa.array(hit))), f)


@pytest.mark.parametrize("policy,params,separator", [
    ("baseline", BaselineParams(), None), ("oracle", OracleParams(), None),
    ("refine", RefineParams(), None), ("refine", RefineParams(select_separator=1), "sepB"),
])
def test_missing_key_raises(tmp_path, policy, params, separator):
    path = tmp_path / "c"
    c = make_synthetic_cache(path, n_soundscapes=12, seed=21)
    mod = get_policy(policy)
    s = next(i for i in range(c.n_soundscapes) if mod.decide(c.inputs(i), params,
                                                             c.lookup(i)).queries)
    q = mod.decide(c.inputs(s), params, c.lookup(s)).queries[0]
    sid = c.soundscape_ids[s]
    _drop_rows(path, sid, q, separator)
    c2 = load_cache(path)
    names = ", ".join(repr(DCASE2026T4.classes[i]) for i in q)
    for fn in (lambda: replay(c2, policy, params), lambda: decisions(c2, policy, params),
               lambda: replay_matrix(c2, policy, [params, params])):
        with pytest.raises(CacheKeyError, match=rf"{sid}.*{names}"):
            fn()


def test_required_keys_cover_every_decision(cache):
    req = required_keys(cache, "refine")
    for s, sid in enumerate(cache.soundscape_ids):
        for q in req[sid]:
            assert cache.find_key(s, q) >= 0, (sid, q)
    rng = np.random.default_rng(1)
    for x in random_settings(cache, "refine", 20, rng):
        p = RefineParams.decode(x, cache)
        for s, sid in enumerate(cache.soundscape_ids):
            d = POLICIES["refine"].decide(cache.inputs(s), p, cache.lookup(s))
            assert set(d.queries) <= set(req[sid])
    base = required_keys(cache, "baseline")
    orc = required_keys(cache, "oracle")
    for s, sid in enumerate(cache.soundscape_ids):
        assert set(base[sid]) <= set(req[sid])
        refs = tuple(sorted(cache.inputs(s).ref_labels))
        assert orc[sid] == ([refs] if refs else [])


def test_tagger_silence_brings_false_positives_to_the_official_rule():
    """Issue 12: the taggers' silence probability as evidence: on the demo cache refine with
    ``tagger_silence_margin=-0.4`` makes no more false positives than the official argmax rule,
    while the plain defaults (the search's start) make many more."""
    demo = load_cache(Path(casdri.__file__).parent / "data" / "demo_cache")
    fp = {name: int(replay_matrix(demo, name, p).fp[0]) for name, p in (
        ("baseline", BaselineParams()), ("refine", RefineParams(tagger_silence_margin=-0.4)))}
    assert fp["refine"] <= fp["baseline"], fp
    assert int(replay_matrix(demo, "refine", POLICIES["refine"].START).fp[0]) > fp["baseline"]


# ----------------------------------------------------------------------------- planted optimum


def test_planted_energy_gate_optimum(tmp_path):
    t = -30.0
    c = make_synthetic_cache(tmp_path / "p", n_soundscapes=300, seed=9,
                             planted={"energy_gate_db": {"Speech": t}})
    col = RefineParams.layout(c)["energy_gate_db"][DCASE2026T4.index("Speech")]
    grid = np.arange(-60.0, 0.01, 0.25)
    for base in (RefineParams(), RefineParams(w=0.8, verify_thr=0.7, drop_thr=0.4,
                                              energy_gate_db=-40.0, select_separator=2)):
        X = np.tile(base.encode(c), (len(grid), 1))
        X[:, col] = grid
        score = replay(c, "refine", X).capi_sdri
        inside = (grid > t - 1) & (grid <= t + 1)
        assert (score[inside] == score.max()).all()  # maximal on (t - 1, t + 1]
        assert score[grid >= t + 6].max() < score.max()
        assert score[grid <= t - 6].max() < score.max()
