import numpy as np
import pytest

import core.data.catalog
from core.data.catalog import READERS, card_reader, data_root, load_card, load_card_csv, load_classification, read_records, records_to_split, verified_file
from core.data.splits import LabelMap, Split, stratified_split
from core.foundation.errors import UserError
from tests.conftest import REPO, needs_real_data, real_data_root, write_csv


def test_stratified_split_holds_out_fraction_of_each_label_and_keeps_input():
    split = Split([f"t{i}" for i in range(30)], ["a"] * 20 + ["b"] * 10)
    before = (list(split.texts), list(split.labels))
    rest, held = stratified_split(split, 0.2, np.random.default_rng(0))
    assert held.labels.count("a") == 4 and held.labels.count("b") == 2
    assert len(rest) == 24 and set(rest.texts).isdisjoint(held.texts)
    assert (split.texts, split.labels) == before  # input untouched


def test_stratified_split_is_seeded_and_never_holds_out_a_singleton():
    split = Split(["x", "y", "z", "w"], ["a", "a", "a", "solo"])
    one = stratified_split(split, 0.5, np.random.default_rng(7))
    two = stratified_split(split, 0.5, np.random.default_rng(7))
    assert one == two
    assert "solo" in one[0].labels and "solo" not in one[1].labels


def test_label_map_rejects_labels_never_seen_in_training():
    labels = LabelMap(["card", "transfer"])
    assert labels.encode(["transfer", "card"]) == [1, 0]
    with pytest.raises(UserError, match="never seen in training: 'refund'"):
        labels.encode(["card", "refund"])


def test_empty_csv_is_a_clear_error(tmp_path):
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(UserError, match="no data rows"):
        read_records(tmp_path / "empty.csv")


def test_missing_label_column_lists_the_columns(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("hi", "x")], header=("text", "intent"))
    with pytest.raises(UserError, match=r"no column 'label'.*text, intent.*label_column="):
        records_to_split(read_records(path), path, "text", "label")


def test_non_utf8_file_names_the_byte_and_the_fix(tmp_path):
    (tmp_path / "latin.csv").write_bytes("text,label\nEspa\xf1a,x\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"not valid utf-8: byte 0xf1.*encoding=latin-1"):
        read_records(tmp_path / "latin.csv")
    assert read_records(tmp_path / "latin.csv", "latin-1")[0]["text"] == "España"


def test_bad_jsonl_line_is_reported_with_its_number(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": "x"}\n{oops\n')
    with pytest.raises(UserError, match="line 2: not valid JSON"):
        read_records(tmp_path / "d.jsonl")


def test_empty_text_row_is_reported(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("ok", "x"), ("  ", "y")])
    with pytest.raises(UserError, match="row 3: empty 'text'"):
        records_to_split(read_records(path), path, "text", "label")


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(UserError, match="unknown dataset 'nope'.*banking77"):
        load_classification("nope")


def test_missing_catalog_file_says_where_it_looked_and_how_to_fix(tmp_path):
    card = load_card("banking77")
    with pytest.raises(UserError, match=rf"train.csv not found in {tmp_path}/banking77.*--data-dir"):
        verified_file(card, "train.csv", tmp_path)


def test_corrupt_catalog_file_fails_its_checksum(tmp_path):
    (tmp_path / "banking77").mkdir()
    (tmp_path / "banking77" / "train.csv").write_text("text,category\nhello,card_arrival\n")
    with pytest.raises(UserError, match="does not match its checksum"):
        load_classification("banking77", root=tmp_path)


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("VERTICALS_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "flag") == tmp_path / "flag"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("VERTICALS_DATA")
    assert data_root().parts[-3:] == (".cache", "verticals", "datasets")


def test_own_folder_carves_validation_when_absent(toy_dir):
    (toy_dir / "validation.csv").unlink()
    data = load_classification(str(toy_dir))
    assert data.labels == ["card", "transfer"]
    assert len(data.train) + len(data.validation) == 36 and len(data.validation) == 4


def test_demo_support_is_shipped_and_verified():
    data = load_classification("demo_support")
    assert len(data.labels) >= 10
    assert min(data.train.labels.count(lab) for lab in data.labels) >= 20
    assert set(data.extra["oos"].labels) == {"oos"}


@needs_real_data
def test_banking77_split_sizes():
    data = load_classification("banking77", root=real_data_root())
    assert (len(data.train), len(data.validation), len(data.test), len(data.labels)) == (9000, 1003, 3080, 77)
    assert set(data.validation.texts).isdisjoint(data.train.texts)


def test_a_card_is_read_by_the_reader_of_its_format_type(monkeypatch, tmp_path):
    seen = []

    def reader(card, config, root):
        seen.append((card["name"], config, root))
        return "read"

    monkeypatch.setitem(READERS, "lines", reader)
    card = {"name": "mine", "task": "text-classification", "format": {"type": "lines"}}
    assert card_reader(card)(card, "v2", tmp_path) == "read"
    assert seen == [("mine", "v2", tmp_path)]


def test_unknown_format_type_names_the_type_the_card_and_the_known_types(monkeypatch):
    monkeypatch.setattr(core.data.catalog, "READERS", {"csv": load_card_csv})  # core alone: no solution installed
    with pytest.raises(UserError, match=r"'financial_phrasebank' \(datasets/financial_phrasebank/card.yaml\) "
                                        r"has format type 'phrasebank'.*Known format types: csv.*import verticals"):
        load_classification("financial_phrasebank")


def test_a_recommendation_card_is_not_read_as_classification():
    with pytest.raises(UserError, match="'demo_catalog' is a 'recommendation' dataset.*not text classification"):
        load_classification("demo_catalog")


def test_a_multilabel_card_is_not_read_as_single_label_classification():
    with pytest.raises(UserError, match=r"'demo_support_multi' is multi-label .*format.labels_column.*"
                                        r"multilabel-classification"):
        load_classification("demo_support_multi")


def test_a_config_on_a_card_without_configs_is_an_error():
    with pytest.raises(UserError, match=r"'demo_support' has no configs; use data=demo_support \(without ':v2'\)"):
        load_classification("demo_support:v2")


def test_core_alone_reads_only_its_own_formats_and_loads_no_solution():
    import subprocess
    import sys

    code = ("import sys, core.data.catalog; print(sorted(core.data.catalog.READERS), "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('solutions', 'verticals')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout
    assert out.strip() == "['csv'] []"
