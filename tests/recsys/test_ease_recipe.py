"""The EASE recipe (solutions.recsys.ease_recipe) and `verticals recsys index RUN --out DIR`: the config's
keys are validated, the search ends with l2 inside its grid, the run directory holds what the ALS
recipe's does, and a run (EASE or ALS) is indexed from its own config and served."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.foundation.errors import UserError
from core.foundation.settings import load_config_file
from solutions.recsys.ease_index import load_ease
from solutions.recsys.ease_recipe import START_GRID, train_ease
from solutions.recsys.live import Recommender
from solutions.recsys.recipe_config import ALSRecipe, EASERecipe
from verticals.registry import RECIPES, TASKS


def _config(**overrides):
    return load_config_file(EASERecipe, RECIPES["recsys/ease"], {"data": "demo_catalog", **overrides},
                            name="recsys/ease")


def recsys(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "verticals.cli", "recsys", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def ease_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ease") / "run"
    return run, train_ease(_config(), run, progress=False)


def test_an_unknown_or_bad_key_fails_naming_the_valid_ones():
    assert TASKS["recsys-ease"].schema is EASERecipe
    with pytest.raises(UserError, match=r"unknown key 'model\.lambda'.*model\.l2.*model\.search_rounds"):
        _config(**{"model.lambda": "5"})
    with pytest.raises(UserError, match="model.l2"):
        _config(**{"model.l2": "0"})
    assert _config().model.max_items == 20_000


def test_the_run_directory_holds_the_model_report_card_and_cost(ease_run):
    run, report = ease_run
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "model", "report.json", "report.md", "README.md"}
    assert {p.name for p in (run / "model").iterdir()} == {"ease.safetensors", "ease.json"}
    model, meta = load_ease(run / "model")
    assert meta["l2"] == report["fit"]["params"]["l2"] and model.weights.dtype == np.float32
    assert report["fit"]["items_scored"] == len(model.active) == 110  # the demo's 10 items without interactions
    assert {"wall_seconds", "cpu_seconds", "peak_rss_mb"} <= set(report["cost"])
    assert report["cost"]["trainable_params"] == len(model.active) ** 2
    text = (run / "report.md").read_text()
    search = report["search"]
    assert all(f"round {r['round']}: grid l2 " in text for r in search["rounds"])
    assert all(f"{p['ndcg@10']:.4f}" in text for p in search["points"])  # every point's validation NDCG@10
    assert "library_name: numpy" in (run / "README.md").read_text()
    assert json.loads((run / "report.json").read_text())["search"]["chosen"] == search["chosen"]


def test_the_search_ends_with_l2_inside_its_final_grid(ease_run):
    _, report = ease_run
    search = report["search"]
    assert search["rounds"][0]["grid"] == START_GRID
    final = search["rounds"][-1]["grid"]["l2"]
    chosen = search["chosen"]["l2"]
    assert search["on_edge"] == [] and min(final) < chosen < max(final)
    assert search["ndcg@10"] == max(p["ndcg@10"] for p in search["points"]) > 0
    assert len(search["points"]) == len({p["params"]["l2"] for p in search["points"]}) == len(final)  # each once
    fixed = train_ease(_config(**{"model.search": "false", "model.l2": "321"}), ease_run[0].parent / "fixed",
                       progress=False)
    assert fixed["fit"]["params"] == {"l2": 321.0} and "search" not in fixed
    with pytest.raises(UserError, match="do not resume"):
        train_ease(_config(), ease_run[0], resume=True)
    with pytest.raises(UserError, match="serve it with `verticals recsys index"):
        TASKS["recsys-ease"].export_model(ease_run[0], report, ease_run[0].parent / "hf")


def test_recsys_index_run_reads_the_data_from_the_run_and_serves_it(ease_run, tmp_path, tiny_backbone_dir):
    from solutions.recsys.service import create_app

    run, report = ease_run
    out = tmp_path / "idx"
    done = recsys("index", str(run), "--out", str(out), "--encoder", "tiny")
    assert done.returncode == 0 and "EASE (l2" in done.stdout and "120 items" in done.stdout, done.stderr
    rec = Recommender.load(out)
    model, _ = load_ease(run / "model")
    with TestClient(create_app(rec)) as http:
        assert rec.scorer.model.l2 == report["fit"]["params"]["l2"]
        r = http.post("/v1/recommend", json={"user_id": "u01", "k": 5})
        assert r.status_code == 200, r.text
        history = rec.catalog.histories["u01"]
        scores = model.score([[(item, 0.0) for item in history]])[0]
        ranked = [model.items[i] for i in np.lexsort((np.arange(len(scores)), -scores.astype(np.float64)))
                  if model.items[i] not in set(history)]
        assert [hit["id"] for hit in r.json()["items"]] == ranked[:5]
    both = recsys("index", str(run), "--model", "als", "--out", str(tmp_path / "x"))
    assert both.returncode == 2 and "is a run directory" in both.stderr and "Traceback" not in both.stderr


def test_recsys_index_run_serves_an_als_run_and_refuses_a_model_it_cannot_serve(tmp_path):
    from solutions.recsys.als_recipe import train_als

    cfg = load_config_file(ALSRecipe, RECIPES["recsys/als"], {"data": "demo_catalog", "model.search": "false"},
                           name="recsys/als")
    report = train_als(cfg, tmp_path / "als", progress=False)
    done = recsys("index", str(tmp_path / "als"), "--out", str(tmp_path / "idx"))
    assert done.returncode == 0 and "ALS" in done.stdout, done.stderr
    rec = Recommender.load(tmp_path / "idx")
    try:
        assert rec.user_model.model.params == report["fit"]["params"] and len(rec.recommend(["i001"], k=3)) == 3
    finally:
        rec.close()
    (tmp_path / "odd" / "model").mkdir(parents=True)
    (tmp_path / "odd" / "config.yaml").write_text("data:\n  source: demo_catalog\n")
    odd = recsys("index", str(tmp_path / "odd"), "--out", str(tmp_path / "idx2"))
    assert odd.returncode == 2 and "holds no model `recsys index` serves" in odd.stderr, odd.stderr
