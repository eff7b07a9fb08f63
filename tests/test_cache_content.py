"""Issue 13: cache content is range-checked at load (corrupt values, a relabelled class list,
another sample rate, an incomplete build) and `validate` names an unreadable part."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import casdri
from casdri.sed import summary_of_cache
from casdri import schema as sc
from casdri.errors import CacheError, CacheSchemaError

DEMO = Path(casdri.__file__).parent / "data" / "demo_cache"


@pytest.fixture
def demo(tmp_path):
    out = tmp_path / "cache"
    shutil.copytree(DEMO, out)
    return out


def _part(cache: Path, table: str) -> Path:
    return sorted((cache / table).glob("part-*.parquet"))[0]


def _set_value(cache: Path, table: str, column: str, value, row: int = 0):
    """Rewrite the first part of ``table`` with ``column``'s first value at ``row`` replaced
    (keeping the file's schema metadata)."""
    f = _part(cache, table)
    t = pq.read_table(f)
    col = t.column(column)
    values = col.to_pylist()
    if pa.types.is_list(col.type):
        values[row] = [value] * len(values[row]) if value is not None else values[row]
    else:
        values[row] = value
    t = t.set_column(t.schema.get_field_index(column), t.schema.field(column),
                     pa.array(values, col.type))
    pq.write_table(t, f)


def _first_with_snr(cache):
    t = pq.read_table(_part(cache, "separations"))
    return int(np.flatnonzero(pc.list_value_length(t.column(sc.SNR_DB)).to_numpy() > 0)[0])


def _edit_meta(cache, **kw):
    f = cache / sc.META_FILE
    d = json.loads(f.read_text())
    d.update(kw)
    f.write_text(json.dumps(d))


BAD = {
    "snr_db byte flip": (lambda c: _set_value(c, "separations", sc.SNR_DB, 6.9e305,
                                              _first_with_snr(c)),
                         CacheSchemaError, r"separations/part-.*: snr_db value 6.9e\+305 .*"
                         r"outside \[-1000, 1000\].*rebuild"),
    "energy_db +inf": (lambda c: _set_value(c, "separations", sc.ENERGY_DB, float("inf")),
                       CacheSchemaError, r"energy_db value inf .*outside"),
    "tagger probs NaN": (lambda c: _set_value(c, "tagger", sc.PROBS, float("nan")),
                         CacheSchemaError, r"tagger/part-.*: probs value nan"),
    "tagger probs negative": (lambda c: _set_value(c, "tagger", sc.PROBS, -0.01),
                              CacheSchemaError, r"probs value -0.0099999"),
    "tagger probs not a softmax": (lambda c: _set_value(c, "tagger", sc.PROBS, 0.5),
                                   CacheSchemaError, r"probs row 0 sums to 9.5, not 1"),
    "retag not a softmax": (lambda c: (_set_value(c, "separations", sc.RETAG_MAX, 0.01),
                                       _set_value(c, "separations", sc.RETAG_SILENCE_MIN, 0.01)),
                            CacheSchemaError, r"separations/part-.*: row 0: sum of retag_max \+ "
                            r"retag_silence_min is 0.19 < 1 .*softmax"),
    "retag silence above 1": (lambda c: _set_value(c, "separations", sc.RETAG_SILENCE_MIN, 1.25),
                              CacheSchemaError, r"retag_silence_min value 1.25 .*outside"),
    "snr_mix_db byte flip": (lambda c: _set_value(c, "soundscapes", sc.SNR_MIX_DB, -3e300, 1),
                             CacheSchemaError, r"soundscapes/part-.*snr_mix_db value -3e\+300"),
    "swapped classes": (lambda c: _edit_meta(c, classes=[*DEMO_CLASSES[1::-1],
                                                         *DEMO_CLASSES[2:]]),
                        CacheSchemaError, r"classes differ from label set 'dcase2026t4' .*0: "
                        r"'Bicycle_bell' != 'Alarm_clock'|classes differ"),
    "renamed class": (lambda c: _edit_meta(c, classes=["Dog", *DEMO_CLASSES[1:]]),
                      CacheSchemaError, r"classes differ from label set 'dcase2026t4'.*'Dog'"),
    "sample rate 16 kHz": (lambda c: _edit_meta(c, sample_rate_hz=16000),
                           CacheSchemaError, r"sample_rate_hz 16000, but label set "
                           r"'dcase2026t4' is scored at 32000 Hz"),
    "a whole chunk missing": (lambda c: [(c / t / "part-dev-000of002-00003.parquet").unlink()
                                         for t in sc.TABLES
                                         if (c / t / "part-dev-000of002-00003.parquet").exists()],
                              CacheError, r"incomplete cache: split 'dev': the parts hold 1384 "
                              r"of the 1512 soundscapes.*--allow-incomplete"),
}
DEMO_CLASSES = json.loads((DEMO / sc.META_FILE).read_text())["classes"]


@pytest.mark.parametrize("case", sorted(BAD))
def test_corrupt_cache_is_refused_at_load(demo, case):
    break_it, err, match = BAD[case]
    break_it(demo)
    with pytest.raises(err, match=match):
        casdri.load_cache(demo)


def test_demo_cache_passes_the_content_checks():
    assert casdri.load_cache(DEMO).n_soundscapes == 2012  # 1,512 dev + 500 eval


def test_incomplete_cache_loads_when_told(demo):
    BAD["a whole chunk missing"][0](demo)
    with pytest.warns(UserWarning, match="incomplete cache"):
        cache = casdri.load_cache(demo, allow_incomplete=True)
    assert cache.n_soundscapes == 1884  # 2,012 less the 128 of the missing dev chunk


@pytest.mark.parametrize("how, match", [
    ("truncate", r"tagger/part-dev-000of002-00002.parquet: unreadable Parquet part \(\d+ "
                 r"bytes.*delete the files of part 'dev-000of002-00002'"),
    ("empty", r"tagger/part-dev-000of002-00002.parquet: unreadable Parquet part \(0 bytes"),
])
def test_validate_names_a_truncated_or_empty_part(demo, how, match):
    from cache_builder.build import validate_cache
    f = demo / "tagger" / "part-dev-000of002-00002.parquet"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if how == "truncate" else b"")
    problems = validate_cache(demo)
    assert any(__import__("re").search(match, p) for p in problems), problems


def test_validate_reports_a_missing_chunk_once_as_incomplete(demo):
    from cache_builder.build import validate_cache
    BAD["a whole chunk missing"][0](demo)
    problems = validate_cache(demo)
    assert any("1384" in p and "1512" in p for p in problems), problems


def test_demo_cache_carries_sed_and_every_refinement_iteration():
    """Issue 15: the demo cache holds the SED frames of every soundscape and the stages of the
    reference system's 2-iteration refinement, for both separators."""
    cache = casdri.load_cache(DEMO)
    assert cache.n_stages == 3                         # sep, refine#1, refine#2
    assert cache.sed is not None and cache.sed.models == ("sed",)
    assert not np.isnan(summary_of_cache(cache)).any()  # SED of every soundscape
    assert set(np.unique(cache.splits.astype(str))) == {"dev", "eval"}
