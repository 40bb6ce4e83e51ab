"""Recommendation data (solutions.recsys.data): timestamps, your own interactions + items files,
top tags, and the catalog sets giving the same items and interactions as before they left core."""

import hashlib

import pytest

from core.foundation.errors import UserError
from solutions.recsys.data import item_texts, load_interactions, parse_timestamp, top_tags
from tests.conftest import REPO, real_data_root, write_csv


def test_timestamps_in_unix_seconds_or_iso8601_utc():
    assert parse_timestamp("86400", "x") == 86400.0
    assert parse_timestamp("1970-01-02T00:00:00Z", "x") == 86400.0
    assert parse_timestamp("1970-01-02T01:00:00+01:00", "x") == 86400.0
    assert parse_timestamp("1970-01-02T00:00:00", "x") == 86400.0  # no zone: UTC
    with pytest.raises(UserError, match="row 3: timestamp 'yesterday' is neither"):
        parse_timestamp("yesterday", "row 3")
    for text in ("\u0661\u0667\u0660\u0660", "\uff11\uff17\uff10\uff10"):  # Arabic-Indic and full-width digits
        with pytest.raises(UserError, match="other than ASCII"):
            parse_timestamp(text, "row 4")
    with pytest.raises(UserError, match="neither Unix seconds nor ISO"):
        parse_timestamp("1_700", "row 5")
    assert parse_timestamp(" -1.5e3 ", "x") == -1500.0


def test_own_interactions_with_items_file(tmp_path):
    items = write_csv(tmp_path / "items.csv", [("a", "Red kettle", "kitchen"), ("b", "Tent", "outdoor")],
                      header=("item_id", "title", "category"))
    events = write_csv(tmp_path / "events.csv", [("u1", "a", "2026-01-01T00:00:00Z"), ("u1", "b", "10")],
                       header=("user_id", "item_id", "timestamp"))
    data = load_interactions(str(events), items=str(items), item_text_columns=("title", "category"))
    assert data.items == {"a": "Red kettle. kitchen", "b": "Tent. outdoor"}
    assert [(e.user, e.item, e.rating) for e in data.interactions] == [("u1", "a", None), ("u1", "b", None)]
    assert data.summary() == {"name": "events", "items": 2, "interactions": 2, "users": 1}


def test_interactions_with_unknown_items_are_rejected(tmp_path):
    items = write_csv(tmp_path / "items.csv", [("a", "Kettle")], header=("item_id", "title"))
    events = write_csv(tmp_path / "events.csv", [("u1", "zz", "1")], header=("user_id", "item_id", "timestamp"))
    with pytest.raises(UserError, match="not in .*items.csv, e.g. zz"):
        load_interactions(str(events), items=str(items))


def test_own_interactions_need_an_items_file(tmp_path):
    with pytest.raises(UserError, match="need an items file"):
        load_interactions(str(tmp_path / "events.csv"))


def test_a_missing_item_column_lists_the_columns(tmp_path):
    path = tmp_path / "items.csv"
    with pytest.raises(UserError, match=r"items.csv has no column 'name'. Its columns are: item_id, title"):
        item_texts([{"item_id": "a", "title": "Kettle"}], path, "item_id", ["name"])


def test_item_text_joins_columns_list_values_and_extra_phrases():
    rows = [{"id": "1", "title": "Heat (1995)", "genres": "Action|Crime"}, {"id": "2", "title": "Up", "genres": ""}]
    texts = item_texts(rows, REPO / "movies.csv", "id", ["title", "genres"], "|", {"1": ["heist"]})
    assert texts == {"1": "Heat (1995). Action, Crime. heist", "2": "Up"}


def test_top_tags_are_the_most_common_lowercased_first_seen_on_ties():
    rows = [{"m": "1", "t": "Pixar"}, {"m": "1", "t": "fun"}, {"m": "1", "t": "pixar "}, {"m": "1", "t": "toys"},
            {"m": "1", "t": "cute"}, {"m": "2", "t": "dark"}]
    assert top_tags(rows, REPO / "tags.csv", "m", "t") == {"1": ["pixar", "fun", "toys"], "2": ["dark"]}
    assert top_tags(rows, REPO / "tags.csv", "m", "t", per_item=1) == {"1": ["pixar"], "2": ["dark"]}


def test_a_classification_card_is_not_interactions():
    with pytest.raises(UserError, match="'demo_support' is not a recommendation dataset"):
        load_interactions("demo_support")


def _digests(data) -> tuple[str, str]:
    items = "".join(f"{k}\t{v}\n" for k, v in data.items.items())
    events = "".join(f"{e.user}\t{e.item}\t{e.timestamp!r}\t{e.rating!r}\n" for e in data.interactions)
    return hashlib.sha256(items.encode()).hexdigest()[:16], hashlib.sha256(events.encode()).hexdigest()[:16]


def test_demo_catalog_is_the_same_as_before_the_move():
    data = load_interactions("demo_catalog")
    assert data.summary() == {"name": "demo_catalog", "items": 120, "interactions": 1300, "users": 60}
    assert len(set(data.items) - {e.item for e in data.interactions}) == 10  # cold-start items
    assert _digests(data) == ("603b484f190c4fb7", "4f5e87b7e9bdefa2")  # recorded with core.data.catalog's reader


def _movielens_root():
    root = real_data_root() or REPO.parent / "shared" / "datasets"
    return root if (root / "movielens_latest_small" / "ratings.csv").is_file() else None


@pytest.mark.skipif(_movielens_root() is None, reason="movielens_latest_small/ not found under VERTICALS_DATA "
                                                        "or ../shared/datasets")
def test_movielens_items_carry_title_genres_and_tags_as_before_the_move():
    data = load_interactions("movielens_latest_small", root=_movielens_root())
    assert data.summary() == {"name": "movielens_latest_small", "items": 9742, "interactions": 100836, "users": 610}
    assert data.items["1"] == "Toy Story (1995). Adventure, Animation, Children, Comedy, Fantasy. pixar. fun"
    assert _digests(data) == ("1f3807e0c41c8309", "f94b17456c969065")  # recorded with core.data.catalog's reader
