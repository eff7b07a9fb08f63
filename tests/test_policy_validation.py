"""One validation of policy values (construction, YAML, encoded settings) and of replay masks:
a parametrised table of bad input and the message it must raise."""
from __future__ import annotations

import numpy as np
import pytest

from casdri.errors import PolicyError
from casdri.policies import (BaselineParams, OracleParams, RefineParams, load_policy_yaml)
from casdri.replay import replay, replay_matrix
from casdri.synthetic import make_synthetic_cache

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def cache():
    return make_synthetic_cache(n_soundscapes=8, seed=2, n_stages=2)


BAD_PARAMS = [
    (dict(w=5.0), r"RefineParams\.w=5\.0: expected a number in \[0\.0, 1\.0\]"),
    (dict(w=NAN), r"RefineParams\.w=nan"),
    (dict(w=True), r"RefineParams\.w=True"),
    (dict(w="0.5"), r"RefineParams\.w='0\.5'"),
    (dict(energy_gate_db=NAN), r"energy_gate_db=nan: expected a number in \[-80\.0, 0\.0\] or "
                               r"-inf \(off\)"),
    (dict(energy_gate_db=INF), r"energy_gate_db=inf"),
    (dict(energy_gate_db=-200.0), r"energy_gate_db=-200\.0"),
    (dict(prob_gate=5), r"RefineParams\.prob_gate=5: expected a number in \[0\.0, 1\.0\]$"),
    (dict(silence_thr=-1), r"silence_thr=-1: expected a number in \[0\.0, 1\.0\] or inf"),
    (dict(silence_thr=-INF), r"silence_thr=-inf"),
    (dict(verify_thr={"Speech": 2.0, "default": 0.5}), r"verify_thr\[Speech\]=2\.0"),
    (dict(drop_thr=[0.1] * 17 + [NAN]), r"drop_thr\[17\]=nan"),
    (dict(select_separator=5), r"select_separator=5: expected one of \[0, 1, 2\]"),
    (dict(select_separator=True), r"select_separator=True"),
    (dict(verify_mode="maybe"), r"verify_mode='maybe': expected one of \['threshold', 'argmax'\]"),
    (dict(stage=0.5), r"RefineParams\.stage=0\.5"),
    (dict(stage=-1), r"RefineParams\.stage=-1"),
    (dict(stage=None), r"RefineParams\.stage=None"),
]


@pytest.mark.parametrize("kw,match", BAD_PARAMS)
def test_bad_params_refused_at_construction(kw, match):
    with pytest.raises(PolicyError, match=match):
        RefineParams(**kw)


def test_other_policies_and_legal_values():
    with pytest.raises(PolicyError, match=r"BaselineParams\.separator=2"):
        BaselineParams(separator=2)
    with pytest.raises(PolicyError, match=r"OracleParams\.stage=1\.0"):
        OracleParams(stage=1.0)
    RefineParams(energy_gate_db=-INF, silence_thr=INF, prob_gate=0.0, w=1.0)  # the "off" values
    RefineParams(verify_thr={"Speech": 1.0, "default": 0.0}, energy_gate_db=-80.0)
    BaselineParams(tagger=None)
    BaselineParams(tagger="1ch")


BAD_YAML = [
    ("select_separator: 5", r"select_separator=5"),
    ("verify_mode: maybe", r"verify_mode='maybe'"),
    ("stage: 0.5", r"stage=0\.5"),
    ("energy_gate_db: .nan", r"energy_gate_db=nan"),
    ("prob_gate: 5", r"prob_gate=5\.0"),
    ("silence_thr: -1", r"silence_thr=-1\.0"),
    ("w: true", r"w=True"),
    ("verify_thr: {Speech: 1.5, default: 0.5}", r"verify_thr\[Speech\]=1\.5"),
]


@pytest.mark.parametrize("line,match", BAD_YAML)
def test_bad_policy_yaml_refused(line, match):
    with pytest.raises(PolicyError, match=match):
        load_policy_yaml(f"policy: refine\nlabel_set: dcase2026t4\nparams:\n  {line}\n")


@pytest.mark.parametrize("text, match", [
    ("policy: refine\nparams: {w: [\n", r"policy\.yaml: not valid YAML .*line \d+"),
    ("policy: !!python/object/apply:os.system ['true']\n",
     r"policy\.yaml: not valid YAML .*python/object/apply"),
    ("policy: refine\n\tparams: {}\n", r"policy\.yaml: not valid YAML"),
])
def test_unparsable_policy_yaml_names_the_file(tmp_path, text, match):
    """A policy file that is not YAML (or asks for a Python object) is a PolicyError naming
    the file, from every reader (was a raw yaml ParserError / ConstructorError)."""
    f = tmp_path / "policy.yaml"
    f.write_text(text)
    for read in (load_policy_yaml, RefineParams.from_yaml):
        with pytest.raises(PolicyError, match=match):
            read(f)
        with pytest.raises(PolicyError, match=r"policy YAML: not valid YAML"):
            read(text if "\n" in text else text + "\n")


def test_missing_policy_file_names_it(tmp_path):
    with pytest.raises(PolicyError, match=r"no-such\.yaml: cannot read the policy YAML"):
        load_policy_yaml(tmp_path / "no-such.yaml")
    with pytest.raises(PolicyError, match=r"no-such\.yaml: cannot read the policy YAML"):
        RefineParams.from_yaml(str(tmp_path / "no-such.yaml"))


def test_unknown_top_level_key_refused():
    doc = "policy: refine\nlabel_set: dcase2026t4\nparms:\n  w: 0.3\n"
    with pytest.raises(PolicyError, match=r"unknown top-level keys \['parms'\]"):
        load_policy_yaml(doc)
    mod, p = load_policy_yaml("policy: refine\nlabel_set: dcase2026t4\nparams:\n"
                              "  energy_gate_db: -.inf\n  silence_thr: .inf\nprovenance: {a: 1}\n")
    assert p.energy_gate_db == -INF and p.silence_thr == INF


def test_cache_dependent_choices_and_encoded_settings(cache, tmp_path):
    one = make_synthetic_cache(tmp_path / "one", n_soundscapes=3, separators=("only",))
    with pytest.raises(PolicyError, match=r"select_separator=1: expected one of \[0, 2\]"):
        RefineParams(select_separator=1).check(one)
    with pytest.raises(PolicyError, match=r"stage=3"):
        RefineParams(stage=3).check(cache)
    assert RefineParams(stage=1).check(cache).stage == 1
    lay = RefineParams.layout(cache)
    x = RefineParams().encode(cache)
    for field, value, match in (("w", 5.0, r"refine\.w=5\.0 in setting 0: expected a number in "
                                           r"\[0\.0, 1\.0\]"),
                                ("prob_gate", -0.5, r"refine\.prob_gate=-0\.5"),
                                ("energy_gate_db", INF, r"refine\.energy_gate_db=inf"),
                                ("silence_thr", -INF, r"refine\.silence_thr=-inf")):
        bad = x.copy()
        bad[lay[field][-1]] = value
        with pytest.raises(PolicyError, match=match):
            replay_matrix(cache, "refine", bad[None])


def test_mask_kinds(cache):
    S = cache.n_soundscapes
    full = replay(cache, "refine", RefineParams()).capi_sdri[0]
    assert replay(cache, "refine", RefineParams(), mask=np.ones(S, bool)).capi_sdri[0] == full
    assert replay(cache, "refine", RefineParams(), mask=np.arange(S)).capi_sdri[0] == full
    sub = replay(cache, "refine", RefineParams(), mask=[0, 3]).n_soundscapes
    assert sub == 2
    for mask, match in ((np.ones(S), r"float64 array is neither a bool mask nor integer "
                                     r"indices.*mask\.astype\(bool\)"),
                        (np.ones(S, int), r"holding only 0 and 1 is ambiguous"),
                        ((np.arange(S) % 2), r"ambiguous"),
                        (np.ones(S - 1, bool), r"bool mask must have shape"),
                        ([0, S], r"outside 0\.\.")):
        with pytest.raises(PolicyError, match=match):
            replay(cache, "refine", RefineParams(), mask=mask)


def test_encoded_check_equals_the_rule_of_every_value(cache):
    """The compiled check of encoded settings accepts exactly the matrices whose every value
    `allowed` (numeric fields, whole numbers where declared) and the choices accept: random
    matrices with values off range, at the off values, NaN, fractions and wrong codes."""
    from casdri.policies import StagedParams
    from casdri.policies._validate import allowed, encoded_allowed
    rng = np.random.default_rng(0)
    for cls in (RefineParams, StagedParams):
        P, names, choices, numeric, fast = cls._check_spec(cache)
        x = cls().encode(cache)
        for _ in range(300):
            X = np.repeat(x[None], 3, axis=0)
            for _ in range(rng.integers(0, 3)):
                i, j = rng.integers(0, 3), rng.integers(0, P)
                X[i, j] = rng.choice([NAN, INF, -INF, -1.0, 0.5, 1.0, 2.0, 7.0, -80.0,
                                      float(rng.uniform(-100, 100))])
            want = all(allowed(X[:, cols], md).all() for cols, md, _ in numeric) and all(
                np.isin(X[:, col], codes).all() for col, codes, _ in choices)
            assert encoded_allowed(X, *fast) == want, (cls.__name__, X[X != x[None]])


def test_a_fraction_in_a_whole_number_field_is_refused_in_encoded_settings(cache):
    from casdri.policies import StagedParams
    lay = StagedParams.layout(cache)
    x = StagedParams().encode(cache)
    x[lay["stage_by_class"][0]] = 0.5
    with pytest.raises(PolicyError, match=r"staged\.stage_by_class=0\.5 in setting 0: expected "
                                          r"a whole number"):
        StagedParams.check_encoded(x[None], cache)


def test_errors_of_a_policy_file_name_it_and_the_fix(cache, tmp_path):
    """``casdri compare a.yaml b.yaml`` said ``RefineParams: unknown parameters [...]`` without
    saying which file; a label set mismatch named neither file nor fix; a cache-dependent choice
    failed later, at encoding, without the file."""
    head = "policy: refine\nlabel_set: dcase2026t4\nparams:\n"
    cases = [(head + "  verfy_thr: 0.5\n", None, r"unknown parameters \['verfy_thr'\]"),
             (head.replace("dcase2026t4", "dcase2025t4") + "  w: 0.5\n", "dcase2026t4",
              r"label_set 'dcase2025t4' of the policy YAML differs from 'dcase2026t4', the "
              r"label set it is used with \(the cache's or the system's\); use a policy tuned "
              r"for 'dcase2026t4'"),
             (head + "  stage: 3\n", cache, r"RefineParams\.stage=3: expected one of")]
    for i, (text, against, match) in enumerate(cases):
        f = tmp_path / f"p{i}.yaml"
        f.write_text(text)
        kw = {"cache": against} if against is cache else {"label_set": against}
        with pytest.raises(PolicyError, match=match) as err:
            load_policy_yaml(f, **kw)
        assert str(err.value).startswith(f"{f}: "), err.value
    load_policy_yaml(tmp_path / "p2.yaml")  # stage 3 is fine without a cache to check it
