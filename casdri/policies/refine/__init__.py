"""``refine``: the tagging-driven refinement system (dual-tagger fusion, verification with a
re-tagger, re-separation, gates, dual-separator selection).

Conventions:
    * Tagger roles: the tagger named ``4ch`` and the one named ``1ch`` when both exist;
      otherwise the cache's first tagger plays the 4ch role and its second (if any) the 1ch
      role. ``w`` weights the 4ch probability.
    * Thresholds are per class (one float or ``{label: value}``); comparisons are in float64
      on float32 probabilities (as cached). "Off" values: ``verify_thr`` 0, ``drop_thr`` 0,
      ``energy_gate_db`` -inf, ``prob_gate`` 0, ``silence_thr`` +inf, ``solo_keep_*`` 0,
      ``tagger_silence_margin`` +inf, ``tagger_silence_gate`` +inf.

Decision, in this exact order (the jitted `kernel_decide` in ``_kernel.py`` and `decide` below
implement it independently and are tested equal; the change points of each threshold, in
``_change_points.py``, read the kernel's own step (a) and trace):

(a) Fusion. Per track, each tagger's most probable non-silence class (argmax over the C
    classes, ties to the lower index) and its probability. Per class, each tagger's
    instances are sorted by probability (descending; ties keep track order) and paired rank
    by rank. A paired instance has confidence ``w·p_4ch + (1 − w)·p_1ch``; an unpaired one
    keeps its own probability and survives only if it is ``>= solo_keep_4ch[c]`` (or
    ``solo_keep_1ch[c]``). Instances are ordered by (class, rank). The K most confident
    (K = number of tracks) become the queries; ties go to the lower instance (lower class,
    then better rank). Slot order: class ascending, then confidence descending, then instance
    order; slot i of the query carries the confidence of its instance.
    Silence as evidence: each instance also has a fused tagger silence probability (the
    silence column of its tracks' softmax, fused with the same ``w`` for a paired instance).
    An instance whose silence probability exceeds its confidence by more than
    ``tagger_silence_margin`` is not proposed (dropped before the K most confident are
    taken; +inf, the default, is off; 0 mirrors the official rule, where a track whose
    silence probability beats its best class asks for nothing).
(b) Separate: look up the canonical query (sorted ascending).
(f)+(e) Stems of a lookup: stage ``stage`` of separator 0 (``select_separator=0``), of
    separator 1 (``1``), or per slot the one of the two whose re-tagging probability of the
    slot's class is higher, ties to separator 0 (``2``; with one separator, 2 means 0).
(c) Verify on those stems: re-tagging probability of class c = max over retagger tracks.
    Confirmed if it is ``>= verify_thr[c]`` (``verify_mode="threshold"``) or if c is the
    argmax of the C max-over-track probabilities, ties to the lower index (``"argmax"``). An
    unconfirmed slot whose confidence is ``< drop_thr[c]`` is dropped. If any was dropped, the
    remaining queries are looked up again ((b), (f)+(e) once more, no second verification);
    none left → no stems.
(d) Gates on the final stems: silence if ``energy_db < energy_gate_db[c]``, or confidence
    ``< prob_gate[c]``, or retag silence probability (min over tracks) ``>= silence_thr[c]``,
    or the instance's fused tagger silence probability ``>= tagger_silence_gate[c]`` (+inf:
    off).
"""
from __future__ import annotations

import numpy as np

from ...closure import proposal_pool, sub_multisets
from .._base import Decision, Lookup, SoundscapeInputs, pick_slots
from ._change_points import RefineChangePoints
from ._kernel import fusion_roles, kernel_decide, prepare
from ._params import NAME, RefineParams

__all__ = ["NAME", "PARAMS", "START", "RefineParams", "SEARCH_PLAN", "FEATURES", "prepare",
           "kernel_decide", "decide", "required_keys", "change_points", "fusion_roles",
           "fused_instances"]

PARAMS = RefineParams

#: the search's untuned start: the defaults (every gate off, the taggers' silence unused).
#: Measured on the demo cache (seed 0, 5 folds): a start that uses the taggers' silence
#: (``tagger_silence_margin=-0.4``) makes no more false positives than the official argmax rule
#: (120 against 122; the defaults make 301) but scores 2.188 dB against the defaults' 2.516 and
#: the official rule's 2.307, and under the evidence rule ``--stage gates`` then keeps nothing
#: (held-out gain -0.119 dB against +0.501 dB from the defaults); the search moves the silence
#: parameters itself (fusion, gates, per-class plans) when the evidence supports it.
START = RefineParams()

#: stage name -> the fields that stage may move (`search`)
SEARCH_PLAN = {
    "fusion": ("w", "solo_keep_1ch", "solo_keep_4ch", "tagger_silence_margin"),
    "verify": ("verify_thr", "verify_mode", "drop_thr"),
    "gates": ("energy_gate_db", "prob_gate", "silence_thr", "tagger_silence_gate"),
    "per-class": ("verify_thr", "drop_thr", "prob_gate", "silence_thr", "tagger_silence_gate"),
    "select": ("select_separator", "stage"),
    "refine": tuple(RefineParams.field_index()),  # coordinate descent: every field
}
#: decision features whose held-out worth the search reports (`search.result`)
FEATURES = {"tagger silence": ("tagger_silence_margin", "tagger_silence_gate")}


def change_points(cache, prep: dict, trace) -> RefineChangePoints:
    """The change points of every threshold on ``cache`` (see ``_change_points.py``)."""
    return RefineChangePoints(cache, prep, trace)


def fused_instances(inputs: SoundscapeInputs) -> list[tuple]:
    """Step (a) without parameters: ``[(class, p_4ch, p_1ch, s_4ch, s_1ch)]`` in (class, rank)
    order: class and silence probabilities of the instance's tracks (None: absent)."""
    names = list(inputs.tagger_probs)
    ia, ib = fusion_roles(names)
    C = inputs.label_set.n_classes
    lists: list[dict[int, list[float]]] = [{}, {}]
    for role, ti in enumerate((ia, ib)):
        if ti < 0:
            continue
        for row in np.asarray(inputs.tagger_probs[names[ti]]):
            c = int(np.argmax(row[:C]))
            lists[role].setdefault(c, []).append((float(row[c]), float(row[C])))
    out = []
    for c in sorted(set(lists[0]) | set(lists[1])):
        a = sorted(lists[0].get(c, []), key=lambda t: t[0], reverse=True)  # stable: track order
        b = sorted(lists[1].get(c, []), key=lambda t: t[0], reverse=True)
        for r in range(max(len(a), len(b))):
            pa, sa = a[r] if r < len(a) else (None, None)
            pb, sb = b[r] if r < len(b) else (None, None)
            out.append((c, pa, pb, sa, sb))
    return out


def decide(inputs: SoundscapeInputs, params: RefineParams, lookup: Lookup) -> Decision:
    """The refine decision of one soundscape in plain Python (module docstring order).

    Args:
        inputs: the soundscape's tagger outputs (`SoundscapeInputs`).
        params: `RefineParams`.
        lookup: ``lookup(query, separator, stage) -> [SlotStem]`` (one per slot); the cache
            passes `casdri.cache.DecisionCache.lookup`, the live pipeline runs separators.

    Raises:
        CacheKeyError: from ``lookup`` when a query is not available.
    """
    ls = inputs.label_set
    v = {name: params.per_class(name, ls) for name in
         ("solo_keep_1ch", "solo_keep_4ch", "verify_thr", "drop_thr", "energy_gate_db",
          "prob_gate", "silence_thr", "tagger_silence_gate")}
    w = float(params.w)
    margin = float(params.tagger_silence_margin)
    inst = fused_instances(inputs)
    conf, sil = [], []
    for c, a, b, sa, sb in inst:
        if a is not None and b is not None:
            x, si = w * a + (1.0 - w) * b, w * sa + (1.0 - w) * sb
        elif a is not None:
            x, si = (a if a >= v["solo_keep_4ch"][c] else None), sa
        else:
            x, si = (b if b >= v["solo_keep_1ch"][c] else None), sb
        conf.append(None if x is None or si - x > margin else x)
        sil.append(si)
    K = next(iter(inputs.tagger_probs.values())).shape[0]
    alive = [i for i in range(len(inst)) if conf[i] is not None]
    chosen = sorted(alive, key=lambda i: (-conf[i], i))[:K]
    slots = sorted(chosen, key=lambda i: (inst[i][0], -conf[i], i))
    sel, stage, n_sep = int(params.select_separator), int(params.stage), inputs.n_separators
    queries = []
    if not slots:
        return Decision((), (), (), ())
    query = tuple(inst[i][0] for i in slots)
    queries.append(query)
    stems, seps = pick_slots(query, lookup, sel, stage, n_sep)
    dropped = set()
    for k, i in enumerate(slots):
        c = inst[i][0]
        if params.verify_mode == "argmax":
            ok = int(np.argmax(stems[k].retag_max)) == c
        else:
            ok = float(stems[k].retag_max[c]) >= v["verify_thr"][c]
        if not ok and conf[i] < v["drop_thr"][c]:
            dropped.add(k)
    if dropped:
        slots = [i for k, i in enumerate(slots) if k not in dropped]
        if not slots:
            return Decision(tuple(queries), (), (), ())
        query = tuple(inst[i][0] for i in slots)
        queries.append(query)
        stems, seps = pick_slots(query, lookup, sel, stage, n_sep)
    keep = []
    for k, i in enumerate(slots):
        c, st = inst[i][0], stems[k]
        keep.append(not (st.energy_db < v["energy_gate_db"][c] or conf[i] < v["prob_gate"][c]
                         or st.retag_silence_min >= v["silence_thr"][c]
                         or sil[i] >= v["tagger_silence_gate"][c]))
    return Decision(tuple(queries), tuple(stems), tuple(seps), tuple(keep))


def required_keys(inputs: SoundscapeInputs, search_space=None) -> set[tuple[int, ...]]:
    """Every query refine can ask for: the query closure (`casdri.closure`) of the proposal
    pool with ``top_n = 1`` (per (tagger, track) the top-1 non-silence class, ties included;
    multiplicity capped at K), sub-multisets of size 1..K."""
    K = next(iter(inputs.tagger_probs.values())).shape[0]
    return set(sub_multisets(proposal_pool(inputs.tagger_probs, 1, K), K))
