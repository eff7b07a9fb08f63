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
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating changes only what changed
        cell.id = f"cell-{i:02d}"
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


SEARCH = [
    ("md", "# From a decision cache to a tuned policy\n\n"
           "A **decision cache** holds everything a system's label decisions can read (tagger "
           "softmaxes, stem energies, re-tagging softmaxes, the SNR of every cached stem against "
           "every reference), written once by `casdri-cache build` from the real models. On it "
           "`casdri.replay` scores any setting of a decision policy with the exact CAPI-SDRi, so "
           "`casdri-search` can tune the `refine` policy's thresholds in seconds and say, on "
           "soundscapes it did not tune on, what the tuning gained. The tuned policy YAML then "
           "runs **live** with the same models (`casdri-cache apply`).\n\n"
           "This notebook uses the demo cache bundled with casdri: the small trained reference "
           "system (`cache_builder/reference/`) run on the dev split of soundscapes made from "
           "real recordings in simulated rooms. Set `CACHE` and `SYSTEM` to your own cache and "
           "the system YAML that built it."),
    ("code", "import tempfile\n"
             "import warnings\n"
             "from importlib.resources import files\n"
             "from pathlib import Path\n\n"
             "from search.casdri_problem import demo_cache_path\n\n"
             "CACHE = demo_cache_path()  # or the folder of your own `casdri-cache build`\n"
             "assert CACHE is not None, 'this casdri ships no demo cache: set CACHE to a cache "
             "folder'\n"
             "SYSTEM = Path(str(files('cache_builder') / 'reference' / 'system.yaml'))  "
             "# the system that built it\n"
             "EXAMPLE = Path(str(files('casdri') / 'data' / 'example'))  "
             "# 6 short soundscapes with oracle targets\n"
             "_work = tempfile.TemporaryDirectory(prefix='casdri-nb02-')  # gone when the kernel "
             "stops\n"
             "WORK = Path(_work.name)  # what this notebook writes\n"
             "warnings.filterwarnings('ignore', message='IProgress not found')  "
             "# tqdm without ipywidgets\n"
             "print(CACHE)"),
    ("md", "## What the cache holds\n\n`casdri-cache info`, run in-process: soundscapes, "
           "queries separated per soundscape (the closure of what any policy setting can ask "
           "for), the models with their checkpoint hashes."),
    ("code", "import casdri\n"
             "import pandas as pd\n"
             "from cache_builder.cli import main as casdri_cache\n\n"
             "_ = casdri_cache(['info', str(CACHE)])\n"
             "cache = casdri.load_cache(CACHE)\n"
             "print('\\nreferences per soundscape:',\n"
             "      pd.Series(cache.n_ref).value_counts().sort_index().to_dict())"),
    ("md", "## Replay: three policies, no model run\n\n"
           "* `baseline`: the official rule (per track the 4-channel tagger's argmax, one query to "
           "the first separator, every stem kept);\n"
           "* `refine` with its defaults: dual-tagger fusion, verification by re-tagging, "
           "re-separation, gates, separator selection;\n"
           "* `oracle`: the reference labels as queries, the bound of what label decisions can "
           "reach with these separators (here the first separator; the search's bound takes "
           "the best separator choice)."),
    ("code", "from casdri.policies import BaselineParams, OracleParams, RefineParams\n\n"
             "rows = {}\n"
             "for policy, params in [('baseline', BaselineParams()), ('refine', RefineParams()),\n"
             "                       ('oracle', OracleParams())]:\n"
             "    r = casdri.replay(cache, policy, params)\n"
             "    rows[policy] = {'CAPI-SDRi (dB)': r.capi_sdri[0], "
             "'accuracy_mix (%)': r.accuracy_mix[0],\n"
             "                    'accuracy_src (%)': r.accuracy_src[0], "
             "'scored clips': r.n_scored[0]}\n"
             "pd.DataFrame(rows).T.round(3)"),
    ("md", "## The staged search\n\n"
           "`run_search` is what `casdri-search` runs: the chain `fusion → verify → gates → "
           "per-class → select → refine` (Optuna for the joint stages, exact threshold sweeps "
           "per class), inside a stratified k-fold split. Each fold tunes on the other folds and "
           "scores its own soundscapes, so every soundscape gets one **held-out** value; a "
           "paired bootstrap against the baseline gives the gain's 95% CI. The policy written "
           "out is then tuned on all soundscapes. Few trials here, to run in seconds "
           "(`casdri-search --stage all --trials 64` is the command-line default)."),
    ("code", "from search.run import run_search, summarize\n\n"
             "result = run_search(CACHE, stage='all', folds=3, trials=8, seed=0, n_boot=2000)\n"
             "print('\\n'.join(summarize(result)))"),
    ("md", "Held-out against tune-set scores: the difference is the optimism of tuning, which "
           "only the held-out number is free of."),
    ("code", "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
             "from IPython.display import Image, display\n\n"
             "h = result.heldout\n"
             "print(f'held-out gain over baseline: {h.gain_db:+.3f} dB, 95% CI '\n"
             "      f'[{h.gain_ci_db[0]:+.3f}, {h.gain_ci_db[1]:+.3f}] '\n"
             "      f'({result.folds.n_soundscapes} soundscapes, {result.folds.k} folds)')\n"
             "bars = {'baseline': (result.baseline_db, None),\n"
             "        'tuned, held-out': (h.tuned_db, h.tuned_ci_db),\n"
             "        'tuned, in-sample': (result.final_tune_db, None),\n"
             "        'oracle labels': (result.oracle_db, None)}\n"
             "fig, ax = plt.subplots(figsize=(6, 2.6))\n"
             "for i, (name, (v, ci)) in enumerate(bars.items()):\n"
             "    err = None if ci is None else [[v - ci[0]], [ci[1] - v]]\n"
             "    ax.barh(i, v, xerr=err, capsize=4, color=f'C{i}')\n"
             "ax.set_yticks(range(len(bars)), list(bars))\n"
             "ax.invert_yaxis(); ax.set_xlabel('CAPI-SDRi (dB)')\n"
             "ax.set_title('error bar: 95% bootstrap CI of the held-out score')\n"
             "plt.tight_layout(); fig.savefig(WORK / 'summary.png', dpi=90); plt.close(fig)\n"
             "display(Image(filename=str(WORK / 'summary.png')))\n"
             "result.stage_table().drop(columns=['note']).round(3)"),
    ("md", "## The report\n\n`write_outputs` writes what `casdri-search --out` writes: the "
           "policy YAML (with its provenance: cache hash, scores, seed, versions), every trial "
           "as Parquet, and a Markdown report with its figures."),
    ("code", "from search.report import write_outputs\n\n"
             "written = write_outputs(result, WORK / 'search')\n"
             "trials = pd.read_parquet(written['trials'])\n"
             "print(len(trials), 'trials and sweep moves;', ', '.join(sorted(written)))\n"
             "trials.groupby(['fold', 'stage'], sort=False).size().unstack(fill_value=0)"),
    ("code", "for key, path in written.items():  # 'removed' lists stale figures of a rerun\n"
             "    if key != 'removed' and Path(path).suffix == '.png':\n"
             "        print(key)\n"
             "        display(Image(filename=str(path)))"),
    ("md", "## Per class, before and after\n\n"
           "The written policy loads back with `casdri.load_policy_yaml`; its replay per class "
           "against the baseline's. These are in-sample numbers (the policy was tuned on these "
           "soundscapes): the held-out gain above is the honest total."),
    ("code", "policy_yaml = (WORK / 'search' / 'policy.yaml').read_text()\n"
             "print(policy_yaml.split('provenance:')[0])\n"
             "module, tuned = casdri.load_policy_yaml(policy_yaml)\n"
             "\n"
             "def per_class(policy, params):  # a class with no entry adds nothing: 0\n"
             "    t = casdri.replay(cache, policy, params, per_class=True).per_class\n"
             "    t = t.set_index('label').reindex(list(cache.meta.classes)).fillna(0)\n"
             "    return t[['sdri_mean', 'tp', 'fp', 'fn']].astype({'tp': int, 'fp': int, "
             "'fn': int})\n\n"
             "table = pd.concat({'baseline': per_class('baseline', BaselineParams()),\n"
             "                   'tuned': per_class(module, tuned)}, axis=1)\n"
             "table[('gain', 'dB')] = table[('tuned', 'sdri_mean')] - "
             "table[('baseline', 'sdri_mean')]\n"
             "seen = table.loc[:, (slice(None), ['tp', 'fp', 'fn'])].sum(axis=1) > 0\n"
             "table[seen].sort_values(('gain', 'dB'), ascending=False).round(2)"),
    ("md", "## Where the dB go, and is the tuned policy really better?\n\n"
           "`casdri.explain` splits the distance from the tuned policy's CAPI-SDRi to the oracle "
           "labelling bound into parts that sum exactly to it, overall, per scene type and per "
           "class. The corrections are applied in this order, each state scored with the exact "
           "metric on the cached SNRs: false positives on zero-target soundscapes, other false "
           "positives, missed sources, wrong class, same-class count errors, separation quality "
           "of the true positives. `casdri.what_if` gives the value of each fix alone (not "
           "additive). `casdri explain POLICY.yaml --what-if` prints the same."),
    ("code", "from casdri.gap_figure import gap_figure\n\n"
             "gap = casdri.explain(cache, module, tuned)\n"
             "print(gap.to_text(max_classes=6))\n"
             "fig = gap_figure(gap)\n"
             "fig.savefig(WORK / 'gap.png', dpi=80); plt.close(fig)\n"
             "display(Image(filename=str(WORK / 'gap.png')))\n"
             "casdri.what_if(cache, module, tuned, explanation=gap).round(3).head(8)"),
    ("md", "A paired comparison over the soundscapes both systems score (None handled as "
           "officially: each mean over its own scored soundscapes). Given the held-out values it "
           "reproduces the search's held-out CI above; it adds the probability of improvement, "
           "the breakdown per scene type and the soundscapes that changed most. `casdri compare "
           "A B` does it for two policy YAMLs, two stem folders or two `casdri score --out` "
           "tables."),
    ("code", "tuned_on = cache.splits == 'dev'  # the search tuned on dev (eval was its test)\n"
             "base = casdri.replay(cache, 'baseline', BaselineParams(), "
             "per_soundscape=True).per_soundscape[tuned_on].reset_index(drop=True)\n"
             "held = base.assign(capi_sdri=result.heldout_values)\n"
             "cmp = casdri.compare(held, base, n_boot=2000, seed=0, name_a='tuned (held-out)', "
             "name_b='baseline')\n"
             "print(cmp.to_text(top=5))"),
    ("md", "## Apply the policy live\n\n"
           "`casdri-cache apply` (here `cache_builder.apply_policy`) runs the same decision code "
           "with the real models on a folder and writes `<soundscape>_<i>_<Label>.wav` stems; "
           "only what the policy asks for is separated. Here on the 6 short example soundscapes "
           "bundled with casdri; the written stems are then scored like any submission. (Six "
           "clips: a demonstration, not a measurement.)"),
    ("code", "from cache_builder.apply import apply_policy\n\n"
             "report = apply_policy(SYSTEM, WORK / 'search' / 'policy.yaml', EXAMPLE, "
             "WORK / 'stems', oracle=False, jobs=0)\n"
             "print(report.summary())\n"
             "live = casdri.score_folders(EXAMPLE / 'soundscape', EXAMPLE / 'oracle_target', "
             "WORK / 'stems')\n"
             "print(f'live CAPI-SDRi of the tuned policy: {live.capi_sdri:.3f} dB '\n"
             "      f'({live.n_scored} of {live.n_soundscapes} soundscapes scored)')\n"
             "live.per_soundscape[['soundscape', 'capi_sdri', 'est_labels', 'ref_labels', "
             "'tp', 'fp', 'fn']]"),
]

if __name__ == "__main__":
    write("01_scoring.ipynb", SCORING)
    write("02_search.ipynb", SEARCH)
