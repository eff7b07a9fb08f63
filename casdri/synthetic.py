"""Synthetic decision caches, for tests and benchmarks only (never for results).

Conventions:
    * Scale defaults to the DCASE 2026 Task 4 development test set: 1,512 soundscapes, 18
      classes, 3 tracks, taggers ``1ch`` and ``4ch``, separators ``sepA`` and ``sepB``.
    * Each soundscape has 0 references (``zero_target``, ~20 %) or 1-3, a class repeated with
      probability ``duplicate``. Sources sit on random tracks; the taggers name them (the 4ch
      tagger more often right) and put silence first on empty tracks.
    * The closure is complete: every sub-multiset of size 1..K of the proposal pool (per
      (tagger, track) the top-1 non-silence class, multiplicity capped at K) plus the oracle
      key, for every separator and stage.
    * Slot ``i`` of class c is the *target* of the o-th reference of class c, o = number of
      earlier slots of class c in its query (none when there are fewer such references).
      Targets get a high SNR against their reference (SDRi ~ N(7, 2.5) dB, separator- and
      class-dependent, +0.7 dB per stage), a loud ``energy_db`` and a confident re-tag; other
      stems are quiet and re-tagged as silence more often.
    * ``quantize=True`` rounds probabilities to 1/8, SNRs to 0.5 dB and energies to 1 dB: many
      exact ties (for the exactness tests).

Planted optimum (for testing searchers): ``planted={"energy_gate_db": {label: t}}`` makes every
target stem of ``label`` have ``energy_db >= t + 1`` and every other stem of it
``energy_db <= t - 1``, and every SDRi a stem can score positive (targets >= 0.5 dB, other
same-class pairs 0.1-0.4 dB). Then, with ``prob_gate`` and ``silence_thr`` off (defaults) and
any other ``refine`` values, the dataset CAPI-SDRi as a function of ``energy_gate_db[label]`` is
maximal on ``(t - 1, t + 1]`` (so at ``t``; exactly on ``(max other energy, min target
energy]``, a slightly wider interval), and lower once the gate passes the quietest target.

Pure noise (``noise=True``, for testing acceptance rules): no feature a threshold reads tells
a target from a false positive, or one class from another. Every tagger sees an empty track as
the source of a random class (drawn once per track, named like a source and as confidently),
and the taggers never err and name each track's class clearly (3 dB more logit), so they agree
(no unpaired instance hints at an error) and instances are alike for true and false
detections; every stem's ``energy_db`` is uniform in ``[-40, 0]`` dB and its re-tag
probabilities come from one distribution, target or not; every (separator, class) has the same SDRi mean (7 dB). A
threshold then removes stems at random with respect to the truth, which on average does not
help (removing a true detection costs its SDRi and leaves a miss; a false one only shortens
the mean), so no per-class threshold has an expected gain over a shared one and an accepted
per-class threshold change is a false acceptance.

Planted per-class effect (``planted={"quiet_false_positives": {label: share}}``): each stem of
``label`` that is no target, and each target stem of every *other* class, is with probability
``share`` given ``energy_db`` uniform in ``[-70, -50]`` dB; every other stem's ``energy_db`` is
kept in ``[-40, 0]`` dB. Then ``energy_gate_db[label]`` anywhere in ``(-50, -40]`` (e.g.
`QUIET_GATE_DB`) silences exactly those false positives of ``label`` and nothing else, while
one shared gate there would silence the quiet targets of every other class: an effect only a
per-class value can take, whose size grows with ``share`` (measure it by replaying the gate;
with ``noise=True`` at 1,512 soundscapes ``share=0.4`` is worth about +0.03 dB on the dataset
mean). It combines with ``noise``.

Planted per-class stage (``planted={"stage_gain_db": {label: g}}``): the SDRi mean of
``label``'s stems changes by ``+g`` dB per refinement stage and every other class's by ``-g``
dB per stage (instead of +0.7 dB per stage for all): one global stage cannot take both, the
stage chosen per class (``staged``'s ``stage_by_class``: the last stage for ``label``, stage
0 for the rest) can.

SED (``sed_frames > 0``; drawn from a generator of its own, so the other tables do not change):
model ``"sed"``, `SED_HOP_S` hop, float16 frame probabilities in ``[0, 0.25)`` everywhere, plus
per reference class an event (frames in ``[0.55, 1)``) covering 20-100 % of the frames, and
with probability 0.3 per other class a spurious blip of 1-3 frames.

Planted duration rule (``planted={"sed_min_duration_s": {label: t}}``, needs ``sed_frames``):
when ``label`` is a reference its SED event lasts more than ``t + SED_HOP_S`` seconds at the
30 % and 50 % levels of `casdri.sed.SED_LEVELS_PCT`; when it is not, it has a blip (as loud
as an event) lasting at most ``t - SED_HOP_S`` seconds (``t >= 2 SED_HOP_S``; the soundscape
must have frames enough: ``sed_frames * SED_HOP_S > t + 2 SED_HOP_S``). Every other class's event or blip lasts a uniform
0-100 % of the frames whether it is a reference or not, so the duration tells a true from a
false detection for ``label`` only: ``staged``'s ``sed_min_dur_s[label] = t`` silences exactly
the false positives of ``label``, while one shared minimum duration also silences true
detections of other classes.
"""
from __future__ import annotations

import dataclasses
import itertools
import tempfile
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from . import schema as sc
from ._cache_checks import prob_sum_tol
from .cache import CacheWriter, load_cache
from .labels import DCASE2026T4, LabelSet
from .policies import params_class

__all__ = ["make_synthetic_cache", "synthetic_label_set", "random_settings", "QUIET_GATE_DB"]

#: An energy gate (dB) that silences exactly the planted quiet false positives.
QUIET_GATE_DB = -45.0
_PLANTED_KINDS = ("energy_gate_db", "quiet_false_positives", "sed_min_duration_s",
                  "stage_gain_db")
#: frame hop (s) of the synthetic SED
SED_HOP_S = 0.32


def synthetic_label_set(n_classes: int) -> LabelSet:
    """DCASE2026T4 for 18 classes, else its first ``n_classes`` (or ``class00..``) names."""
    if n_classes == DCASE2026T4.n_classes:
        return DCASE2026T4
    names = DCASE2026T4.classes[:n_classes] if n_classes <= 18 else \
        tuple(f"class{i:02d}" for i in range(n_classes))
    return LabelSet(f"synthetic{n_classes}", tuple(names))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def _closure(top: np.ndarray, K: int, oracle: Sequence[int]) -> list[tuple[int, ...]]:
    pool = Counter(int(c) for c in top.reshape(-1))
    classes = sorted(pool)
    keys = set()
    for counts in itertools.product(*(range(min(pool[c], K) + 1) for c in classes)):
        if 1 <= sum(counts) <= K:
            keys.add(tuple(c for c, n in zip(classes, counts) for _ in range(n)))
    if 0 < len(oracle) <= K:
        keys.add(tuple(sorted(int(c) for c in oracle)))
    return sorted(keys, key=lambda q: (len(q), q))


def make_synthetic_cache(cache_dir: Union[str, Path, None] = None, n_soundscapes: int = 1512,
                         n_classes: int = 18, n_tracks: int = 3,
                         taggers: Sequence[str] = ("1ch", "4ch"),
                         separators: Sequence[str] = ("sepA", "sepB"), n_stages: int = 1,
                         seed: int = 0, planted: Optional[dict] = None, quantize: bool = False,
                         zero_target: float = 0.2, duplicate: float = 0.1, n_parts: int = 4,
                         sed_frames: int = 0, load: bool = True, noise: bool = False):
    """Write a synthetic cache (module docstring) and return it loaded (or its path).

    Args:
        cache_dir: target directory (created; must not hold another cache); None = in memory
            (written to a temporary directory that is deleted after loading).
        planted: ``{"energy_gate_db": {label: t_db}}``,
            ``{"quiet_false_positives": {label: share}}``,
            ``{"sed_min_duration_s": {label: t_s}}`` or ``{"stage_gain_db": {label: g_db}}``
            (see module docstring) or None.
        sed_frames: when > 0, also an SED table (model ``"sed"``, this many frames,
            `SED_HOP_S` hop, float16 probabilities; module docstring).
        load: return `load_cache(cache_dir)` (True) or the path.
        noise: features carry no information about targets or classes (module docstring).

    Raises:
        ValueError: an unknown ``planted`` kind, a share outside [0, 1], a planted SED
            duration without ``sed_frames``, or ``taggers``/``separators`` not a sequence of
            names (one string included).

    Example:
        >>> c = make_synthetic_cache(n_soundscapes=4, seed=3)
        >>> c.n_soundscapes, c.n_classes, c.taggers
        (4, 18, ('1ch', '4ch'))
    """
    for name, v in (("taggers", taggers), ("separators", separators)):
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__") or \
                not all(isinstance(x, str) for x in v):
            raise ValueError(f"{name}: expected a sequence of names, got {v!r}"
                             + (f"; pass ({v!r},)" if isinstance(v, str) else ""))
    ls = synthetic_label_set(n_classes)
    C, K = n_classes, n_tracks
    rng = np.random.default_rng(seed)
    gate = {ls.index(k): float(v) for k, v in (planted or {}).get("energy_gate_db", {}).items()}
    if planted and set(planted) - set(_PLANTED_KINDS):
        raise ValueError(f"planted supports {', '.join(_PLANTED_KINDS)}, got {sorted(planted)}")
    quiet = {ls.index(k): float(v)
             for k, v in (planted or {}).get("quiet_false_positives", {}).items()}
    stage_gain = {ls.index(k): float(v)
                  for k, v in (planted or {}).get("stage_gain_db", {}).items()}
    min_dur = {ls.index(k): float(v)
               for k, v in (planted or {}).get("sed_min_duration_s", {}).items()}
    if min_dur and sed_frames < 1:
        raise ValueError("planted sed_min_duration_s needs sed_frames > 0")
    if any(not 0.0 <= v <= 1.0 for v in quiet.values()):
        raise ValueError(f"planted quiet_false_positives: shares must be in [0, 1], got {quiet}")
    mu = rng.normal(7.0, 2.0, (len(separators), C))  # per separator and class SDRi (dB)
    if noise:
        mu[:] = 7.0
    quality = {t: (4.5 if "4" in t else 3.5, 0.08 if "4" in t else 0.15) for t in taggers}
    q8 = (lambda p: (np.round(p * 8) / 8).astype(np.float32)) if quantize else (lambda p: p)
    sc_rows, tg_rows, sep_cols = [], [], {k: [] for k in
                                          ("s", "sep", "st", "q", "slot", "e", "snr", "rt")}
    width = len(str(n_soundscapes))
    for s in range(n_soundscapes):
        sid = f"synth_{s:0{width}d}"
        n_ref = 0 if rng.random() < zero_target else int(rng.choice([1, 2, 3][:K], p=[
            0.3, 0.4, 0.3][:K] / np.sum([0.3, 0.4, 0.3][:K])))
        refs = rng.choice(C, n_ref, replace=n_ref > C) if n_ref else np.zeros(0, np.int64)
        if n_ref >= 2 and rng.random() < duplicate:
            refs[-1] = refs[0]
        snr_mix = rng.normal(-2.0, 4.0, n_ref)
        if quantize:
            snr_mix = np.round(snr_mix * 2) / 2
        sc_rows.append((sid, f"fold{s % 5}", refs.astype(np.int64), snr_mix, 10.0))
        tracks = rng.permutation(K)
        top = np.zeros((len(taggers), K), np.int64)
        fake = rng.integers(C, size=K) if noise else None
        for ti, name in enumerate(taggers):
            strength, err = quality[name]
            err = 0.0 if noise else err  # taggers agree (a clear top class, no errors)
            logits = rng.normal(0.0, 1.0, (K, C + 1))
            for i in range(K):
                t = tracks[i]
                if i < n_ref:
                    c = int(refs[i]) if rng.random() >= err else int(rng.integers(C))
                    logits[t, c] += rng.normal(strength, 1.2) + (3.0 if noise else 0.0)
                elif noise:  # an empty track looks to every tagger like a source of fake[i]
                    logits[t, int(fake[i])] += rng.normal(strength, 1.2) + 3.0
                else:
                    logits[t, C] += rng.normal(4.0, 1.2)
            p = q8(_softmax(logits))
            tg_rows.append((sid, name, p))
            top[ti] = np.argmax(p[:, :C], axis=1)
        for q in _closure(top, K, refs):
            occ = [sum(1 for x in q[:i] if x == q[i]) for i in range(len(q))]
            target = []
            for i, c in enumerate(q):
                same = np.flatnonzero(refs == c)
                target.append(int(same[occ[i]]) if occ[i] < len(same) else -1)
            for si, st in itertools.product(range(len(separators)), range(n_stages)):
                for i, c in enumerate(q):
                    tg = target[i]
                    per_stage = 0.7 if not stage_gain else stage_gain.get(
                        c, -max(stage_gain.values()))
                    sdri = rng.normal(mu[si, c] + per_stage * st, 2.5)
                    if gate:
                        sdri = max(sdri, 0.5)
                    snr = rng.normal(-25.0, 5.0, n_ref)
                    for r in np.flatnonzero(refs == c):
                        other = rng.uniform(0.1, 0.4) if gate else rng.normal(-3.0, 2.0)
                        snr[r] = snr_mix[r] + (sdri if r == tg else other)
                    if c in gate:
                        e = gate[c] + (1.0 if tg >= 0 else -1.0) * (1.0 + abs(rng.normal(0, 3)))
                    elif noise:
                        e = rng.uniform(-40.0, 0.0)
                    else:
                        e = rng.normal(-6.0, 3.0) if tg >= 0 else rng.normal(-24.0, 7.0)
                    if quiet:
                        e = min(max(e, -40.0), 0.0)
                        share = quiet.get(c, max(quiet.values()))
                        if (tg < 0) == (c in quiet) and rng.random() < share:
                            e = rng.uniform(-70.0, -50.0)
                    logits = rng.normal(0.0, 1.0, (K, C + 1))
                    if noise:  # one re-tag distribution for every stem
                        logits[0, c] += rng.normal(3.0, 1.5)
                        logits[1:, C] += rng.normal(3.0, 1.5)
                    elif tg >= 0:
                        logits[0, c] += rng.normal(3.5 + 0.15 * sdri, 1.2)
                        logits[1:, C] += 4.0
                    else:
                        logits[:, C] += rng.normal(3.0, 1.5)
                        if rng.random() < 0.2:
                            logits[0, c] += rng.normal(2.0, 1.0)
                    if quantize:
                        snr, e = np.round(snr * 2) / 2, float(np.round(e))
                    for k, v in (("s", sid), ("sep", separators[si]), ("st", st), ("q", q),
                                 ("slot", i), ("e", e), ("snr", snr),
                                 ("rt", q8(_softmax(logits)).reshape(-1))):
                        sep_cols[k].append(v)
    meta = sc.CacheMeta(
        label_set=ls.name, classes=ls.classes, sample_rate_hz=32000, n_tracks=K,
        taggers=tuple(taggers), separators=tuple(separators),
        separator_sha256=tuple("0" * 64 for _ in separators), retagger="synthetic-retagger",
        n_stages=n_stages, closure={"proposal_top_n": 1, "max_query_size": K, "oracle": True},
        extra={"synthetic": {"seed": seed, "planted": planted, "quantize": quantize,
                             **({"noise": True} if noise else {})}})
    if cache_dir is None and load:  # in memory: write to a temporary directory, load, delete
        with tempfile.TemporaryDirectory(prefix="casdri-synthetic-") as tmp:
            cache = make_synthetic_cache(
                tmp, n_soundscapes, n_classes, n_tracks, taggers, separators, n_stages, seed,
                planted, quantize, zero_target, duplicate, n_parts, sed_frames, True, noise)
            return dataclasses.replace(cache, path=None)
    path = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(
        prefix="casdri-synthetic-"))
    writer = CacheWriter(path, meta)
    srng = np.random.default_rng([seed, 7])  # the SED's own generator
    ids = np.array([r[0] for r in sc_rows])
    sep_ids = np.array(sep_cols["s"])
    tg_ids = np.array([r[0] for r in tg_rows])
    bounds = np.linspace(0, n_soundscapes, max(1, min(n_parts, n_soundscapes)) + 1).astype(int)
    for part, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        keep = set(ids[a:b].tolist())
        rs = [r for r in sc_rows[a:b]]
        sct = sc.soundscapes_table([r[0] for r in rs], [r[1] for r in rs], [r[2] for r in rs],
                                   [r[3] for r in rs], [r[4] for r in rs])
        ti = [i for i, x in enumerate(tg_ids) if x in keep]
        probs = np.concatenate([tg_rows[i][2] for i in ti]) if ti else np.zeros((0, C + 1))
        tgt = sc.tagger_table(np.repeat(tg_ids[ti], K), np.repeat([tg_rows[i][1] for i in ti], K),
                              np.tile(np.arange(K), len(ti)), probs)
        si = np.flatnonzero(np.isin(sep_ids, list(keep)))
        snr_list = [sep_cols["snr"][i] for i in si]
        spt = sc.separations_table(
            sep_ids[si], [sep_cols["sep"][i] for i in si], [sep_cols["st"][i] for i in si],
            [np.asarray(sep_cols["q"][i]) for i in si], [sep_cols["slot"][i] for i in si],
            [sep_cols["e"][i] for i in si], snr_list,
            (np.stack([sep_cols["rt"][i] for i in si]) if len(si) else
             np.zeros((0, K * (C + 1)), np.float32)).reshape(-1, K, C + 1),
            prob_tol=prob_sum_tol(meta))
        sed = None
        if sed_frames > 0:
            sed = sc.sed_table([r[0] for r in rs], ["sed"] * len(rs), [SED_HOP_S] * len(rs),
                               [_sed_probs(srng, sed_frames, C, r[2], min_dur) for r in rs])
        writer.write_part(f"{part:03d}", sct, tgt, spt, sed)
    return load_cache(path) if load else path


def _sed_probs(rng, n_frames: int, C: int, refs, min_dur: dict) -> np.ndarray:
    """``(n_frames, C) float16`` synthetic SED of one soundscape (module docstring)."""
    p = rng.uniform(0.0, 0.25, (n_frames, C))
    refs = set(int(c) for c in refs)
    for c in range(C):
        if c in min_dur:
            k = int(np.floor(min_dur[c] / SED_HOP_S))  # (k + 1) hops > t >= k hops
            lo, hi = (k + 2, n_frames) if c in refs else (1, max(1, k - 1))
            n = int(rng.integers(min(lo, n_frames), min(hi, n_frames) + 1))
        elif not min_dur:
            if c in refs:
                n = int(rng.integers(max(1, n_frames // 5), n_frames + 1))
            elif rng.random() < 0.3:
                n = int(rng.integers(1, min(3, n_frames) + 1))
            else:
                continue
        else:  # planted elsewhere: duration says nothing about this class
            n = int(rng.integers(0, n_frames + 1))
        a = int(rng.integers(0, n_frames - n + 1))
        p[a:a + n, c] = rng.uniform(0.55, 1.0, n)
    return p.astype(np.float16)


def random_settings(cache, policy, n: int, rng: np.random.Generator,
                    grid: Optional[float] = None) -> np.ndarray:
    """``(n, P)`` float64 encoded settings of ``policy``, uniform in its search ranges (rounded
    to multiples of ``grid`` if given; choices drawn uniformly), for tests and benchmarks.

    Example:
        >>> c = make_synthetic_cache(n_soundscapes=3, seed=0)
        >>> random_settings(c, "baseline", 2, np.random.default_rng(0)).shape
        (2, 3)
    """
    cls = params_class(policy)
    X = np.tile(cls().encode(cache), (n, 1))
    for r in cls.search_space(cache):
        if r.choices:
            X[:, r.columns] = rng.choice(r.choices, (n, 1))
        else:
            v = rng.uniform(r.low, r.high, (n, len(r.columns)))
            if r.integer:
                v = np.round(v)
            X[:, r.columns] = np.round(v / grid) * grid if grid and not r.integer else v
    return X
