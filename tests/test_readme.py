"""The README's Python examples run as written and print what the README shows."""
import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start: end if end >= 0 else None]


def test_cache_and_replay_example_prints_what_the_readme_shows(tmp_path, monkeypatch):
    section = _section("Cache and replay")
    code, shown = re.findall(r"```python\n(.*?)```", section, re.S)[0], \
        re.findall(r"\n\n```\n(.*?)\n```", section, re.S)[0]
    monkeypatch.chdir(tmp_path)
    expected = [line for line in shown.splitlines() if line.strip() != "..."]
    for _ in range(2):  # a user runs a notebook cell twice: the second run works the same
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
        printed = out.getvalue().splitlines()
        # every line the README shows is printed, in order (the table is cut after its first row)
        assert printed[: len(expected)] == expected
