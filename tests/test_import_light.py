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


def test_search_in_memory_imports_no_sqlalchemy():
    # 0.2 s of every search's start for an RDB storage it usually does not use
    loaded = _modules_after("import search.run, search.report, search.cli")
    assert "optuna" in loaded and "sqlalchemy" not in loaded


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


def _imports_below_module_top(path: Path) -> list[str]:
    """``file:line`` of every import statement that is not at module level (an
    ``if TYPE_CHECKING:`` block counts as module level: it never runs)."""
    import ast

    tree = ast.parse(path.read_text(), str(path))
    found = []

    def visit(node, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and not top:
                found.append(f"{path.name}:{child.lineno}")
            typing_block = (isinstance(child, ast.If) and isinstance(child.test, ast.Name)
                            and child.test.id == "TYPE_CHECKING")
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            visit(child, top and (typing_block or not nested))

    visit(tree, True)
    return found


def test_production_imports_sit_at_module_top():
    """One way to defer an import (torch, and what a CLI handler needs): `casdri._cli.lazy_import`;
    every other import is at module top, where a reader and a linter see it."""
    files = [p for pkg in ("casdri", "search", "cache_builder") for p in (ROOT / pkg).rglob("*.py")]
    assert len(files) > 50
    assert [hit for p in files for hit in _imports_below_module_top(p)] == []


def test_the_import_scan_can_fail(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nif TYPE_CHECKING:\n    import sys\ndef f():\n    import json\n"
                     "class C:\n    def g(self):\n        from os import path\n")
    assert _imports_below_module_top(probe) == ["probe.py:5", "probe.py:8"]


def test_search_modules_leave_scipy_stats_and_pyplot_unimported():
    """The search path's imports cost every warm run; scipy.stats (~0.8 s) and pyplot are not
    needed for it (the acceptance test's p-value comes from scipy.special)."""
    loaded = _modules_after("import search.cli, search.run, search.report, search.acceptance")
    assert "scipy.stats" not in loaded and "matplotlib.pyplot" not in loaded


def test_matplotlib_is_imported_only_to_draw_figures(tmp_path):
    """The search and its report import matplotlib (0.25 s) only when they draw figures:
    `search.figures`, through `lazy_import` in `search.report.write_outputs`."""
    loaded = _modules_after("import search.cli, search.run, search.report")
    assert "matplotlib" not in loaded
    run = ("import sys\nfrom search.cli import main\n"
           f"rc = main(['--stage', 'gates', '--trials', '4', '--folds', '2', '--no-figures', "
           f"'--out', {str(tmp_path / 'o')!r}])\nassert rc == 0, rc")
    assert "matplotlib" not in _modules_after(run)
    assert {"matplotlib", "search.figures"} <= _modules_after(run.replace(", '--no-figures'", ""))
