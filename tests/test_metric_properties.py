"""Property tests of the metric (hypothesis) and its error handling."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import casdri
from casdri.labels import DCASE2026T4

CLASSES = DCASE2026T4.classes[:4]
T = 256


@st.composite
def clips(draw, max_rows=5):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_ref = draw(st.integers(0, max_rows))
    n_est = draw(st.integers(0, max_rows))
    ref_labels = [draw(st.sampled_from(CLASSES)) for _ in range(n_ref)]
    est_labels = [draw(st.sampled_from(CLASSES + ("silence",))) for _ in range(n_est)]
    ref = rng.standard_normal((n_ref, T)).astype(np.float32)
    est = np.empty((n_est, T), np.float32)
    for i, label in enumerate(est_labels):
        same = [j for j, r in enumerate(ref_labels) if r == label]
        base = ref[rng.choice(same)] if same else 0.0
        est[i] = base + rng.uniform(0.05, 2.0) * rng.standard_normal(T)
    mix = (ref.sum(0) + 0.3 * rng.standard_normal(T)).astype(np.float32)
    return est_labels, est, ref_labels, ref, mix, rng


@settings(max_examples=150, deadline=None)
@given(clips())
def test_row_order_changes_nothing(clip):
    est_labels, est, ref_labels, ref, mix, rng = clip
    a = casdri.capi_sdri(est_labels, est, ref_labels, ref, mix)
    pe, pr = rng.permutation(len(est_labels)), rng.permutation(len(ref_labels))
    b = casdri.capi_sdri([est_labels[i] for i in pe], est[pe], [ref_labels[i] for i in pr],
                         ref[pr], mix)
    assert (a is None) == (b is None)
    if a is not None:  # continuous random data: no exact ties
        assert a == pytest.approx(b, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(clips())
def test_from_snr_equals_waveforms(clip):
    est_labels, est, ref_labels, ref, mix, _ = clip
    a = casdri.capi_sdri(est_labels, est, ref_labels, ref, mix)
    snr = casdri.snr_db(est, ref) if len(est) and len(ref) else np.zeros((len(est), len(ref)))
    snr_mix = casdri.snr_db(mix, ref)[0] if len(ref) else np.zeros(0)
    b = casdri.capi_sdri_from_snr(est_labels, ref_labels, snr, snr_mix)
    assert (a is None) == (b is None)
    if a is not None:
        assert a == pytest.approx(b, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(CLASSES), min_size=1, max_size=4), st.integers(0, 2**31))
def test_false_positive_on_zero_target_clip_scores_zero(labels, seed):
    rng = np.random.default_rng(seed)
    est = rng.standard_normal((len(labels), T)).astype(np.float32)
    value = casdri.capi_sdri(labels, est, [], np.zeros((0, T), np.float32),
                             rng.standard_normal(T).astype(np.float32))
    assert value == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(CLASSES), min_size=1, max_size=4), st.integers(0, 2**31))
def test_perfect_stems_give_snr_ref_ref_minus_snr_mix_ref(labels, seed):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((len(labels), T)).astype(np.float32)
    mix = (ref.sum(0) + rng.standard_normal(T)).astype(np.float32)
    value = casdri.capi_sdri(labels, ref.copy(), labels, ref, mix)
    eps = np.finfo(np.float32).eps
    energy = (ref.astype(np.float64) ** 2).sum(1)
    expected = np.mean(10 * np.log10((energy + eps) / eps) - casdri.snr_db(mix, ref)[0])
    assert value == pytest.approx(expected, abs=1e-9)


def test_zero_stem_scores_zero_db_snr():
    ref = np.ones((1, T), np.float32)
    assert casdri.snr_db(np.zeros((1, T), np.float32), ref)[0, 0] == pytest.approx(0.0, abs=1e-12)


def test_snr_eps_follows_input_dtype():
    ref = np.ones((1, T))
    assert casdri.snr_db(ref.astype(np.float32), ref.astype(np.float32))[0, 0] == pytest.approx(
        10 * np.log10((T + np.finfo(np.float32).eps) / np.finfo(np.float32).eps))
    assert casdri.snr_db(ref, ref)[0, 0] == pytest.approx(
        10 * np.log10((T + np.finfo(np.float64).eps) / np.finfo(np.float64).eps))


BAD = [
    (dict(est_labels=["Speech", "Cough"]), casdri.LabelError, "2 labels for 1 rows"),
    (dict(mixture=np.zeros((4, T), np.float32)), casdri.InputError, "channel 0"),
    (dict(est_wavs=np.zeros((1, T + 1), np.float32)), casdri.InputError, "length mismatch"),
    (dict(est_wavs=np.full((1, T), np.nan, np.float32)), casdri.InputError, "NaN/Inf at sample 0"),
    (dict(ref_wavs=np.full((1, T), np.inf, np.float32)), casdri.InputError, "NaN/Inf"),
    (dict(est_wavs=np.zeros((1, T), np.int16)), casdri.InputError, "float32 or float64"),
]


@pytest.mark.parametrize("override,error,match", BAD)
def test_bad_input_is_a_clear_error(override, error, match):
    args = dict(est_labels=["Speech"], est_wavs=np.zeros((1, T), np.float32),
                ref_labels=["Speech"], ref_wavs=np.ones((1, T), np.float32),
                mixture=np.ones(T, np.float32))
    args.update(override)
    with pytest.raises(error, match=match):
        casdri.capi_sdri(**args)


def test_nan_in_silence_row_is_ignored_as_officially():
    est = np.stack([np.ones(T), np.full(T, np.nan)]).astype(np.float32)
    v = casdri.capi_sdri(["Speech", "silence"], est, ["Speech"], np.ones((1, T), np.float32),
                         2 * np.ones(T, np.float32))
    assert v is not None and np.isfinite(v)


def test_accumulator_rejects_unknown_label_and_repeated_soundscape():
    acc = casdri.CapiSdri()
    ref = np.ones((1, T), np.float32)
    with pytest.raises(casdri.LabelError, match="unknown label 'Dog'"):
        acc.update("s0", ["Dog"], ref, ["Speech"], ref, ref[0])
    acc.update("s0", ["Speech"], ref, ["Speech"], ref, ref[0])
    with pytest.raises(casdri.InputError, match="already updated"):
        acc.update("s0", ["Speech"], ref, ["Speech"], ref, ref[0])


def test_one_string_where_labels_belong_is_named_not_spelled_out():
    """``capi_sdri("Speech", ...)`` said ``unknown label 'S'`` (the string's characters); a
    1-D stem array is one stem, as documented."""
    ref = np.ones((1, T), np.float32)
    for est, refs, side in (("Speech", ["Speech"], "est_labels"), (["Speech"], "Speech",
                                                                   "ref_labels")):
        with pytest.raises(casdri.LabelError, match=rf"{side}: expected a sequence of labels, "
                                                    r"got the string 'Speech'; pass \['Speech'\]"):
            casdri.capi_sdri(est, 0.5 * ref, refs, ref, 2 * ref[0])
    assert casdri.capi_sdri(["Speech"], 0.5 * ref[0], ["Speech"], ref, 2 * ref[0]) == \
        casdri.capi_sdri(["Speech"], 0.5 * ref, ["Speech"], ref, 2 * ref[0])


def test_custom_label_set_is_accepted():
    acc = casdri.CapiSdri(label_set=["Dog", "Cat"])
    ref = np.ones((1, T), np.float32)
    assert acc.update("s0", ["Dog"], 0.5 * ref, ["Dog"], ref, 2 * ref[0]) == pytest.approx(
        10 * np.log10(T / (0.25 * T)) - 10 * np.log10(T / T), abs=1e-5)
    with pytest.raises(casdri.LabelError):
        casdri.get_label_set("dcase2099")


def test_import_casdri_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, casdri; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("row", [0, 1])
def test_ca_sdri_2025_refuses_nan_too(row):
    est = np.ones((2, T), np.float32)
    est[row, 5] = np.nan
    with pytest.raises(casdri.InputError, match="NaN/Inf at sample 5"):
        casdri.ca_sdri_2025(["Speech", "Cough"], est, ["Speech"], np.ones((1, T), np.float32),
                            np.ones(T, np.float32))


def test_nan_in_unpaired_stem_is_refused():
    est = np.ones((2, T), np.float32)
    est[1, 7] = np.nan  # a false-positive class: the official code silently ignores it
    with pytest.raises(casdri.InputError, match=r"est_wavs row 1 \('Cough'\).*sample 7"):
        casdri.capi_sdri(["Speech", "Cough"], est, ["Speech"], np.ones((1, T), np.float32),
                         np.ones(T, np.float32))
