"""The PhraseBank reader (solutions.finance.data): the parser on inline text, the split rules on a
tiny hand-made card, and the real four agreement files giving the same splits as before the
reader left core."""

import hashlib

import pytest

import core.data.catalog
from core.data.catalog import load_card, load_classification
from core.foundation.errors import UserError
from solutions.finance import data as finance_data
from solutions.finance.data import load_phrasebank, parse_phrasebank
from tests.conftest import REPO, real_data_root


@pytest.fixture
def finance_readers(monkeypatch):
    """What `import verticals` does at start-up: core's READERS plus finance's."""
    for kind, reader in finance_data.READERS.items():
        monkeypatch.setitem(core.data.catalog.READERS, kind, reader)


def test_parse_phrasebank_drops_duplicates_and_conflicting_sentences():
    text = "Profit rose .@positive\nProfit rose .@positive\nSales flat .@neutral\nSales flat .@negative\nA@b@neutral\n"
    pairs, dropped = parse_phrasebank(text)
    assert pairs == [("Profit rose .", "positive"), ("A@b", "neutral")]
    assert dropped == {"duplicates_removed": 1, "conflicting_sentences_dropped": 1}


def test_finance_reads_the_format_type_of_the_phrasebank_card():
    assert finance_data.READERS == {load_card("financial_phrasebank")["format"]["type"]: load_phrasebank}


def _tiny_card(root):
    """A PhraseBank-shaped card over 10 sentences per label (+1 duplicate line); the all-agree
    file holds the even-numbered sentences. No sha256: verified_file only checks presence."""
    folder = root / "tiny_pb"
    folder.mkdir()
    lines = [f"{label} news number {i} .@{label}" for label in ("negative", "neutral", "positive") for i in range(10)]
    (folder / "some.txt").write_text("\n".join(lines + lines[:1]) + "\n", encoding="latin-1")
    (folder / "all.txt").write_text("\n".join(lines[::2]) + "\n", encoding="latin-1")
    return {"name": "tiny_pb", "task": "text-classification", "location": "data_root",
            "format": {"type": "phrasebank", "encoding": "latin-1"},
            "configs": {"someagree": "some.txt", "allagree": "all.txt"}, "default_config": "someagree",
            "split": {"train": 0.8, "validation": 0.1, "test": 0.1, "seed": 0}}


def test_phrasebank_reader_splits_80_10_10_per_label_and_keeps_allagree_test_rows(tmp_path):
    data = load_phrasebank(_tiny_card(tmp_path), "", tmp_path)
    assert data.name == "tiny_pb:someagree" and data.labels == ["negative", "neutral", "positive"]
    # 30 unique sentences (the duplicate line dropped); per label: test round(10 * 0.1) = 1,
    # validation round(9 * 0.1 / 0.9) = 1, train 10 - 1 - 1 = 8
    assert (len(data.train), len(data.validation), len(data.test)) == (3 * 8, 3 * 1, 3 * 1)
    for split in (data.validation, data.test):
        assert sorted(split.labels) == ["negative", "neutral", "positive"]
    every = data.train.texts + data.validation.texts + data.test.texts
    assert len(set(every)) == 30
    allagree = data.extra["test_allagree"]
    expected = [(t, lab) for t, lab in zip(data.test.texts, data.test.labels) if int(t.split()[3]) % 2 == 0]
    assert list(zip(allagree.texts, allagree.labels)) == expected


def test_phrasebank_reader_is_seeded(tmp_path):
    card = _tiny_card(tmp_path)
    assert load_phrasebank(card, "someagree", tmp_path) == load_phrasebank(card, "", tmp_path)


def test_unknown_phrasebank_config_lists_the_configs(tmp_path):
    with pytest.raises(UserError, match=r"tiny_pb has no config '90agree'; choose one of someagree, allagree"):
        load_phrasebank(_tiny_card(tmp_path), "90agree", tmp_path)


def _phrasebank_root():
    root = real_data_root() or REPO.parent / "shared" / "datasets"
    return root if (root / "financial_phrasebank" / "Sentences_50Agree.txt").is_file() else None


def _digest(split) -> str:
    rows = "".join(f"{t}\t{lab}\n" for t, lab in zip(split.texts, split.labels))
    return hashlib.sha256(rows.encode()).hexdigest()[:16]


# Recorded with core.data.catalog's PhraseBank reader just before it moved here: per split,
# (rows, first row's text prefix, first row's label, sha256 prefix of every "text\tlabel" row).
BEFORE_THE_MOVE = {
    "50agree": {"train": (3870, "According to Gran , the company has no p", "neutral", "056a4f0cc7352944"),
                "validation": (483, "For the last quarter of 2010 , Component", "positive", "3da56d568094735f"),
                "test": (483, "Incap Contract Manufacturing Services Pv", "positive", "36dd74a27da9f281"),
                "test_allagree": (240, "The Lithuanian beer market made up 14.41", "positive", "cf8298b9974074f0")},
    "66agree": {"train": (3369, "According to Gran , the company has no p", "neutral", "8551452f4dadbdf7"),
                "validation": (421, "In the third quarter of 2010 , net sales", "positive", "e819cc6ea2538628"),
                "test": (421, "Operating profit totalled EUR 21.1 mn , ", "positive", "b718738c59bac015"),
                "test_allagree": (235, "Operating profit totalled EUR 21.1 mn , ", "positive", "25299ce2038a6755")},
    "75agree": {"train": (2758, "According to Gran , the company has no p", "neutral", "a88fae0a2cbce18b"),
                "validation": (345, "Nordea Group 's operating profit increas", "positive", "b7f1fa0080af700d"),
                "test": (345, "STORA ENSO , NORSKE SKOG , M-REAL , UPM-", "positive", "cfedf3e8104d9ac7"),
                "test_allagree": (225, "Its board of directors will propose a di", "positive", "4e65d4be4e3374ab")},
    "allagree": {"train": (1807, "According to Gran , the company has no p", "neutral", "60d29875b92e6a31"),
                 "validation": (226, "Operating profit totalled EUR 21.1 mn , ", "positive", "295233d1ca6c74b7"),
                 "test": (226, "Net sales surged by 18.5 % to EUR167 .8 ", "positive", "7d0653b69f5df9c1"),
                 "test_allagree": (226, "Net sales surged by 18.5 % to EUR167 .8 ", "positive", "7d0653b69f5df9c1")},
}


@pytest.mark.skipif(_phrasebank_root() is None, reason="financial_phrasebank/ not found under VERTICALS_DATA "
                                                         "or ../shared/datasets")
@pytest.mark.parametrize("config", sorted(BEFORE_THE_MOVE))
def test_real_phrasebank_splits_are_the_same_as_before_the_move(finance_readers, config):
    data = load_classification(f"financial_phrasebank:{config}", root=_phrasebank_root())
    assert data.name == f"financial_phrasebank:{config}" and data.labels == ["negative", "neutral", "positive"]
    splits = {"train": data.train, "validation": data.validation, "test": data.test, **data.extra}
    got = {name: (len(s), s.texts[0][:40], s.labels[0], _digest(s)) for name, s in splits.items()}
    assert got == BEFORE_THE_MOVE[config]


@pytest.mark.skipif(_phrasebank_root() is None, reason="financial_phrasebank/ not found")
def test_real_phrasebank_split_is_deduplicated_and_allagree_is_inside_test(finance_readers):
    data = load_classification("financial_phrasebank", root=_phrasebank_root())
    # 4,846 lines - 6 exact duplicates - 2 sentences x 2 conflicting labels
    assert len(data.train) + len(data.validation) + len(data.test) == 4846 - 6 - 2 * 2
    assert set(data.train.texts).isdisjoint(data.test.texts)
    assert set(data.extra["test_allagree"].texts) <= set(data.test.texts)
