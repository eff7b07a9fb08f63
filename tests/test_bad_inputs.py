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
