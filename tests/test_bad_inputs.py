"""Issue 13: bad inputs outside the folder reader, the cache and the builder, each refused
with a message naming the argument and the fix (a table of (bad input, ``match=``))."""
from __future__ import annotations

import numpy as np
import pytest

import casdri
from casdri.errors import LabelError

T = 64
_REF = np.ones((1, T), np.float32)
_MIX = 2 * _REF[0]


@pytest.mark.parametrize("est, ref, label_set, match", [
    (["Speech", "Cogh"], ["Speech"], "dcase2026t4",
     r"est_labels: unknown label 'Cogh' for label set 'dcase2026t4'"),
    (["Speech"], ["speech"], "dcase2026t4", r"ref_labels: unknown label 'speech'"),
    (["Dog"], ["Cat"], ["Cat"], r"est_labels: unknown label 'Dog'"),
])
def test_capi_sdri_refuses_labels_outside_the_label_set(est, ref, label_set, match):
    est_w = np.ones((len(est), T), np.float32)
    with pytest.raises(LabelError, match=match):
        casdri.capi_sdri(est, est_w, ref, _REF, _MIX, label_set=label_set)


def test_capi_sdri_agrees_with_the_accumulator_on_a_custom_label_set():
    acc = casdri.CapiSdri(["Cat", "Dog"])
    want = acc.update("s", ["Cat"], 0.5 * _REF, ["Cat"], _REF, _MIX)
    assert casdri.capi_sdri(["Cat"], 0.5 * _REF, ["Cat"], _REF, _MIX,
                            label_set=["Cat", "Dog"]) == want


def test_bad_shard_is_an_input_error():
    """``build_cache(shard=(3, 2))`` (was a bare ValueError outside casdri's errors)."""
    from cache_builder.build import shard_names
    from casdri.errors import InputError

    with pytest.raises(InputError, match=r"shard 3/2: need 0 <= i < n"):
        shard_names(["a", "b"], (3, 2))
    with pytest.raises(InputError, match=r"shard 0/0"):
        shard_names(["a"], (0, 0))
    assert shard_names(["c", "a", "b"], (1, 2)) == ["b"]


def test_one_line_policy_file_is_read_as_a_file(tmp_path):
    """A policy file of one line (flow style, no newline) was passed on as its text and then
    taken for a path by `load_policy_yaml` ("cannot read", naming the YAML as a file name) in
    `casdri compare/explain` and `casdri-search --policy-in`; a bad one names the file."""
    from casdri.paired import load_system
    from casdri.synthetic import make_synthetic_cache
    from search.casdri_problem import CasdriProblem

    cache = make_synthetic_cache(n_soundscapes=4, seed=1)
    good = tmp_path / "one-line.yaml"
    good.write_text("{policy: refine, label_set: dcase2026t4, params: {w: 0.25}}")
    mod, params = load_system(good, cache)
    assert mod.NAME == "refine" and params.w == 0.25
    x = CasdriProblem(cache).start_vector(good)
    assert CasdriProblem(cache).decode(x).w == 0.25
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [")
    for read in (lambda: load_system(bad, cache), lambda: CasdriProblem(cache).start_vector(bad)):
        with pytest.raises(casdri.PolicyError, match=rf"{bad}: not valid YAML"):
            read()


def test_bad_inputs_doc_lists_every_kind_with_its_test():
    """docs/BAD_INPUTS.md: one row per kind of bad input, at least issue 13's 137, each
    naming tests that exist (so the table can only grow and never points nowhere)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    rows = [line for line in (root / "docs" / "BAD_INPUTS.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| Bad input")]
    assert len(rows) >= 137, len(rows)
    for row in rows:
        refs = re.findall(r"`(test_\w+\.py)::(test_\w+)", row)
        assert refs, f"row without a test: {row}"
        for file, func in refs:
            text = (root / "tests" / file).read_text()
            assert re.search(rf"^def {func}\(", text, re.M), f"{file}::{func} in: {row}"


# ----------------------------------------------------------------------------- API review
# A new user's session with the Python API (stop 27): each of these was silently wrong or a
# raw Python error before.

_STEM = np.ones((1, T), np.float32)


def test_an_int16_mixture_is_refused_like_int16_stems():
    """An int16 mixture beside float32 stems was cast to float32 unscaled (CAPI-SDRi 107.8 dB
    instead of 14.9)."""
    from casdri.errors import InputError

    mix16 = (3000 * _MIX).astype(np.int16)
    with pytest.raises(InputError, match=r"mixture: expected float32 or float64 .*int16.*32768"):
        casdri.capi_sdri(["Speech"], 0.5 * _STEM, ["Speech"], _REF, mix16)
    with pytest.raises(InputError, match=r"mixture: expected float32 or float64"):
        casdri.CapiSdri().update("s", ["Speech"], 0.5 * _STEM, ["Speech"], _REF, mix16)
    assert casdri.capi_sdri(["Speech"], 0.5 * _STEM, ["Speech"], _REF, _MIX) is not None


def test_one_string_of_labels_is_refused_by_label_counts_and_the_accumulator():
    """``label_counts("Speech", ...)`` counted each character (fp=6); the accumulator said
    "unknown label 'S'"."""
    with pytest.raises(LabelError, match=r"est_labels: .*the string 'Speech'; pass \['Speech'\]"):
        casdri.label_counts("Speech", ["Speech"])
    with pytest.raises(LabelError, match=r"s: est_labels: .*pass \['Speech'\]"):
        casdri.CapiSdri().update("s", "Speech", _STEM, ["Speech"], _REF, _MIX)
    assert casdri.label_counts(["Speech"], ["Speech"]).acc


def test_capi_sdri_from_snr_refuses_a_non_finite_value_it_reads():
    """A NaN SNR of a same-class pair gave a NaN clip value without a word."""
    from casdri.errors import InputError

    with pytest.raises(InputError, match=r"snr_db\[0, 0\] \('Speech'\) is nan"):
        casdri.capi_sdri_from_snr(["Speech"], ["Speech"], np.array([[np.nan]]), np.array([2.0]))
    with pytest.raises(InputError, match=r"snr_mix_db\[0\] \('Speech'\) is inf"):
        casdri.capi_sdri_from_snr(["Speech"], ["Speech"], np.array([[9.0]]), np.array([np.inf]))
    # entries the metric never reads (a pair of different classes) may stay NaN
    assert casdri.capi_sdri_from_snr(["Cough", "Speech"], ["Speech"],
                                     np.array([[np.nan], [3.0]]), np.array([1.0])) == 1.0


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    from casdri.synthetic import make_synthetic_cache

    return make_synthetic_cache(tmp_path_factory.mktemp("api") / "c", n_soundscapes=10, seed=4,
                                n_parts=2)


def test_split_mask_refuses_a_split_the_cache_does_not_have(small_cache):
    """``split_mask("Dev")`` selected nothing, and a replay of nothing scored NaN."""
    from casdri.errors import InputError

    with pytest.raises(InputError, match=r"no split named 'Fold0' in the cache .*'fold0' \(2\)"):
        small_cache.split_mask("Fold0")
    with pytest.raises(InputError, match=r"no split name given"):
        small_cache.split_mask()
    assert small_cache.split_mask("fold0", "fold1").sum() == 4


@pytest.mark.parametrize("bad", ["path", "Path", None], ids=["str path", "Path", "None"])
def test_replay_refuses_what_is_not_a_loaded_cache(small_cache, bad):
    """A path gave "unknown label set '/...'" (a str) or "'PosixPath' object is not iterable"."""
    from casdri.errors import InputError
    from casdri.policies import RefineParams
    from casdri.replay import replay_matrix

    cache = {"path": str(small_cache.path), "Path": small_cache.path, None: None}[bad]
    for fn in (lambda: casdri.replay(cache, "refine", RefineParams()),
               lambda: replay_matrix(cache, "refine", RefineParams(), mask=[0])):
        with pytest.raises(InputError, match=r"cache: expected a DecisionCache, got .*"
                                             r"casdri\.load_cache\(path\)"):
            fn()


@pytest.mark.parametrize("params, match", [
    ("staged", r"StagedParams given for policy 'refine'; expected RefineParams \(StagedParams "
               r"belongs to policy 'staged'\)"),
    ({"w": 0.3}, r"params: expected a RefineParams, a list of them, or an \(n, \d+\) array .*"
                 r"got dict"),
    ("generator", r"params: expected a RefineParams.*got generator"),
    ("object array", r"params: expected a RefineParams.*got ndarray"),
    ("class", r"params: expected a RefineParams.*got type"),
    (None, r"params: expected a RefineParams.*got NoneType"),
], ids=["another policy's params", "dict", "generator", "object array", "class", "None"])
def test_replay_names_the_accepted_forms_of_params(small_cache, params, match):
    """Each was a raw TypeError (float() argument ...), an AttributeError, or the width
    message "settings must be (n, 149), got (1, 242)" for StagedParams, a RefineParams
    subclass."""
    from casdri.errors import PolicyError
    from casdri.policies import RefineParams
    from casdri.policies.staged import StagedParams

    params = {"staged": StagedParams(sed_min_dur_s=2.0),
              "generator": (RefineParams() for _ in range(2)),
              "object array": np.array([RefineParams()], dtype=object),
              "class": RefineParams}.get(params, params) if not isinstance(params, dict) \
        else params
    with pytest.raises(PolicyError, match=match):
        casdri.replay(small_cache, "refine", params)


def test_a_choice_the_cache_cannot_serve_lists_plain_numbers(small_cache):
    """The message listed ``[np.float64(0.0), ...]`` under numpy 2."""
    from casdri.errors import PolicyError
    from casdri.policies import RefineParams
    from casdri.replay import replay_matrix

    x = RefineParams().encode(small_cache)
    x[RefineParams.layout(small_cache)["stage"][0]] = 5.0
    with pytest.raises(PolicyError, match=r"refine\.stage=5\.0 in setting 0: this cache allows "
                                          r"\[0\.0\]") as e:
        replay_matrix(small_cache, "refine", x[None])
    assert "np." not in str(e.value)


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_load_cache_refuses_a_part_missing_from_one_table(small_cache, tmp_path):
    """A cache copied without one separations part loaded, and its soundscapes failed later
    with a CacheKeyError blaming the closure."""
    from casdri.errors import CacheError

    c = _copy(small_cache.path, tmp_path / "c")
    part = sorted((c / "separations").glob("part-*.parquet"))[1]
    part.unlink()
    with pytest.raises(CacheError, match=rf"separations/{part.name}: missing, though "
                                         rf"soundscapes/{part.name} exists \(1 of 2 parts"):
        casdri.load_cache(c)


def test_load_cache_refuses_a_missing_sed_table_its_metadata_names(tmp_path):
    """The demo cache without its sed/ folder loaded, and the staged policy's SED gates became
    no-ops (1.0414 dB instead of 0.0575) without a word."""
    from casdri.errors import CacheError
    from search.casdri_problem import demo_cache_path

    c = _copy(demo_cache_path(), tmp_path / "demo")
    assert casdri.load_cache(c).sed is not None
    import shutil

    shutil.rmtree(c / "sed")
    with pytest.raises(CacheError, match=r"sed/part-.*: missing, though soundscapes/part-.* "
                                         r"exists \(16 of 16 parts missing from sed/\)"):
        casdri.load_cache(c)


def test_load_cache_takes_a_class_list_as_the_expected_label_set(small_cache):
    """The documented class list was always refused ("label set 'dcase2026t4' (18 classes)
    != expected label set 'custom' (18 classes)")."""
    from casdri.errors import CacheSchemaError

    classes = list(small_cache.meta.classes)
    assert casdri.load_cache(small_cache.path, label_set=classes).n_soundscapes == 10
    with pytest.raises(CacheSchemaError, match=r"!= expected label set"):
        casdri.load_cache(small_cache.path, label_set=classes[::-1])
    with pytest.raises(CacheSchemaError, match=r"!= expected label set 'custom' \(2 classes\)"):
        casdri.load_cache(small_cache.path, label_set=["Cat", "Dog"])
    assert casdri.load_cache(small_cache.path, label_set="dcase2026t4").n_soundscapes == 10


def test_compare_and_gap_figure_name_what_they_take(small_cache):
    """``compare(result_a, result_b)`` and ``gap_figure(cache)`` were AttributeErrors."""
    from casdri.errors import InputError
    from casdri.gap_figure import gap_figure
    from casdri.policies import RefineParams

    r = casdri.replay(small_cache, "refine", RefineParams(), per_soundscape=True)
    with pytest.raises(InputError, match=r"table A: expected a per-soundscape DataFrame, got "
                                         r"ReplayResult; pass its \.per_soundscape"):
        casdri.compare(r, r)
    assert len(casdri.compare(r.per_soundscape, r.per_soundscape).per_soundscape) == 10
    with pytest.raises(InputError, match=r"gap_figure: expected a GapExplanation, got "
                                         r"DecisionCache"):
        gap_figure(small_cache)


@pytest.mark.parametrize("kw", [{"separators": "sepA"}, {"taggers": "4ch"}, {"separators": 1}],
                         ids=["separators string", "taggers string", "separators int"])
def test_make_synthetic_cache_refuses_one_string_of_names(kw, tmp_path):
    """``separators="sepA"`` made four separators 's', 'e', 'p', 'A'."""
    from casdri.synthetic import make_synthetic_cache

    with pytest.raises(ValueError, match=r"expected a sequence of names"):
        make_synthetic_cache(tmp_path / "c", n_soundscapes=3, **kw)
    assert not (tmp_path / "c").exists()
