"""Model cards (core.runs.card, core.classify.card) on hand-made classification reports, the export guards of
core.export.hub that need no model, and core.export.onnx.onnx_size on a hand-built ONNX file with external
weights. The item encoder's card: tests/recsys/test_report.py."""

from __future__ import annotations

import json

import pytest
import yaml

from core.classify.card import model_card
from core.export.hub import export_hf, is_export, push_to_hub, write_classifier_run
from core.foundation.errors import UserError
from core.runs.card import base_model, hub_license

LABELS = ["card", "transfer"]


def classification_report(backbone="minilm") -> dict:
    return {
        "config": {"name": "support/intent-lora", "description": "intents", "task": "classification",
                   "mode": "finetune", "data": {"source": "banking77"},
                   "model": {"backbone": backbone, "peft": "lora", "max_length": 0}, "train": {"lr": 1e-3}},
        "data": {"name": "banking77", "num_labels": 2, "train": 10, "validation": 4, "test": 4},
        "data_card": {"name": "banking77", "license": "CC-BY-4.0", "citation": "Casanueva et al. (2020)",
                      "url": "https://example.org/banking77"},
        "metrics": {"validation": {"n": 4, "accuracy": 0.75, "macro_f1": 0.7},
                    "test": {"n": 4, "accuracy": 0.5, "macro_f1": 0.4}},
        "confidence": {"temperature": 1.5, "test_ece_before": 0.2, "test_ece_after": 0.1, "ood_scorer": "knn",
                       "ood_threshold": 0.3, "ood_target_in_scope_recall": 0.95,
                       "out_of_scope_oos": {"auroc": 0.9, "in_scope_recall": 0.95, "out_of_scope_recall": 0.6}},
        "per_class_test": {"card": {"f1": 0.5, "support": 2}, "transfer": {"f1": 0.3, "support": 2}},
        "labels": LABELS, "fit": {"steps": 200},
        "cost": {"wall_seconds": 12.5, "trainable_params": 1000}, "environment": {"device": "cpu", "cpus": 2}}


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card[4:card.index("\n---\n", 4)])


def test_classification_card_front_matter_has_what_a_hub_reads():
    meta = front_matter(model_card(classification_report()))
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["datasets"] == ["banking77"] and meta["license"] == "cc-by-4.0"
    assert "verticals" in meta["tags"] and "peft-lora" in meta["tags"]
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    assert result["dataset"]["split"] == "test" and result["task"]["type"] == "text-classification"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"accuracy": 0.5, "f1": 0.4}


def test_classification_card_has_every_section_and_the_out_of_scope_caveat():
    card = model_card(classification_report())
    for section in ("## How to load", "## Labels", "## Training data", "## Metrics", "## Calibration and out-of-scope",
                    "## Cost", "## How to reproduce", "## Limitations"):
        assert section in card
    assert "| 1 | transfer | 0.3 | 2 |" in card  # label ids in head order, with per-class test F1
    assert "| test | 4 | 0.5 | 0.4 |" in card and "Casanueva et al. (2020)" in card
    assert "do NOT apply the out-of-scope threshold" in card and "T = 1.500" in card
    assert "verticals export hf RUN_DIR OUT" in card and "RUN_DIR/model/encoder" in card
    assert 'verticals.load("RUN_DIR")' in card and 'verticals predict RUN_DIR' in card
    assert yaml.safe_load(card.split("```yaml\n")[1].split("```")[0]) == classification_report()["config"]


def test_exported_card_tells_how_to_load_with_trust_remote_code():
    card = model_card(classification_report(), exported=True)
    assert 'pipeline("text-classification", model="OUT", trust_remote_code=True)' in card
    assert "folded into the exported head" in card and "under `verticals`" in card


def test_a_report_without_optional_sections_still_renders():
    meta = front_matter(model_card({"labels": ["a", "b"], "config": {"model": {"backbone": "./mine"}}}))
    assert meta["pipeline_tag"] == "text-classification" and "base_model" not in meta and "license" not in meta


@pytest.mark.parametrize("backbone, expected", [
    ("minilm", "sentence-transformers/all-MiniLM-L6-v2"), ("mpnet", "sentence-transformers/all-mpnet-base-v2"),
    ("tiny", None), ("./models/mine", None), ("/abs/dir", None), ("org/model-1", "org/model-1"), (None, None)])
def test_base_model_maps_aliases_and_hub_ids_only(backbone, expected):
    assert base_model(backbone) == expected


def test_hub_license_takes_a_leading_identifier_else_other():
    assert hub_license("CC0-1.0 (written by the verticals authors)") == {"license": "cc0-1.0"}
    assert hub_license("GroupLens usage terms: research use only")["license"] == "other"
    assert hub_license(None) == {}


def test_export_refuses_an_out_dir_it_did_not_write(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(json.dumps(classification_report()))
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    task = {"write_model": write_classifier_run, "card": model_card}
    with pytest.raises(UserError, match="add --overwrite"):
        export_hf(run, other, **task)
    with pytest.raises(UserError, match="not one"):
        export_hf(run, other, overwrite=True, **task)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(UserError, match="separate directory"):
        export_hf(run, run / "hf", **task)
    with pytest.raises(UserError, match="not a finished run"):
        export_hf(tmp_path / "nothing", tmp_path / "out", **task)


def test_is_export_reads_the_readme_front_matter(tmp_path):
    (tmp_path / "README.md").write_text(model_card(classification_report()))
    assert is_export(tmp_path)
    (tmp_path / "README.md").write_text("# my notes\n")
    assert not is_export(tmp_path)


def test_push_offline_is_a_user_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set"):
        push_to_hub(tmp_path, "me/my-model")


def test_push_without_network_is_a_user_error(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import HTTPError

    def unreachable(self, *args, **kwargs):
        raise HTTPError("Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", unreachable)
    with pytest.raises(UserError, match="--push me/my-model failed .*Name or service not known"):
        push_to_hub(tmp_path, "me/my-model")


def test_onnx_size_counts_the_external_weights(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from core.export.onnx import onnx_size

    weight = numpy_helper.from_array(np.ones((64, 64), dtype=np.float32), "weight")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "weight"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [weight])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path), save_as_external_data=True, location="model.onnx.data",
              size_threshold=0)
    data = tmp_path / "model.onnx.data"
    assert data.stat().st_size >= 64 * 64 * 4  # the weights live beside the graph
    assert onnx_size(path) == path.stat().st_size + data.stat().st_size
    inline = tmp_path / "inline.onnx"
    onnx.save(helper.make_model(graph), str(inline))
    assert onnx_size(inline) == inline.stat().st_size
