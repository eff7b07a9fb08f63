"""A tuned policy carries the checkpoints it was tuned with, and live apply compares them with
its system's (one mapping: `casdri.schema.CacheMeta.model_sha256`)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import casdri
from cache_builder.apply import check_provenance
from casdri.cache import load_cache
from casdri.errors import PolicyError
from search.casdri_problem import CasdriProblem
from search.report import policy_document
from search.run import run_search

DEMO = Path(casdri.__file__).parent / "data" / "demo_cache"


def test_policy_yaml_records_the_models_and_apply_checks_them(tmp_path):
    cache = load_cache(DEMO)
    models = cache.meta.model_sha256()
    assert set(models) == {"tagger/1ch", "tagger/4ch", "separator/small", "separator/large",
                           "sed/sed", "stage/refine"}
    assert all(isinstance(h, str) and len(h) == 64 for h in models.values())
    result = run_search(DEMO, stage="fusion", folds=1, trials=2)
    doc = yaml.safe_load(policy_document(result))
    assert doc["provenance"]["models"] == models
    assert check_provenance(tmp_path / "p.yaml", doc["provenance"], dict(models)) == []
    other = dict(models, **{"separator/small": "0" * 64})
    with pytest.raises(PolicyError, match="separator/small: tuned with checkpoint sha256"):
        check_provenance(tmp_path / "p.yaml", doc["provenance"], other)
    with pytest.warns(UserWarning, match="separator/small"):
        check_provenance(tmp_path / "p.yaml", doc["provenance"], other, force=True)


def test_caches_without_builder_models_fall_back_to_separator_hashes(tmp_path):
    from casdri.synthetic import make_synthetic_cache

    c = make_synthetic_cache(tmp_path / "s", n_soundscapes=8, seed=0)
    got = c.meta.model_sha256()
    assert list(got) == [f"separator/{n}" for n in c.meta.separators]
    assert CasdriProblem(c).cache.meta is c.meta
