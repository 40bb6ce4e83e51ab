"""The shipped multi-intent demo set (datasets/demo_support_multi): demo_support's rows plus hand-written
queries with two or three intents, read by the multi-label reader and listed as multi-label."""

from core.data.catalog import load_card, load_classification
from core.data.multilabel import load_multilabel
from verticals.cli import main

NAME = "demo_support_multi"
INTENTS = {"cancel_order", "track_order", "refund_status", "change_address", "reset_password",
           "update_payment_method", "report_damaged_item", "return_item", "delivery_delay", "close_account",
           "talk_to_human", "apply_discount_code"}


def _splits(data):
    return {"train": data.train, "validation": data.validation, "test": data.test, **data.extra}


def test_the_card_loads_verified_with_its_row_counts_and_multi_intent_rows_in_every_split():
    data = load_multilabel(NAME)  # every file checked against the card's sha256 on the way in
    summary = data.summary()
    assert {k: summary[k] for k in ("train", "validation", "test", "oos")} == {
        "train": 264 + 80, "validation": 72 + 24, "test": 96 + 40, "oos": 40}
    assert summary["multi_label_rows"] == {"train": 80, "validation": 24, "test": 40, "oos": 0}
    assert set(data.labels) == INTENTS
    rows = {f["name"]: f["rows"] for f in load_card(NAME)["files"]}  # the card's rows exclude the header
    assert rows == {f"{k}.csv": len(v) for k, v in _splits(data).items()}
    for split in (data.train, data.validation, data.test):
        widths = {len(s) for s in split.label_sets}
        assert widths == {1, 2, 3}


def test_every_label_is_one_of_the_twelve_intents_or_oos_and_no_text_appears_twice():
    splits = _splits(load_multilabel(NAME))
    assert {lab for s in splits["oos"].label_sets for lab in s} == {"oos"}
    for name in ("train", "validation", "test"):
        assert {lab for s in splits[name].label_sets for lab in s} == INTENTS, name
    texts = [t.strip().lower() for split in splits.values() for t in split.texts]
    assert len(texts) == len(set(texts))


def test_every_demo_support_row_keeps_its_split_and_its_one_intent():
    single, multi = load_classification("demo_support"), load_multilabel(NAME)
    for name in ("train", "validation", "test"):
        rows = dict(zip(getattr(multi, name).texts, getattr(multi, name).label_sets))
        part = getattr(single, name)
        assert all(rows[t] == (lab,) for t, lab in zip(part.texts, part.labels)), name


def test_the_datasets_command_marks_it_multi_label(capsys):
    assert main(["datasets"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "(multi-label)" in lines[NAME] and lines[NAME].endswith("[ok]")
    assert "(multi-label)" not in lines["demo_support"]
