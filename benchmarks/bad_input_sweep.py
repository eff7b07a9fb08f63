"""Issue 13's bad-input sweep, scripted: every bad input and fault the issue lists (and the
kinds behind them in scoring, the metric API, caches, builds, system and policy YAML, apply,
search, generate and the command lines), each tried against this checkout.

Prints a table ``category | case | outcome | detail`` and the count of each outcome:

* ``clear error``: refused with a casdri error (or a one-line CLI error, exit 1 or 2) whose
  message names what is wrong (the case's pattern);
* ``correct``: accepted with the right result (the case's check);
* ``silently wrong``: accepted with a wrong or misleading result;
* ``cryptic``: an exception that is not casdri's, a traceback, "internal error", or a casdri
  message that does not name the problem;
* ``left output``: refused, but half-written output was left behind.

Each case is named in ``docs/BAD_INPUTS.md`` beside the test that keeps it fixed. Real files in
a temporary folder, tiny models for builds and apply (``tests/builder_models.py``); about
two minutes on two cores. A script printing a table, never a test.

Usage: ``python benchmarks/bad_input_sweep.py [-k SUBSTRING] [--details]``
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

CLEAR, CORRECT, WRONG, CRYPTIC, LEFT = ("clear error", "correct", "silently wrong", "cryptic",
                                        "left output")
OUTCOMES = (CLEAR, CORRECT, WRONG, CRYPTIC, LEFT)
CASES: list = []
TMP = Path(tempfile.mkdtemp(prefix="casdri-sweep-"))
SR = 32000


def case(category: str, name: str):
    def register(fn):
        CASES.append((category, name, fn))
        return fn
    return register


def _short(text, n: int = 110) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 3] + "..."


def refused(fn, match: str, left=None):
    """A bad input that must be refused with a message matching ``match``."""
    from casdri.errors import CasdriError

    try:
        value = fn()
    except CasdriError as exc:
        msg = str(exc)
        if left is not None and left():
            return LEFT, msg
        if re.search(match, msg, re.S):
            return CLEAR, msg
        return CRYPTIC, f"message lacks /{match}/: {msg}"
    except Exception as exc:  # noqa: BLE001 - what the sweep is looking for
        return CRYPTIC, f"{type(exc).__name__}: {exc}"
    return WRONG, f"accepted: {value!r}"


def handled(fn, check, match: str = ""):
    """A bad-looking input with a right answer: ``check(value)`` says whether it is right (a
    clear refusal matching ``match`` also counts as handled)."""
    from casdri.errors import CasdriError

    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            value = fn()
    except CasdriError as exc:
        if match and re.search(match, str(exc), re.S):
            return CLEAR, str(exc)
        return CRYPTIC, f"refused without naming it: {exc}"
    except Exception as exc:  # noqa: BLE001
        return CRYPTIC, f"{type(exc).__name__}: {exc}"
    ok = check(value, [str(w.message) for w in seen])
    return (CORRECT, f"{value!r}") if ok else (WRONG, f"got {value!r}")


def cli(args, match: str, module: str = "casdri.cli", left=None, ok=None, cwd=None):
    """A command line that must fail with one clear line matching ``match`` (exit 1 or 2), or,
    with ``ok``, succeed with ``ok(process)`` true."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                       text=True, env=env, cwd=cwd or TMP, timeout=600)
    err = p.stderr.strip()
    if p.returncode == 0:
        if ok is not None:
            return (CORRECT, _short(p.stdout or err)) if ok(p) else (WRONG, p.stdout + err)
        return WRONG, f"exit 0: {p.stdout.strip()[-200:]}"
    if p.returncode == 3 or "Traceback" in err or "internal error" in err:
        return CRYPTIC, err[-300:]
    if left is not None and left():
        return LEFT, err
    if re.search(match, err, re.S):
        return CLEAR, err.splitlines()[-1]
    return CRYPTIC, f"exit {p.returncode}, message lacks /{match}/: {err[-300:]}"


def fresh(name: str) -> Path:
    d = TMP / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


def _write(path: Path, data, sr: int = SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, subtype="FLOAT")


# ------------------------------------------------------------------ fixtures (built once)

@functools.cache
def folder_set():
    """A valid DCASE folder set (two soundscapes) to copy and break."""
    from tests.test_folders import make_folder

    root = TMP / "folders-ok"
    make_folder(root, {"s_0": (["Speech", "Cough"], ["Speech", "Cough"]),
                       "s_1": (["Pour"], ["Pour", "Dishes"])})
    return root


def broken_folders(name: str, edit) -> tuple:
    root = fresh(f"folders-{name}")
    shutil.copytree(folder_set(), root, dirs_exist_ok=True)
    dirs = root / "soundscape", root / "oracle_target", root / "estimate"
    edit(*dirs)
    return dirs


def score(dirs):
    from casdri.scoring import score_folders

    return score_folders(*dirs, jobs=1)


@functools.cache
def demo_copy_src() -> Path:
    import casdri

    return Path(casdri.__file__).parent / "data" / "demo_cache"


def demo_copy(name: str) -> Path:
    out = fresh(f"cache-{name}") / "cache"
    shutil.copytree(demo_copy_src(), out)
    return out


@functools.cache
def small_cache() -> Path:
    from casdri.synthetic import make_synthetic_cache

    return make_synthetic_cache(TMP / "small-cache", n_soundscapes=40, seed=3, load=False)


@functools.cache
def built():
    """A tiny system, six soundscapes and their cache (the builder's test models)."""
    import torch

    from cache_builder import build_cache
    from cache_builder.system import load_system
    from tests.builder_models import write_soundscapes, write_system

    torch.set_num_threads(1)
    root = TMP / "built"
    y = write_system(root / "sys", stages=1, seed=3)
    sdir, odir = write_soundscapes(root / "data", n=4, seconds=1.0, seed=5)
    system = load_system(y, device="cpu")
    build_cache(system, sdir, root / "cache", oracle=odir, chunk_size=2, batch_size=4,
                jobs=0, threads=1)
    return dict(root=root, yaml=y, sdir=sdir, odir=odir, cache=root / "cache")


def policy_file(name: str, params_yaml: str, extra: str = "") -> Path:
    p = fresh(f"policy-{name}") / "policy.yaml"
    p.write_text(f"policy: refine\nlabel_set: dcase2026t4\nparams:\n{params_yaml}{extra}")
    return p


def apply_to(name: str, policy: Path, **kw):
    from cache_builder import apply_policy

    b = built()
    out = TMP / f"apply-{name}" / "stems"
    if out.parent.exists():
        shutil.rmtree(out.parent)
    out.parent.mkdir(parents=True)
    return apply_policy(b["yaml"], policy, b["sdir"], out, oracle=b["odir"], threads=1, **kw)


def search(cache=None, **kw):
    from search.run import run_search

    kw = {"stage": "gates", "folds": 2, "trials": 2, "n_boot": 50, **kw}
    return run_search(cache if cache is not None else small_cache(), **kw)


# ================================================================== scoring folders

def _stem(dirs, i, name):
    return dirs[i] / name


FOLDER_BAD = {
    "unknown label in a stem name": (
        lambda s, o, e: (e / "s_0_1_Cough.wav").rename(e / "s_0_1_Cogh.wav"),
        r"s_0_1_Cogh.wav.*unknown label 'Cogh'"),
    "silence file as a stem": (
        lambda s, o, e: shutil.copy(e / "s_0_1_Cough.wav", e / "s_0_2_silence.wav"),
        r"s_0_2_silence.wav"),
    "stem at another sample rate": (
        lambda s, o, e: _write(e / "s_0_0_Speech.wav", sf.read(e / "s_0_0_Speech.wav")[0],
                               16000), r"s_0_0_Speech.wav.*16000"),
    "soundscape at another sample rate": (
        lambda s, o, e: _write(s / "s_1.wav", sf.read(s / "s_1.wav")[0], 16000),
        r"s_1.wav.*16000"),
    "soundscape not 4-channel": (
        lambda s, o, e: _write(s / "s_1.wav", sf.read(s / "s_1.wav")[0][:, :2]),
        r"s_1.wav.*channel"),
    "stereo stem": (
        lambda s, o, e: _write(e / "s_1_0_Pour.wav", np.stack([sf.read(e / "s_1_0_Pour.wav")[0]]
                                                               * 2, 1)),
        r"s_1_0_Pour.wav.*(channel|mono)"),
    "stem length differs from the soundscape": (
        lambda s, o, e: _write(e / "s_1_0_Pour.wav", sf.read(e / "s_1_0_Pour.wav")[0][:-7]),
        r"s_1_0_Pour.wav.*(length|samples)"),
    "NaN in an estimate stem": (
        lambda s, o, e: _write(e / "s_0_0_Speech.wav", np.full(800, np.nan, np.float32)),
        r"s_0_0_Speech.wav.*(NaN|nan|finite)"),
    "Inf in a reference": (
        lambda s, o, e: _write(o / "s_0_0_Speech.wav", np.r_[np.inf, np.zeros(799)]
                               .astype(np.float32)), r"s_0_0_Speech.wav.*(inf|finite)"),
    "NaN in an unpaired (false-positive) stem": (
        lambda s, o, e: _write(e / "s_1_1_Dishes.wav", np.full(800, np.nan, np.float32)),
        r"s_1_1_Dishes.wav"),
    "NaN in the mixture": (
        lambda s, o, e: _write(s / "s_1.wav", np.full((800, 4), np.nan, np.float32)),
        r"s_1.wav.*(NaN|nan|finite)"),
    "duplicate stem index": (
        lambda s, o, e: shutil.copy(e / "s_0_1_Cough.wav", e / "s_0_1_Speech.wav"),
        r"(duplicate|twice|index 1)"),
    "stem of an unknown soundscape": (
        lambda s, o, e: shutil.copy(e / "s_0_1_Cough.wav", e / "t_9_0_Cough.wav"),
        r"t_9_0_Cough.wav"),
    "oracle folder missing": (lambda s, o, e: shutil.rmtree(o), r"oracle_target"),
    "no soundscape in the folder": (
        lambda s, o, e: [p.unlink() for p in s.glob("*.wav")], r"(no soundscape|no .wav)"),
    "unreadable (garbage) stem file": (
        lambda s, o, e: (e / "s_0_0_Speech.wav").write_bytes(b"not a wav at all"),
        r"s_0_0_Speech.wav"),
    "zero-length soundscape and stems": (
        lambda s, o, e: [_write(p, np.zeros((0, 4) if p.parent == s else 0, np.float32))
                         for d in (s, o, e) for p in d.glob("s_1*.wav")],
        r"s_1.wav.*0 samples"),
    "upper-case .WAV stem": (
        lambda s, o, e: (e / "s_0_1_Cough.wav").rename(e / "s_0_1_Cough.WAV"),
        r"s_0_1_Cough.WAV.*\.wav"),
    "dangling symlink named like a stem": (
        lambda s, o, e: os.symlink(TMP / "nowhere.wav", e / "s_0_2_Pour.wav"),
        r"s_0_2_Pour.wav"),
    "folder named like a stem": (
        lambda s, o, e: (e / "s_0_2_Pour.wav").mkdir(), r"s_0_2_Pour.wav"),
    "ambiguous soundscape names (prefix and index)": (
        lambda s, o, e: [shutil.copy(s / "s_1.wav", s / "s_1_0.wav"),
                         shutil.copy(e / "s_1_0_Pour.wav", e / "s_1_0_0_Pour.wav")],
        r"ambiguous"),
}

for _name, (_edit, _match) in FOLDER_BAD.items():
    case("scoring", _name)(lambda _e=_edit, _m=_match, _n=_name:
                           refused(lambda: score(broken_folders(_n.replace(" ", "-")[:30], _e)),
                                   _m))


@case("scoring", "zero-target soundscape with no estimate (must be None, not 0 dB)")
def _():
    d = broken_folders("zero-target", lambda s, o, e: [p.unlink() for p in o.glob("s_1_*")]
                       + [p.unlink() for p in e.glob("s_1_*")])
    return handled(lambda: score(d).per_soundscape.set_index("soundscape")
                   .loc["s_1", "capi_sdri"], lambda v, w: np.isnan(v))


@case("scoring", "non-audio file beside the stems (ignored, as officially)")
def _():
    d = broken_folders("notes", lambda s, o, e: (e / "notes.txt").write_text("x"))
    ref = score(broken_folders("notes-ref", lambda s, o, e: None)).capi_sdri
    return handled(lambda: score(d).capi_sdri, lambda v, w: v == ref)


def _score_cli(*extra, **kw):
    s, o, e = (folder_set() / n for n in ("soundscape", "oracle_target", "estimate"))
    return ["score", "--soundscapes", s, "--oracle", o, "--estimate", e, "--no-progress",
            *extra]


case("scoring", "casdri score --jobs 0")(lambda: cli(_score_cli("--jobs", "0"), r"--jobs"))
case("scoring", "casdri score --metric bogus")(
    lambda: cli(_score_cli("--metric", "bogus"), r"--metric"))
case("scoring", "casdri score --out r.txt (unknown format)")(
    lambda: cli(_score_cli("--out", TMP / "r.txt"), r"\.json|\.csv|\.parquet"))
case("scoring", "casdri score --out that is a folder")(
    lambda: cli(_score_cli("--out", fresh("outdir.json")), r"outdir.json"))
case("scoring", "casdri score --example with folders")(
    lambda: cli(_score_cli("--example"), r"--example"))
case("scoring", "casdri score --label-set unknown")(
    lambda: cli(_score_cli("--label-set", "dcase1999"), r"dcase1999"))
case("scoring", "casdri score with --soundscapes only")(
    lambda: cli(["score", "--soundscapes", folder_set() / "soundscape"], r"--oracle|--estimate"))
case("scoring", "casdri with no command")(lambda: cli([], r"(command|usage)"))


@case("scoring", "score_folders bad arguments (jobs, metric, backend)")
def _():
    from casdri.scoring import score_folders

    d = [folder_set() / n for n in ("soundscape", "oracle_target", "estimate")]
    res = [refused(lambda: score_folders(*d, jobs=0), r"jobs"),
           refused(lambda: score_folders(*d, metric="x"), r"metric"),
           refused(lambda: score_folders(*d, label_set="nope"), r"nope")]
    bad = [r for r in res if r[0] != CLEAR]
    return bad[0] if bad else res[0]


# ================================================================== metric API

T = 64
_REF = np.ones((1, T), np.float32)
_MIX = 2 * _REF[0]


def _capi(est, ref, est_w=None, ref_w=None, mix=None, **kw):
    import casdri

    est_w = np.ones((len(est), T), np.float32) if est_w is None else est_w
    return casdri.capi_sdri(est, est_w, ref, _REF if ref_w is None else ref_w,
                            _MIX if mix is None else mix, **kw)


case("metric API", "capi_sdri: label outside the label set")(
    lambda: refused(lambda: _capi(["Speech", "Cogh"], ["Speech"]), r"unknown label 'Cogh'"))
case("metric API", "capi_sdri: label in the wrong case")(
    lambda: refused(lambda: _capi(["Speech"], ["speech"]), r"unknown label 'speech'"))
case("metric API", "capi_sdri: fewer waveforms than labels")(
    lambda: refused(lambda: _capi(["Speech", "Cough"], ["Speech"],
                                  est_w=np.ones((1, T), np.float32)), r"est"))
case("metric API", "capi_sdri: estimate length differs")(
    lambda: refused(lambda: _capi(["Speech"], ["Speech"], est_w=np.ones((1, T - 1))),
                    r"(length|shape|samples)"))
case("metric API", "capi_sdri: NaN in a paired estimate")(
    lambda: refused(lambda: _capi(["Speech"], ["Speech"], est_w=np.full((1, T), np.nan)),
                    r"(NaN|nan|finite)"))
case("metric API", "capi_sdri: NaN in an unpaired estimate")(
    lambda: refused(lambda: _capi(["Speech", "Cough"], ["Speech"],
                                  est_w=np.r_[np.ones((1, T)), np.full((1, T), np.nan)]),
                    r"(NaN|nan|finite)"))
case("metric API", "capi_sdri: multichannel mixture")(
    lambda: refused(lambda: _capi(["Speech"], ["Speech"], mix=np.ones((4, T))),
                    r"(mixture|shape)"))
case("metric API", "capi_sdri: string waveforms")(
    lambda: refused(lambda: _capi(["Speech"], ["Speech"], est_w=np.array([["a"] * T])),
                    r"(dtype|number|float)"))


@case("metric API", "CapiSdri.update: unknown label")
def _():
    import casdri

    acc = casdri.CapiSdri()
    return refused(lambda: acc.update("s", ["Cat"], _REF, ["Speech"], _REF, _MIX),
                   r"unknown label 'Cat'")


@case("metric API", "CapiSdri.update: the same soundscape twice")
def _():
    import casdri

    acc = casdri.CapiSdri()
    acc.update("s", ["Speech"], _REF, ["Speech"], _REF, _MIX)
    return refused(lambda: acc.update("s", ["Speech"], _REF, ["Speech"], _REF, _MIX),
                   r"'s'")


@case("metric API", "snr_db: shapes differ")
def _():
    import casdri

    return refused(lambda: casdri.snr_db(np.ones(5), np.ones(6)), r"(shape|length)")


@case("metric API", "get_label_set: unknown name")
def _():
    import casdri

    return refused(lambda: casdri.get_label_set("dcase1999"), r"dcase1999")


@functools.cache
def syn():
    from casdri.synthetic import make_synthetic_cache

    return make_synthetic_cache(n_soundscapes=8, seed=2, n_stages=2)


def _replay(**kw):
    from casdri.policies import RefineParams
    from casdri.replay import replay

    return replay(syn(), "refine", RefineParams(), **kw).capi_sdri


case("metric API", "replay(mask=np.ones(S)) float mask")(
    lambda: refused(lambda: _replay(mask=np.ones(8)), r"mask"))
case("metric API", "replay(mask=int 0/1 array)")(
    lambda: refused(lambda: _replay(mask=np.array([1, 0] * 4)), r"mask"))
case("metric API", "replay(mask) of the wrong length")(
    lambda: refused(lambda: _replay(mask=np.ones(7, bool)), r"mask"))
case("metric API", "replay(mask) index out of range")(
    lambda: refused(lambda: _replay(mask=np.array([0, 99])), r"(mask|99)"))
case("metric API", "replay: unknown policy name")(
    lambda: refused(lambda: __import__("casdri").replay(syn(), "refinee", None), r"refinee"))


@case("metric API", "replay: encoded settings of the wrong width")
def _():
    from casdri.replay import replay

    return refused(lambda: replay(syn(), "refine", np.zeros((1, 3))), r"settings must be \(n, \d+\), got \(1, 3\)")


# ================================================================== policy values and YAML

PARAMS_BAD = {
    "RefineParams(w=5.0)": (dict(w=5.0), r"w=5\.0"),
    "RefineParams(w=nan)": (dict(w=float("nan")), r"w=nan"),
    "RefineParams(w=True)": (dict(w=True), r"w=True"),
    "RefineParams(w='0.5') (a string)": (dict(w="0.5"), r"w='0\.5'"),
    "RefineParams(energy_gate_db=nan)": (dict(energy_gate_db=float("nan")), r"energy_gate_db"),
    "RefineParams(energy_gate_db=+inf)": (dict(energy_gate_db=float("inf")), r"energy_gate_db"),
    "RefineParams(energy_gate_db=-200)": (dict(energy_gate_db=-200.0), r"energy_gate_db"),
    "RefineParams(prob_gate=5)": (dict(prob_gate=5), r"prob_gate=5"),
    "RefineParams(silence_thr=-1)": (dict(silence_thr=-1), r"silence_thr=-1"),
    "RefineParams(verify_thr Speech 2.0)": (dict(verify_thr={"Speech": 2.0, "default": 0.5}),
                                            r"verify_thr\[Speech\]"),
    "RefineParams(drop_thr with NaN)": (dict(drop_thr=[0.1] * 17 + [float("nan")]),
                                        r"drop_thr\[17\]"),
    "RefineParams(select_separator=5)": (dict(select_separator=5), r"select_separator=5"),
    "RefineParams(verify_mode='maybe')": (dict(verify_mode="maybe"), r"verify_mode='maybe'"),
    "RefineParams(stage=0.5)": (dict(stage=0.5), r"stage=0\.5"),
    "RefineParams(stage=-1)": (dict(stage=-1), r"stage=-1"),
}
for _name, (_kw, _match) in PARAMS_BAD.items():
    case("policy values", _name)(
        lambda _k=_kw, _m=_match: refused(
            lambda: __import__("casdri.policies", fromlist=["RefineParams"]).RefineParams(**_k),
            _m))
case("policy values", "BaselineParams(separator=2)")(
    lambda: refused(lambda: __import__("casdri").BaselineParams(separator=2), r"separator=2"))
case("policy values", "OracleParams(stage=1.0)")(
    lambda: refused(lambda: __import__("casdri").OracleParams(stage=1.0), r"stage=1\.0"))


def _yaml(doc):
    from casdri.policies import load_policy_yaml

    return load_policy_yaml(doc)


YAML_BAD = {
    "policy YAML select_separator: 5": ("  select_separator: 5\n", r"select_separator=5"),
    "policy YAML verify_mode: maybe": ("  verify_mode: maybe\n", r"verify_mode='maybe'"),
    "policy YAML stage: 0.5": ("  stage: 0.5\n", r"stage=0\.5"),
    "policy YAML energy_gate_db: .nan": ("  energy_gate_db: .nan\n", r"energy_gate_db=nan"),
    "policy YAML prob_gate: 5": ("  prob_gate: 5\n", r"prob_gate=5"),
    "policy YAML silence_thr: -1": ("  silence_thr: -1\n", r"silence_thr=-1"),
    "policy YAML w: true": ("  w: true\n", r"w=True"),
    "policy YAML unknown parameter": ("  ww: 0.3\n", r"ww"),
}
for _name, (_line, _match) in YAML_BAD.items():
    case("policy YAML", _name)(lambda _l=_line, _m=_match: refused(
        lambda: _yaml(f"policy: refine\nlabel_set: dcase2026t4\nparams:\n{_l}"), _m))
case("policy YAML", "unknown top-level key (parms:)")(lambda: refused(
    lambda: _yaml("policy: refine\nlabel_set: dcase2026t4\nparms:\n  w: 0.3\n"), r"parms"))
case("policy YAML", "unknown policy name")(lambda: refused(
    lambda: _yaml("policy: refinee\nlabel_set: dcase2026t4\nparams: {}\n"), r"refinee"))
case("policy YAML", "not a mapping")(lambda: refused(lambda: _yaml("- a\n- b\n"),
                                                     r"(mapping|policy)"))
case("policy YAML", "invalid YAML syntax")(lambda: refused(
    lambda: _yaml("policy: refine\nparams: {w: [\n"), r"(YAML|yaml)"))
case("policy YAML", "python object tag (unsafe YAML)")(lambda: refused(
    lambda: _yaml("policy: !!python/object/apply:os.system ['true']\n"), r"(YAML|yaml|tag)"))
case("policy YAML", "another label set than the cache's")(lambda: refused(
    lambda: __import__("casdri.policies", fromlist=["x"]).load_policy_yaml(
        "policy: refine\nlabel_set: dcase2025t4\nparams: {}\n", label_set="dcase2026t4"),
    r"(label.set|dcase2025t4)"))


@case("policy YAML", "select_separator the cache lacks (replay)")
def _():
    from casdri.policies import RefineParams
    from casdri.replay import replay
    from casdri.synthetic import make_synthetic_cache

    one = make_synthetic_cache(TMP / "one-sep", n_soundscapes=3, separators=("only",))
    return refused(lambda: replay(one, "refine", RefineParams(select_separator=1)),
                   r"select_separator=1")


# ================================================================== cache content

def _cc():
    sys.path.insert(0, str(ROOT / "tests"))
    import tests.test_cache_content as t

    return t


CACHE_BAD = ["snr_db byte flip", "snr_mix_db byte flip", "energy_db +inf", "tagger probs NaN",
             "tagger probs negative", "tagger probs not a softmax", "retag not a softmax",
             "retag silence above 1",
             "swapped classes", "renamed class", "sample rate 16 kHz", "a whole chunk missing"]
for _name in CACHE_BAD:
    @case("cache content", f"cache: {_name}")
    def _(_n=_name):
        import casdri

        t = _cc()
        c = demo_copy(_n.replace(" ", "-"))
        t.BAD[_n][0](c)
        return refused(lambda: casdri.load_cache(c), t.BAD[_n][2])


@case("cache content", "cache: missing table folder")
def _():
    import casdri

    c = demo_copy("no-tagger")
    shutil.rmtree(c / "tagger")
    return refused(lambda: casdri.load_cache(c), r"tagger")


@case("cache content", "cache: schema version from the future")
def _():
    import casdri

    c = demo_copy("schema")
    _cc()._edit_meta(c, schema_version=999)
    return refused(lambda: casdri.load_cache(c), r"(schema|999)")


@case("cache content", "cache: the 2025 label set's name (same classes, accepted)")
def _():
    import casdri

    c = demo_copy("labelset")
    _cc()._edit_meta(c, label_set="dcase2025t4")
    return handled(lambda: casdri.load_cache(c).meta.label_set,
                   lambda v, w: v == "dcase2025t4")


@case("cache content", "cache: custom label set name with its own classes (accepted)")
def _():
    import casdri

    c = demo_copy("labelset-custom")
    _cc()._edit_meta(c, label_set="my_classes")
    return handled(lambda: casdri.load_cache(c).meta.label_set, lambda v, w: v == "my_classes")


@case("cache content", "cache: metadata file not JSON")
def _():
    import casdri
    from casdri import schema as sc

    c = demo_copy("meta-json")
    (c / sc.META_FILE).write_text("{not json")
    return refused(lambda: casdri.load_cache(c), re.escape(sc.META_FILE))


@case("cache content", "cache: folder does not exist")
def _():
    import casdri

    return refused(lambda: casdri.load_cache(TMP / "no-such-cache"), r"no-such-cache")


@case("cache content", "cache: path is a file")
def _():
    import casdri

    f = TMP / "cache-file"
    f.write_text("x")
    return refused(lambda: casdri.load_cache(f), r"cache-file")


@case("cache content", "cache: a part duplicated under another name")
def _():
    import casdri

    c = demo_copy("dup")
    for t in ("soundscapes", "tagger", "separations"):
        p = sorted((c / t).glob("part-*.parquet"))[0]
        shutil.copy(p, p.with_name(p.name.replace("part-", "part-zz-")))
    return refused(lambda: casdri.load_cache(c), r"(duplicate|twice|more than once)")


@case("cache content", "cache: truncated part (validate)")
def _():
    c = demo_copy("trunc")
    p = sorted((c / "separations").glob("part-*.parquet"))[0]
    p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])
    return cli(["validate", c], re.escape(p.name), module="cache_builder.cli")


@case("cache content", "cache: 0-byte part (validate)")
def _():
    c = demo_copy("empty")
    p = sorted((c / "tagger").glob("part-*.parquet"))[0]
    p.write_bytes(b"")
    return cli(["validate", c], re.escape(p.name), module="cache_builder.cli")


@case("cache content", "cache: truncated part (load)")
def _():
    import casdri

    c = demo_copy("trunc-load")
    p = sorted((c / "separations").glob("part-*.parquet"))[0]
    p.write_bytes(p.read_bytes()[:1000])
    return refused(lambda: casdri.load_cache(c), re.escape(p.name))


@case("cache content", "cache: incomplete, loaded with allow_incomplete (warns)")
def _():
    import casdri

    c = demo_copy("incomplete-ok")
    _cc().BAD["a whole chunk missing"][0](c)
    return handled(lambda: casdri.load_cache(c, allow_incomplete=True).n_soundscapes,
                   lambda v, w: v == 275 and any("incomplete" in m for m in w))


# ================================================================== system YAML and build

def _system(name: str, edit) -> Path:
    import yaml

    y = built()["yaml"]
    d = yaml.safe_load(y.read_text())
    edit(d)
    out = fresh(f"sys-{name}") / "system.yaml"
    for sub in ("weights",):
        os.symlink(y.parent / sub, out.parent / sub)
    out.write_text(yaml.safe_dump(d, sort_keys=False))
    return out


def _load_system(path):
    from cache_builder.system import load_system

    return load_system(path, device="cpu")


SYSTEM_BAD = {
    "system YAML: unknown top-level key": (lambda d: d.update(taggerz={}), r"taggerz"),
    "system YAML: missing taggers": (lambda d: d.pop("taggers"), r"taggers"),
    "system YAML: unknown label set": (lambda d: d.update(label_set="dcase1999"), r"dcase1999"),
    "system YAML: retagger not a tagger": (lambda d: d.update(retagger="9ch"), r"9ch"),
    "system YAML: missing checkpoint file": (
        lambda d: d["taggers"]["1ch"].update(checkpoint="weights/none.pt"), r"none\.pt"),
    "system YAML: class not in the module": (
        lambda d: d["taggers"]["1ch"].update({"class": "NoSuchTagger"}), r"NoSuchTagger"),
    "system YAML: module that does not import": (
        lambda d: d["taggers"]["1ch"].update(module="no_such_module_xyz"), r"no_such_module_xyz"),
    "system YAML: checkpoint of another model (shapes)": (
        lambda d: d["taggers"]["1ch"].update(checkpoint=d["taggers"]["4ch"]["checkpoint"]),
        r"(checkpoint|state|size|shape)"),
    "system YAML: wrong constructor argument": (
        lambda d: d["taggers"]["1ch"]["args"].update(bogus=1), r"bogus"),
    "system YAML: sample rate other than the label set's": (
        lambda d: d.update(sample_rate_hz=16000), r"16000"),
    "system YAML: python object tag": (None, r"(YAML|yaml|tag)"),
}
for _name, (_edit, _match) in SYSTEM_BAD.items():
    @case("system YAML", _name)
    def _(_e=_edit, _m=_match, _n=_name):
        if _e is None:
            p = fresh("sys-unsafe") / "system.yaml"
            p.write_text("label_set: !!python/object/apply:os.system ['true']\n")
        else:
            p = _system(_n.split(": ")[1].replace(" ", "-")[:20], _e)
        return refused(lambda: _load_system(p), _m)


case("system YAML", "system YAML file missing")(
    lambda: refused(lambda: _load_system(TMP / "none.yaml"), r"none\.yaml"))


def _build(out, soundscapes=None, oracle=None, **kw):
    from cache_builder import build_cache

    b = built()
    args = dict(oracle=b["odir"] if oracle is None else oracle, chunk_size=2, batch_size=4,
                jobs=0, threads=1)
    args.update(kw)
    return build_cache(b["yaml"], soundscapes or b["sdir"], out, **args)


def _copy_built(name: str) -> Path:
    out = fresh(f"build-{name}") / "cache"
    shutil.copytree(built()["cache"], out)
    return out


case("build", "build into a folder holding another cache")(lambda: refused(
    lambda: _build(demo_copy("other-cache")), r"(another|other) (cache|system)|differ"))


@case("build", "build into a non-empty folder without a cache")
def _():
    out = fresh("build-nonempty")
    (out / "notes.txt").write_text("mine")
    return refused(lambda: _build(out), r"(not empty|non-empty)")


case("build", "resume with another --chunk-size")(lambda: refused(
    lambda: _build(_copy_built("chunk"), chunk_size=3), r"chunk"))
case("build", "resume with another --threads")(lambda: refused(
    lambda: _build(_copy_built("threads"), threads=2), r"threads"))
case("build", "resume with another --batch-size")(lambda: refused(
    lambda: _build(_copy_built("batch"), batch_size=2), r"batch"))
case("build", "resume with another --tag-batch-size")(lambda: refused(
    lambda: _build(_copy_built("tagbatch"), tag_batch_size=2), r"tag.batch"))


@case("build", "resume: the same command is a no-op (correct)")
def _():
    from casdri.cache import load_cache

    c = _copy_built("same")
    before = load_cache(c).soundscape_ids
    return handled(lambda: (_build(c), list(load_cache(c).soundscape_ids))[1],
                   lambda v, w: v == list(before))


def _manifest(c: Path) -> Path:
    return sorted((c / "_build").glob("*.shard-*.json"))[0]


@case("build", "corrupt build manifest (JSON)")
def _():
    c = _copy_built("manifest")
    m = _manifest(c)
    m.write_text("{not json")
    return refused(lambda: _build(c), re.escape(m.name))


@case("build", "empty build manifest")
def _():
    c = _copy_built("manifest0")
    m = _manifest(c)
    m.write_text("")
    return refused(lambda: _build(c), re.escape(m.name))


case("build", "--device banana")(lambda: refused(
    lambda: _build(fresh("build-banana") / "c", device="banana"), r"banana"))
case("build", "--device cuda:7")(lambda: refused(
    lambda: _build(fresh("build-cuda7") / "c", device="cuda:7"), r"cuda:7"))


@case("build", "zero-length soundscape")
def _():
    d = fresh("build-zero") / "soundscape"
    shutil.copytree(built()["sdir"], d, dirs_exist_ok=True)
    _write(d / "soundscape_0001.wav", np.zeros((0, 4), np.float32))
    out = TMP / "build-zero" / "c"
    return refused(lambda: _build(out, soundscapes=d, oracle=False), r"soundscape_0001",
                   left=lambda: out.exists() and any(out.iterdir()))


@case("build", "upper-case .WAV soundscape")
def _():
    d = fresh("build-WAV") / "soundscape"
    shutil.copytree(built()["sdir"], d, dirs_exist_ok=True)
    (d / "soundscape_0001.wav").rename(d / "soundscape_0001.WAV")
    out = TMP / "build-WAV" / "c"
    return refused(lambda: _build(out, soundscapes=d, oracle=False), r"\.WAV",
                   left=lambda: out.exists() and any(out.iterdir()))


@case("build", "soundscape folder missing")
def _():
    return refused(lambda: _build(fresh("build-nosc") / "c", soundscapes=TMP / "no-sc"),
                   r"no-sc")


@case("build", "soundscape of 2 channels")
def _():
    d = fresh("build-2ch") / "soundscape"
    shutil.copytree(built()["sdir"], d, dirs_exist_ok=True)
    x, _ = sf.read(d / "soundscape_0001.wav")
    _write(d / "soundscape_0001.wav", x[:, :2])
    return refused(lambda: _build(TMP / "build-2ch" / "c", soundscapes=d, oracle=False),
                   r"soundscape_0001.*channel")


@case("build", "bad --shard 3/2")
def _():
    return refused(lambda: _build(fresh("build-shard") / "c", shard=(3, 2)), r"shard")


case("build", "casdri-cache build --batch-size 0")(lambda: cli(
    ["build", "--system", built()["yaml"], "--soundscapes", built()["sdir"], "--out",
     TMP / "b0", "--batch-size", "0"], r"--batch-size", module="cache_builder.cli"))
case("build", "casdri-cache build --shard banana")(lambda: cli(
    ["build", "--system", built()["yaml"], "--soundscapes", built()["sdir"], "--out",
     TMP / "b1", "--shard", "banana"], r"--shard", module="cache_builder.cli"))


@case("build", "torch missing (builder extra hint)")
def _():
    b = built()
    code = ("import sys; sys.modules['torch'] = None; from cache_builder.cli import main; "
            f"raise SystemExit(main(['build', '--system', {str(b['yaml'])!r}, '--soundscapes', "
            f"{str(b['sdir'])!r}, '--out', 'y']))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=TMP)
    if "Traceback" in p.stderr or p.returncode in (0, 3):
        return CRYPTIC, p.stderr[-300:]
    return (CLEAR, p.stderr.strip()) if "[builder]" in p.stderr else (CRYPTIC, p.stderr)


@case("build", "pyroomacoustics missing (generate: builder extra hint)")
def _():
    code = ("import sys; sys.modules['pyroomacoustics'] = None; from cache_builder.cli import "
            "main; raise SystemExit(main(['generate', '--sources', 'p', '--out', 'o', "
            "'--dev', '1']))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=fresh("gen-nopra"))
    if "Traceback" in p.stderr or p.returncode in (0, 3):
        return CRYPTIC, p.stderr[-300:]
    return (CLEAR, p.stderr.strip()) if ("[builder]" in p.stderr or "pyroomacoustics"
                                         in p.stderr) else (CRYPTIC, p.stderr)


# ================================================================== apply

APPLY_BAD = {
    "apply: select_separator: 5": ("  select_separator: 5\n", r"select_separator=5"),
    "apply: verify_mode: maybe": ("  verify_mode: maybe\n", r"verify_mode='maybe'"),
    "apply: stage: 0.5": ("  stage: 0.5\n", r"stage=0\.5"),
    "apply: energy_gate_db: .nan": ("  energy_gate_db: .nan\n", r"energy_gate_db=nan"),
    "apply: prob_gate: 5": ("  prob_gate: 5\n", r"prob_gate=5"),
    "apply: silence_thr: -1": ("  silence_thr: -1\n", r"silence_thr=-1"),
    "apply: stage the system lacks (stage: 2)": ("  stage: 2\n", r"stage"),
}
for _name, (_line, _match) in APPLY_BAD.items():
    @case("apply", _name)
    def _(_l=_line, _m=_match, _n=_name):
        out = TMP / f"apply-{_n[7:17].replace(' ', '-')}" / "stems"
        return refused(lambda: apply_to(_n[7:17].replace(" ", "-"), policy_file(
            _n[7:17].replace(" ", "-").replace(":", ""), _l)), _m,
            left=lambda: out.exists() and any(out.iterdir()))


@functools.cache
def tuned_policy() -> Path:
    """A policy YAML whose provenance names the built cache (as casdri-search writes it)."""
    from casdri.cache import load_cache
    from casdri.labels import DCASE2026T4
    from casdri.policies import RefineParams

    meta = load_cache(built()["cache"]).meta
    p = fresh("policy-tuned") / "policy.yaml"
    doc = RefineParams().to_yaml(DCASE2026T4)
    p.write_text(doc)
    return p, meta


@case("apply", "policy tuned on other checkpoints")
def _():
    import yaml

    from casdri.labels import DCASE2026T4
    from casdri.policies import RefineParams

    p = fresh("policy-other") / "policy.yaml"
    d = yaml.safe_load(RefineParams().to_yaml(DCASE2026T4))
    d["provenance"] = {"models": {"separators/small": "0" * 64}}
    p.write_text(yaml.safe_dump(d))
    return refused(lambda: apply_to("other-ckpt", p), r"(checkpoint|provenance|sha256|differ)")


@case("apply", "--zip x.tar.gz (was renamed x.tar.zip)")
def _():
    p = policy_file("zip-targz", "  w: 0.5\n")
    return refused(lambda: apply_to("targz", p, zip_name="sub.tar.gz"), r"\.zip")


@case("apply", "--zip where no folder can be made (found after the work)")
def _():
    p = policy_file("zip-missing", "  w: 0.5\n")
    out = TMP / "apply-zipdir" / "stems"
    (TMP / "a-file").write_text("x")
    return refused(lambda: apply_to("zipdir", p, zip_name=str(TMP / "a-file" / "s.zip")),
                   r"a-file", left=lambda: out.exists() and any(out.iterdir()))


@case("apply", "--zip in a folder not made yet (made, the zip written)")
def _():
    p = policy_file("zip-new", "  w: 0.5\n")
    z = TMP / "new-folder" / "s.zip"
    return handled(lambda: apply_to("zipnew", p, zip_name=str(z)).zip_path,
                   lambda v, w: Path(v) == z and z.is_file())


@case("apply", "--zip that is a folder")
def _():
    p = policy_file("zip-folder", "  w: 0.5\n")
    z = fresh("zip-is-folder.zip")
    return refused(lambda: apply_to("zipfolder", p, zip_name=str(z)), r"zip-is-folder")


@case("apply", "--overwrite --zip zips only this run's stems")
def _():
    import zipfile

    from cache_builder import apply_policy

    b = built()
    p = policy_file("zip-stale", "  w: 0.5\n")
    out = fresh("apply-stale") / "stems"
    out.mkdir()
    (out / "soundscape_9999_0_Speech.wav").write_bytes(b"stale")
    (out / "notes.txt").write_text("mine")
    z = TMP / "apply-stale" / "sub.zip"

    def run():
        rep = apply_policy(b["yaml"], p, b["sdir"], out, oracle=False, threads=1,
                           overwrite=True, zip_name=str(z))
        names = zipfile.ZipFile(z).namelist()
        return sorted(names), sorted(x.name for x in rep.written) if hasattr(
            rep, "written") else None

    return handled(run, lambda v, w: not any("9999" in n or "notes" in n for n in v[0]))


@case("apply", "non-empty --out without --overwrite")
def _():
    from cache_builder import apply_policy

    b = built()
    out = fresh("apply-nonempty")
    (out / "x.wav").write_bytes(b"mine")
    p = policy_file("nonempty", "  w: 0.5\n")
    return refused(lambda: apply_policy(b["yaml"], p, b["sdir"], out, oracle=False, threads=1),
                   r"(not empty|--overwrite)")


case("apply", "policy file missing")(lambda: refused(
    lambda: apply_to("nofile", TMP / "no-policy.yaml"), r"no-policy\.yaml"))


@case("apply", "killed apply leaves nothing that looks finished")
def _():
    b = built()
    p = policy_file("kill", "  w: 0.5\n")
    out = fresh("apply-kill") / "stems"
    code = ("import sys; from cache_builder import apply_policy; "
            f"apply_policy({str(b['yaml'])!r}, {str(p)!r}, {str(b['sdir'])!r}, {str(out)!r}, "
            "oracle=False, threads=1)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.time()  # kill once the first stem appears anywhere under the out folder's parent
    while time.time() - t0 < 120 and proc.poll() is None:
        if list(out.parent.rglob("*.wav")):
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    stems = list(out.glob("*.wav")) if out.exists() else []
    return (CORRECT, "no stems in --out") if not stems else (LEFT, f"{len(stems)} stems")


# ================================================================== search

case("search", "run_search --out '' (CLI)")(lambda: cli(
    ["--cache", small_cache(), "--stage", "gates", "--folds", "2", "--trials", "2", "--out",
     ""], r"--out", module="search.cli", cwd=fresh("search-out-empty"),
    left=lambda: any((TMP / "search-out-empty").iterdir())))


@case("search", "--out that is a file")
def _():
    f = TMP / "out-file"
    f.write_text("x")
    return cli(["--cache", small_cache(), "--stage", "gates", "--out", f], r"out-file",
               module="search.cli")


case("search", "--seed -1")(lambda: cli(["--cache", small_cache(), "--seed", "-1"], r"--seed",
                                         module="search.cli"))
case("search", "--folds larger than the soundscapes")(lambda: refused(
    lambda: search(folds=999), r"--folds"))
case("search", "--trials 0")(lambda: cli(["--cache", small_cache(), "--trials", "0"],
                                         r"--trials", module="search.cli"))
case("search", "--stage bogus")(lambda: cli(["--cache", small_cache(), "--stage", "bogus"],
                                            r"--stage", module="search.cli"))
case("search", "--storage nonsense")(lambda: refused(
    lambda: search(storage="nonsense"), r"nonsense"))
case("search", "--split the cache lacks")(lambda: refused(
    lambda: search(split="nosuch"), r"nosuch"))
case("search", "--test-split equal to --split")(lambda: refused(
    lambda: search(split="fold0", test_split="fold0"), r"differ|both"))
case("search", "--group-by unknown column")(lambda: refused(
    lambda: search(group_by="no_column"), r"no_column"))
case("search", "--policy unknown")(lambda: refused(lambda: search(policy="refinee"),
                                                   r"refinee"))
case("search", "--margin with --accept evidence")(lambda: cli(
    ["--cache", small_cache(), "--margin", "0.1"], r"--margin", module="search.cli"))
case("search", "--cache that is not a cache")(lambda: refused(
    lambda: search(cache=fresh("not-a-cache")), r"not-a-cache"))


@case("search", "--policy-in with an unknown top-level key")
def _():
    p = policy_file("search-in", "  w: 0.3\n", "parms: {}\n")
    return refused(lambda: search(policy_in=p), r"parms")


@case("search", "--policy-in with a bad value")
def _():
    p = policy_file("search-in-bad", "  prob_gate: 5\n")
    return refused(lambda: search(policy_in=p), r"prob_gate")


@case("search", "rerun on the same storage without --resume")
def _():
    url = f"sqlite:///{fresh('search-rerun')}/s.db"
    search(storage=url)
    return refused(lambda: search(storage=url), r"--resume")


@case("search", "same seed gives the same policy on memory, sqlite and journal")
def _():
    d = fresh("search-seed")

    def run():
        return [search(storage=s, seed=4).x_final for s in
                (None, f"sqlite:///{d}/s.db", f"journal://{d}/j.log")]

    return handled(run, lambda v, w: all(np.array_equal(v[0], x) for x in v[1:]))


@case("search", "tiny folds give a sample-size warning")
def _():
    from casdri.synthetic import make_synthetic_cache

    c = make_synthetic_cache(TMP / "tiny-cache", n_soundscapes=6, seed=1, load=False)
    return handled(lambda: search(cache=c, folds=5),
                   lambda r, w: any("sample" in x.lower() or "soundscapes" in x for x in
                                    r.warnings))


@case("search", "an incomplete cache is refused unless --allow-incomplete")
def _():
    c = demo_copy("search-incomplete")
    _cc().BAD["a whole chunk missing"][0](c)
    return refused(lambda: search(cache=c), r"--allow-incomplete")


@case("search", "stale figures beside a new report are removed")
def _():
    from search.report import write_outputs

    out = fresh("search-stale")
    (out / "figures").mkdir()
    (out / "figures" / "threshold_old.png").write_bytes(b"old")
    return handled(lambda: (write_outputs(search(), out, figures=False),
                            (out / "figures" / "threshold_old.png").exists())[1],
                   lambda v, w: v is False)


@case("search", "corrupt journal storage file")
def _():
    d = fresh("search-badjournal")
    (d / "j.log").write_text("{not json\n")
    return refused(lambda: search(storage=f"journal://{d}/j.log"), r"j\.log")


@case("search", "sqlite storage file that is not a database")
def _():
    d = fresh("search-baddb")
    (d / "s.db").write_text("not a database" * 100)
    return refused(lambda: search(storage=f"sqlite:///{d}/s.db"), r"s\.db")


# ================================================================== generate

def _gen(*args, **kw):
    return cli(["generate", *args], module="cache_builder.cli", **kw)


case("generate", "--oracle-window-ms -5 -10")(lambda: _gen(
    "--sources", fresh("pool-a"), "--out", TMP / "gen-a", "--dev", "1", "--oracle-window-ms",
    "-5", "-10", match=r"--oracle-window-ms"))
case("generate", "--sources folder missing")(lambda: _gen(
    "--sources", TMP / "no-pool", "--out", TMP / "gen-b", "--dev", "1", match=r"no-pool"))
case("generate", "empty pool (no sound_event/)")(lambda: _gen(
    "--sources", fresh("pool-empty"), "--out", TMP / "gen-c", "--dev", "1",
    match=r"sound_event", left=lambda: (TMP / "gen-c" / "dev").exists()))
case("generate", "no split asked (all 0)")(lambda: _gen(
    "--sources", fresh("pool-d"), "--out", TMP / "gen-d", match=r"(--train|--dev|--test)"))
case("generate", "--duration-s 0")(lambda: _gen(
    "--sources", fresh("pool-e"), "--out", TMP / "gen-e", "--dev", "1", "--duration-s", "0",
    match=r"--duration-s"))
case("generate", "--dev -3")(lambda: _gen(
    "--sources", fresh("pool-f"), "--out", TMP / "gen-f", "--dev", "-3", match=r"--dev"))


# ================================================================== command-line shell

case("command lines", "casdri-cache with no command")(lambda: cli(
    [], r"(command|usage)", module="cache_builder.cli"))
case("command lines", "casdri-cache info on a missing cache")(lambda: cli(
    ["info", TMP / "no-cache"], r"no-cache", module="cache_builder.cli"))
case("command lines", "casdri-cache validate on a folder that is no cache")(lambda: cli(
    ["validate", fresh("empty-validate")], r"empty-validate", module="cache_builder.cli"))
case("command lines", "casdri explain with a missing cache")(lambda: cli(
    ["explain", "--cache", TMP / "no-cache"], r"no-cache"))
case("command lines", "casdri compare with one argument")(lambda: cli(
    ["compare", TMP / "a"], r"(compare|usage|expected|argument)"))


# ================================================================== more kinds

case("scoring", "soundscape of 5 channels")(lambda: refused(lambda: score(broken_folders(
    "5ch", lambda s, o, e: _write(s / "s_1.wav", np.c_[sf.read(s / "s_1.wav")[0],
                                                       np.zeros(800)]))), r"s_1.wav.*channel"))
case("scoring", "reference at another sample rate")(lambda: refused(lambda: score(broken_folders(
    "ref-rate", lambda s, o, e: _write(o / "s_1_0_Pour.wav", sf.read(o / "s_1_0_Pour.wav")[0],
                                       48000))), r"s_1_0_Pour.wav.*48000"))


@case("scoring", "16-bit PCM stems (scored as their float values)")
def _():
    def to_pcm(s, o, e):
        for f in e.glob("*.wav"):
            x, _ = sf.read(f)
            sf.write(f, np.clip(x / 8, -1, 1), SR, subtype="PCM_16")

    d = broken_folders("pcm16", to_pcm)
    from casdri.scoring import score_folders

    want = None
    try:
        import casdri
        from casdri.folders import read_soundscape, scan_folders

        want = [casdri.capi_sdri(a.est_labels, a.est_wavs, a.ref_labels, a.ref_wavs, a.mixture)
                for a in map(read_soundscape, scan_folders(*d))]
    except Exception:  # noqa: BLE001
        pass
    return handled(lambda: score_folders(*d, jobs=1).per_soundscape["capi_sdri"].tolist(),
                   lambda v, w: want is not None and np.allclose(v, want, equal_nan=True))


case("scoring", "casdri score --out in a folder not made yet (made)")(lambda: cli(
    _score_cli("--out", TMP / "new-out" / "r.json"), "", ok=lambda p: (TMP / "new-out" /
                                                                      "r.json").is_file()))
case("metric API", "capi_sdri: mixture of another length")(lambda: refused(
    lambda: _capi(["Speech"], ["Speech"], mix=np.ones(T + 1)), r"(mixture|length|samples)"))
case("metric API", "CapiSdri(label_set='nope')")(lambda: refused(
    lambda: __import__("casdri").CapiSdri("nope"), r"nope"))
case("metric API", "capi_sdri: float64 arrays (accepted, same as float32)")(lambda: handled(
    lambda: (_capi(["Speech"], ["Speech"], est_w=0.5 * np.ones((1, T))),
             _capi(["Speech"], ["Speech"], est_w=0.5 * np.ones((1, T), np.float32))),
    lambda v, w: abs(v[0] - v[1]) < 1e-6))


def _search_cli(*args, **kw):
    return cli(["--cache", small_cache(), "--no-figures", "--out", TMP / "s-cli", *args],
               module="search.cli", **kw)


case("search", "--jobs 0")(lambda: _search_cli("--jobs", "0", match=r"--jobs"))
case("search", "--folds 0")(lambda: _search_cli("--folds", "0", match=r"--folds"))
case("search", "--repeats 0")(lambda: _search_cli("--repeats", "0", match=r"--repeats"))
case("search", "--inner-folds 1")(lambda: _search_cli("--inner-folds", "1",
                                                      match=r"--inner-folds"))
case("search", "--alpha 1.5")(lambda: _search_cli("--alpha", "1.5", match=r"--alpha"))
case("search", "--min-changed 0")(lambda: _search_cli("--min-changed", "0",
                                                      match=r"--min-changed"))
case("search", "--auto-stages bogus")(lambda: _search_cli("--stage", "auto", "--auto-stages",
                                                          "bogus", match=r"--auto-stages"))
case("search", "--alpha with --accept margin")(lambda: _search_cli(
    "--accept", "margin", "--alpha", "0.1", match=r"--alpha"))
case("search", "--resume without --storage")(lambda: _search_cli(
    "--resume", "--stage", "gates", "--folds", "2", "--trials", "2", match=r"--resume.*--storage"))
case("search", "--policy-in file missing")(lambda: refused(
    lambda: search(policy_in=TMP / "no-policy-in.yaml"), r"no-policy-in\.yaml"))


@case("search", "--policy-in of another policy (baseline YAML to tune refine)")
def _():
    p = fresh("policy-baseline") / "policy.yaml"
    p.write_text("policy: baseline\nlabel_set: dcase2026t4\nparams: {}\n")
    return refused(lambda: search(policy_in=p), r"baseline")


@case("apply", "--soundscapes folder missing")
def _():
    from cache_builder import apply_policy

    return refused(lambda: apply_policy(built()["yaml"], policy_file("sc-missing", "  w: 0.5\n"),
                                        TMP / "no-sc", fresh("apply-nosc") / "o", oracle=False),
                   r"no-sc")


case("apply", "--system file missing")(lambda: refused(
    lambda: __import__("cache_builder").apply_policy(
        TMP / "no-system.yaml", policy_file("sys-missing", "  w: 0.5\n"), built()["sdir"],
        fresh("apply-nosys") / "o", oracle=False), r"no-system\.yaml"))


@case("apply", "the oracle policy (needs the references) applied live")
def _():
    p = fresh("policy-oracle") / "policy.yaml"
    p.write_text("policy: oracle\nlabel_set: dcase2026t4\nparams: {}\n")
    return refused(lambda: __import__("cache_builder").apply_policy(built()["yaml"], p, built()["sdir"],
                                      fresh("apply-oracle") / "o", oracle=False, threads=1),
        r"oracle")


@case("apply", "policy of another label set than the system's")
def _():
    p = fresh("policy-ls") / "policy.yaml"
    p.write_text("policy: refine\nlabel_set: [Cat, Dog]\nparams: {}\n")
    return refused(lambda: apply_to("ls", p), r"(label.set|Cat|classes)")


case("apply", "--oracle folder missing")(lambda: refused(
    lambda: __import__("cache_builder").apply_policy(
        built()["yaml"], policy_file("or-missing", "  w: 0.5\n"), built()["sdir"],
        fresh("apply-noor") / "o", oracle=TMP / "no-oracle"), r"no-oracle"))
case("apply", "casdri-cache apply --tag-batch-size 0")(lambda: cli(
    ["apply", "--system", built()["yaml"], "--policy", policy_file("tb0", "  w: 0.5\n"),
     "--soundscapes", built()["sdir"], "--out", TMP / "tb0", "--tag-batch-size", "0"],
    r"--tag-batch-size", module="cache_builder.cli"))
case("generate", "--out that is a file")(lambda: _gen(
    "--sources", ROOT / "tests" / "data" / "bed_subset", "--out",
    (TMP / "gen-file").write_text("x") and TMP / "gen-file", "--dev", "1", "--duration-s", "1",
    match=r"gen-file"))
case("generate", "--jobs 0")(lambda: _gen("--sources", ROOT / "tests" / "data" / "bed_subset", "--out", TMP / "gen-h",
                                          "--dev", "1", "--jobs", "0", match=r"--jobs"))
case("generate", "--rules bogus")(lambda: _gen("--sources", fresh("pool-i"), "--out",
                                               TMP / "gen-i", "--dev", "1", "--rules", "x",
                                               match=r"--rules"))
case("generate", "--sample-rate-hz 0")(lambda: _gen(
    "--sources", ROOT / "tests" / "data" / "bed_subset", "--out", TMP / "gen-j", "--dev", "1", "--sample-rate-hz",
    "0", match=r"--sample-rate-hz"))
case("command lines", "casdri explain with a policy file that is not YAML")(lambda: cli(
    ["explain", (TMP / "bad-policy.yaml").write_text("a: [") and TMP / "bad-policy.yaml"],
    r"bad-policy\.yaml"))
case("command lines", "casdri compare with a missing policy file")(lambda: cli(
    ["compare", TMP / "none-a.yaml", "baseline", "--n-boot", "10"], r"none-a\.yaml"))
case("command lines", "casdri compare --n-boot 0")(lambda: cli(
    ["compare", "baseline", "baseline", "--n-boot", "0"], r"--n-boot"))
case("command lines", "casdri-search --cache missing folder")(lambda: cli(
    ["--cache", TMP / "no-cache-dir", "--out", TMP / "x"], r"no-cache-dir",
    module="search.cli"))


# ================================================================== main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default="", help="only cases whose name holds this")
    ap.add_argument("--details", action="store_true", help="print each case's message")
    args = ap.parse_args(argv)
    counts = dict.fromkeys(OUTCOMES, 0)
    t0 = time.perf_counter()
    rows = []
    try:
        for category, name, fn in CASES:
            if args.k.lower() not in f"{category} {name}".lower():
                continue
            try:
                outcome, detail = fn()
            except Exception as exc:  # noqa: BLE001 - a broken case is reported, not fatal
                outcome, detail = CRYPTIC, f"(sweep) {type(exc).__name__}: {exc}"
            counts[outcome] += 1
            rows.append((category, name, outcome, detail))
            print(f"{category:<15} | {name:<62} | {outcome:<14}"
                  + (f" | {_short(detail)}" if args.details or outcome in (WRONG, CRYPTIC, LEFT)
                     else ""), flush=True)
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    total = sum(counts.values())
    print(f"\n{total} cases in {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
