"""Slow, obvious replay of the casdri policies, written from the spec (the issue text and
the policy docstrings), not from the kernels: it reads the raw Parquet tables with pandas,
keeps everything in dicts and scores with `casdri.metric.capi_sdri_from_snr`.

Used by tests/test_replay_exact.py to check the jitted replay on random caches.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from casdri import schema as sc
from casdri.labels import SILENCE
from casdri.metric import capi_sdri_from_snr, label_counts


@dataclass
class RawCache:
    classes: list
    taggers: list
    separators: list
    refs: dict        # id -> list of class indices (oracle order)
    snr_mix: dict     # id -> list of dB
    tagger: dict      # (id, tagger name) -> (K, C+1) array
    stems: dict       # (id, separator name, stage, query tuple) -> [slot dict]


def _read(path: Path, table: str) -> pd.DataFrame:
    files = sorted((path / table).glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def load_raw(path) -> RawCache:
    path = Path(path)
    meta = json.loads((path / sc.META_FILE).read_text())
    C = len(meta["classes"])
    sd = _read(path, "soundscapes")
    refs = {r[sc.SOUNDSCAPE]: [int(x) for x in r[sc.REF_LABELS]] for _, r in sd.iterrows()}
    mix = {r[sc.SOUNDSCAPE]: [float(x) for x in r[sc.SNR_MIX_DB]] for _, r in sd.iterrows()}
    tg: dict = {}
    for _, r in _read(path, "tagger").iterrows():
        tg.setdefault((r[sc.SOUNDSCAPE], r[sc.TAGGER_NAME]), {})[int(r[sc.TRACK])] = \
            np.asarray(r[sc.PROBS], np.float32)
    tagger = {k: np.stack([v[t] for t in sorted(v)]) for k, v in tg.items()}
    stems: dict = {}
    for _, r in _read(path, "separations").iterrows():
        key = (r[sc.SOUNDSCAPE], r[sc.SEPARATOR], int(r[sc.STAGE]),
               tuple(int(x) for x in r[sc.QUERY]))
        if isinstance(r.get(sc.RETAG_MAX), np.ndarray):  # schema version 2
            p, sil = np.asarray(r[sc.RETAG_MAX], np.float32), float(r[sc.RETAG_SILENCE_MIN])
        else:  # version 1: the retagger's whole softmax, reduced here
            retag = np.asarray(r[sc.RETAG], np.float32).reshape(meta["n_tracks"], C + 1)
            p, sil = retag[:, :C].max(axis=0), float(retag[:, C].min())
        stems.setdefault(key, {})[int(r[sc.SLOT])] = dict(
            energy=float(r[sc.ENERGY_DB]), snr=[float(x) for x in r[sc.SNR_DB]], p=p, sil=sil)
    stems = {k: [v[i] for i in sorted(v)] for k, v in stems.items()}
    return RawCache(meta["classes"], meta["taggers"], meta["separators"], refs, mix, tagger,
                    stems)


def _stems(raw, sid, query, select, stage):
    """(f) then (e): per slot, the chosen separator's stem."""
    if select != 2 or len(raw.separators) == 1:
        sep = raw.separators[0 if select == 2 else select]
        return raw.stems[(sid, sep, stage, query)]
    a = raw.stems[(sid, raw.separators[0], stage, query)]
    b = raw.stems[(sid, raw.separators[1], stage, query)]
    return [sb if sb["p"][c] > sa["p"][c] else sa for c, sa, sb in zip(query, a, b)]


def _score(raw, sid, est: list[tuple[int, dict]]):
    """CAPI-SDRi and label counts of (class or -1, stem) rows."""
    refs = raw.refs[sid]
    names = raw.classes
    est_labels = [names[c] if c >= 0 else SILENCE for c, _ in est]
    ref_labels = [names[c] for c in refs]
    snr = np.array([[st["snr"][r] for r in range(len(refs))] for _, st in est]).reshape(
        len(est), len(refs))
    value = capi_sdri_from_snr(est_labels, ref_labels, snr, np.array(raw.snr_mix[sid]))
    return value, label_counts(est_labels, ref_labels)


def baseline(raw, sid, p: dict):
    name = p["tagger"]
    if name is None:
        name = "4ch" if "4ch" in raw.taggers else raw.taggers[0]
    probs = raw.tagger[(sid, name)]
    C = len(raw.classes)
    query = tuple(sorted(int(np.argmax(row)) for row in probs if int(np.argmax(row)) != C))
    if not query:
        return _score(raw, sid, [])
    stems = _stems(raw, sid, query, p["separator"], p["stage"])
    return _score(raw, sid, list(zip(query, stems)))


def oracle(raw, sid, p: dict):
    query = tuple(sorted(raw.refs[sid]))
    if not query:
        return _score(raw, sid, [])
    stems = _stems(raw, sid, query, p["select_separator"], p["stage"])
    return _score(raw, sid, list(zip(query, stems)))


def refine(raw, sid, p: dict):
    """p: thresholds as (C,) arrays, w, tagger_silence_margin, verify_mode, select_separator,
    stage."""
    C = len(raw.classes)
    if "4ch" in raw.taggers and "1ch" in raw.taggers:
        four, one = "4ch", "1ch"
    else:
        four, one = raw.taggers[0], (raw.taggers[1] if len(raw.taggers) > 1 else None)
    # (a) per track each tagger's top-1 non-silence class; pair per class by rank
    per = {}
    for role, name in (("4ch", four), ("1ch", one)):
        if name is None:
            continue
        for row in raw.tagger[(sid, name)]:
            c = int(np.argmax(row[:C]))
            per.setdefault((role, c), []).append((float(row[c]), float(row[C])))
    inst = []  # (class, rank, confidence or None)
    sil = {}  # instance -> its tracks' silence probability, fused like the confidence
    for c in range(C):
        a = sorted(per.get(("4ch", c), []), key=lambda t: -t[0])
        b = sorted(per.get(("1ch", c), []), key=lambda t: -t[0])
        for r in range(max(len(a), len(b))):
            if r < len(a) and r < len(b):
                conf = p["w"] * a[r][0] + (1.0 - p["w"]) * b[r][0]
                s = p["w"] * a[r][1] + (1.0 - p["w"]) * b[r][1]
            elif r < len(a):
                conf = a[r][0] if a[r][0] >= p["solo_keep_4ch"][c] else None
                s = a[r][1]
            else:
                conf = b[r][0] if b[r][0] >= p["solo_keep_1ch"][c] else None
                s = b[r][1]
            if conf is not None and s - conf > p["tagger_silence_margin"]:
                conf = None  # silence more probable than the class by more than the margin
            sil[len(inst)] = s
            inst.append((c, r, conf))
    K = next(v for k, v in raw.tagger.items() if k[0] == sid).shape[0]
    alive = [(i, x) for i, x in enumerate(inst) if x[2] is not None]
    top = sorted(alive, key=lambda ix: (-ix[1][2], ix[0]))[:K]
    slots = sorted(top, key=lambda ix: (ix[1][0], -ix[1][2], ix[0]))
    if not slots:
        return _score(raw, sid, [])

    def lookup(slots):
        q = tuple(x[0] for _, x in slots)
        return _stems(raw, sid, q, p["select_separator"], p["stage"])

    stems = lookup(slots)
    keep_slots = []
    for (i, (c, _, conf)), st in zip(slots, stems):
        if p["verify_mode"] == "argmax":
            confirmed = int(np.argmax(st["p"])) == c
        else:
            confirmed = float(st["p"][c]) >= p["verify_thr"][c]
        if confirmed or conf >= p["drop_thr"][c]:
            keep_slots.append((i, (c, _, conf)))
    if len(keep_slots) < len(slots):
        slots = keep_slots
        if not slots:
            return _score(raw, sid, [])
        stems = lookup(slots)
    est = []
    for (i, (c, _, conf)), st in zip(slots, stems):
        silent = (st["energy"] < p["energy_gate_db"][c] or conf < p["prob_gate"][c]
                  or st["sil"] >= p["silence_thr"][c] or sil[i] >= p["tagger_silence_gate"][c])
        est.append((-1 if silent else c, st))
    return _score(raw, sid, est)


POLICIES = {"baseline": baseline, "refine": refine, "oracle": oracle}


def naive_replay(raw: RawCache, policy: str, params: dict,
                 ids: Optional[list] = None) -> dict:
    """``{soundscape id: (value or None, LabelCounts)}``."""
    fn = POLICIES[policy]
    return {sid: fn(raw, sid, params) for sid in (ids or sorted(raw.refs))}
