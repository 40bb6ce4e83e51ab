"""Sentiment per company and per whole text (solutions.finance.targeted): sentences, mentions, the documented
aggregate, evidence with offsets, bounded work on a huge text, and the Python API on a real run."""

from __future__ import annotations

import numpy as np
import pytest

from core.foundation.errors import UserError
from solutions.finance.targeted import MAX_CHARS, aggregate, predict_entities, split_sentences
from tests.finance.conftest import KeywordModel


class CountingModel(KeywordModel):
    def __init__(self):
        self.calls = []

    def predict_proba(self, texts, batch_size=64):
        self.calls.append(len(texts))
        return super().predict_proba(texts, batch_size)


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text)]


def test_sentences_break_after_end_punctuation_but_not_after_abbreviations_or_initials():
    text = ('Siemens AG rallied 6% on Tuesday. Acme Inc. said J. Smith quits! "Shares fell," he added. '
            '$AAPL rose 1.5% vs. peers.\n\nA new paragraph without a full stop\n\nAnother')
    assert sentences(text) == ["Siemens AG rallied 6% on Tuesday.", "Acme Inc. said J. Smith quits!",
                               '"Shares fell," he added.', "$AAPL rose 1.5% vs. peers.",
                               "A new paragraph without a full stop", "Another"]


def test_a_text_without_punctuation_is_read_whole_in_windows():
    text = "word " * 1000
    spans = split_sentences(text)
    assert all(e - s <= MAX_CHARS for s, e in spans)
    assert "".join(text[s:e] + " " for s, e in spans).split() == text.split()  # nothing dropped
    assert split_sentences("") == [] and split_sentences("  \n ") == []


def test_two_companies_with_opposite_news_get_opposite_labels_with_their_own_sentence_as_evidence():
    text = "Siemens shares rise after record orders. Meanwhile Ocado falls 5% on a profit warning."
    [doc] = predict_entities(KeywordModel(), [text], ["Siemens", "Ocado"])
    assert doc.entities["Siemens"].label == "positive" and doc.entities["Ocado"].label == "negative"
    for name, result in doc.entities.items():
        assert result.sentences == 1
        top = result.evidence[0]
        assert text[top.start:top.end] == top.text and name in top.text
    assert doc.sentences_scored == 2 and not doc.truncated


def test_the_aggregate_is_the_confidence_weighted_mean_and_keeps_the_most_negative_sentence():
    text = "Acme wins a contract. Acme sees growth. Acme faces a probe."
    [doc] = predict_entities(KeywordModel(), [text], {"ACME": ["Acme"]})
    acme = doc.entities["ACME"]
    rows = np.array([[0.05, 0.15, 0.8], [0.05, 0.15, 0.8], [0.8, 0.15, 0.05]])
    mean = (rows.max(axis=1)[:, None] * rows).sum(axis=0) / rows.max(axis=1).sum()
    assert acme.label == "positive" and acme.score == pytest.approx(mean[2] - mean[0])
    assert acme.sentences == 3 and [e.label for e in acme.evidence] == ["positive", "negative"]
    assert acme.evidence[1].text == "Acme faces a probe."


def test_a_text_naming_no_entity_still_gets_its_document_score_and_cashtags_count_without_a_list():
    [plain, tagged] = predict_entities(KeywordModel(), ["Markets were quiet.", "$ORBT falls. $HALO beats."])
    assert plain.entities == {} and plain.document.label == "neutral" and plain.document.sentences == 1
    assert tagged.entities["ORBT"].label == "negative" and tagged.entities["HALO"].label == "positive"
    [only] = predict_entities(KeywordModel(), ["$ORBT falls. $HALO beats."], ["HALO"])
    assert list(only.entities) == ["HALO"]  # a given list reports only those entities


def test_a_huge_text_is_bounded_work_and_flagged():
    model = CountingModel()
    text = "Acme falls. " * 100_000  # 1.2 MB
    [doc] = predict_entities(model, [text], ["Acme"], max_sentences=50)
    assert sum(model.calls) == 50 and doc.sentences_scored == 50 and doc.sentences_dropped == 99_950
    assert doc.truncated and doc.to_dict()["truncated"] and doc.entities["Acme"].sentences == 50


def test_bad_arguments_are_refused_with_the_reason():
    with pytest.raises(UserError, match="max_sentences"):
        predict_entities(KeywordModel(), ["x."], max_sentences=0)
    with pytest.raises(UserError, match="entities"):
        predict_entities(KeywordModel(), ["x."], "Acme")
    [empty] = predict_entities(KeywordModel(), [""])
    assert empty.sentences_scored == 0 and empty.document.label == "neutral"


def test_the_python_api_scores_entities_with_a_real_run(tiny_sentiment_run):
    import verticals

    run = verticals.load(tiny_sentiment_run)
    out = run.predict_entities("Siemens shares rise. Ocado falls 5%.", ["Siemens", "Ocado"])
    assert set(out["entities"]) == {"Siemens", "Ocado"} and out["sentences_scored"] == 2
    evidence = out["entities"]["Ocado"]["evidence"][0]
    assert evidence["text"] == "Ocado falls 5%." and evidence["start"] == 21
    assert abs(sum(out["document"]["probabilities"].values()) - 1) < 1e-5
    with pytest.raises(UserError):
        run.predict_entities(["  "])


def test_the_cli_prints_one_json_line_per_text(tiny_sentiment_run, tmp_path):
    import json
    import subprocess
    import sys

    watchlist = tmp_path / "watch.yaml"
    watchlist.write_text("OCDO: [Ocado, Ocado Group]\n")
    done = subprocess.run([sys.executable, "-m", "verticals.cli", "finance", "entities", str(tiny_sentiment_run),
                           "--text", "Siemens shares rise. Ocado Group falls 5%.", "--text", "Quiet markets.",
                           "--watchlist", str(watchlist)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert list(first["entities"]) == ["OCDO"] and first["entities"]["OCDO"]["evidence"][0]["start"] == 21
    assert second["entities"] == {} and second["sentences_scored"] == 1
    refused = subprocess.run([sys.executable, "-m", "verticals.cli", "finance", "entities", str(tiny_sentiment_run),
                              "--text", "   "], capture_output=True, text=True, timeout=300, check=False)
    assert refused.returncode != 0 and "empty" in refused.stderr


def test_the_one_sentence_aggregate_is_the_general_formula_to_the_last_bit():
    probs = np.array([[0.4, 0.4, 0.2], [0.1, 0.3, 0.6], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 0.0], [0.7, 0.2, 0.1]])
    for row, p in enumerate(probs):
        weight = p.max()
        mean = (weight * p[None, :]).sum(axis=0) / max(float(weight), 1e-12)  # the general path's arithmetic
        got = aggregate("ACME", [row], probs, [(0, 4)] * len(probs), "Acme")
        assert got.probabilities == dict(zip(("negative", "neutral", "positive"), map(float, mean)))
        assert got.label == ("negative", "neutral", "positive")[int(mean.argmax())]  # a tie: the first
        assert got.score == float(mean[2] - mean[0]) and got.sentences == 1
        assert [(e.text, e.label, e.score) for e in got.evidence] == [
            ("Acme", ("negative", "neutral", "positive")[int(p.argmax())], float(p[2] - p[0]))]
    nan = aggregate("ACME", [0], np.array([[np.nan, 0.5, 0.5]]), [(0, 4)], "Acme")  # the general path
    assert np.isnan(nan.probabilities["negative"])
