"""`verticals eval` scores held-out rows only; train refuses to clobber or mis-resume runs;
positional arguments may follow options. Mostly through `verticals.cli.main` in-process (the real
parser and commands, without paying the torch import per call); one real subprocess."""

import json
import shutil

import pytest

from tests.cli.test_cli import run_cli
from tests.conftest import CARD, TRANSFER, write_csv
from verticals.cli import main

ROWS = [(f"{t} case {i}", label) for i in range(5) for texts, label in ((CARD, "card"), (TRANSFER, "transfer"))
        for t in texts]  # 60 distinct texts: one file, split 48 / 6 / 6 by the loader
TRAIN_ARGS = ["train", "support/intent-lora", "backbone=tiny", "max_steps=2", "--quiet"]


@pytest.fixture(scope="module")
def one_file_run(tmp_path_factory):
    from core.classify.config import load_recipe_file
    from core.classify.recipes import run_recipe
    from verticals.registry import RECIPES

    root = tmp_path_factory.mktemp("one-file")
    data = write_csv(root / "d.csv", ROWS)
    cfg = load_recipe_file(RECIPES["support/intent-lora"], {"backbone": "tiny", "data": str(data), "max_steps": "2"},
                           name="support/intent-lora")
    run_recipe(cfg, root / "run", progress=False)
    return root / "run", data


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_scores_the_runs_own_test_split_not_its_training_rows(one_file_run, capsys):
    from core.data.catalog import load_classification
    from core.classify.scoring import evaluation_sets
    from core.runs.rundir import read_report

    run, data = one_file_run
    splits = load_classification(str(data))
    code, out, _ = _cli(capsys, "eval", run, "--json")
    result = json.loads(out)
    assert code == 0 and result["n"] == len(splits.test) == 6 != len(ROWS)
    assert result["evaluated"] == "test split of d.csv: 6 rows" and result["split"] == "test"
    sets = evaluation_sets(read_report(run), ["card", "transfer"])
    assert sets.in_scope.texts == splits.test.texts
    assert not set(sets.in_scope.texts) & set(splits.train.texts)
    code, out, _ = _cli(capsys, "eval", run)  # plain output says which rows it scored
    assert code == 0 and "evaluated: test split of d.csv: 6 rows" in out and "n=6 " in out
    # the same bytes under another name are still the run's own data, not "a new file"
    copy = shutil.copy(data, data.parent / "copy.csv")
    code, out, _ = _cli(capsys, "eval", run, "--data", copy)
    assert code == 0 and "test split of copy.csv: 6 rows" in out


@pytest.mark.parametrize("split,n", [("train", 48), ("validation", 6), ("test", 6)])
def test_eval_split_flag_is_honoured(one_file_run, capsys, split, n):
    run, _ = one_file_run
    code, out, _ = _cli(capsys, "eval", run, "--split", split, "--json")
    assert code == 0 and json.loads(out)["n"] == n and json.loads(out)["evaluated"].startswith(f"{split} split of d.csv")


def test_eval_unknown_split_lists_the_choices(one_file_run, capsys):
    code, _, err = _cli(capsys, "eval", one_file_run[0], "--split", "dev")
    assert code == 2 and "no split 'dev'; choose one of train, validation, test" in err


def test_eval_of_another_file_takes_the_options_its_messages_advise(one_file_run, tmp_path, capsys):
    run, _ = one_file_run
    rows = [("my card was declined again", "card"), ("transfer fee to bank", "transfer"),
            ("caf\xe9 card declined", "card"), ("what is the weather", "oos"), ("tell me a joke", "oos")]
    other = tmp_path / "other.csv"
    with open(other, "w", encoding="latin-1", newline="") as handle:
        handle.write("body,queue\n" + "".join(f"{t},{lab}\n" for t, lab in rows))

    code, _, err = _cli(capsys, "eval", run, "--data", other)
    assert code == 2 and "not valid utf-8" in err and "encoding=latin-1" in err
    code, _, err = _cli(capsys, "eval", run, "--data", other, "encoding=latin-1")
    assert code == 2 and "no column 'text'" in err and "text_column=<name>" in err
    code, out, err = _cli(capsys, "eval", run, "--data", other, "encoding=latin-1", "text_column=body",
                          "label_column=queue")
    assert code == 0, err
    assert "every row of other.csv (not the file the run was trained on): 5 rows" in out
    assert "n=3 " in out and "out-of-scope 'oos': n=2 auroc=" in out  # OOS metrics in the plain output
    code, _, err = _cli(capsys, "eval", run, "--data", other, "text_colum=body")
    assert code == 2 and "unknown key 'text_colum' for eval; it takes text_column=, label_column=, encoding=" in err


def test_positional_texts_may_follow_options(one_file_run, tmp_path, capsys):
    run, _ = one_file_run
    out = run_cli("predict", str(run), "--top-k", "1", "hello", "card declined")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["hello", "card declined"] and all(len(r["top_k"]) == 1 for r in rows)

    routes = tmp_path / "r.yaml"
    routes.write_text("routes:\n  card: {queue: cards}\n  transfer: {queue: payments}\n")
    code, out, err = _cli(capsys, "support", "route", run, "--routes", routes, "cancel my plan", "--top-k", "1",
                          "card declined")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == ["cancel my plan", "card declined"] and len(rows[1]["top_k"]) == 1


def test_train_refuses_to_overwrite_or_resume_a_finished_run(one_file_run, capsys):
    run, data = one_file_run
    args = [*TRAIN_ARGS, f"data={data}", "--out", run]
    before = (run / "report.json").read_text()
    code, _, err = _cli(capsys, *args)
    assert code == 2 and "already holds a finished run. Choose another --out, or add --overwrite" in err
    code, _, err = _cli(capsys, *args, "--resume")
    assert code == 2 and "is a finished run (it has report.json): there is nothing to resume" in err
    assert (run / "report.json").read_text() == before


def test_resume_with_changed_settings_is_refused(one_file_run, tmp_path, capsys):
    run, data = one_file_run
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(run / "config.yaml", unfinished / "config.yaml")
    (unfinished / "checkpoint").mkdir()
    (unfinished / "checkpoint" / "state.json").write_text("{}")
    saved = (unfinished / "config.yaml").read_text()
    code, _, err = _cli(capsys, *TRAIN_ARGS, f"data={data}", "lr=0.5", "--out", unfinished, "--resume")
    assert code == 2 and "differ from the run's config.yaml: train.lr: 0.001 -> 0.5" in err and "--overwrite" in err
    assert (unfinished / "config.yaml").read_text() == saved


def test_overwrite_retrains_in_place_with_overrides_after_the_flags(one_file_run, tmp_path, capsys):
    run, data = one_file_run
    copy = shutil.copytree(run, tmp_path / "copy")
    code, out, err = _cli(capsys, "train", "support/intent-lora", "--out", copy, "--overwrite", "--quiet",
                          "backbone=tiny", f"data={data}", "max_steps=1")
    assert code == 0, err
    report = json.loads((copy / "report.json").read_text())
    assert report["fit"]["steps"] == 1 and report["config"]["train"]["max_steps"] == 1
    # the temperature fit says why it stayed at 1 on a 6-row validation split
    assert "only 6 validation rows" in report["confidence"]["temperature_note"]
    assert "note: temperature left at 1" in (copy / "report.md").read_text()
