"""casdri: exact CAPI-SDRi scoring, a Parquet decision cache and fast exact replay of label
decisions for DCASE 2026 Task 4 (Spatial Semantic Segmentation of Sound Scenes, S5).

Public names are re-exported here; torch is never imported by ``import casdri``.
"""
from __future__ import annotations

from .accumulator import CapiSdri, CapiSdriResult
from .cache import CacheWriter, DecisionCache, load_cache, write_part
from .errors import (
    AudioFileError, CacheError, CacheKeyError, CacheSchemaError, CasdriError, FolderLayoutError,
    InputError, LabelError, PolicyError,
)
from .gap import GapExplanation, explain, explain_folders
from .labels import DCASE2025T4, DCASE2026T4, SILENCE, LabelSet, get_label_set
from .metric import (
    LabelCounts, ca_sdri_2025, capi_sdri, capi_sdri_from_snr, label_accuracies, label_counts,
    snr_db,
)
from .paired import Comparison, compare, compare_values
from .policies import (
    BaselineParams, OracleParams, RefineParams, get_policy, load_policy_yaml, required_keys,
)
from .replay import (
    ReplayMatrix, ReplayResult, decisions, replay, replay_matrix, replay_pairs, trace,
)
from .schema import SCHEMA_VERSION, CacheMeta
from .scoring import score_folders
from .whatif import what_if

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "snr_db", "capi_sdri", "capi_sdri_from_snr", "ca_sdri_2025",
    "label_counts", "label_accuracies", "LabelCounts",
    "CapiSdri", "CapiSdriResult",
    "LabelSet", "get_label_set", "DCASE2026T4", "DCASE2025T4", "SILENCE",
    "score_folders",
    "load_cache", "DecisionCache", "CacheWriter", "write_part", "CacheMeta", "SCHEMA_VERSION",
    "explain", "explain_folders", "GapExplanation", "what_if", "compare", "compare_values",
    "Comparison",
    "replay", "replay_matrix", "replay_pairs", "decisions", "trace", "ReplayResult", "ReplayMatrix",
    "BaselineParams", "RefineParams", "OracleParams", "get_policy", "load_policy_yaml",
    "required_keys",
    "CasdriError", "InputError", "LabelError", "AudioFileError", "FolderLayoutError",
    "CacheError", "CacheSchemaError", "CacheKeyError", "PolicyError",
]
