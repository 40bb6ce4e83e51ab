"""Live interaction events: folded into histories without a retrain, durable across a crash and
a compaction, exported for a retrain, refused one by one when hostile, consistent under
concurrent item writes. Real journal files, a real server on loopback, the tiny backbone."""

import csv
import json
import os
import subprocess
import sys
import threading

import httpx
import pytest

from core.serving.app import ServiceLimits
from solutions.recsys.catalog import MAX_HISTORY, Catalog
from solutions.recsys.data import Interaction, load_interactions
from solutions.recsys.durable import saved_journal_seq
from solutions.recsys.events import EVENTS_FILE, fold_events, logged_events, rating_problem
from solutions.recsys.journal import JOURNAL_FILE
from solutions.recsys.live import Recommender
from tests.http_helpers import running
from tests.recsys.conftest import crash, save_demo_index

LIMITS = ServiceLimits(max_batch=8, max_id_chars=64)


def test_fold_makes_the_item_the_latest_and_skips_negatives():
    catalog = Catalog("tiny", 16, 5.0, {"u1": ["a", "b", "c"]}, threshold=3.5)
    before = catalog.histories["u1"]
    fold_events(catalog, [Interaction("u1", "a", 1.0, 5.0), Interaction("u1", "d", 2.0, 1.0),
                          Interaction("new", "b", 3.0, None)])
    assert catalog.histories == {"u1": ["b", "c", "a"], "new": ["b"]}
    assert before == ["a", "b", "c"]  # replaced, not changed in place: a reader holding it sees it whole
    fold_events(catalog, [Interaction("u1", f"x{n}", float(n), None) for n in range(MAX_HISTORY)])
    assert len(catalog.histories["u1"]) == MAX_HISTORY and catalog.histories["u1"][-1] == f"x{MAX_HISTORY - 1}"


@pytest.fixture
def index_dir(tmp_path, catalog_vectors):
    return save_demo_index(tmp_path / "idx", catalog_vectors, "Flat", half_life=5.0)


def events_for(user: str, items: list[str]) -> list[Interaction]:
    return [Interaction(user, item, 1_767_225_600.0 + n, None) for n, item in enumerate(items)]


def test_an_event_changes_the_next_recommendation_without_a_retrain(index_dir):
    rec = Recommender.load(index_dir)
    before = rec.recommend_for_user("u01", 10)
    target = before[-1][0]  # an item the user has not seen; after the event it is the latest one
    assert rec.add_events(events_for("u01", [target])) == [None]
    after = rec.recommend_for_user("u01", 10)
    assert rec.catalog.histories["u01"][-1] == target and target not in [i for i, _ in after]
    assert after != before
    assert rec.add_events(events_for("newcomer", ["i003"])) == [None]
    assert rec.catalog.histories["newcomer"] == ["i003"] and len(rec.recommend_for_user("newcomer", 3)) == 3


def test_events_for_unknown_items_are_refused_alone_and_not_journaled(index_dir):
    rec = Recommender.load(index_dir)
    problems = rec.add_events(events_for("u02", ["nope", "i004"]))
    assert problems == ["unknown item id 'nope'", None]
    assert rec.catalog.histories["u02"][-1] == "i004"
    assert rec.add_events(events_for("u02", ["nope"])) == ["unknown item id 'nope'"]
    assert len((index_dir / JOURNAL_FILE).read_bytes().splitlines()) == 1  # the refused batch wrote nothing


def test_events_survive_a_crash_and_a_compaction(index_dir):
    rec = Recommender.load(index_dir, compact_every=3)
    rec.add_events(events_for("u01", ["i010", "i011"]))
    rec.add_item("new-1", "Camping lantern", None)
    rec.add_events(events_for("u03", ["new-1"]))  # record 3: compaction archives records 1 and 3
    rec.add_events(events_for("u04", ["i012"]))  # record 4: in the journal only
    histories = {u: list(h) for u, h in rec.catalog.histories.items()}
    crash(rec)
    assert saved_journal_seq(index_dir) == 3 and Catalog.load(index_dir).journal_seq == 3
    again = Recommender.load(index_dir)
    assert again.catalog.histories == histories and "new-1" in again.index
    exported = [(e.user, e.item) for e in logged_events(index_dir)]
    assert exported == [("u01", "i010"), ("u01", "i011"), ("u03", "new-1"), ("u04", "i012")]


def test_a_crash_between_the_archive_and_the_catalog_save_keeps_each_event_once(index_dir, monkeypatch):
    rec = Recommender.load(index_dir, compact_every=2)
    rec.add_events(events_for("u01", ["i010"]))

    def crash_on_save(self, directory):
        raise SystemExit("killed")

    monkeypatch.setattr(Catalog, "save", crash_on_save)
    with pytest.raises(SystemExit):
        rec.add_events(events_for("u01", ["i011"]))  # record 2 starts a compaction that dies
    monkeypatch.undo()
    crash(rec)
    again = Recommender.load(index_dir, compact_every=2)
    assert again.catalog.histories["u01"][-2:] == ["i010", "i011"]
    again.add_events(events_for("u05", ["i012"]))
    again.close()  # archives records 1-3; 1-2 are in the archive twice now
    assert [(e.user, e.item) for e in logged_events(index_dir)] == [("u01", "i010"), ("u01", "i011"),
                                                                     ("u05", "i012")]
    assert (index_dir / EVENTS_FILE).is_file() and not (index_dir / JOURNAL_FILE).read_bytes()


def test_events_and_item_writes_from_many_threads_replay_to_the_same_state(index_dir):
    rec = Recommender.load(index_dir, compact_every=5)
    errors = []

    def events(t):
        try:
            for n in range(10):
                rec.add_events(events_for(f"user-{t}", [f"i{(7 * n + t) % 100 + 1:03d}", f"t0-{n}"]))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    def items():
        try:
            for n in range(10):
                rec.add_item(f"t0-{n}", f"item number {n}", None)
                if n % 3 == 0:
                    rec.remove_item(f"t0-{n}")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=events, args=(t,)) for t in range(3)] + [threading.Thread(target=items)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    histories, ids = {u: list(h) for u, h in rec.catalog.histories.items()}, sorted(rec.index.ids)
    crash(rec)
    again = Recommender.load(index_dir)
    assert again.catalog.histories == histories and sorted(again.index.ids) == ids
    assert len([e for e in logged_events(index_dir) if e.user.startswith("user-")]) >= 30


def test_the_exported_events_train_and_index_like_any_interactions_file(index_dir, tmp_path):
    rec = Recommender.load(index_dir)
    rec.add_events([Interaction("u01", "i010", 1_767_225_600.0, 4.5), Interaction("zed", "i011", 1_767_225_601.5, None)])
    rec.close()
    out = tmp_path / "events.csv"
    done = subprocess.run([sys.executable, "-m", "verticals.cli", "recsys", "events", str(index_dir), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "2 events" in done.stdout, done.stderr
    assert list(csv.reader(out.open())) == [["user_id", "item_id", "timestamp", "rating"],
                                            ["u01", "i010", "1767225600", "4.5"], ["zed", "i011", "1767225601.5", ""]]
    items = os.path.join(os.path.dirname(__file__), "..", "..", "datasets", "demo_catalog", "items.csv")
    data = load_interactions(str(out), items=items)
    assert [(e.user, e.item, e.rating) for e in data.interactions] == [("u01", "i010", 4.5), ("zed", "i011", None)]


# ---------------------------------------------------------------- over HTTP
@pytest.fixture
def client(index_dir):
    from solutions.recsys.service import create_app

    rec = Recommender.load(index_dir)
    with running(create_app(rec, limits=LIMITS), LIMITS) as base, httpx.Client(base_url=base, timeout=30) as http:
        yield http, rec


def test_post_events_then_recommend_reflects_them(client):
    http, _ = client
    before = http.post("/v1/recommend", json={"user_id": "u01", "k": 10}).json()["items"]
    r = http.post("/v1/events", json={"user": "u01", "item": before[-1]["id"], "timestamp": "2026-04-01T10:00:00Z"})
    assert r.status_code == 200 and r.json() == {"accepted": 1, "rejected": 0}
    after = http.post("/v1/recommend", json={"user_id": "u01", "k": 10}).json()["items"]
    assert after != before and before[-1]["id"] not in [hit["id"] for hit in after]
    assert http.post("/v1/events", json={"user": "brand-new", "item": "i005"}).status_code == 200
    assert http.post("/v1/recommend", json={"user_id": "brand-new", "k": 3}).status_code == 200


def test_a_bad_event_in_a_list_never_fails_the_others(client):
    http, rec = client
    r = http.post("/v1/events", json=[{"user": "u09", "item": "i006"}, {"user": "u09", "item": "missing"},
                                      {"user": 7, "item": "i007"}, {"user": "u09", "item": "i008", "rating": 5}])
    body = r.json()
    assert r.status_code == 200 and (body["accepted"], body["rejected"]) == (2, 2)
    assert [x["status"] for x in body["results"]] == [200, 404, 422, 200]
    assert "unknown item id 'missing'" in body["results"][1]["error"] and "events[2].user" in body["results"][2]["error"]
    assert rec.catalog.histories["u09"][-2:] == ["i006", "i008"]
    r = http.post("/v1/events", json=[{"user": "u09", "item": "missing"}])
    assert r.status_code == 404 and r.json()["rejected"] == 1 and "unknown item" in r.json()["error"]


@pytest.mark.parametrize("body,status,message", [
    (b'{"user": "u01", "item": "i001", "timestamp": NaN}', 400, "NaN"),
    (b'{"user": "u01", "item": "i001", "timestamp": "nan"}', 422, "not a time"),
    (b'{"user": "u01", "item": "i001", "timestamp": 1e300}', 422, "not a time"),
    (b'{"user": "u01", "item": "i001", "timestamp": -5}', 422, "not a time"),
    (b'{"user": "u01", "item": "i001", "timestamp": "yesterday"}', 422, "neither Unix seconds nor ISO"),
    # found by an attacker's run: implausible times, ratings off the catalog's scale (1-5), other scripts' digits
    (b'{"user": "u01", "item": "i001", "timestamp": 0}', 422, "not a time between 1990-01-01"),
    (b'{"user": "u01", "item": "i001", "timestamp": 1e-300}', 422, "not a time"),
    (b'{"user": "u01", "item": "i001", "timestamp": "9999-06-01T00:00:00Z"}', 422, "not a time"),
    (b'{"user": "u01", "item": "i001", "timestamp": 253402214400}', 422, "not a time"),
    (b'{"user": "u01", "item": "i001", "timestamp": "\u0661\u0667\u0660\u0660"}', 422, "ASCII"),
    (b'{"user": "u01", "item": "i001", "timestamp": "1_767_225_600"}', 422, "neither Unix seconds nor ISO"),
    (b'{"user": "u01", "item": "i001", "rating": 1e308}', 422, "rating 1e+308 is outside this catalog's scale, 1 to 5"),
    (b'{"user": "u01", "item": "i001", "rating": -1e308}', 422, "outside this catalog's scale"),
    (b'{"user": "u01", "item": "i001", "rating": 1e19}', 422, "outside this catalog's scale"),
    (b'{"user": "u01", "item": "i001", "rating": -1}', 422, "outside this catalog's scale"),
    (b'{"user": "u01", "item": "i001", "rating": 1' + b"0" * 400 + b'}', 400, "401 digits"),
    (b'{"user": "u01", "item": "i001", "rating": true}', 422, "rating"),
    (b'{"user": "u01", "item": "i001", "rating": "5"}', 422, "rating"),
    (b'{"user": ["u01"], "item": "i001"}', 422, "event.user"),
    (b'{"user": "u01", "item": "i001", "extra": 1}', 422, "extra"),
    (b'{"user": "' + b"u" * 65 + b'", "item": "i001"}', 422, "characters"),
    (b'{"user": "\\u200b", "item": "i001"}', 422, "visible text"),
    (b'{"user": "u01", "item": "no-such-item"}', 404, "unknown item id 'no-such-item'"),
    (b'[]', 422, "at least one event"),
    (b'[' + b",".join([b'{"user": "u01", "item": "i001"}'] * 9) + b']', 413, "at most 8"),
    (b'"u01"', 422, "one event"),
])
def test_hostile_events_get_a_4xx_and_change_nothing(client, body, status, message):
    http, rec = client
    before = {u: list(h) for u, h in rec.catalog.histories.items()}
    r = http.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and message in r.json()["error"], r.text
    assert rec.catalog.histories == before


def test_events_on_the_catalog_scale_and_in_the_window_are_taken(client):
    http, rec = client
    assert rec.catalog.rating_range == [1.0, 5.0]  # the demo catalog's ratings
    for rating, stamp in ((1, "1990-01-01T00:00:00Z"), (5, 1_767_225_600), (2.5, None)):
        event = {"user": "u07", "item": "i003", "rating": rating} | ({"timestamp": stamp} if stamp else {})
        assert http.post("/v1/events", json=event).status_code == 200


def test_a_catalog_saved_before_rating_ranges_loads_and_takes_the_documented_limits(tmp_path):
    (tmp_path / "catalog.json").write_text(json.dumps({"encoder": "tiny", "max_length": 32, "half_life": 5.0,
                                                       "histories": {}, "threshold": None, "journal_seq": 0}))
    catalog = Catalog.load(tmp_path)
    assert catalog.rating_range is None
    assert rating_problem(10, catalog) is None and rating_problem(0, catalog) is None
    assert "limits for a catalog built without ratings, 0 to 10" in rating_problem(10.5, catalog)
    assert rating_problem(10**400, catalog).startswith("rating inf is outside")  # beyond any float: no OverflowError
