"""The documentation: the MkDocs site builds in strict mode, and the README shows what runs.

- The site (mkdocs.yml, docs/) builds with `mkdocs build --strict`: a broken link or anchor, a
  missing snippet or a page left out of the nav fails (a copy with a planted fault proves it).
- "The commands shown in the README are the ones the tests run": in the README and the docs, every
  `verticals ...` command of a shell block parses with the real parser (nothing runs) and every
  Python block compiles and takes from `verticals` only names it has; the README's test command
  is the one `.ci/run` runs; every repository path they name (`core/engine/loop.py`) exists.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"
CI_MARKER = "# --- the README's test command"
SHELL_OPERATORS = {"&&", "||", "|", ";"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# a path into the repository, as the pages name it (`core/engine/loop.py`, `solutions/recsys/`)
REPO_PATH = re.compile(r"(?<![\w./-])((?:core|solutions|verticals|tests|benchmarks|datasets)/[\w./-]*[\w/])")
RUN_OUTPUTS = "benchmarks/runs/"  # what the benchmarks train (git-ignored), named in their records


def code_blocks(markdown: str, languages: set[str]) -> list[str]:
    """The bodies of the fenced code blocks in `markdown` whose language is one of `languages`."""
    fence = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
    return [body for language, body in fence.findall(markdown) if language in languages]


def shell_lines(block: str) -> list[str]:
    """The command lines of a shell block, backslash continuations joined."""
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def verticals_commands(line: str) -> list[list[str]]:
    """The argument lists of the `verticals` commands on one shell line: comments dropped, split at
    &&, ||, | and ;, leading VAR=value assignments skipped."""
    commands, current = [], []
    for token in [*shlex.split(line, comments=True), "&&"]:
        if token not in SHELL_OPERATORS:
            current.append(token)
            continue
        while current and ENV_ASSIGNMENT.match(current[0]):
            current.pop(0)
        if current and current[0] == "verticals":
            commands.append(current[1:])
        current = []
    return commands


def shown_commands(page: Path) -> list[list[str]]:
    """The `verticals` commands in the shell blocks of a markdown page."""
    blocks = code_blocks(page.read_text(encoding="utf-8"), {"bash", "sh", "shell", "console"})
    return [command for block in blocks for line in shell_lines(block) for command in verticals_commands(line)]


def test_verticals_commands_splits_a_shell_line():
    line = 'pip install -e . && VERTICALS_DATA=/d verticals demo --out runs/x  # then: verticals eval'
    assert verticals_commands(line) == [["demo", "--out", "runs/x"]]


def test_every_verticals_command_in_the_readme_and_the_docs_parses():
    from verticals.cli import parser

    assert ["demo"] in shown_commands(README), "the README's main job (`verticals demo`) is gone from its set-up"
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for argv in shown_commands(page):
            try:
                parser().parse_args(argv)
            except SystemExit as exit_:
                pytest.fail(f"{page.relative_to(ROOT)} shows `verticals {shlex.join(argv)}`, which the parser "
                            f"refuses (exit {exit_.code})")


def names_taken_from(tree: ast.AST, module: str) -> set[str]:
    """Names a block takes from `module`: `module.NAME` and `from module import NAME`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == module:
            names.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module == module:
            names.update(alias.name for alias in node.names)
    return names


def test_every_python_block_in_the_readme_and_the_docs_compiles_and_uses_real_names():
    import verticals

    assert code_blocks(README.read_text(encoding="utf-8"), {"python"}), "the README has no Python example"
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for block in code_blocks(page.read_text(encoding="utf-8"), {"python", "py"}):
            tree = ast.parse(block, filename=str(page))
            compile(tree, str(page), "exec")
            missing = sorted(name for name in names_taken_from(tree, "verticals") if not hasattr(verticals, name))
            assert not missing, f"{page.relative_to(ROOT)} uses verticals.{missing}, which verticals does not have"


def test_the_readme_test_command_is_the_one_ci_runs():
    ci_lines = CI.read_text(encoding="utf-8").splitlines()
    marker = next(i for i, line in enumerate(ci_lines) if line.startswith(CI_MARKER))
    ci_command = ci_lines[marker + 1].strip()
    blocks = code_blocks(README.read_text(encoding="utf-8"), {"bash"})
    assert ci_command in {line for block in blocks for line in shell_lines(block)}


def test_every_repository_path_the_readme_and_the_docs_name_exists():
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        named = set(REPO_PATH.findall(page.read_text(encoding="utf-8")))
        missing = sorted(path for path in named if not path.startswith(RUN_OUTPUTS) and not (ROOT / path).exists())
        assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


# ---------------------------------------------------------------- the site


def mkdocs_build(config: Path, site_dir: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of `config`, run from its folder (the snippets' base path)."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[dev]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install -e '.[dev]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # material's banner about its successor, not a finding
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site_dir)], cwd=config.parent, capture_output=True, text=True,
                          env=env, timeout=120)


def test_the_site_builds_in_strict_mode_without_warnings(tmp_path):
    result = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "architecture" / "index.html").is_file()


def copy_of_the_site(tmp_path: Path) -> Path:
    """mkdocs.yml, docs/ and the files its snippets include, under tmp_path; docs/results points at
    the real benchmark results."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("results"))
    (tmp_path / "docs" / "results").symlink_to(ROOT / "benchmarks" / "results")
    shutil.copy(README, tmp_path / "README.md")
    (tmp_path / "core").mkdir()
    shutil.copy(ROOT / "core" / "README.md", tmp_path / "core" / "README.md")
    return tmp_path / "mkdocs.yml"


def test_a_broken_link_or_a_page_missing_from_the_nav_fails_the_build(tmp_path):
    config = copy_of_the_site(tmp_path)
    with open(tmp_path / "docs" / "data.md", "a", encoding="utf-8") as page:
        page.write("\nSee [the missing page](no-such-page.md).\n")
    (tmp_path / "docs" / "orphan.md").write_text("# A page nobody listed\n", encoding="utf-8")
    result = mkdocs_build(config, tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "no-such-page.md" in output and "orphan.md" in output, output
