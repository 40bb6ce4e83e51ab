"""core.classify.recipes: run_recipe dispatches on cfg.mode; under a launcher, only rank 0 writes the run dir.

The rank tests set RANK=1 / WORLD_SIZE=2 without a process group (core.foundation.distributed.barrier is a
no-op then), so the call runs alone: whatever it leaves in the run directory, it wrote itself.
"""

import json

import pytest

from core.classify import recipes
from core.classify.config import build_recipe, load_recipe_file
from core.foundation.errors import UserError
from core.classify.recipes import MODES, run_recipe
from verticals.registry import RECIPES

TINY = {"backbone": "tiny", "max_steps": "1", "log_every": "1"}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_run_recipe_calls_the_function_its_mode_names(mode, monkeypatch, tmp_path):
    calls = []
    for name in MODES:
        monkeypatch.setitem(MODES, name, lambda cfg, run_dir, _name=name, **kw: calls.append((_name, run_dir, kw)) or {})
    cfg = build_recipe({"mode": mode, "data": {"source": "d.csv"}})
    run_recipe(cfg, str(tmp_path / "run"), data_dir="root", resume=True)  # the old name, same function
    assert calls == [(mode, tmp_path / "run", {"data_dir": "root", "resume": True, "overwrite": False,
                                               "progress": True})]


def test_every_mode_has_a_recipe_function():
    assert set(MODES) == {"probe", "finetune", "fewshot", "zeroshot", "static"}
    assert run_recipe is run_recipe


def _second_rank(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")


@pytest.fixture
def fit_writes_nothing(monkeypatch):
    """fit's own files (metrics, checkpoints) are the engine's rank business; the recipe's are tested here."""
    def fake_fit(model, train, validation, cfg, *, device, run_dir, resume=False, progress=True, **_):
        return recipes.no_steps()

    monkeypatch.setattr(recipes, "fit", fake_fit)


@pytest.mark.parametrize("name,overrides", [
    ("support/intent-probe", {}),
    ("support/intent-zeroshot", {}),
    ("support/intent-lora", {}),
    ("support/intent-fewshot", {"shots": "3", "contrastive_steps": "1", "contrastive_batch_size": "2"}),
])
def test_a_rank_1_process_trains_but_writes_nothing_in_the_run_dir(name, overrides, toy_dir, tmp_path, monkeypatch,
                                                                   fit_writes_nothing):
    _second_rank(monkeypatch)
    cfg = load_recipe_file(RECIPES[name], TINY | {"data": str(toy_dir)} | overrides, name=name)
    run = tmp_path / "run"
    result = run_recipe(cfg, run, progress=False)
    assert not run.exists() or list(run.iterdir()) == []
    assert result == {"rank": 1, "world_size": 2, "run_dir": str(run), "written_by_rank": 0}


def test_rank_1_refuses_a_finished_run_as_rank_0_does_and_leaves_overwriting_to_it(toy_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = load_recipe_file(RECIPES["support/intent-zeroshot"], {"backbone": "tiny", "data": str(toy_dir)})
    report = run_recipe(cfg, run, progress=False)  # rank 0: a finished run
    before = sorted(p.name for p in run.iterdir())
    _second_rank(monkeypatch)
    with pytest.raises(UserError, match="already holds a finished run"):  # every rank stops, none waits forever
        run_recipe(cfg, run, progress=False)
    # --overwrite: rank 0 clears the directory; rank 1 removes and rewrites nothing
    assert run_recipe(cfg, run, overwrite=True, progress=False)["rank"] == 1
    assert sorted(p.name for p in run.iterdir()) == before
    assert json.loads((run / "report.json").read_text()) == report


def test_claiming_without_clearing_checks_the_same_and_removes_nothing(tmp_path):
    from core.foundation.settings import to_dict
    from core.runs.rundir import claim_run_dir

    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text("{}")
    config = to_dict(build_recipe({"data": {"source": "d.csv"}}))
    with pytest.raises(UserError, match="already holds a finished run"):
        claim_run_dir(run, config, resume=False, overwrite=False, has_checkpoint=False, clear=False)
    assert claim_run_dir(run, config, resume=False, overwrite=True, has_checkpoint=False, clear=False) is False
    assert (run / "report.json").is_file()
    assert claim_run_dir(run, config, resume=False, overwrite=True, has_checkpoint=False) is False
    assert not (run / "report.json").exists()
