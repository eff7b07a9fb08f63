"""``import casdri`` is light (lazy re-exports, PEP 562) and every public name resolves."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import casdri

ROOT = Path(__file__).parents[1]
HEAVY = ("pandas", "numba", "torch", "pyarrow", "scipy", "optuna")


def _modules_after(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
                         cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    return set(out.stdout.split())


def test_import_casdri_imports_no_heavy_package():
    loaded = _modules_after("import casdri")
    assert not [m for m in HEAVY if m in loaded]


def test_cli_help_path_imports_no_heavy_package():
    loaded = _modules_after("import casdri.cli, cache_builder.cli\n"
                            "casdri.cli._build_parser(); cache_builder.cli.build_parser()")
    assert not [m for m in HEAVY if m in loaded]


def test_every_public_name_resolves():
    for name in casdri.__all__:
        assert getattr(casdri, name) is not None, name
    assert set(casdri.__all__) <= set(dir(casdri))


def test_replay_stays_the_function_after_the_submodule_is_imported():
    import casdri.replay as _  # noqa: F401 - sets the package attribute, as any import does
    from casdri.replay import replay
    assert casdri.replay is replay and callable(casdri.replay)
    assert casdri.capi_sdri.__module__ == "casdri.metric"
    assert casdri.load_cache.__module__ == "casdri.cache"
