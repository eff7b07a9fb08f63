"""cache_builder: the torch side of casdri (system YAML, model loading, query closure,
batched cache builds, live apply and the ``casdri-cache`` CLI).

Importing ``cache_builder`` is cheap: torch and the submodules load on first use of a
public name (``cache_builder.build_cache`` imports ``cache_builder.build`` then).
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "load_system", "System", "SystemSpec", "ModelSpec",
    "SystemConfigError", "CheckpointError", "ModelOutputError",
    "query_closure", "canonical_query", "proposal_pool",
    "build_cache", "BuildReport", "validate_cache", "cache_info",
    "apply_policy", "ApplyReport",
]

_WHERE = {
    "load_system": "system", "System": "system", "SystemSpec": "system", "ModelSpec": "system",
    "SystemConfigError": "system", "CheckpointError": "system", "ModelOutputError": "system",
    "query_closure": "closure", "canonical_query": "closure", "proposal_pool": "closure",
    "build_cache": "build", "BuildReport": "build", "validate_cache": "build",
    "cache_info": "build",
    "apply_policy": "apply", "ApplyReport": "apply",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        module = importlib.import_module(f".{_WHERE[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cache_builder' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
