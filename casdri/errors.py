"""Errors raised by casdri.

Conventions: every error names what was expected, what came, where (file, column or
argument) and the fix. Each leaf also subclasses the builtin a caller would expect, so
``except ValueError`` keeps working.
"""
from __future__ import annotations

__all__ = [
    "CasdriError",
    "InputError",
    "LabelError",
    "AudioFileError",
    "FolderLayoutError",
    "CacheError",
    "CacheSchemaError",
    "CacheKeyError",
    "PolicyError",
    "MissingDependencyError",
]


class CasdriError(Exception):
    """Base class of every error casdri raises on purpose."""


class InputError(CasdriError, ValueError):
    """Arrays or arguments that cannot be scored as given."""


class LabelError(InputError):
    """A label outside the label set, or label lists that do not match the arrays."""


class AudioFileError(InputError):
    """An audio file that is unreadable, has the wrong rate or channels, or holds NaN/Inf."""


class FolderLayoutError(InputError):
    """A DCASE folder whose file names cannot be matched to soundscapes unambiguously."""


class CacheError(CasdriError, OSError):
    """A decision cache that cannot be read or written."""


class CacheSchemaError(CasdriError, ValueError):
    """A cache table or metadata that does not follow `casdri.schema`."""


class CacheKeyError(CasdriError, KeyError):
    """A query key that a policy asks for and the cache does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class PolicyError(CasdriError, ValueError):
    """Policy parameters out of range or of the wrong shape."""


class MissingDependencyError(CasdriError, ImportError):
    """An optional package (an extra such as ``[builder]``) that is not installed; the
    message gives the ``pip install`` line."""
