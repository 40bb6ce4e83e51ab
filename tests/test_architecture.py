"""The house's rules, checked on every test run.

- The import contract (import-linter, configured in pyproject.toml under [tool.importlinter]): core's
  wings import only the floors below them (core/README.md), the solutions sit on core and never on
  each other or the app layer, and no package has an import cycle between its modules.
- Sizes: no module over 400 lines and no function over 80 (STYLE.md: a module past ~400 lines is
  doing two jobs; a function fits a screen), unless a comment in it says why it cannot split.
- Imports at the top of the module: an import inside a function carries a one-line reason on its
  line (start-up time: torch, transformers, optional extras).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE = sorted(p for top in ("core", "solutions", "verticals", "benchmarks") for p in (REPO / top).rglob("*.py"))
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80
EXEMPT = "cannot split"  # the comment that explains an exception must say this


def _ids(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_import_contract_holds():
    pytest.importorskip("importlinter", reason="import-linter is in the dev extra: pip install -e '.[dev]'")
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    result = subprocess.run([command, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout and result.stdout.count("KEPT") >= 4


@pytest.mark.parametrize("path", SOURCE, ids=_ids)
def test_no_module_is_over_400_lines(path):
    text = path.read_text()
    lines = text.count("\n")
    assert lines <= MAX_MODULE_LINES or EXEMPT in text, (
        f"{_ids(path)} has {lines} lines: split it by concept, or say in a comment why it cannot split")


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


@pytest.mark.parametrize("path", SOURCE, ids=_ids)
def test_no_function_is_over_80_lines(path):
    text = path.read_text()
    lines = text.splitlines()
    long = []
    for fn in _functions(ast.parse(text)):
        span = fn.end_lineno - fn.lineno + 1
        if span > MAX_FUNCTION_LINES and not any(EXEMPT in line for line in lines[fn.lineno - 1:fn.end_lineno]):
            long.append(f"{fn.name} ({span} lines, line {fn.lineno})")
    assert not long, f"{_ids(path)}: {', '.join(long)}: split into named steps"


@pytest.mark.parametrize("path", [p for p in SOURCE if not p.parts[-2:-1] == ("benchmarks",)], ids=_ids)
def test_imports_inside_functions_say_why(path):
    """Imports go at the top of the module; a lazy one (start-up time) says why on its line."""
    text = path.read_text()
    lines = text.splitlines()
    silent = []
    for fn in _functions(ast.parse(text)):
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not any(
                    "#" in line for line in lines[node.lineno - 1:node.end_lineno]):
                silent.append(f"line {node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not silent, f"{_ids(path)}: imports inside functions without a reason: {'; '.join(sorted(set(silent)))}"

