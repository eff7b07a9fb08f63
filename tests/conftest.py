"""Shared test fixtures and tolerances (one place, per what is compared)."""
from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"

#: casdri (float64) against the official float32 implementation, dB (golden README item 8)
TOL_OFFICIAL_DB = 1e-4
#: replay against casdri.capi_sdri on the same waveforms, dB (same float64 arithmetic)
TOL_REPLAY_DB = 1e-9


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN
