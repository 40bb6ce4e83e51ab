"""The app-layer entry: a user's own YAML, re-running a run's config.yaml, the task registry,
the `--nproc` relaunch command, and core importing nothing from the solutions or the app layer."""

import ast
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from verticals import cli
from verticals.cli import main, torchrun_command


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_own_yaml_trains_and_its_config_yaml_reruns_with_the_same_settings(toy_dir, tmp_path, capsys):
    mine = tmp_path / "my_recipe.yaml"
    mine.write_text(yaml.safe_dump({
        "description": "my intents", "mode": "finetune", "data": {"source": str(toy_dir)},
        "model": {"backbone": "tiny", "peft": "lora", "head_init": "random"},
        "train": {"max_steps": 2, "batch_size": 4, "lr": "2e-3", "patience": 0}}))
    code, out, err = _cli(capsys, "train", mine, "train.seed=3", "model.lora_r=4", "--out", tmp_path / "a", "--quiet")
    assert code == 0, err
    first = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert first["name"] == "my_recipe" and first["train"]["seed"] == 3 and first["model"]["lora_r"] == 4
    assert first["train"]["lr"] == 2e-3 and first["data"]["oos_label"] == "" and first["model"]["ood_scorer"] == "none"

    code, out, err = _cli(capsys, "train", tmp_path / "a" / "config.yaml", "--out", tmp_path / "b", "--quiet")
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "b" / "config.yaml").read_text()) == first
    assert "run: " in out and "accuracy=" in out


def test_the_yaml_task_picks_the_schema_and_runner(tmp_path, capsys, monkeypatch):
    from dataclasses import dataclass

    from core.foundation.settings import setting

    @dataclass(frozen=True)
    class Echo:
        name: str = ""
        task: str = "echo"
        size: int = setting(1, positive=True)

    seen = {}

    def run_echo(cfg, run_dir, *, data_dir, resume, overwrite, progress):
        seen.update(cfg=cfg, run_dir=run_dir, data_dir=data_dir, resume=resume, overwrite=overwrite, progress=progress)
        return {"metrics": {"test": {"hit_rate": 0.25}}}

    monkeypatch.setitem(cli.TASKS, "echo", replace(cli.TASKS["classification"], schema=Echo, runner=run_echo))
    recipe = tmp_path / "echo.yaml"
    recipe.write_text("task: echo\nsize: 2\n")
    code, out, err = _cli(capsys, "train", recipe, "size=5", "--out", tmp_path / "run", "--data-dir", tmp_path)
    assert code == 0, err
    assert seen == {"cfg": Echo(name="echo", size=5), "run_dir": tmp_path / "run", "data_dir": str(tmp_path),
                    "resume": False, "overwrite": False, "progress": True}
    assert "hit_rate=0.2500" in out

    recipe.write_text("task: translate\n")
    code, _, err = _cli(capsys, "train", recipe)
    assert code == 2 and "unknown task 'translate'" in err and "classification" in err


def test_demo_trains_the_demo_recipe_the_registry_names(tmp_path, capsys, monkeypatch):
    seen = []
    monkeypatch.setitem(cli.TASKS, "classification", replace(
        cli.TASKS["classification"], runner=lambda cfg, run_dir, **kw: seen.append((cfg.name, run_dir)) or {}))
    code, out, err = _cli(capsys, "demo", "backbone=tiny", "--out", tmp_path / "demo")
    assert code == 0, err
    assert cli.DEMO_RECIPE in cli.RECIPES and seen == [(cli.DEMO_RECIPE, tmp_path / "demo")]
    assert f"verticals demo: {cli.DEMO_RECIPE}: " in out


def test_a_run_of_an_unknown_task_is_refused_by_name(tmp_path, capsys):
    import verticals
    from core.foundation.errors import UserError

    (tmp_path / "report.json").write_text(json.dumps({"config": {"name": "x", "task": "translate"}}))
    with pytest.raises(UserError, match="unknown task 'translate'"):
        verticals.load(tmp_path)
    code, _, err = _cli(capsys, "export", "hf", tmp_path, tmp_path.parent / f"{tmp_path.name}-hf")
    assert code == 2 and "unknown task 'translate'" in err and "classification" in err


def test_every_task_renders_a_report_it_did_not_write():
    """A task's renderer reads only the keys it needs: an empty report still renders (older versions)."""
    for name, task in cli.TASKS.items():
        assert task.report.markdown({}).startswith("# Run report: "), name
        assert task.report.card({"config": {"task": name}}).startswith("---\n"), name


# ---------------------------------------------------------------- --nproc

def test_nproc_builds_the_torchrun_command_without_the_flag():
    argv = ["train", "support/intent-demo", "backbone=tiny", "--nproc", "2", "--out", "runs/x", "--quiet"]
    assert torchrun_command(argv, 2, "ignored-when-out-is-given") == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "verticals.cli", "train", "support/intent-demo", "backbone=tiny", "--out", "runs/x", "--quiet"]
    # `--nproc=4` and argparse's abbreviation; every process gets the one --out chosen here
    assert torchrun_command(["train", "r", "--nproc=4", "epochs=1"], 4, "runs/r-1")[5:] == [
        "4", "-m", "verticals.cli", "train", "r", "epochs=1", "--out", "runs/r-1"]
    assert "--npr" not in torchrun_command(["train", "r", "--npr", "2", "--out=d"], 2, "x")
    assert torchrun_command(["train", "r", "--npr", "2", "--out=d"], 2, "x")[-3:] == ["train", "r", "--out=d"]


LAUNCHED: list[list[str]] = []


class FakeProcess:
    """Stands in for subprocess.Popen: records the command, exits with 3."""

    def __init__(self, command):
        LAUNCHED.append(command)

    def wait(self):
        return 3


def test_train_with_nproc_validates_once_then_runs_torchrun_and_returns_its_exit_code(monkeypatch, capsys):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(cli.subprocess, "Popen", FakeProcess)
    LAUNCHED.clear()
    code, _, err = _cli(capsys, "train", "support/intent-demo", "backbone=tiny", "--nproc", "2", "--out", "runs/d")
    assert code == 3 and "launching 2 processes" in err
    assert LAUNCHED == [torchrun_command(["train", "support/intent-demo", "backbone=tiny", "--out",
                                                      "runs/d"], 2)]
    code, _, err = _cli(capsys, "train", "support/intent-demo", "epoch=2", "--nproc", "2")
    assert code == 2 and "unknown key 'epoch'" in err and len(LAUNCHED) == 1  # nothing launched


def test_nproc_is_ignored_under_a_launcher(monkeypatch, capsys, tmp_path):
    seen = []
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setattr(cli.subprocess, "Popen", FakeProcess)
    monkeypatch.setitem(cli.TASKS, "classification", replace(cli.TASKS["classification"],
                                                             runner=lambda cfg, run_dir, **kw: seen.append(cfg) or {}))
    LAUNCHED.clear()
    code, _, err = _cli(capsys, "train", "support/intent-demo", "--nproc", "2", "--out", tmp_path / "run")
    assert code == 0, err
    assert LAUNCHED == [] and seen[0].name == "support/intent-demo"


# ---------------------------------------------------------------- layering

def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((REPO / "core").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_core_imports_nothing_from_the_solutions_or_the_app_layer(path):
    bad = {m for m in _imported_modules(path) if m.split(".")[0] in ("solutions", "verticals")}
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def _dynamic_imports(path: Path) -> set[str]:
    """Module names given as string constants to importlib.import_module / __import__."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


@pytest.mark.parametrize("path", sorted((REPO / "core").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_core_loads_nothing_from_the_solutions_or_the_app_layer_dynamically(path):
    bad = {m for m in _dynamic_imports(path) if m.split(".")[0] in ("solutions", "verticals")}
    assert not bad, f"{path.relative_to(REPO)} loads {sorted(bad)}"


def _code_strings(path: Path) -> set[str]:
    """The string constants of a module's code (f-string parts included), docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}


@pytest.mark.parametrize("path", sorted((REPO / "core").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_core_code_names_no_app_task_and_no_router_key(path):
    """What differs per task reaches core as an argument (a report renderer, an export writer, a label
    key): core's code never names the recsys task or the support router's "intent" key."""
    bad = {text for text in _code_strings(path) if "recsys" in text.lower() or "intent" in text.lower()}
    assert not bad, f"{path.relative_to(REPO)} names {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((REPO / "solutions").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_solutions_import_neither_the_app_layer_nor_the_command_line(path):
    """The solutions sit between core and the app layer: they never import verticals, and never
    reach into verticals.commands (its helpers live in core.foundation.text and core.foundation.quiet)."""
    names = _imported_modules(path) | _dynamic_imports(path)
    bad = {m for m in names if m.split(".")[0] == "verticals" or m == "verticals.commands"}
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"
