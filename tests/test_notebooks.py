"""The notebooks run headless (nbclient), so they cannot rot; they are what the generator writes."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # notebooks run headless: a kernel per notebook

NB_DIR = Path(__file__).parent.parent / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))

#: text each notebook's outputs must show (its main results were computed, not just no error)
EXPECTED = {
    "01_scoring.ipynb": ["CAPI-SDRi:", "soundscapes scored"],
    "02_search.ipynb": ["n_soundscapes:", "baseline policy", "tuned, held-out",
                        "held-out gain over baseline:", "oracle labelling bound", "gain per stage",
                        "per-class CAPI-SDRi", "gap to the oracle labelling bound",
                        "probability of improvement", "stems for 6 soundscapes",
                        "live CAPI-SDRi of the tuned policy:"],
}


def _generator():
    spec = importlib.util.spec_from_file_location("_make_notebooks", NB_DIR / "_make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= set(EXPECTED)


@pytest.mark.parametrize("name, cells", [("01_scoring.ipynb", "SCORING"),
                                         ("02_search.ipynb", "SEARCH")])
def test_notebook_is_what_the_generator_writes(name, cells):
    nb = nbformat.read(NB_DIR / name, as_version=4)
    want = getattr(_generator(), cells)
    assert [(c.cell_type, c.source) for c in nb.cells] == [
        ("markdown" if kind == "md" else "code", src) for kind, src in want], \
        f"{name} is stale: run python notebooks/_make_notebooks.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_headless(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.get("output_type") == "error"]
    assert not errors
    text = "\n".join(o.get("text", "") if o.get("output_type") == "stream"
                     else o.get("data", {}).get("text/plain", "") for o in outputs)
    for needle in EXPECTED.get(path.name, []):
        assert needle in text, f"{path.name}: no {needle!r} in the outputs"
