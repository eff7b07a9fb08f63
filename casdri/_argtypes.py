"""Deprecated: moved to `casdri._cli` (kept until ``search/cli.py`` imports from there)."""
from ._cli import int_at_least

__all__ = ["int_at_least"]
