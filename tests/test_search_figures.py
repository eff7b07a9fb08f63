"""`search.figures`: every figure renders its edge cases as a PNG of the figure's size."""
from __future__ import annotations

import io

import numpy as np
import pytest

from search.moves import Move

pytest.importorskip("matplotlib")


def _png_shape(data: bytes) -> tuple:
    from matplotlib.image import imread
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(data)).shape


def _move(cls, value, scores, edges=None, points=None, kept=True):
    scores = np.asarray(scores, np.float64)
    if points is None:
        points = 0.5 * (edges[1:] + edges[:-1])
    return Move("thr", cls, 0.5, value, 1.0, 1.0, kept, "sweep" if edges is not None else "grid",
                np.asarray(points, np.float64), scores, edges)


def test_threshold_small_multiples_render_every_kind_of_panel():
    from search.figures import threshold
    names = [f"class{i}" for i in range(8)]  # 6 columns, 2 rows, 4 empty cells
    moves = {
        0: _move(0, 0.3, [1.0, 1.2, 1.1], edges=np.array([0.0, 0.25, 0.6, 1.0])),  # a sweep
        1: _move(1, np.inf, [2.0, 2.0], edges=np.array([0.0, 0.5, 1.0])),  # flat, off (+inf)
        2: _move(2, -np.inf, [0.5, 0.7, 0.6], points=[-80.0, -40.0, 0.0]),  # a grid, off
        3: _move(3, 0.2, [np.nan, 1.0], edges=np.array([0.0, 0.4, 1.0])),  # a NaN score
        4: _move(4, 0.1, [np.nan], points=[0.1]),  # nothing finite to draw
        # class 5..7: not swept
    }
    shape = _png_shape(threshold("thr", moves, names))
    assert shape[:2] == (round(110 * (1.8 * 2 + 0.4)), round(110 * 2.2 * 6))
