"""DCASE 2026 Task 4 (S5)-format soundscapes from a pool of real recordings (no torch).

One module per step of the data flow:

* `pool` — the pool of real recordings (layout, manifest, split partition by recording);
* `rooms` — shoebox rooms, the tetrahedral array, its A-to-B conversion to FOA, hybrid
  RIRs and the diffuse FOA background;
* `scene` — random recipes (what plays where, when and how loud) under the official rules;
* `render` — recipe → FOA mixture, event images and oracle targets (official SNR rule);
* `generate` — whole split folders, reproducible from one seed (`generate_soundscapes`);
* `metadata` — the split folder's metadata table (written by `generate`, read by the
  builder: split tags, room and recording provenance);
* `stats` — median SNR(mixture, oracle target) and the all-silent floor of a split;
* `cli` — ``casdri-cache generate``; `make_pool` — rebuild a pool from Debian packages.

Importing the package is cheap: a public name loads its module on first use (PEP 562), so
the builder reads `metadata` and the CLI builds its parser without pyroomacoustics.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SPLITS", "METADATA_COLUMNS", "SoundscapeConfig", "SoundscapeSpec", "EventSpec",
           "RenderedSoundscape", "SourcePool", "PoolSplit", "Clip", "load_pool", "read_clip",
           "sample_soundscape", "render_soundscape", "soundscape_seeds", "write_wav",
           "generate_soundscapes", "read_provenance", "room_bank"]

_WHERE = {
    "METADATA_COLUMNS": "metadata", "read_provenance": "metadata",
    "generate_soundscapes": "generate", "soundscape_seeds": "generate", "write_wav": "generate",
    "SPLITS": "pool", "Clip": "pool", "PoolSplit": "pool", "SourcePool": "pool",
    "load_pool": "pool", "read_clip": "pool",
    "RenderedSoundscape": "render", "render_soundscape": "render",
    "EventSpec": "scene", "SoundscapeConfig": "scene", "SoundscapeSpec": "scene",
    "room_bank": "scene", "sample_soundscape": "scene",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cache_builder.soundscapes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
