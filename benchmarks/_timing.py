"""Timing helpers shared by the benchmark scripts (best-of-N wall and CPU time, load average)."""
from __future__ import annotations

import os
import time

__all__ = ["timed", "load_average"]


def timed(fn, repeat: int) -> tuple[float, float]:
    """Best wall and CPU seconds over ``repeat`` runs of ``fn()``."""
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages as text (other jobs slow every figure)."""
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except (AttributeError, OSError):  # not on this platform
        return "n/a"
