"""cache_builder/official/system.yaml: the official DCASE 2026 Task 4 baseline as a casdri
system.

Without the official code: the YAML parses with `cache_builder._spec`, names the roles,
classes and files of the official layout, and its constructor arguments agree with casdri's
model interface (track count, class count + silence, label vector length).

With it (``CASDRI_OFFICIAL_BASELINE=/path/to/dcase2026_task4_baseline`` and its packages:
timm, einops, nnAudio, torchlibrosa, librosa): random-weight checkpoints in the official
layout, `build_cache` on one example soundscape with the YAML unchanged, `validate_cache`.
"""
from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from cache_builder._spec import SystemSpec
from cache_builder.official import CHECKPOINTS, M2D_DIR, M2D_FILE, SYSTEM_YAML
from casdri.labels import DCASE2026T4

ENV = "CASDRI_OFFICIAL_BASELINE"
EXAMPLE = Path(__file__).resolve().parents[1] / "casdri" / "data" / "example"


@pytest.fixture(scope="module")
def spec() -> SystemSpec:
    return SystemSpec.from_yaml(SYSTEM_YAML)


def test_roles_and_classes(spec):
    assert spec.label_set.name == DCASE2026T4.name
    assert (spec.sample_rate_hz, spec.n_tracks, spec.n_channels) == (32000, 3, 4)
    got = {(m.role, name, m.module, m.cls)
           for name, m in [*spec.taggers.items(), *spec.separators.items()]}
    assert got == {("tagger", "1ch", "src.models.m2dat.m2dat", "M2dAt"),
                   ("tagger", "4ch", "src.models.m2dat.m2dat_spatial", "M2dAtSpatial"),
                   ("separator", "resunetk", "src.models.resunet2.resunet_mod", "ResUNet30")}
    assert spec.retagger == "1ch" and spec.stages == ()
    assert spec.taggers["1ch"].channels == (0,)       # mono input, also fed mono stems
    assert spec.taggers["4ch"].channels is None       # all four mixture channels
    assert spec.allow_pickle is False


def test_paths_follow_the_official_checkout_layout(spec):
    here = SYSTEM_YAML.parent
    assert spec.python_path == (here,)
    for name, fname in CHECKPOINTS.items():
        m = {**spec.taggers, **spec.separators}[name]
        assert m.checkpoint == here / "checkpoint" / fname
    for m in spec.taggers.values():
        assert m.args["weight_file"] == f"checkpoint/{M2D_DIR}/{M2D_FILE}"


def test_args_match_the_casdri_interface(spec):
    c, k = spec.label_set.n_classes, spec.n_tracks
    for m in spec.taggers.values():                   # logits (B, K, C + 1), silence last
        assert (m.args["num_classes"], m.args["num_outputs"]) == (c + 1, k)
    assert spec.taggers["4ch"].args["nchan"] == spec.n_channels
    assert spec.taggers["1ch"].args["ref_channel"] == 0
    sep = spec.separators["resunetk"]
    assert spec.n_slots(sep) == k
    assert sep.args == {"input_channels": spec.n_channels, "output_channels": 1,
                        "target_sources_num": k, "label_len": k * c}


def test_copy_into_a_checkout_resolves_there(tmp_path):
    dest = tmp_path / "casdri_system.yaml"
    shutil.copy(SYSTEM_YAML, dest)
    s = SystemSpec.from_yaml(dest)
    assert s.python_path == (tmp_path.resolve(),)
    assert s.separators["resunetk"].checkpoint == tmp_path.resolve() / "checkpoint" / \
        "resunetk.ckpt"
    assert yaml.safe_load(dest.read_text()) == yaml.safe_load(SYSTEM_YAML.read_text())


def _official_checkout() -> Path:
    root = os.environ.get(ENV)
    if not root:
        pytest.skip(f"set {ENV}=/path/to/a checkout of nttcslab/dcase2026_task4_baseline "
                    "(with timm, einops, nnAudio, torchlibrosa, librosa installed) to build "
                    "with the official classes")
    root = Path(root).resolve()
    if not (root / "src" / "models").is_dir():
        pytest.fail(f"{ENV}={root} holds no src/models: not the official checkout")
    return root


@pytest.mark.slow
def test_build_with_official_classes_and_random_weights(tmp_path, monkeypatch):
    import numpy as np

    from cache_builder import build_cache, validate_cache
    from cache_builder.official import write_random_checkpoints
    from casdri.cache import load_cache

    root = _official_checkout()
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "src").symlink_to(root / "src", target_is_directory=True)
    shutil.copy(SYSTEM_YAML, checkout / "casdri_system.yaml")
    monkeypatch.syspath_prepend(str(checkout))
    for mod in [m for m in sys.modules if m == "src" or m.startswith("src.")]:
        monkeypatch.delitem(sys.modules, mod)
    try:
        importlib.import_module("src.models.resunet2.resunet_mod")
        importlib.import_module("src.models.m2dat.m2dat_spatial")
    except ImportError as e:
        pytest.fail(f"{ENV} is set but the official classes do not import here ({e}); "
                    "install timm, einops, nnAudio, torchlibrosa, librosa")
    written = write_random_checkpoints(checkout)
    assert all(p.is_file() for p in written.values())
    sdir = tmp_path / "split"
    (sdir / "soundscape").mkdir(parents=True)
    (sdir / "oracle_target").mkdir()
    name = "soundscape_00002"                         # three targets
    shutil.copy(EXAMPLE / "soundscape" / f"{name}.wav", sdir / "soundscape")
    for f in (EXAMPLE / "oracle_target").glob(f"{name}_*.wav"):
        shutil.copy(f, sdir / "oracle_target")
    monkeypatch.chdir(checkout)                       # weight_file is relative to it
    out = tmp_path / "cache"
    build_cache(checkout / "casdri_system.yaml", sdir, out, device="cpu", threads=2,
                batch_size=8)
    assert validate_cache(out) == []
    cache = load_cache(out)
    assert [str(x) for x in cache.soundscape_ids] == [name]
    assert cache.tagger_probs.shape == (2, 1, 3, DCASE2026T4.n_classes + 1)  # taggers first
    assert np.allclose(cache.tagger_probs.sum(-1), 1.0)
    assert len(cache.stem_key) > 0 and np.isfinite(cache.stem_energy_db).all()
