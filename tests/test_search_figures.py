"""`search.figures`: the threshold small multiples put every panel's curve, chosen value and
labels where they belong, for every kind of panel, and render as a PNG of the figure's size."""
from __future__ import annotations

import io

import numpy as np
import pytest

from search.moves import Move

pytest.importorskip("matplotlib")

W, H = 0.74, 0.56  # a panel's plot area (search.figures.threshold_figure)


def _move(cls, value, scores, edges=None, points=None):
    scores = np.asarray(scores, np.float64)
    if points is None:
        points = 0.5 * (edges[1:] + edges[:-1])
    return Move("thr", cls, 0.5, value, 1.0, 1.0, True, "sweep" if edges is not None else "grid",
                np.asarray(points, np.float64), scores, edges)


NAMES = [f"class{i}" for i in range(8)]  # 6 columns, 2 rows; classes 5-7 not swept
MOVES = {
    0: _move(0, 0.3, [1.0, 1.2, 1.1], edges=np.array([0.0, 0.25, 0.6, 1.0])),  # a sweep
    1: _move(1, np.inf, [2.0, 2.0], edges=np.array([0.0, 0.5, 1.0])),  # flat, off at +inf
    2: _move(2, -np.inf, [0.5, 0.7, 0.6], points=[-80.0, -40.0, 0.0]),  # a grid, off at -inf
    3: _move(3, 0.2, [1.0, np.nan, 1.2], edges=np.array([0.0, 0.3, 0.6, 1.0])),  # a NaN gap
    4: _move(4, 0.1, [np.nan], points=[0.1]),  # nothing finite to draw
}


def _collections(fig):
    ax = fig.axes[0]
    return {c.get_label(): c.get_segments() for c in ax.collections}, [t.get_text()
                                                                       for t in ax.texts]


def test_threshold_panels_hold_their_curves_chosen_values_and_labels():
    from search.figures import threshold_figure
    fig = threshold_figure("thr", MOVES, NAMES)
    assert len(fig.axes) == 1  # one axes, not one per class
    seg, texts = _collections(fig)
    assert len(seg["frames"]) == len(NAMES)
    # class 3's NaN interval breaks its curve in two; class 4 has none: 1 + 1 + 1 + 2 lines
    assert len(seg["curves"]) == 5
    c3 = [s for s in seg["curves"] if 3.2 <= s[:, 0].min() < 4.0]
    assert len(c3) == 2 and c3[0][:, 0].max() <= 3.2 + W * 0.3 + 1e-12
    assert c3[1][:, 0].min() >= 3.2 + W * 0.6 - 1e-12
    # the chosen values: inside the range, or at its end when off (+-inf)
    xs = sorted(round(s[0, 0], 9) for s in seg["chosen"])
    assert xs == sorted(round(v, 9) for v in (0.2 + W * 0.3, 1.2 + W, 2.2, 3.2 + W * 0.2))
    flat = [s for s in seg["curves"] if 1.2 <= s[0, 0] < 2.0][0]
    np.testing.assert_allclose(flat[:, 1], 0.2 + H / 2)  # a flat curve is centred, not a step
    assert "class1: inf" in texts and "class2: -inf" in texts and "class0: 0.3" in texts
    assert texts.count("not swept") == 3 and "no finite score" in texts and "class4" in texts


def test_threshold_png_has_the_figures_size():
    from matplotlib.image import imread
    from search.figures import threshold
    data = threshold("thr", MOVES, NAMES)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(io.BytesIO(data)).shape[:2] == (round(110 * (1.8 * 2 + 0.4)),
                                                  round(110 * 2.2 * 6))
    one = imread(io.BytesIO(threshold("thr", {0: MOVES[0]}, NAMES[:1])))
    assert one.shape[1] == round(110 * 9.0)  # one class: wide enough for the title
