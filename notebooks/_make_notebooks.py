"""Writes the notebooks from plain cell lists (so their source is reviewable Python).

Run ``python notebooks/_make_notebooks.py`` after editing; CI executes the .ipynb files.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent


def write(name: str, cells: list[tuple[str, str]]) -> None:
    nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                             for kind, src in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, HERE / name)


SCORING = [
    ("md", "# Scoring a folder of stems with casdri\n\n"
           "CAPI-SDRi exactly as the official DCASE 2026 Task 4 evaluator computes it, plus the "
           "per-class and per-soundscape tables no official tool gives. This notebook scores the "
           "example folder bundled with casdri (real recordings in simulated rooms); point the "
           "three paths at your own `soundscape/`, `oracle_target/` and estimate folders."),
    ("code", "from importlib.resources import files\n"
             "import casdri\n\n"
             "example = files('casdri') / 'data' / 'example'\n"
             "result = casdri.score_folders(example / 'soundscape', example / 'oracle_target',\n"
             "                              example / 'estimate')\n"
             "print(f'CAPI-SDRi: {result.capi_sdri:.3f}')\n"
             "print(f'Accuracy (mixture): {result.accuracy_mix:.3f}')\n"
             "print(f'Accuracy (source) : {result.accuracy_src:.3f}')\n"
             "print(f'{result.n_scored} of {result.n_soundscapes} soundscapes scored "
             "(zero-target clips with no stems score None)')"),
    ("md", "## Per soundscape\n\nA zero-target soundscape with a false positive scores 0 and "
           "is **included** in the mean; one with no stems is `None` (NaN here) and left out."),
    ("code", "ps = result.per_soundscape\n"
             "ps[['soundscape', 'capi_sdri', 'est_labels', 'ref_labels', 'tp', 'fp', 'fn']]"),
    ("md", "## Per class\n\n`sdri_mean` averages every entry the class adds to the clip means "
           "(unmatched stems and references add 0 dB); `sdri_matched_mean` averages matched "
           "pairs only, the separation quality when the label is right."),
    ("code", "result.per_class"),
    ("code", "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n\n"
             "pc = result.per_class.set_index('label')\n"
             "ax = pc[['sdri_mean', 'sdri_matched_mean']].plot.barh(figsize=(6, 3))\n"
             "ax.set_xlabel('dB'); ax.set_title('CAPI-SDRi contribution per class')\n"
             "plt.tight_layout()"),
    ("md", "## One clip by hand\n\nThe waveform API gives the same value for a single clip."),
    ("code", "import soundfile as sf\nimport numpy as np\n\n"
             "row = ps.dropna(subset=['capi_sdri']).iloc[0]\n"
             "name = row['soundscape']\n"
             "mix = sf.read(example / 'soundscape' / f'{name}.wav', dtype='float32')[0][:, 0]\n"
             "def stems(folder):\n"
             "    paths = sorted((example / folder).glob(f'{name}_*.wav'))\n"
             "    labels = [p.stem.rsplit('_', 1)[1] for p in paths]\n"
             "    wavs = np.stack([sf.read(p, dtype='float32')[0] for p in paths]) if paths else "
             "np.zeros((0, mix.size), np.float32)\n"
             "    return labels, wavs\n"
             "est_labels, est = stems('estimate')\nref_labels, ref = stems('oracle_target')\n"
             "value = casdri.capi_sdri(est_labels, est, ref_labels, ref, mix)\n"
             "assert abs(value - row['capi_sdri']) < 1e-9\n"
             "print(name, est_labels, ref_labels, round(value, 3))"),
]

if __name__ == "__main__":
    write("01_scoring.ipynb", SCORING)
