"""DCASE 2026 Task 4 (S5)-format soundscapes from a pool of real recordings (no torch).

One module per step of the data flow:

* `pool` — the pool of real recordings (layout, manifest, split partition by recording);
* `rooms` — shoebox rooms, the tetrahedral array, its A-to-B conversion to FOA, hybrid
  RIRs and the diffuse FOA background;
* `scene` — random recipes (what plays where, when and how loud) under the official rules;
* `render` — recipe → FOA mixture, event images and oracle targets (official SNR rule);
* `generate` — whole split folders, reproducible from one seed (`generate_soundscapes`);
* `stats` — median SNR(mixture, oracle target) and the all-silent floor of a split;
* `cli` — ``casdri-cache generate``; `make_pool` — rebuild a pool from Debian packages.
"""
from __future__ import annotations

from .generate import (METADATA_COLUMNS, generate_soundscapes, read_provenance,
                       soundscape_seeds, write_wav)
from .pool import SPLITS, Clip, PoolSplit, SourcePool, load_pool, read_clip
from .render import RenderedSoundscape, render_soundscape
from .scene import EventSpec, SoundscapeConfig, SoundscapeSpec, room_bank, sample_soundscape

__all__ = ["SPLITS", "METADATA_COLUMNS", "SoundscapeConfig", "SoundscapeSpec", "EventSpec",
           "RenderedSoundscape", "SourcePool", "PoolSplit", "Clip", "load_pool", "read_clip",
           "sample_soundscape", "render_soundscape", "soundscape_seeds", "write_wav",
           "generate_soundscapes", "read_provenance", "room_bank"]
