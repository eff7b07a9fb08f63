"""Made tests/data/frozen_cache_v1 (schema version 1) and its expected.json. Run once; never
rerun for an existing version: the point of a frozen cache is that later casdri versions must
still read it and replay the same numbers (tests/test_schema_cache.py).

    python tests/data/frozen_cache_v1/make_frozen_cache_v1.py
"""
from __future__ import annotations

import json
from pathlib import Path


def main(here: Path = Path(__file__).parent) -> None:
    """Write the cache and its expected.json into ``here`` (this folder; the version-2 script
    writes the same cache into its own)."""
    from casdri.policies import BaselineParams, OracleParams, RefineParams
    from casdri.replay import replay
    from casdri.synthetic import make_synthetic_cache

    cache = make_synthetic_cache(here, n_soundscapes=6, seed=2026, n_stages=2, n_parts=2,
                                 quantize=True, sed_frames=4)
    settings = {
        "baseline": ("baseline", BaselineParams()),
        "baseline_1ch_sepB_stage1": ("baseline", BaselineParams(tagger="1ch", separator=1,
                                                                stage=1)),
        "oracle_select2_stage1": ("oracle", OracleParams(select_separator=2, stage=1)),
        "refine_default": ("refine", RefineParams()),
        "refine_tuned": ("refine", RefineParams(w=0.7, solo_keep_1ch=0.3, verify_thr=0.6,
                                                drop_thr=0.5, energy_gate_db=-20.0,
                                                prob_gate=0.2, silence_thr=0.8,
                                                select_separator=2, stage=1)),
    }
    out = {}
    for name, (policy, params) in settings.items():
        r = replay(cache, policy, params, per_soundscape=True)
        out[name] = {"policy": policy, "params": params.to_dict(cache.label_set),
                     "capi_sdri": float(r.capi_sdri[0]),
                     "accuracy_mix": float(r.accuracy_mix[0]),
                     "accuracy_src": float(r.accuracy_src[0]),
                     "per_soundscape": [None if v != v else float(v)
                                        for v in r.per_soundscape.capi_sdri]}
    (here / "expected.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
