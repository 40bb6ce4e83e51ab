"""The ALS recipe (solutions.recsys.als_recipe): the search widens past the edges its choice sits on,
scores each point once, and the run it writes is served by `verticals recsys index DATA --model RUN`."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from core.foundation.errors import UserError
from core.foundation.settings import load_config_file
from solutions.recsys.als_recipe import search_inside_grid, train_als, widen
from solutions.recsys.live import Recommender
from solutions.recsys.recipe_config import ALSRecipe
from verticals.registry import RECIPES, TASKS


def test_widen_adds_one_step_past_each_edge_the_choice_sits_on():
    axes = {"factors": [32, 64, 128], "regularization": [0.1, 1.0, 10.0], "alpha": [1.0, 4.0], "fixed": [15]}
    wider, widened = widen(axes, {"factors": 32, "regularization": 1.0, "alpha": 4.0, "fixed": 15})
    assert wider == {"factors": [16, 32, 64, 128], "regularization": [0.1, 1.0, 10.0], "alpha": [1.0, 4.0, 16.0],
                     "fixed": [15]}
    assert widened == ["factors", "alpha"]


def test_the_search_follows_a_peak_outside_the_grid_and_says_when_it_stops_on_an_edge():
    calls = []

    def score(points):  # the validation metric peaks at factors 512 and regularization 1
        calls.extend(tuple(p.values()) for p in points)
        return [-(math.log2(p["factors"]) - 9) ** 2 - abs(math.log10(p["regularization"])) for p in points]

    start = {"factors": [32, 64, 128], "regularization": [0.1, 1.0, 10.0]}
    out = search_inside_grid(score, start, rounds=2)
    assert out["chosen"] == {"factors": 512, "regularization": 1.0}  # 128 -> 256 -> 512, stopped by rounds=2
    assert out["on_edge"] == ["factors"] and len(out["rounds"]) == 3
    assert len(calls) == len(set(calls)) == 3 * 3 + 3 + 3  # each point once: 9, then 3 new per round
    inside = search_inside_grid(score, {"factors": [256, 512, 1024], "regularization": [0.1, 1.0, 10.0]}, rounds=2)
    assert inside["chosen"] == {"factors": 512, "regularization": 1.0} and inside["on_edge"] == []
    assert len(inside["rounds"]) == 1  # already inside: no widening


def test_the_registered_recipe_trains_a_run_that_the_index_serves(tmp_path):
    cfg = load_config_file(ALSRecipe, RECIPES["recsys/als"], {"data": "demo_catalog"}, name="recsys/als")
    assert TASKS["recsys-als"].schema is ALSRecipe
    report = train_als(cfg, tmp_path / "run", progress=False)
    search = report["search"]
    assert report["fit"]["params"] == search["chosen"] | {"iterations": 15}
    assert search["ndcg@10"] == max(p["ndcg@10"] for p in search["points"]) > 0
    assert (tmp_path / "run" / "model" / "factors.safetensors").is_file()
    assert "## Settings" in (tmp_path / "run" / "report.md").read_text()
    assert "library_name: implicit" in (tmp_path / "run" / "README.md").read_text()
    out = tmp_path / "idx"
    done = subprocess.run([sys.executable, "-m", "verticals.cli", "recsys", "index", "demo_catalog", "--model",
                           str(tmp_path / "run"), "--out", str(out)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0 and "ALS" in done.stdout, done.stderr
    rec = Recommender.load(out)
    try:
        assert rec.user_model.model.params == report["fit"]["params"] and len(rec.recommend(["i001"], k=3)) == 3
    finally:
        rec.close()
    with pytest.raises(UserError, match="do not resume"):
        train_als(cfg, tmp_path / "run", resume=True)
    with pytest.raises(UserError, match="serve it with `verticals recsys index"):
        TASKS["recsys-als"].export_model(tmp_path / "run", report, tmp_path / "hf")
