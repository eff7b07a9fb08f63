"""The room and recording ids of generated soundscapes reach the cache: generator metadata →
`cache_builder.build` → soundscapes table → `DecisionCache.rooms` / ``.recordings``; folders
from other generators build with them unknown; the builder reads them without the generator's
heavy modules. Real generated audio, tiny models."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cache_builder import build_cache
from cache_builder.build import provenance_of
from cache_builder.runner import resolve_folder
from cache_builder.soundscapes import generate_soundscapes
from cache_builder.soundscapes.metadata import METADATA_FILES, read_provenance
from casdri import schema as S
from casdri.cache import load_cache
from casdri.errors import FolderLayoutError
from tests.builder_models import one_torch_thread, write_system  # noqa: F401 - autouse

ROOT = Path(__file__).parents[1]
POOL = ROOT / "tests" / "data" / "bed_subset"
N_DEV = 4
KW = dict(chunk_size=2, batch_size=4, device="cpu", jobs=0, threads=1)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    generate_soundscapes(POOL, root / "gen", {"dev": N_DEV}, seed=3, duration_s=1.0,
                         progress=False)
    return dict(root=root, system=write_system(root / "sys", separators=("small",)),
                split=root / "gen" / "dev", cache=root / "cache")


@pytest.fixture(scope="module")
def built(env):
    build_cache(env["system"], env["split"], env["cache"], **KW)
    return env


def test_cache_carries_the_generators_rooms_and_recordings(built):
    env = built
    want = read_provenance(env["split"] / METADATA_FILES[0])
    assert len(want) == N_DEV and all(room for room, _ in want.values())
    assert any(recs for _, recs in want.values())
    # the metadata rows themselves, independently of read_provenance: the events' recordings
    meta = pd.read_parquet(env["split"] / METADATA_FILES[0])
    for name, rows in meta.groupby("soundscape"):
        events = rows[rows["role"] != "noise"]
        assert want[name] == (rows["room"].iloc[0], sorted(set(events["recording"])))
    noise = set(meta.loc[meta["role"] == "noise", "recording"])
    assert noise and not noise & {r for _, recs in want.values() for r in recs}
    table = pq.read_table(env["cache"] / "soundscapes").to_pandas()
    assert len(table) == N_DEV and table[S.SOUNDSCAPE].is_unique  # two parts of 2
    got = {r[S.SOUNDSCAPE]: (r[S.ROOM], list(r[S.RECORDINGS])) for _, r in table.iterrows()}
    assert got == want
    cache = load_cache(env["cache"])
    names = list(cache.soundscape_ids)
    assert names == sorted(want)
    assert list(cache.rooms) == [want[n][0] for n in names]
    assert list(cache.recordings) == [tuple(want[n][1]) for n in names]


def test_folder_without_provenance_builds_with_it_unknown(env, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(env["split"] / "soundscape", plain)  # a folder of <name>.wav only
    build_cache(env["system"], plain, tmp_path / "cache", oracle=env["split"] / "oracle_target",
                **KW)
    cache = load_cache(tmp_path / "cache")
    assert len(cache.soundscape_ids) == N_DEV
    assert cache.rooms is None and cache.recordings is None


def test_metadata_without_room_columns_gives_no_provenance(env, tmp_path):
    split = tmp_path / "dev"
    shutil.copytree(env["split"], split)
    for f in METADATA_FILES:
        (split / f).unlink()
    meta = pd.read_csv(env["split"] / METADATA_FILES[1], dtype=str, keep_default_na=False)
    meta.drop(columns=["room", "recording"]).to_csv(split / METADATA_FILES[1], index=False)
    layout = resolve_folder(split)
    assert layout.metadata == split / METADATA_FILES[1] and layout.split_tags
    assert provenance_of(layout, sorted(layout.split_tags)) is None


def test_metadata_of_another_folder_is_refused(env, tmp_path):
    split = tmp_path / "dev"
    shutil.copytree(env["split"], split)
    meta = pd.read_parquet(split / METADATA_FILES[0])
    dropped = sorted(meta["soundscape"].unique())[-1]
    meta[meta["soundscape"] != dropped].to_parquet(split / METADATA_FILES[0], index=False)
    layout = resolve_folder(split)
    names = sorted(p.stem for p in layout.soundscapes.iterdir())
    with pytest.raises(FolderLayoutError, match=rf"no room/recording row for soundscapes "
                       rf"\['{dropped}'\] of .* \(1 of {N_DEV}\); the metadata describes "
                       "another folder"):
        provenance_of(layout, names)
    # the build refuses before any model runs (split given: the split tags would refuse first)
    with pytest.raises(FolderLayoutError, match="no room/recording row"):
        build_cache(env["system"], split, tmp_path / "cache", split="dev", **KW)
    assert not (tmp_path / "cache").exists()


def test_builder_reads_provenance_without_the_generators_heavy_modules():
    code = ("import sys, cache_builder.build, cache_builder.cli\n"
            "cache_builder.cli.build_parser()\n"
            "print(' '.join(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    loaded = set(out.stdout.split())
    assert "cache_builder.soundscapes.metadata" in loaded
    assert not {"pyroomacoustics", "torch", "cache_builder.soundscapes.generate",
                "cache_builder.soundscapes.rooms"} & loaded
