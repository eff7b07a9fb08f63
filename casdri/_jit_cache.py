"""Where Numba keeps casdri's compiled kernels: a user cache folder, never the package.

Numba's default (``cache=True``) writes ``__pycache__/*.nbi``/``*.nbc`` beside the source when
that folder is writable, i.e. into ``site-packages/casdri`` after ``pip install .``. ``pip
uninstall`` does not know those files, so they survive it; the leftover ``casdri/`` folder then
becomes a namespace package that shadows a later editable install (``pip install -e .``) and
``import casdri`` finds no modules. Every casdri kernel is therefore cached in

* ``$NUMBA_CACHE_DIR`` when set (Numba's own override, honoured as Numba does), else
* ``<user cache dir>/casdri/numba``: ``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, the
  platform's equivalent elsewhere (``numba.misc.appdirs``, the same rule Numba uses for its
  user-wide cache), else
* ``<temp dir>/casdri-numba-<user>`` when neither is writable (a read-only home on a CI
  runner: the kernels still compile once per machine boot, not once per process), else
* no disk cache at all: kernels compile in every process (slower starts, the same numbers).

Inside that folder Numba's own layout is kept: one sub-folder per source file path (two
checkouts never share entries) and entries stamped by the source file's time and size.
"""
from __future__ import annotations

import getpass
import os
import tempfile

import numba
from numba.core import config
from numba.core.caching import (CompileResultCacheImpl, FunctionCache, UserProvidedCacheLocator,
                                _CacheLocator, _SourceFileBackedLocatorMixin)
from numba.misc.appdirs import AppDirs

__all__ = ["cache_root", "KernelCache", "attach_cache", "njit_cached", "is_cached"]


def cache_root() -> str:
    """The folder that holds casdri's compiled kernels (see the module docstring); a path,
    which may not exist yet."""
    if config.CACHE_DIR:
        return config.CACHE_DIR
    return os.path.join(AppDirs(appname="casdri", appauthor=False).user_cache_dir, "numba")


class _UserCacheLocator(_SourceFileBackedLocatorMixin, _CacheLocator):
    """Numba locator for ``<_root()>/<source path digest>``, the root being `cache_root`."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(self._root(), self.get_suitable_cache_subpath(py_file))

    @staticmethod
    def _root() -> str:
        return cache_root()

    def get_cache_path(self):
        return self._cache_path


class _TempCacheLocator(_UserCacheLocator):
    """Last resort: ``<temp dir>/casdri-numba-<user>/<source path digest>``."""

    @staticmethod
    def _root() -> str:
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no user name (some containers): one shared folder
            user = "user"
        return os.path.join(tempfile.gettempdir(), f"casdri-numba-{user}")


class _Impl(CompileResultCacheImpl):
    # Numba's list without its in-tree locator (the package folder): `$NUMBA_CACHE_DIR` first,
    # as in Numba, then the user cache folder, then the temp folder.
    _locator_classes = [UserProvidedCacheLocator, _UserCacheLocator, _TempCacheLocator]


class KernelCache(FunctionCache):
    """Numba's ``FunctionCache`` placed by `cache_root` instead of beside the source."""

    _impl_class = _Impl


def attach_cache(dispatcher, cache_class=KernelCache, *args):
    """Give a Numba dispatcher the disk cache ``cache_class(dispatcher.py_func, *args)``
    (a `KernelCache` or a subclass); keep it uncached when no folder is writable."""
    try:
        dispatcher._cache = cache_class(dispatcher.py_func, *args)
    except RuntimeError:  # Numba: "no locator available" (no writable cache folder)
        pass
    return dispatcher


def is_cached(dispatcher) -> bool:
    """True when ``dispatcher`` is compiled in this process or stored in its on-disk cache
    (loading it then takes well under a second); compiles nothing."""
    if dispatcher.signatures:
        return True
    cache = getattr(dispatcher, "_cache", None)
    try:
        index = cache._cache_file._load_index()
    except Exception:  # noqa: BLE001 - no cache, unreadable index: not cached
        return False
    token = getattr(cache, "_token", None)
    return any(token is None or k[2][1] == token for k in index)


def njit_cached(**flags):
    """``numba.njit(**flags)`` with its disk cache in `cache_root` (``flags`` must not set
    ``cache``). Returns the decorator."""
    if "cache" in flags:
        raise TypeError("njit_cached: the cache is always on; drop the `cache` flag")
    return lambda fn: attach_cache(numba.njit(**flags)(fn))
