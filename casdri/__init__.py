"""casdri: exact CAPI-SDRi scoring, a Parquet decision cache and fast exact replay of label
decisions for DCASE 2026 Task 4 (Spatial Semantic Segmentation of Sound Scenes, S5).

Public names are re-exported here and imported on first use (PEP 562 ``__getattr__``), so
``import casdri`` (and ``casdri --help``) loads neither numpy-heavy modules, pandas nor
numba until a name that needs them is touched; torch is never imported by casdri.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from .errors import (
    AudioFileError, CacheError, CacheKeyError, CacheSchemaError, CasdriError, FolderLayoutError,
    InputError, LabelError, MissingDependencyError, PolicyError,
)

__version__ = "0.1.0"

#: public name → the submodule that defines it
_LAZY = {
    **dict.fromkeys(("CapiSdri", "CapiSdriResult"), "accumulator"),
    **dict.fromkeys(("CacheWriter", "DecisionCache", "demo_cache_path", "load_cache",
                     "upgrade_cache", "write_part"), "cache"),
    **dict.fromkeys(("DCASE2026T4", "DCASE2025T4", "SILENCE", "LabelSet", "get_label_set"),
                    "labels"),
    **dict.fromkeys(("LabelCounts", "ca_sdri_2025", "capi_sdri", "capi_sdri_from_snr",
                     "label_accuracies", "label_counts", "snr_db"), "metric"),
    **dict.fromkeys(("BaselineParams", "OracleParams", "RefineParams", "get_policy",
                     "load_policy_yaml", "required_keys"), "policies"),
    **dict.fromkeys(("ReplayMatrix", "ReplayResult", "decisions", "replay", "replay_matrix",
                     "replay_pairs", "trace"), "replay"),
    **dict.fromkeys(("SCHEMA_VERSION", "CacheMeta"), "schema"),
    "score_folders": "scoring",
    **dict.fromkeys(("GapExplanation", "explain", "explain_folders"), "gap"),
    **dict.fromkeys(("Comparison", "compare", "compare_values"), "paired"),
    "what_if": "whatif",
}

__all__ = [
    "__version__",
    "snr_db", "capi_sdri", "capi_sdri_from_snr", "ca_sdri_2025",
    "label_counts", "label_accuracies", "LabelCounts",
    "CapiSdri", "CapiSdriResult",
    "LabelSet", "get_label_set", "DCASE2026T4", "DCASE2025T4", "SILENCE",
    "score_folders",
    "load_cache", "demo_cache_path", "upgrade_cache", "DecisionCache", "CacheWriter",
    "write_part", "CacheMeta",
    "SCHEMA_VERSION",
    "explain", "explain_folders", "GapExplanation", "what_if", "compare", "compare_values",
    "Comparison",
    "replay", "replay_matrix", "replay_pairs", "decisions", "trace", "ReplayResult", "ReplayMatrix",
    "BaselineParams", "RefineParams", "OracleParams", "get_policy", "load_policy_yaml",
    "required_keys",
    "CasdriError", "InputError", "LabelError", "AudioFileError", "FolderLayoutError",
    "CacheError", "CacheSchemaError", "CacheKeyError", "PolicyError", "MissingDependencyError",
]


def __getattr__(name: str):
    """Import the submodule of a public name on first use (PEP 562) and cache the name."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'casdri' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``casdri.replay`` is the function, as with an eager ``from .replay import replay``,
    even after the submodule ``casdri.replay`` is imported (the import system then sets the
    package attribute to the submodule; this property ignores that)."""

    @property
    def replay(self):
        return importlib.import_module(".replay", __name__).replay

    @replay.setter
    def replay(self, value) -> None:
        pass


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # static tools see the eager imports
    from .accumulator import CapiSdri, CapiSdriResult  # noqa: F401
    from .cache import (  # noqa: F401
        CacheWriter, DecisionCache, demo_cache_path, load_cache, upgrade_cache, write_part,
    )
    from .labels import DCASE2025T4, DCASE2026T4, SILENCE, LabelSet, get_label_set  # noqa: F401
    from .metric import (  # noqa: F401
        LabelCounts, ca_sdri_2025, capi_sdri, capi_sdri_from_snr, label_accuracies,
        label_counts, snr_db,
    )
    from .policies import (  # noqa: F401
        BaselineParams, OracleParams, RefineParams, get_policy, load_policy_yaml, required_keys,
    )
    from .replay import (  # noqa: F401
        ReplayMatrix, ReplayResult, decisions, replay, replay_matrix, replay_pairs, trace,
    )
    from .gap import GapExplanation, explain, explain_folders  # noqa: F401
    from .paired import Comparison, compare, compare_values  # noqa: F401
    from .schema import SCHEMA_VERSION, CacheMeta  # noqa: F401
    from .scoring import score_folders  # noqa: F401
    from .whatif import what_if  # noqa: F401
