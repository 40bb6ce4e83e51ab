"""`verticals export hf RUN OUT`: plain transformers loads the export with our labels and answers
what `verticals predict` answers, for a full fine-tune and a LoRA run of the demo recipe (tiny
backbone, 2 steps); loading without trust_remote_code fails; every run directory has its card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from verticals.cli import main


@pytest.fixture(scope="module", autouse=True)
def _modules_cache(tmp_path_factory):
    """transformers copies remote code into its modules cache: keep it out of the user's ~/.cache."""
    import transformers.dynamic_module_utils as dynamic

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path_factory.mktemp("hf-modules")))
        yield


@pytest.fixture(scope="module", params=["none", "lora"])
def exported(request, tmp_path_factory):
    """(run dir, export dir) of the demo recipe trained with peft=`param`, exported by the CLI."""
    root = tmp_path_factory.mktemp(f"export-{request.param}")
    run, out = root / "run", root / "hf"
    code = main(["train", "support/intent-demo", "backbone=tiny", "max_steps=2", f"peft={request.param}",
                 "--out", str(run), "--quiet"])
    assert code == 0
    assert main(["export", "hf", str(run), str(out)]) == 0
    return run, out


@pytest.fixture(scope="module")
def demo_texts():
    from core.data.catalog import load_classification

    long_text = "my parcel has not arrived and " * 60  # past max_length: truncated alike
    return [*load_classification("demo_support").test.texts, long_text]


def test_export_writes_a_transformers_directory(exported):
    run, out = exported
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_verticals.py", "tokenizer.json", "tokenizer_config.json",
            "README.md"} <= names
    assert not any(n.endswith(".bin") for n in names)
    config = json.loads((out / "config.json").read_text())
    meta = json.loads((run / "model" / "classifier.json").read_text())
    assert config["model_type"] == "verticals" and config["pooling"] == meta["pooling"]
    assert config["auto_map"]["AutoModelForSequenceClassification"] == \
        "modeling_verticals.VerticalsForSequenceClassification"
    assert config["verticals"]["out_of_scope"]["threshold"] == meta["ood"]["threshold"]
    assert config["verticals"]["temperature_folded_into_classifier"] == meta["temperature"]
    tokenizer = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer["model_max_length"] == meta["max_length"] and "local_files_only" not in tokenizer


def test_lora_is_merged_into_plain_encoder_weights(exported):
    from safetensors import safe_open

    _, out = exported
    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
    assert "classifier.weight" in keys and any(k.startswith("encoder.embeddings.") for k in keys)
    assert not any("lora" in k for k in keys)


def test_pipeline_predicts_what_verticals_predicts(exported, demo_texts):
    from transformers import pipeline

    from core.models.classifier import load_classifier
    from core.classify.scoring import predict_texts

    run, out = exported
    model = load_classifier(run / "model")
    ours = predict_texts(model, demo_texts, top_k=1)
    probs = model.predict_proba(demo_texts)
    classify = pipeline("text-classification", model=str(out), trust_remote_code=True)
    theirs = classify(demo_texts, truncation=True, batch_size=8)
    assert [row["label"] for row in theirs] == [row["label"] for row in ours]
    scores = np.array([row["score"] for row in theirs])
    np.testing.assert_allclose(scores, probs.max(axis=1), atol=1e-5)
    np.testing.assert_allclose(scores, [row["confidence"] for row in ours], atol=5e-5 + 1e-6)  # ours is rounded
    full = classify(demo_texts[:3], truncation=True, top_k=None)  # every label's calibrated probability
    for row, p in zip(full, probs[:3]):
        got = {d["label"]: d["score"] for d in row}
        np.testing.assert_allclose([got[label] for label in model.labels], p, atol=1e-5)


def test_auto_model_has_our_labels_and_a_loss(exported):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run, out = exported
    labels = json.loads((run / "model" / "classifier.json").read_text())["labels"]
    model = AutoModelForSequenceClassification.from_pretrained(str(out), trust_remote_code=True)
    assert model.config.id2label == dict(enumerate(labels))
    assert model.config.label2id == {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(str(out), trust_remote_code=True)
    batch = tokenizer(["where is my order", "reset my password please"], padding=True, return_tensors="pt")
    result = model(**batch, labels=torch.tensor([0, 1]))
    assert result.logits.shape == (2, len(labels)) and torch.isfinite(result.loss)


@pytest.mark.parametrize("trust", [False, None])
def test_loading_without_trust_remote_code_fails_loudly(exported, trust):
    from transformers import AutoModelForSequenceClassification, pipeline

    _, out = exported
    kwargs = {} if trust is None else {"trust_remote_code": trust}
    with pytest.raises(ValueError, match="custom code"):
        AutoModelForSequenceClassification.from_pretrained(str(out), **kwargs)
    with pytest.raises(ValueError, match="custom code"):
        pipeline("text-classification", model=str(out), **kwargs)


def test_run_and_export_both_have_a_model_card(exported):
    run, out = exported
    for directory in (run, out):
        text = (directory / "README.md").read_text()
        meta = yaml.safe_load(text.split("---\n")[1])
        assert meta["pipeline_tag"] == "text-classification" and meta["library_name"] == "transformers"
        assert meta["datasets"] == ["demo_support"] and meta["license"] == "cc0-1.0"
        assert "base_model" not in meta  # tiny is no hub model
    assert 'model="OUT", trust_remote_code=True' in (out / "README.md").read_text()


def test_export_refuses_to_overwrite_unless_asked(exported, capsys):
    run, out = exported
    assert main(["export", "hf", str(run), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "hf", str(run), str(out), "--overwrite"]) == 0
    assert "trust_remote_code=True" in capsys.readouterr().out and (out / "model.safetensors").is_file()


def test_push_offline_fails_with_a_message_after_exporting(exported, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    run, _ = exported
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["export", "hf", str(run), str(tmp_path / "hf"), "--push", "me/intents"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE is set" in err and "Traceback" not in err
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def test_recsys_run_exports_a_sentence_transformers_directory(tmp_path, tiny_backbone_dir):
    from sentence_transformers import SentenceTransformer

    from core.foundation.settings import build_config
    from solutions.recsys.recipe_config import ItemEncoderRecipe
    from solutions.recsys.recipe import train_item_encoder

    cfg = build_config(ItemEncoderRecipe, {"name": "recsys/item-encoder", "data": {"source": "demo_catalog"},
                                           "model": {"backbone": "tiny"},
                                           "train": {"steps": 2, "batch_size": 4, "min_support": 1}})
    train_item_encoder(cfg, tmp_path / "run", progress=False)
    meta = yaml.safe_load((tmp_path / "run" / "README.md").read_text().split("---\n")[1])
    assert meta["pipeline_tag"] == "sentence-similarity" and meta["library_name"] == "sentence-transformers"
    assert main(["export", "hf", str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    assert SentenceTransformer(str(tmp_path / "hf")).encode(["a lantern"]).shape == (1, 32)
    assert "SentenceTransformer(" in (tmp_path / "hf" / "README.md").read_text()
