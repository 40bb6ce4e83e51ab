import pytest

from core.data import load_interactions, parse_timestamp
from core.errors import UserError
from tests.conftest import needs_real_data, real_data_root, write_csv


def test_timestamps_in_unix_seconds_or_iso8601_utc():
    assert parse_timestamp("86400", "x") == 86400.0
    assert parse_timestamp("1970-01-02T00:00:00Z", "x") == 86400.0
    assert parse_timestamp("1970-01-02T01:00:00+01:00", "x") == 86400.0
    with pytest.raises(UserError, match="row 3: timestamp 'yesterday' is neither"):
        parse_timestamp("yesterday", "row 3")


def test_own_interactions_with_items_file(tmp_path):
    items = write_csv(tmp_path / "items.csv", [("a", "Red kettle", "kitchen"), ("b", "Tent", "outdoor")],
                      header=("item_id", "title", "category"))
    events = write_csv(tmp_path / "events.csv", [("u1", "a", "2026-01-01T00:00:00Z"), ("u1", "b", "10")],
                       header=("user_id", "item_id", "timestamp"))
    data = load_interactions(str(events), items=str(items), item_text_columns=("title", "category"))
    assert data.items == {"a": "Red kettle. kitchen", "b": "Tent. outdoor"}
    assert [(e.user, e.item, e.rating) for e in data.interactions] == [("u1", "a", None), ("u1", "b", None)]


def test_interactions_with_unknown_items_are_rejected(tmp_path):
    items = write_csv(tmp_path / "items.csv", [("a", "Kettle")], header=("item_id", "title"))
    events = write_csv(tmp_path / "events.csv", [("u1", "zz", "1")], header=("user_id", "item_id", "timestamp"))
    with pytest.raises(UserError, match="not in .*items.csv, e.g. zz"):
        load_interactions(str(events), items=str(items))


def test_own_interactions_need_an_items_file(tmp_path):
    with pytest.raises(UserError, match="need an items file"):
        load_interactions(str(tmp_path / "events.csv"))


def test_demo_catalog_has_cold_start_items():
    data = load_interactions("demo_catalog")
    assert len(data.items) == 120 and len(data.interactions) == 1300
    assert len(set(data.items) - {e.item for e in data.interactions}) == 10


@needs_real_data
def test_movielens_items_carry_title_genres_and_tags():
    data = load_interactions("movielens_latest_small", root=real_data_root())
    assert data.summary() == {"name": "movielens_latest_small", "items": 9742, "interactions": 100836, "users": 610}
    assert data.items["1"].startswith("Toy Story (1995). Adventure, Animation")
