"""Where the score is lost: the distance from a system's CAPI-SDRi to the oracle labelling
bound, split into named parts that sum exactly to it (overall, per class, per scene type).

Conventions:
    * The oracle labelling bound is the ``oracle`` policy (the reference labels as the query) on
      the same cache: by default the best of its separator / stage choices by dataset
      CAPI-SDRi (the rule `search.run` reports as "oracle labelling bound"). For stem folders it
      is a second folder holding the same separator's stems queried with the oracle labels (e.g.
      ``casdri-cache apply`` of an ``oracle`` policy YAML with ``--oracle``).
    * Parts (dB, gap = oracle - system = Σ parts), in the order the corrections are applied:
      `casdri._gap_states.PARTS` (false positives on zero-target soundscapes, other false
      positives, missed sources, wrong class, same-class count errors, separation quality).
      Definitions, order and the exact attribution rule are in `casdri._gap_states`. A part
      can be negative (e.g. separation, when the system's stems beat the oracle query's).
    * Scene types: number of references (0, 1, 2, 3) and whether a class repeats
      (`casdri._gap_states.scene_type`).
    * Every state is scored with the metric's own steps on cached (or computed) SNRs; for a
      cache, the system and oracle states are checked against `casdri.replay_matrix` (1e-9 dB
      per soundscape) before anything is returned.

Source of the metric: see `casdri.metric` (nttcslab/dcase2026_task4_baseline @ 20e6992).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import _gap_states as _gap
from ._tables import explanation_text
from .cache import load_cache
from .errors import InputError
from .folders import read_soundscape, scan_folders
from .labels import SILENCE
from .metric import snr_db
from .policies import OracleParams, get_policy, params_class
from .replay import _mask_idx, decisions, replay, replay_matrix

__all__ = ["GapExplanation", "explain", "explain_folders", "best_oracle_params", "cache_clips"]


@dataclass(frozen=True)
class GapExplanation:
    """The decomposition (all values dB of dataset CAPI-SDRi).

    Attributes:
        system_db, oracle_db: dataset means of the system and of the oracle state.
        gap_db: ``oracle_db - system_db`` (= the sum of the parts).
        parts: one row per part: ``part``, ``description``, ``gap_db``, ``events`` (stems or
            references concerned), ``state_db`` (dataset mean once this fix is applied too).
        per_class: one row per class touched: ``class``, one column per part, ``total``.
        per_scene: one row per scene type: ``scene``, ``n_soundscapes``, ``system_db``,
            ``oracle_db`` (means within the type, NaN when none is scored), one column per
            part, ``total``.
        per_soundscape: ``soundscape``, ``scene``, ``system_db``, ``oracle_db`` (NaN = None),
            one column per part (the soundscape's share), ``total``.
        source: what was explained.
    """

    system_db: float
    oracle_db: float
    gap_db: float
    parts: pd.DataFrame
    per_class: pd.DataFrame
    per_scene: pd.DataFrame
    per_soundscape: pd.DataFrame
    source: str = ""
    clips: tuple = field(default=(), repr=False)
    plans: tuple = field(default=(), repr=False)

    def to_text(self, max_classes: int = 18) -> str:
        """Compact plain-text tables (what ``casdri explain`` prints)."""
        return explanation_text(self, max_classes)


def best_oracle_params(cache, mask=None):
    """`OracleParams` of the best separator / stage choice by dataset CAPI-SDRi (first max)."""
    space = OracleParams.search_space(cache)
    X = np.array(list(itertools.product(*[r.choices for r in space])), np.float64)
    means = replay(cache, "oracle", X, mask=mask).capi_sdri
    best = int(np.argmax(np.where(np.isnan(means), -np.inf, means)))
    return OracleParams.decode(X[best], cache)


class _Rows:
    """The stems of a `casdri.decisions` table, grouped by soundscape id as positions (plain
    arrays: a DataFrame per soundscape cost a quarter of a second on 500 soundscapes)."""

    def __init__(self, dec: pd.DataFrame):
        self.stem_row = dec["stem_row"].to_numpy()
        self.label = dec["label"].to_numpy(dtype=object)
        self.at = dec.groupby("soundscape", sort=False).indices


def _stems(cache, rows: _Rows, sid: str, s: int):
    labels, stem_rows, snr = [], [], []
    for i in rows.at.get(sid, ()):
        label = rows.label[i]
        if label == SILENCE:
            continue
        r = int(rows.stem_row[i])
        labels.append(label)
        stem_rows.append(r)
        snr.append(cache.stem_snr_db[cache.stem_snr_offsets[r]:cache.stem_snr_offsets[r + 1]])
    n_ref = int(cache.ref_offsets[s + 1] - cache.ref_offsets[s])
    return (tuple(labels), np.array(snr, np.float64).reshape(len(stem_rows), n_ref),
            tuple(stem_rows))


def cache_clips(cache, policy, params, oracle=None, mask=None) -> tuple[list, np.ndarray, object]:
    """``(clips, sidx, oracle params)``: one `casdri._gap_states.GapClip` per soundscape of ``mask``
    from the decisions of ``policy`` / ``params`` and of the oracle (`casdri.decisions`)."""
    sidx = _mask_idx(cache, mask)
    oracle = best_oracle_params(cache, sidx) if oracle is None else oracle
    by = _Rows(decisions(cache, policy, params, mask=sidx))
    oby = _Rows(decisions(cache, "oracle", oracle, mask=sidx))
    names = cache.meta.classes
    clips = []
    for s in sidx:
        sid = str(cache.soundscape_ids[s])
        r0, r1 = cache.ref_offsets[s], cache.ref_offsets[s + 1]
        el, es, ei = _stems(cache, by, sid, s)
        ol, os_, oi = _stems(cache, oby, sid, s)
        clips.append(_gap.GapClip(sid, tuple(names[c] for c in cache.ref_labels[r0:r1]),
                                  np.asarray(cache.snr_mix_db[r0:r1], np.float64),
                                  el, es, ol, os_, ei, oi))
    return clips, sidx, oracle


def _check_replay(cache, policy, params, sidx, values, what: str) -> None:
    ref = replay_matrix(cache, policy, params, mask=sidx).values[0]
    same_none = np.array_equal(np.isnan(ref), np.isnan(values))
    diff = np.nanmax(np.abs(ref - values)) if (~np.isnan(ref)).any() else 0.0
    if not same_none or diff > 1e-9:
        raise RuntimeError(f"casdri bug: the {what} state does not reproduce casdri.replay "
                          f"(None pattern equal: {same_none}, max |diff| {diff:.3g} dB)")


def explain(cache, policy="baseline", params=None, oracle=None, mask=None) -> GapExplanation:
    """Decompose a replayed policy's gap to the oracle labelling bound on a cache.

    Args:
        cache: a `casdri.DecisionCache` or its directory.
        policy: policy name or module (``baseline``, ``refine``, ...).
        params: the policy's parameters (object or encoded ``(P,)``); None: its defaults.
        oracle: `casdri.OracleParams` of the bound; None: `best_oracle_params`.
        mask: soundscapes (bool ``(S,)`` or indices; None = all).

    Returns:
        `GapExplanation` (parts sum to ``gap_db``; per-class and per-scene tables sum to
        each part; see `casdri._gap_states` for definitions).

    Raises:
        CacheKeyError: the cache lacks the oracle key or a key the policy asks for.
        PolicyError: bad parameters. InputError: no soundscape with targets.

    Example:
        >>> from casdri.synthetic import make_synthetic_cache
        >>> e = explain(make_synthetic_cache(n_soundscapes=30, seed=2))
        >>> exact = bool(abs(e.parts.gap_db.sum() - e.gap_db) < 1e-9)
        >>> round(e.system_db, 4), round(e.gap_db, 4), exact
        (5.4279, 2.606, True)
    """

    if not hasattr(cache, "key_codes"):
        cache = load_cache(cache)
    mod = get_policy(policy)
    params = params_class(mod)() if params is None else params
    clips, sidx, oracle = cache_clips(cache, mod, params, oracle, mask)
    splits = ", ".join(sorted({str(v) for v in cache.splits[sidx]}))
    expl = decompose(clips, f"policy {mod.NAME} on cache {cache.path}, {len(sidx)} soundscapes "
                            f"(split {splits})")
    _check_replay(cache, mod, params, sidx, expl.per_soundscape["system_db"].to_numpy(),
                  "system")
    _check_replay(cache, "oracle", oracle, sidx, expl.per_soundscape["oracle_db"].to_numpy(),
                  "oracle")
    return expl


def folder_clips(soundscape_dir, oracle_dir, estimate_dir, oracle_estimate_dir,
                 label_set="dcase2026t4") -> list:
    """One `casdri._gap_states.GapClip` per soundscape of a folder set (full SNR matrices
    from the audio, read as float32 as officially)."""

    sys_files = scan_folders(soundscape_dir, oracle_dir, estimate_dir, label_set)
    ora_files = {f.name: f for f in scan_folders(soundscape_dir, oracle_dir, oracle_estimate_dir,
                                                 label_set)}
    clips = []
    for files in sys_files:
        a = read_soundscape(files)
        o = read_soundscape(ora_files[files.name])
        refs = [i for i, x in enumerate(a.ref_labels) if x != SILENCE]
        ref = a.ref_wavs[refs]
        mix = snr_db(a.mixture, ref)[0] if refs else np.zeros(0)
        out = []
        for audio in (a, o):
            keep = [i for i, x in enumerate(audio.est_labels) if x != SILENCE]
            snr = snr_db(audio.est_wavs[keep], ref) if keep and refs else np.zeros((len(keep),
                                                                                     len(refs)))
            out.append((tuple(audio.est_labels[i] for i in keep), snr,
                        tuple(files.ests[i].path.name if audio is a else
                              ora_files[files.name].ests[i].path.name for i in keep)))
        clips.append(_gap.GapClip(files.name, tuple(a.ref_labels[i] for i in refs), mix,
                                  out[0][0], out[0][1], out[1][0], out[1][1], out[0][2],
                                  out[1][2]))
    return clips


def explain_folders(soundscape_dir, oracle_dir, estimate_dir, oracle_estimate_dir,
                    label_set="dcase2026t4") -> GapExplanation:
    """Decompose a stem folder's gap to the same separator queried with the oracle labels.

    Args:
        soundscape_dir, oracle_dir, estimate_dir: as in `casdri.score_folders`.
        oracle_estimate_dir: the stems of the same separator queried with the oracle labels
            (one stem per reference, labelled as the references).
        label_set: label set of the file labels.

    Returns:
        `GapExplanation`; ``system_db`` equals `casdri.score_folders` on the same folders.

    Raises:
        FolderLayoutError, LabelError, AudioFileError: as `casdri.score_folders`.
        InputError: an oracle-estimate soundscape whose labels are not its references'.
    """
    return decompose(folder_clips(soundscape_dir, oracle_dir, estimate_dir, oracle_estimate_dir,
                                  label_set), f"stems {estimate_dir} (oracle stems "
                                              f"{oracle_estimate_dir})")


def decompose(clips, source: str = "") -> GapExplanation:
    """The decomposition of explicit `casdri._gap_states.GapClip` inputs (the front ends call
    it; tests plant errors through it)."""
    if not clips:
        raise InputError("no soundscape to explain")
    plans = [_gap.plan_clip(c) for c in clips]
    states = [_gap.state_values(clips, plans, _gap.PARTS[:k]) for k in range(len(_gap.PARTS) + 1)]
    scenes = [_gap.scene_type(c.ref_labels) for c in clips]
    share = {}
    cls_share: dict = {}
    for k, part in enumerate(_gap.PARTS):
        (va, pa, ma), (vb, pb, _) = states[k], states[k + 1]
        share[part], by_class = _gap.attribute(va, pa, ma, vb, pb)
        for d in by_class:
            for c, x in d.items():
                cls_share.setdefault(c, dict.fromkeys(_gap.PARTS, 0.0))[part] += x
    means = [st[2] for st in states]
    events = {p: sum(pl.counts.get(p, 0) for pl in plans) for p in _gap.PARTS}
    parts = pd.DataFrame({"part": list(_gap.PARTS),
                          "description": [_gap.PART_NAMES[p] for p in _gap.PARTS],
                          "gap_db": [means[k + 1] - means[k] for k in range(len(_gap.PARTS))],
                          "events": [events[p] for p in _gap.PARTS],
                          "state_db": means[1:]})
    ps = pd.DataFrame({"soundscape": [c.soundscape for c in clips], "scene": scenes,
                       "system_db": states[0][0], "oracle_db": states[-1][0],
                       **{p: share[p] for p in _gap.PARTS}})
    ps["total"] = ps[list(_gap.PARTS)].sum(axis=1)
    pc = pd.DataFrame([{"class": c, **v} for c, v in sorted(cls_share.items())],
                      columns=["class", *_gap.PARTS])
    pc["total"] = pc[list(_gap.PARTS)].sum(axis=1)
    order = sorted(set(scenes), key=lambda x: (int(x.split()[0]), "duplicate" in x))
    g = ps.groupby("scene")
    sc = pd.DataFrame({"scene": order,
                       "n_soundscapes": [int(g.size()[x]) for x in order],
                       "system_db": [_gap.dataset_mean(g.get_group(x)["system_db"])
                                     for x in order],
                       "oracle_db": [_gap.dataset_mean(g.get_group(x)["oracle_db"])
                                     for x in order],
                       **{p: [float(g[p].sum()[x]) for x in order] for p in _gap.PARTS}})
    sc["total"] = sc[list(_gap.PARTS)].sum(axis=1)
    return GapExplanation(means[0], means[-1], means[-1] - means[0], parts, pc, sc, ps, source,
                          tuple(clips), tuple(plans))
