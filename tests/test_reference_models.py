"""The reference system: interface shapes, batch independence, losses, data, shipped weights."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cache_builder.reference import models as M  # noqa: E402
from cache_builder.reference.data import CropSampler, envelope, list_clips, track_targets  # noqa: E402,E501
from cache_builder.reference.train import (MODEL_SPECS, build_model, class_aware_snr_loss,
                                           separation_loss,  # noqa: E402
                                           system_yaml, train_reference_system)
from casdri.labels import DCASE2026T4  # noqa: E402

C = DCASE2026T4.n_classes
REFERENCE = Path(M.__file__).parent
#: float32 batch-vs-single tolerance (absolute, on logits and waveforms of unit-RMS input)
ATOL_BATCH = 1e-5


@pytest.fixture(autouse=True)
def _threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)


def _mixture(b, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(b, 4, t, generator=g)


def _label_vector(queries):
    lv = torch.zeros(len(queries), 3 * C)
    for b, q in enumerate(queries):
        for i, k in enumerate(q):
            lv[b, i * C + k] = 1.0
    return lv


TAGGERS = [n for n in MODEL_SPECS if n.startswith("tagger")]
SEPARATORS = [n for n in MODEL_SPECS if n.startswith("sep")]


@pytest.mark.parametrize("name", TAGGERS)
@pytest.mark.parametrize("b, t", [(1, 16001), (2, 7), (2, 32000)])
def test_tagger_shape(name, b, t):
    model = build_model(name).eval()
    with torch.no_grad():
        out = model({"waveform": _mixture(b, t)})["probabilities"]
    assert out.shape == (b, 3, C + 1) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_tagger1ch_takes_mono_and_uses_channel_0():
    model = build_model("tagger_1ch").eval()
    x = _mixture(2, 8001)
    with torch.no_grad():
        four = model({"waveform": x})["probabilities"]
        mono = model({"waveform": x[:, :1]})["probabilities"]
    torch.testing.assert_close(four, mono, rtol=0, atol=0)


def test_tagger4ch_refuses_mono():
    with pytest.raises(ValueError, match="4 FOA channels"):
        build_model("tagger_4ch")({"waveform": torch.zeros(1, 1, 1000)})


@pytest.mark.parametrize("name", SEPARATORS)
@pytest.mark.parametrize("b, t", [(1, 16001), (2, 7), (2, 1234)])
def test_separator_shape(name, b, t):
    model = build_model(name).eval()
    lv = _label_vector([[3, 15, 15], [0]][:b])
    with torch.no_grad():
        out = model({"mixture": _mixture(b, t), "label_vector": lv})["waveform"]
    assert out.shape == (b, 3, 1, t) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_separator_refuses_bad_label_vector():
    with pytest.raises(ValueError, match="label_vector"):
        build_model("sep_small")({"mixture": torch.zeros(1, 4, 100),
                                  "label_vector": torch.zeros(1, C)})


@pytest.mark.parametrize("name", list(MODEL_SPECS))
def test_batch_of_two_equals_two_batches_of_one(name):
    model = build_model(name).eval()
    x = _mixture(2, 24001, seed=1)
    x[1] *= 3.0
    with torch.no_grad():
        if name in TAGGERS or name == "sed":
            run = lambda i: model({"waveform": x[i]})["probabilities"]  # noqa: E731
        elif name == "refine":
            lv = _label_vector([[1, 4, 4], [9]])
            stems = 0.05 * torch.randn(2, 3, 1, x.shape[-1], generator=torch.Generator()
                                       .manual_seed(2))
            sed = torch.rand(2, 8, C, generator=torch.Generator().manual_seed(3))
            run = lambda i: model({"mixture": x[i], "label_vector": lv[i], "stems": stems[i],  # noqa
                                   "sed": sed[i]})["waveform"]
        else:
            lv = _label_vector([[1, 4, 4], [9]])
            run = lambda i: model({"mixture": x[i], "label_vector": lv[i]})["waveform"]  # noqa
        both = run(slice(0, 2))
        one = torch.cat([run(slice(0, 1)), run(slice(1, 2))])
    torch.testing.assert_close(both, one, rtol=0, atol=ATOL_BATCH * float(one.abs().max()))


@pytest.mark.parametrize("t", [16001, 7, 32000])
def test_sed_frames_are_probabilities_at_the_sed_hop(t):
    model = build_model("sed").eval()
    with torch.no_grad():
        out = model({"waveform": _mixture(2, t)})["probabilities"]
    assert out.shape == (2, -(-(1 + t // 640) // 5), C) and out.dtype == torch.float32
    assert ((out >= 0) & (out <= 1)).all()
    with pytest.raises(ValueError, match="FOA"):
        model({"waveform": _mixture(1, t)[:, :1]})


def test_refine_stage_starts_near_identity_and_keeps_empty_slots_silent():
    """Untrained, the stage returns about its input stems (g = 1, m = 0), so iterating it is
    safe; an empty slot stays all-zero whatever its input stem."""
    model = build_model("refine").eval()
    x = _mixture(2, 16001)
    stems = 0.05 * torch.randn(2, 3, 1, 16001, generator=torch.Generator().manual_seed(1))
    lv = _label_vector([[3, 15], [0]])
    sed = torch.rand(2, 6, C, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model({"mixture": x, "label_vector": lv, "stems": stems, "sed": sed})["waveform"]
    assert out.shape == (2, 3, 1, 16001)
    assert not out[0, 2].any() and not out[1, 1:].any()
    for b, s in [(0, 0), (0, 1), (1, 0)]:
        rel = (out[b, s] - stems[b, s]).norm() / stems[b, s].norm()
        assert float(rel) < 0.2, (b, s, float(rel))


def test_refine_stage_computes_each_distinct_slot_once_and_equals_single_items():
    """Queries sharing (mixture, SED, class, stem) share the refined stem bit for bit, and the
    deduplicated batch equals each item refined alone."""
    model = build_model("refine").eval()
    with torch.no_grad():
        for prm in model.parameters():  # move off the identity so slots differ
            prm.add_(0.05 * torch.randn(prm.shape, generator=torch.Generator().manual_seed(4)))
    x = _mixture(1, 8000).repeat(3, 1, 1)
    sed = torch.rand(1, 3, C, generator=torch.Generator().manual_seed(5)).repeat(3, 1, 1)
    stems = 0.05 * torch.randn(3, 3, 1, 8000, generator=torch.Generator().manual_seed(6))
    stems[1, 0] = stems[0, 0]
    lv = _label_vector([[3], [3, 7], [3]])
    batch = {"mixture": x, "label_vector": lv, "stems": stems, "sed": sed}
    with torch.no_grad():
        out = model(batch)["waveform"]
        alone = [model({k: v[i: i + 1] for k, v in batch.items()})["waveform"][0]
                 for i in range(3)]
    assert torch.equal(out[0, 0], out[1, 0])
    assert not torch.equal(out[0, 0], out[2, 0])
    for i in range(3):
        torch.testing.assert_close(out[i], alone[i], rtol=0,
                                   atol=ATOL_BATCH * float(alone[i].abs().max()))


def test_sed_targets_mark_frames_near_each_targets_peak():
    from cache_builder.reference.train import sed_targets
    env = np.array([[0.0, 1.0, 0.01, 1e-4, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    got = sed_targets(env, ["Speech", "Cough"], DCASE2026T4, n_frames=6, active_db=30.0)
    sp, co = DCASE2026T4.index("Speech"), DCASE2026T4.index("Cough")
    assert got.shape == (6, C) and got.dtype == np.uint8
    assert got[:, sp].tolist() == [0, 1, 1, 0, 0, 0]   # -20 dB in, -40 dB out
    assert not got[:, co].any(), "a silent target marks nothing"
    assert got.sum() == 2


def test_duplicate_class_slots_differ():
    """Two slots asking for the same class get different occurrence embeddings."""
    model = build_model("sep_small").eval()
    cond = model.condition(_label_vector([[15, 15, 2]]))
    assert not torch.allclose(cond[0], cond[1])
    empty = model.condition(torch.zeros(1, 3 * C))
    torch.testing.assert_close(empty[0], empty[2])


def test_pit_cross_entropy_is_permutation_invariant():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, C + 1, generator=g)
    targets = torch.tensor([[0, 5, C], [2, 2, C], [C, C, C], [1, 3, 17]])
    base = M.pit_cross_entropy(logits, targets)
    for perm in itertools.permutations(range(3)):
        torch.testing.assert_close(M.pit_cross_entropy(logits[:, list(perm)], targets), base)
    # one item, perfect logits -> near zero
    perfect = torch.full((1, 3, C + 1), -20.0)
    perfect[0, 0, C], perfect[0, 1, 7], perfect[0, 2, 2] = 20.0, 20.0, 20.0
    assert float(M.pit_cross_entropy(perfect, torch.tensor([[2, 7, C]]))) < 1e-6


def test_separation_loss_swaps_only_same_class_slots():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(1, 3, 800, generator=g)
    ref[0, 2] = 0.0
    mix = ref.sum(1)
    swapped = ref[:, [1, 0, 2]]
    allowed = torch.tensor([[True, False, True, False, False, False]])  # (0,1,2), (1,0,2)
    only_id = torch.tensor([[True, False, False, False, False, False]])
    perfect = float(separation_loss(ref, ref, mix, only_id))
    assert float(separation_loss(swapped, ref, mix, allowed)) == pytest.approx(perfect)
    assert float(separation_loss(swapped, ref, mix, only_id)) > perfect + 10.0
    assert perfect == pytest.approx(-20.0, abs=1e-3)  # two stems at the 30 dB ceiling, one 0


def test_class_aware_snr_loss_is_the_official_rule():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(2, 3, 800, generator=g)
    est = ref + 0.1 * torch.randn(2, 3, 800, generator=g)
    silent = torch.tensor([[False, False, True], [False, False, False]])
    ref[0, 2] = 0.0
    est[0, 2] = torch.randn(800, generator=g)  # an empty slot costs 0 whatever its stem
    allowed = torch.tensor([[True, False, True, False, False, False],  # slots 0, 1 one class
                            [True] + [False] * 5])
    eps = torch.finfo(torch.float32).eps

    def neg_snr(e, r):
        return float(-10 * torch.log10((r.pow(2).sum() + eps) / ((r - e).pow(2).sum() + eps)))

    straight = [(neg_snr(est[0, 0], ref[0, 0]) + neg_snr(est[0, 1], ref[0, 1])) / 3,
                sum(neg_snr(est[1, k], ref[1, k]) for k in range(3)) / 3]
    swapped = (neg_snr(est[0, 1], ref[0, 0]) + neg_snr(est[0, 0], ref[0, 1])) / 3
    want = (min(straight[0], swapped) + straight[1]) / 2
    got = float(class_aware_snr_loss(est, ref, allowed, silent))
    assert got == pytest.approx(want, rel=1e-5)
    assert got == pytest.approx(sum(straight) / 2, rel=1e-5)  # noisy copies: identity wins
    crossed = est[:, [1, 0, 2]]  # swapped stems: free when the swap is allowed, else not
    only_id = torch.tensor([[True] + [False] * 5] * 2)
    both = allowed[:1].expand(2, -1)
    free = float(class_aware_snr_loss(crossed, ref, both, silent))
    assert free == pytest.approx(float(class_aware_snr_loss(est, ref, both, silent)))
    assert float(class_aware_snr_loss(crossed, ref, only_id, silent)) > free + 10.0


def test_track_targets_and_envelope():
    ls = DCASE2026T4
    np.testing.assert_array_equal(track_targets(["Speech", "AlarmClock"], ls, 3),
                                  [0, ls.index("Speech"), C])
    env = envelope(np.ones((2, 6500), np.float32), hop=3200)
    np.testing.assert_allclose(env, [[3200, 3200, 100]] * 2)


# ----------------------------------------------------------------------------- tiny folder


def _tiny_folder(root: Path, n: int = 6, seconds: float = 1.0) -> Path:
    import soundfile as sf
    rng = np.random.default_rng(0)
    t = int(seconds * 32000)
    for split in ("train",):
        (root / split / "soundscape").mkdir(parents=True)
        (root / split / "oracle_target").mkdir(parents=True)
        for i in range(n):
            labels = [["Speech"], ["Cough", "Speech"], [], ["Speech", "Speech"]][i % 4]
            mix = 0.01 * rng.standard_normal((4, t))
            for j, lab in enumerate(labels):
                src = (0.1 * rng.standard_normal(t)).astype(np.float32)
                src[: t // 2] = 0.0
                mix += rng.standard_normal((4, 1)) * src
                sf.write(root / split / "oracle_target" / f"s_{i}_{j}_{lab}.wav", src, 32000,
                         subtype="FLOAT")
            sf.write(root / split / "soundscape" / f"s_{i}.wav", mix.T.astype(np.float32),
                     32000, subtype="FLOAT")
    return root


def test_crop_sampler_items(tmp_path):
    clips = list_clips(_tiny_folder(tmp_path) / "train", DCASE2026T4)
    assert [c.labels for c in clips[:4]] == [("Speech",), ("Cough", "Speech"), (),
                                             ("Speech", "Speech")]
    envs = [envelope(np.stack([np.asarray(__import__("soundfile").read(p)[0], np.float32)
                               for p in c.targets]) if c.targets else np.zeros((0, 10)))
            for c in clips]
    sampler = CropSampler(clips, envs, DCASE2026T4, 3, 16000, np.random.default_rng(0))
    mix, lv, tgt, valid = sampler.batch(16)
    assert mix.shape == (16, 4, 16000) and tgt.shape == (16, 3, 16000)
    assert lv.shape == (16, 3 * C) and valid.shape == (16, 6) and valid[:, 0].all()
    slots = lv.reshape(16, 3, C)
    for b in range(16):
        cls = [int(np.argmax(s)) if s.any() else C for s in slots[b]]
        assert cls == sorted(cls), "canonical query order"
        for s in range(3):
            if cls[s] == C:
                assert not tgt[b, s].any(), "an empty slot has a zero target"


def test_train_smoke(tmp_path):
    from cache_builder.system import load_system
    data = _tiny_folder(tmp_path / "data", n=4)
    log = train_reference_system(data, tmp_path / "out", minutes=5, max_steps=1,
                                 crop_seconds=0.25)
    assert set(log["models"]) == set(MODEL_SPECS)
    system = load_system(tmp_path / "out" / "system.yaml", device="cpu")
    probs = system.tag("1ch", _mixture(1, 8000))
    assert probs.shape == (1, 3, C + 1)


@pytest.mark.slow
def test_evaluate_reports_figures_beside_the_split_floors(tmp_path):
    """On a generated split the dev metrics carry the split's model-free floors (the one rule,
    `split_difficulty`) and score every soundscape with targets."""
    from cache_builder.reference.train import evaluate_reference_system
    from cache_builder.soundscapes import generate_soundscapes
    from cache_builder.soundscapes.stats import split_difficulty
    pool = Path(__file__).parent / "data" / "bed_subset"
    generate_soundscapes(pool, tmp_path / "gen", {"train": 4, "dev": 6}, seed=0, duration_s=2.0,
                         progress=False)
    train_reference_system(tmp_path / "gen", tmp_path / "out", minutes=5, max_steps=1,
                           crop_seconds=0.25)
    got = evaluate_reference_system(tmp_path / "out" / "system.yaml", tmp_path / "gen" / "dev")
    split = split_difficulty(tmp_path / "gen" / "dev")
    assert got["n_soundscapes"] == 6
    assert got["floors"] == {"silence_tagger_accuracy_mix_pct": split.silence_tagger_pct,
                             "silent_stems_capi_sdri_db": split.silent_floor_db,
                             "scaled_mixture_capi_sdri_db": split.gain_floor_db,
                             "ideal_mask_capi_sdri_db": split.ideal_mask_db,
                             "median_snr_mixture_db": split.median_snr_mix_db}
    assert set(got["taggers"]) == {"1ch", "4ch"} and set(got["separators"]) == {"small", "large"}
    for figures in got["taggers"].values():
        assert 0.0 <= figures["accuracy_mix_pct"] <= 100.0
    for figures in got["separators"].values():
        assert figures["n_scored"] == 6 - split.n_zero_target
        assert np.isfinite(figures["capi_sdri_db"])


def test_shipped_yaml_matches_model_specs():
    assert (REFERENCE / "system.yaml").read_text() == system_yaml(DCASE2026T4)


def test_silent_slots_are_empty_or_silent_in_the_crop():
    """The official loss scores 0 on empty slots and on references silent in the crop (an
    absent class asked for); a reference 20 dB under the mixture is still scored."""
    from cache_builder.reference.train import silent_slots
    mix = torch.ones(1, 4, 100)
    tgt = torch.zeros(1, 3, 100)
    tgt[0, 0] = 0.1             # -20 dB of the mixture's channel 0: scored
    tgt[0, 1] = 0.01            # -40 dB: silent in the crop
    empty = torch.tensor([[False, False, True]])
    assert silent_slots(tgt, mix, empty).tolist() == [[False, True, True]]


def test_official_loss_does_not_push_a_silent_reference_to_tens_of_db():
    """Without `silent_slots`, an absent class's zero reference costs tens of dB for any sound
    (the collapse to all-silent stems); with it, the cost of the batch is the present slot's."""
    from cache_builder.reference.train import silent_slots
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(1, 4, 800, generator=g)
    ref = torch.zeros(1, 3, 800)
    ref[0, 0] = mix[0, 0] * 0.5
    est = mix[:, :1].repeat(1, 3, 1) * 0.4        # slot 0 at 20·log10(0.5/0.1) = 14 dB SNR
    valid = torch.ones(1, 6, dtype=torch.bool)
    empty = torch.tensor([[False, False, True]])
    raw = float(class_aware_snr_loss(est, ref, valid, empty))
    fixed = float(class_aware_snr_loss(est, ref, valid, silent_slots(ref, mix, empty)))
    assert raw > 20.0
    # the present slot costs -14 dB, the absent and the empty one nothing: mean over 3 slots
    assert fixed == pytest.approx(-20 * np.log10(0.5 / 0.1) / 3, abs=1e-3)


def test_resume_reuses_trained_models_and_redoes_no_finished_work(tmp_path):
    data = _tiny_folder(tmp_path / "data", n=4)
    out = tmp_path / "out"
    first = train_reference_system(data, out, minutes=5, max_steps=1, crop_seconds=0.25)
    before = {n: (out / "weights" / f"{n}.pt").stat().st_mtime_ns for n in MODEL_SPECS}
    import json
    log = json.loads((out / "train_log.json").read_text())
    for name in ("sep_large", "refine"):   # as if killed during sep_large
        del log["models"][name]
    (out / "train_log.json").write_text(json.dumps(log))
    again = train_reference_system(data, out, minutes=5, max_steps=1, crop_seconds=0.25,
                                   resume=True)
    after = {n: (out / "weights" / f"{n}.pt").stat().st_mtime_ns for n in MODEL_SPECS}
    assert again["resumed"] == sorted(set(MODEL_SPECS) - {"sep_large", "refine"})
    assert [n for n in MODEL_SPECS if after[n] != before[n]] == ["sep_large", "refine"]
    assert again["models"]["tagger_1ch"] == first["models"]["tagger_1ch"]


def test_trainer_cli_refuses_a_limit_below_one(capsys):
    from cache_builder.reference.train import main
    with pytest.raises(SystemExit) as e:
        main(["--data", "d", "--out", "o", "--evaluate-only", "--limit", "0"])
    assert e.value.code == 2
    assert "--limit must be >= 1, got 0" in capsys.readouterr().err
