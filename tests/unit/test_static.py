"""The static-embedding tier on the tiny backbone: distil, train the head, save, load, predict; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("model2vec", reason="the static tier needs the static extra: pip install -e '.[static]'")

from core.classify.config import build_recipe
from core.classify.recipes import run_recipe
from core.foundation.errors import UserError
from core.models.classifier import load_classifier, probe_head
from core.models.predictor import Predictor, load_run
from core.models.static import StaticClassifier, load_static

STATIC = {"mode": "static", "model": {"backbone": "tiny", "probe_c": 100.0, "ood_scorer": "knn"},
          "static": {"pca_dims": 16}, "train": {"epochs": 0}}


def train_static(toy_dir, run_dir, **static):
    cfg = build_recipe({**STATIC, "data": {"source": str(toy_dir)}, "static": {**STATIC["static"], **static}},
                       name="static-test")
    return run_recipe(cfg, run_dir, progress=False)


@pytest.fixture(scope="module")
def static_run(tmp_path_factory):
    from tests.conftest import write_toy_splits

    data = write_toy_splits(tmp_path_factory.mktemp("static-data"))
    run = tmp_path_factory.mktemp("static") / "run"
    train_static(data, run)
    return run


def test_a_static_run_trains_saves_and_reloads_to_the_same_predictions(static_run):
    report = json.loads((static_run / "report.json").read_text())
    assert report["config"]["mode"] == "static" and report["fit"]["steps"] == 0
    assert report["static"]["embedding_dim"] == 16 and report["static"]["source"] == "backbone tiny"
    assert report["metrics"]["test"]["accuracy"] >= 0.75  # two intents that share no word
    assert report["cost"]["trainable_params"] == 2 * 16 + 2  # the head only
    model = load_run(static_run)
    assert isinstance(model, Predictor) and isinstance(model, StaticClassifier)
    texts = ["my card was declined", "my transfer is pending"]
    again = load_static(static_run / "model")
    np.testing.assert_allclose(model.predict_logits(texts), again.predict_logits(texts), rtol=1e-6)
    assert [model.labels[i] for i in model.predict_proba(texts).argmax(1)] == ["card", "transfer"]
    assert model.ood is not None and model.ood.name == "knn"


def test_predict_all_is_logits_and_unit_embeddings_of_the_head(static_run):
    model = load_run(static_run)
    logits, emb = model.predict_all(["card declined at the shop", "transfer fee in euros"])
    assert logits.shape == (2, 2) and emb.shape == (2, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(logits, emb @ model.weight.T + model.bias, rtol=1e-6)
    probs = model.predict_proba(["card declined at the shop"])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_no_texts_give_empty_arrays_of_the_right_width(static_run):
    model = load_run(static_run)
    logits, emb = model.predict_all([])
    assert logits.shape == (0, 2) and emb.shape == (0, 16)
    assert model.predict_proba([]).shape == (0, 2) and model.encode([]).shape == (0, 16)


def test_a_huge_text_is_truncated_and_an_empty_one_gets_the_bias(static_run):
    model = load_run(static_run)
    logits, emb = model.predict_all(["card declined " * 200_000, ""])
    assert np.isfinite(logits).all() and np.isfinite(emb).all()
    np.testing.assert_allclose(logits[1], model.bias)  # no tokens: the zero vector, so the head's bias
    with pytest.raises(UserError, match="batch_size"):
        model.encode(["x"], batch_size=0)


def test_the_run_directory_holds_no_pickle_and_loads_after_a_move(static_run, tmp_path):
    import shutil

    files = [p for p in static_run.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pkl", ".pickle", ".joblib", ".bin", ".pt")]
    assert (static_run / "model" / "static" / "model.safetensors").is_file()
    moved = tmp_path / "elsewhere"
    shutil.copytree(static_run, moved)
    assert load_run(moved).labels == load_run(static_run).labels


def test_onnx_runtimes_and_transformer_loading_are_refused_with_the_reason(static_run):
    with pytest.raises(UserError, match="static-embedding run.*no ONNX twin"):
        load_run(static_run, "onnx-int8")
    with pytest.raises(UserError, match="static-embedding run"):
        load_classifier(static_run / "model")


def test_a_missing_table_is_a_user_error(static_run, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(static_run, broken)
    (broken / "model" / "static" / "model.safetensors").unlink()
    with pytest.raises(UserError, match="static model"):
        load_run(broken)


def test_pca_wider_than_the_encoder_keeps_the_encoder_width(toy_dir, tmp_path):
    report = train_static(toy_dir, tmp_path / "run", pca_dims=256)  # the recipes' default on the 32-wide tiny backbone
    assert report["static"]["embedding_dim"] == 32 and report["probe"]["embedding_dim"] == 32


def test_distilling_from_a_fine_tuned_run_reads_its_merged_encoder(toy_dir, tmp_path):
    lora = build_recipe({"mode": "finetune", "data": {"source": str(toy_dir)},
                         "model": {"backbone": "tiny", "peft": "lora"}, "train": {"max_steps": 2, "batch_size": 8}})
    run_recipe(lora, tmp_path / "lora", progress=False)
    report = train_static(toy_dir, tmp_path / "static", source=str(tmp_path / "lora"))
    assert report["static"]["source"] == "fine-tuned run lora"
    assert load_run(tmp_path / "static").predict_proba(["card declined"]).shape == (1, 2)
    with pytest.raises(UserError, match="static-embedding run"):  # a static run has no encoder to distil
        train_static(toy_dir, tmp_path / "again", source=str(tmp_path / "static"))


def test_probe_head_splits_a_binary_fit_into_two_opposite_rows():
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    weight, bias, accuracy = probe_head(x, [0, 0, 1, 1], 2, c=10.0)
    assert weight.shape == (2, 2) and accuracy == 1.0
    np.testing.assert_allclose(weight[0], -weight[1])
    np.testing.assert_allclose(bias[0], -bias[1])
    assert ((x @ weight.T + bias).argmax(1) == [0, 0, 1, 1]).all()


def test_the_report_and_card_give_the_float32_a_static_run_computes_in_not_train_mixed_precision(toy_dir, tmp_path):
    # bf16 forced: it resolves to bf16 on any CPU, so a report that read the recipe's setting would claim it
    cfg = build_recipe({**STATIC, "data": {"source": str(toy_dir)}, "train": {"epochs": 0, "mixed_precision": "bf16"}},
                       name="static-test")
    report = run_recipe(cfg, tmp_path / "run", progress=False)
    assert report["precision"]["resolved"] == "fp32" and report["precision"]["mixed_precision"] == "no"
    assert report["cost"]["precision"] == "fp32"
    card = (tmp_path / "run" / "README.md").read_text()
    assert "Trained, calibrated and evaluated in float32 (mixed_precision=no" in card and "bf16 autocast" not in card
