"""cache_builder.system: YAML parsing, checkpoint loading (prefixes, pickles, mismatches) and
the model-interface checks."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import numpy as np
import torch
import yaml

from cache_builder.system import (
    CheckpointError, ModelOutputError, SystemConfigError, SystemSpec, distinct_rows,
    load_system, pick_device, sha256_file,
)
from casdri.labels import DCASE2026T4
from tests.builder_models import TinySeparator, TinyTagger, write_system


def _edit(path: Path, fn) -> Path:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def system_yaml(tmp_path) -> Path:
    return write_system(tmp_path / "sys", stages=1)


def test_load_system_describes_models_and_hashes(system_yaml):
    s = load_system(system_yaml, device="cpu")
    d = s.describe()
    assert list(d["taggers"]) == ["1ch", "4ch"] and list(d["separators"]) == ["small", "large"]
    ckpt = system_yaml.parent / "weights" / "separators_small.pt"
    assert d["separators"]["small"]["sha256"] == sha256_file(ckpt)
    assert d["taggers"]["1ch"]["channels"] == [0] and d["taggers"]["4ch"]["channels"] is None
    assert [n for n, _ in s.stages] == ["refine1"] and s.stage_names() == ["sep", "refine1"]
    assert all(not m.training for m in s.separators.values())


def test_a_model_without_checkpoint_is_loaded_with_a_warning(system_yaml):
    """A model block without ``checkpoint`` built with the class's random weights, silently;
    apply could not check a policy against it (its sha256 is None)."""
    _edit(system_yaml, lambda d: d["separators"]["small"].pop("checkpoint"))
    with pytest.warns(UserWarning, match=r"separator 'small': no checkpoint, so its weights are "
                                         r"whatever \w+\(\.\.\.\) makes .* give 'checkpoint: "
                                         r"PATH'"):
        s = load_system(system_yaml, device="cpu")
    assert s.describe()["separators"]["small"]["sha256"] is None


@pytest.mark.parametrize("prefix", ["", "model.", "net.", "module.", "model.module."])
def test_checkpoint_prefixes_are_removed(tmp_path, prefix):
    torch.manual_seed(0)
    ref = TinySeparator(hidden=4)
    state = {f"{prefix}{k}": v for k, v in ref.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "sep.ckpt")
    y = _edit(write_system(tmp_path), lambda d: d["separators"]["small"].update(
        checkpoint="sep.ckpt"))
    s = load_system(y, device="cpu")
    for k, v in ref.state_dict().items():
        assert torch.equal(s.separators["small"].state_dict()[k], v)


def test_lightning_checkpoint_with_other_submodules(tmp_path):
    """The baseline's suffix rule: 'separator.' inside a LightningModule holding more."""
    torch.manual_seed(1)
    ref = TinyTagger(in_channels=1)
    state = {f"separator.{k}": v for k, v in ref.state_dict().items()}
    state["loss_fn.weight"] = torch.ones(3)
    torch.save({"state_dict": state}, tmp_path / "t.ckpt")
    y = _edit(write_system(tmp_path), lambda d: d["taggers"]["1ch"].update(checkpoint="t.ckpt"))
    s = load_system(y, device="cpu")
    assert torch.equal(s.taggers["1ch"].head.weight, ref.head.weight)


def test_checkpoint_of_another_class_names_file_and_keys(tmp_path):
    y = write_system(tmp_path)
    bad = tmp_path / "weights" / "taggers_1ch.pt"
    _edit(y, lambda d: d["separators"]["small"].update(checkpoint="weights/taggers_1ch.pt"))
    with pytest.raises(CheckpointError, match=r"taggers_1ch\.pt does not match class "
                       r"TinySeparator: missing keys \[.*emb\.weight.*unexpected keys \[.*head"):
        load_system(y, device="cpu")
    assert bad.exists()


def test_checkpoint_with_wrong_shapes(tmp_path):
    y = _edit(write_system(tmp_path), lambda d: d["separators"]["small"]["args"].update(
        hidden=6))
    with pytest.raises(CheckpointError, match=r"separators_small\.pt .*shape mismatch.*enc"):
        load_system(y, device="cpu")


def test_pickled_checkpoint_needs_allow_pickle(tmp_path):
    y = write_system(tmp_path)
    model = TinyTagger(in_channels=1)
    torch.save({"state_dict": model.state_dict(), "hparams": _Opaque()}, tmp_path / "p.ckpt")
    _edit(y, lambda d: d["taggers"]["1ch"].update(checkpoint="p.ckpt"))
    with pytest.raises(CheckpointError, match=r"p\.ckpt cannot be loaded with weights_only=True"
                       r".*allow_pickle: true"):
        load_system(y, device="cpu")
    _edit(y, lambda d: d.update(allow_pickle=True))
    assert load_system(y, device="cpu").taggers["1ch"] is not None


class _Opaque:
    pass


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("separators"), r"missing key 'separators'"),
    (lambda d: d.update(retagger="9ch"), r"retagger '9ch' is not one of the taggers"),
    (lambda d: d.update(n_track=3), r"unknown keys \['n_track'\]"),
    (lambda d: d["taggers"]["1ch"].update(module="no.such.module"), r"cannot import module"),
    (lambda d: d["taggers"]["1ch"].update({"class": "Nope"}), r"has no class 'Nope'"),
    (lambda d: d["taggers"]["1ch"]["args"].update(bogus=1), r"TinyTagger\(\*\*args\) failed"),
    (lambda d: d["taggers"]["1ch"].update(checkpoint="weights/none.pt"), r"does not exist"),
    (lambda d: d.update(n_tracks=0), r"n_tracks: expected a positive integer"),
    # the cache it would build is refused at load (was found only then)
    (lambda d: d.update(sample_rate_hz=16000), r"system\.yaml: sample_rate_hz 16000, but "
     r"label set 'dcase2026t4' is scored at 32000 Hz"),
])
def test_system_yaml_errors(tmp_path, edit, match):
    y = _edit(write_system(tmp_path), edit)
    with pytest.raises((SystemConfigError, CheckpointError), match=match):
        load_system(y, device="cpu")


def test_output_contract_errors(tmp_path):
    y = _edit(write_system(tmp_path), lambda d: d["separators"].update(
        bad={"module": "tests.builder_models", "class": "WrongShapeSeparator",
             "args": {"hidden": 4}},
        nan={"module": "tests.builder_models", "class": "NaNSeparator", "args": {"hidden": 4}}))
    s = load_system(y, device="cpu")
    mix = torch.zeros(2, 4, 800)
    with pytest.raises(ModelOutputError, match=r"separator 'bad'.*shape \(2, 3, 800\), "
                       r"expected \(2, 3, 1, 800\)"):
        s.separate("bad", mix, [(1,), (2, 3)])
    with pytest.raises(ModelOutputError, match=r"separator 'nan'.*NaN/Inf for batch items "
                       r"\[0, 1\]"):
        s.separate("nan", mix + 0.1, [(1,), (2, 3)])
    stems = s.separate("small", mix + 0.1, [(1,), (2, 3)])
    assert [tuple(t.shape) for t in stems] == [(2, 3, 1, 800)]
    assert s.passes.items["separator"] == 2  # failed calls are not counted


def test_label_vector_is_stacked_one_hots(system_yaml):
    s = load_system(system_yaml, device="cpu")
    lv = s.label_vector([(0, 15, 15), (17,)], 3)
    assert lv.shape == (2, 54)
    assert lv[0].nonzero().flatten().tolist() == [0, 18 + 15, 36 + 15]
    assert lv[1].nonzero().flatten().tolist() == [17]


def test_import_cache_builder_is_light():
    code = ("import sys, cache_builder; assert 'torch' not in sys.modules, 'torch imported'; "
            "cache_builder.canonical_query; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_spec_from_dict_resolves_paths(tmp_path):
    spec = SystemSpec.from_dict(
        {"taggers": {"1ch": {"module": "m", "class": "T", "checkpoint": "w/t.pt"}},
         "separators": {"s": {"module": "m", "class": "S"}}, "retagger": "1ch"}, tmp_path)
    assert spec.taggers["1ch"].checkpoint == (tmp_path / "w" / "t.pt").resolve()
    assert spec.separators["s"].checkpoint is None and spec.n_tracks == 3


def test_device_is_cuda_when_present_else_cpu(monkeypatch, system_yaml):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device(None) == torch.device("cpu") == pick_device("auto")
    assert load_system(system_yaml).device == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device(None) == torch.device("cuda") and pick_device("") == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")  # an explicit --device wins
    assert pick_device("cuda:1") == torch.device("cuda", 1)


def test_float32_unless_amp(system_yaml):
    s = load_system(system_yaml, device="cpu")
    assert not s.amp and all(p.dtype == torch.float32 for m in s.separators.values()
                             for p in m.parameters())
    mix = 0.1 * torch.randn(1, 4, 1600)
    a = s.separate("small", mix, [(1, 2)])[0]
    b = load_system(system_yaml, device="cpu", amp=True).separate("small", mix, [(1, 2)])[0]
    assert a.dtype == b.dtype == torch.float32  # outputs handed on as float32 either way
    assert not torch.equal(a, b)  # autocast (bfloat16 on CPU) changes the numbers


def test_retag_runs_once_per_distinct_stem(system_yaml):
    s = load_system(system_yaml, device="cpu")
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(1, 1, 3200, generator=g), torch.randn(1, 1, 3200, generator=g)
    c = a.clone()
    c[0, 0, 1234] = torch.nextafter(c[0, 0, 1234], torch.tensor(10.0))  # one ulp away
    stems = torch.cat([a, b, a, c, b])
    s.passes.reset()
    out = s.retag(stems)
    assert s.passes.items["retag"] == 3  # a, b, c: the one-ulp change counts as distinct
    one_by_one = np.concatenate([s.retag(x[None]) for x in (a[0], b[0], a[0], c[0], b[0])])
    np.testing.assert_allclose(out, one_by_one, rtol=1e-4, atol=1e-7)  # float32 batching
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], out[4])
    assert out.shape == (5, 3, 19)


def test_own_label_set_takes_any_sample_rate(tmp_path):
    y = _edit(write_system(tmp_path), lambda d: d.update(
        sample_rate_hz=16000, label_set=list(DCASE2026T4.classes)[::-1]))
    assert load_system(y, device="cpu").spec.sample_rate_hz == 16000


def test_distinct_rows_compares_bits_not_values():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 4096)).astype(np.float32)
    rows = base[[0, 1, 0, 2, 0, 1]].copy()
    rows[4, 7] = np.nextafter(rows[4, 7], np.float32(10))   # off the probe (7 % 61 != 0)
    rows[5, 61] = np.nextafter(rows[5, 61], np.float32(10))  # on the probe
    first, inverse = distinct_rows(rows)
    np.testing.assert_array_equal(first, [0, 1, 3, 4, 5])
    np.testing.assert_array_equal(inverse, [0, 1, 0, 2, 3, 4])
    assert first.dtype == inverse.dtype == np.int64
    zeros = np.zeros((3, 100), np.float32)
    zeros[1, 50] = -0.0                       # equal as a value, not as bits
    zeros[:, 3] = np.nan                      # the same NaN in every row
    np.testing.assert_array_equal(distinct_rows(zeros)[1], [0, 1, 0])
    empty = distinct_rows(np.zeros((0, 8), np.float32))
    assert empty[0].shape == empty[1].shape == (0,)
