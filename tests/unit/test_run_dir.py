"""claim_run_dir: a training job never silently replaces, restarts or re-configures a run."""

import pytest
import yaml

from core.classify.config import build_recipe
from core.foundation.settings import to_dict
from core.foundation.errors import UserError
from core.runs.rundir import claim_run_dir, config_changes

CONFIG = to_dict(build_recipe({"data": {"source": "d.csv"}}, {"lr": "1e-4"}, name="r"))


def _run(tmp_path, *, finished=False, checkpoint=False):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    (run / "metrics.jsonl").write_text("")
    if finished:
        (run / "report.json").write_text("{}")
        (run / "model").mkdir()
    if checkpoint:
        (run / "checkpoint").mkdir()
        (run / "checkpoint" / "state.json").write_text("{}")
    return run


def test_a_fresh_or_empty_directory_is_claimed(tmp_path):
    assert claim_run_dir(tmp_path / "new", CONFIG, resume=False, overwrite=False, has_checkpoint=False) is False
    (tmp_path / "notes.txt").write_text("mine")  # not a run file: left alone, not a reason to refuse
    assert claim_run_dir(tmp_path, CONFIG, resume=False, overwrite=False, has_checkpoint=False) is False


def test_out_onto_a_finished_run_is_refused_without_overwrite(tmp_path):
    run = _run(tmp_path, finished=True)
    with pytest.raises(UserError, match="already holds a finished run.*--overwrite"):
        claim_run_dir(run, CONFIG, resume=False, overwrite=False, has_checkpoint=False)


def test_resume_on_a_finished_run_is_refused(tmp_path):
    run = _run(tmp_path, finished=True)
    with pytest.raises(UserError, match="finished run .*nothing to resume.*--overwrite"):
        claim_run_dir(run, CONFIG, resume=True, overwrite=False, has_checkpoint=False)


def test_resume_with_changed_settings_is_refused_and_names_them(tmp_path):
    run = _run(tmp_path, checkpoint=True)
    changed = to_dict(build_recipe({"data": {"source": "d.csv"}}, {"lr": "2e-4"}, name="r"))
    with pytest.raises(UserError, match=r"differ from the run's config.yaml: train.lr: 0.0001 -> 0.0002"):
        claim_run_dir(run, changed, resume=True, overwrite=False, has_checkpoint=True)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 1e-4  # not rewritten
    assert claim_run_dir(run, CONFIG, resume=True, overwrite=False, has_checkpoint=True) is True
    moved = CONFIG | {"device": "cuda"}  # where it runs may change, what it learns may not
    assert claim_run_dir(run, moved, resume=True, overwrite=False, has_checkpoint=True) is True


def test_an_unfinished_run_needs_resume_or_overwrite(tmp_path):
    run = _run(tmp_path, checkpoint=True)
    with pytest.raises(UserError, match="unfinished run .*Add --resume to continue it, or --overwrite"):
        claim_run_dir(run, CONFIG, resume=False, overwrite=False, has_checkpoint=True)
    (run / "checkpoint" / "state.json").unlink()
    with pytest.raises(UserError, match="no checkpoint to resume from"):
        claim_run_dir(run, CONFIG, resume=True, overwrite=False, has_checkpoint=False)


def test_overwrite_removes_only_run_files(tmp_path):
    run = _run(tmp_path, finished=True, checkpoint=True)
    (run / "notes.txt").write_text("mine")
    assert claim_run_dir(run, CONFIG, resume=False, overwrite=True, has_checkpoint=True) is False
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    with pytest.raises(UserError, match="choose one"):
        claim_run_dir(run, CONFIG, resume=True, overwrite=True, has_checkpoint=False)


def test_config_changes_lists_each_differing_key():
    assert config_changes({"a": {"x": 1, "y": 2}}, {"a": {"x": 1, "y": 3}, "b": 4}) == ["a.y: 2 -> 3", "b: None -> 4"]
