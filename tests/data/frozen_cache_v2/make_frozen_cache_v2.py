"""Made tests/data/frozen_cache_v2 (schema version 2: the retagger kept as `retag_max` and
`retag_silence_min`) and its expected.json. Run once; never rerun for an existing version: the
point of a frozen cache is that later casdri versions must still read it and replay the same
numbers (tests/test_schema_cache.py). It is version 1's cache, made by version 1's script (same
seed, same settings) run by version 2's writer, so both replay the same numbers (tested).

    python tests/data/frozen_cache_v2/make_frozen_cache_v2.py
"""
from __future__ import annotations

import importlib.util
from pathlib import Path


def main() -> None:
    here = Path(__file__).parent
    script = here.parent / "frozen_cache_v1" / "make_frozen_cache_v1.py"
    spec = importlib.util.spec_from_file_location("make_frozen_cache_v1", script)
    v1 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(v1)
    v1.main(here)


if __name__ == "__main__":
    main()
