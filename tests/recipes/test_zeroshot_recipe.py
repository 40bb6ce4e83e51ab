"""support/intent-zeroshot: label names or descriptions -> a saved classifier, no labelled training.

The expected probabilities are computed by hand with NumPy from the tiny backbone's token states:
mean pooling, L2 normalisation, per-label normalised mean of the descriptions, softmax(cos / T).
"""

import json

import numpy as np
import pytest
import torch
import yaml

from core.classify.config import load_recipe_file
from core.foundation.errors import UserError
from core.models.classifier import load_classifier
from core.classify.recipes import label_descriptions, run_recipe
from tests.conftest import CARD, TRANSFER, write_csv
from verticals.registry import RECIPES

TEXTS = ["my card was declined", "transfer is pending", "hello there", "card transfer"]


@pytest.fixture
def intents_dir(tmp_path):
    """Two intents with descriptive snake_case names; 24 validation rows (enough to calibrate T)."""
    rows = [(t, "card_declined") for t in CARD] + [(t, "transfer_pending") for t in TRANSFER]
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "train.csv", rows * 3)
    write_csv(tmp_path / "data" / "validation.csv", rows * 2)
    write_csv(tmp_path / "data" / "test.csv", rows)
    return tmp_path / "data"


def _embed(texts: list[str]) -> np.ndarray:
    """Mean-pooled, L2-normalised tiny-backbone embeddings, computed outside core.models.encoder."""
    from core.models.backbones import load_backbone

    backbone = load_backbone("tiny")
    out = []
    for text in texts:
        batch = backbone.tokenizer([text], truncation=True, max_length=backbone.max_length, return_tensors="pt")
        with torch.no_grad():
            hidden = backbone.encoder(**batch).last_hidden_state[0].numpy().astype(np.float64)
        mask = batch["attention_mask"][0].numpy()[:, None]
        mean = (hidden * mask).sum(axis=0) / mask.sum()
        out.append(mean / np.linalg.norm(mean))
    return np.stack(out)


def _expected_probs(descriptions: dict[str, list[str]], texts: list[str], temperature: float) -> np.ndarray:
    protos = []
    for sentences in descriptions.values():
        mean = _embed(sentences).mean(axis=0)
        protos.append(mean / np.linalg.norm(mean))
    logits = _embed(texts) @ np.stack(protos).T / temperature
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _train(tmp_path, data, **overrides):
    cfg = load_recipe_file(RECIPES["support/intent-zeroshot"], {"backbone": "tiny", "data": str(data), **overrides},
                           name="support/intent-zeroshot")
    return run_recipe(cfg, tmp_path / "run", progress=False), tmp_path / "run"


def test_label_names_become_a_saved_classifier_with_cosine_prototype_probabilities(intents_dir, tmp_path):
    report, run = _train(tmp_path, intents_dir)
    model = load_classifier(run / "model")
    assert model.labels == ["card_declined", "transfer_pending"] and model.peft == "frozen"
    assert json.loads((run / "model" / "classifier.json").read_text())["normalize"] is True  # tiny does not
    # T = zeroshot.temperature times the factor calibrated on the 24 validation rows
    temperature = 0.05 * report["confidence"]["temperature"]
    assert report["confidence"]["temperature_fitted_on"] == 24
    expected = _expected_probs({"card_declined": ["card declined"], "transfer_pending": ["transfer pending"]},
                               TEXTS, temperature)
    np.testing.assert_allclose(model.predict_proba(TEXTS), expected, atol=1e-5)

    assert report["data"]["train_used"] == 0 and report["fit"]["steps"] == 0 and report["cost"]["train_samples"] == 0
    assert report["cost"]["trainable_params"] == 0
    assert report["zeroshot"]["descriptions"] == "label names"
    assert report["zeroshot"]["labelled_data_used"] == ("none for the head; 24 labelled validation rows only "
                                                        "calibrate the temperature and set the out-of-scope threshold")
    assert report["metrics"]["test"]["n"] == 12 and report["confidence"]["ood_scorer"] == "energy"
    assert {p.name for p in run.iterdir()} == {"config.yaml", "model", "report.json", "report.md", "README.md",
                                               "confusion_matrix.png", "reliability.png"}
    markdown = (run / "report.md").read_text()
    assert "## Zero-shot" in markdown and "loss_curve.png" not in markdown  # no steps, no training curve


def test_descriptions_file_prototypes_average_each_labels_sentences(intents_dir, tmp_path):
    from core.models.zeroshot import ZeroShotClassifier

    descriptions = {"card_declined": ["my card payment was refused", "the card does not work"],
                    "transfer_pending": "a bank transfer has not arrived yet"}
    path = tmp_path / "descriptions.yaml"
    path.write_text(yaml.safe_dump(descriptions))
    report, run = _train(tmp_path, intents_dir, **{"zeroshot.descriptions": str(path), "calibrate": "false",
                                                   "zeroshot.temperature": "0.1"})
    as_lists = {k: [v] if isinstance(v, str) else v for k, v in descriptions.items()}
    probs = load_classifier(run / "model").predict_proba(TEXTS)
    np.testing.assert_allclose(probs, _expected_probs(as_lists, TEXTS, 0.1), atol=1e-5)
    np.testing.assert_allclose(probs, ZeroShotClassifier("tiny", as_lists, temperature=0.1).predict_proba(TEXTS),
                               atol=1e-5)
    assert report["zeroshot"]["descriptions_per_label"] == {"card_declined": 2, "transfer_pending": 1}
    assert report["zeroshot"]["labelled_data_used"].endswith("only set the out-of-scope threshold")


def test_train_predict_and_the_router_work_on_a_zeroshot_run_unchanged(intents_dir, tmp_path, capsys):
    from solutions.support.router import IntentRouter
    from verticals.cli import main

    run = tmp_path / "run"
    assert main(["train", "support/intent-zeroshot", "backbone=tiny", f"data={intents_dir}", "--out", str(run),
                 "--quiet"]) == 0
    assert main(["predict", str(run), "my card was declined", "--top-k", "2"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["label"] == load_classifier(run / "model").labels[int(np.argmax(
        load_classifier(run / "model").predict_proba(["my card was declined"])))]
    routed = IntentRouter.from_run(run).route("my card was declined")
    assert routed["intent"] == row["label"] and routed["in_scope_score"] is not None


def test_a_descriptions_file_must_describe_exactly_the_datas_labels(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump({"card_declined": ["card refused"], "refund": ["money back"]}))
    with pytest.raises(UserError, match=r"exactly the data's 2 labels: missing transfer_pending; unknown refund"):
        label_descriptions(str(path), ["card_declined", "transfer_pending"])
    path.write_text(yaml.safe_dump({"card_declined": ["card refused"], "transfer_pending": [" "]}))
    with pytest.raises(UserError, match="label 'transfer_pending' needs one or more non-empty sentences"):
        label_descriptions(str(path), ["card_declined", "transfer_pending"])
    with pytest.raises(UserError, match="zeroshot.descriptions file not found"):
        label_descriptions(str(tmp_path / "nope.yaml"), ["a", "b"])


def test_label_names_read_underscores_and_dashes_as_spaces():
    assert label_descriptions("", ["card_arrival", "top-up_failed"]) == {
        "card_arrival": ["card arrival"], "top-up_failed": ["top up failed"]}


def test_zeroshot_has_nothing_to_resume(intents_dir, tmp_path):
    cfg = load_recipe_file(RECIPES["support/intent-zeroshot"], {"backbone": "tiny", "data": str(intents_dir)})
    with pytest.raises(UserError, match="no checkpoint to resume from"):
        run_recipe(cfg, tmp_path / "run", resume=True, progress=False)
