"""Question: does any write that `verticals recsys serve` acknowledged get lost to kill -9?

Protocol: for each index directory given (one per index kind: text, ALS with a cold-item map, EASE,
the set autoencoder), copy it; for each round, start `verticals recsys serve` on it, run 4 writer
threads that add, update and delete their own items and 2 that post interaction events for their
own users, as fast as the server answers, kill -9 the server at a random moment (seeded), load the
directory as the kill left it (the journal replayed, read-only) and check every acknowledged
write: an added or updated item is there with the metadata of its last acknowledged write, a
deleted one is gone, an acknowledged event's item is in its user's history; the next round
restarts the server on the same directory. An index that refuses items by text (the set
autoencoder: a new item has no learned vector) answers item writes with 400, counted as refused:
only events are written there. Writes in flight at the kill (no answer) may land or not; they
are counted apart. Writes journal an fsync each, so the rate depends on the disk. Writes
benchmarks/results/recsys_durability.json.

  python -m benchmarks.recsys_durability --index runs/shop-index --index runs/shop-als-index --rounds 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.record import write_record
from tests.http_helpers import free_port, start_cli_server


def start(index_dir: Path, port: int):
    env = {k: v for k, v in os.environ.items() if k != "VERTICALS_API_TOKEN"} | {"HF_HUB_OFFLINE": "1"}
    return start_cli_server(["recsys", "serve", str(index_dir)], port, env, index_dir.parent / f"server-{port}.log")


def writer(base: str, name: str, stop: threading.Event, acked: dict, counts: dict, rng: random.Random) -> None:
    """Cycles add -> update -> delete over its own ids; `acked[id]` is the last acknowledged state."""
    with httpx.Client(base_url=base, timeout=10) as client:
        n = 0
        while not stop.is_set():
            item = f"{name}/{n % 20}"
            state = acked.get(item)
            try:
                if state == "unknown":  # its last write was in flight at a kill: settle it
                    r = client.delete(f"/v1/items/{item}")
                    ok, new = r.status_code in (200, 404), "deleted"
                elif state is None or state == "deleted":
                    tag = f"v{n}"
                    r = client.post("/v1/items", json={"id": item, "text": f"lamp {tag}", "metadata": {"tag": tag}})
                    ok, new = r.status_code == 201, tag
                elif rng.random() < 0.5:
                    tag = f"v{n}"
                    r = client.put(f"/v1/items/{item}", json={"text": f"chair {tag}", "metadata": {"tag": tag}})
                    ok, new = r.status_code == 200, tag
                else:
                    r = client.delete(f"/v1/items/{item}")
                    ok, new = r.status_code == 200, "deleted"
            except httpx.HTTPError:  # the kill: this write has no answer; it may or may not have landed
                counts["in_flight"] += 1
                acked[item] = "unknown"
                return
            if ok:
                acked[item] = new
                counts["acknowledged"] += 1
            else:
                counts["refused"] += 1
            n += 1


def event_writer(base: str, name: str, stop: threading.Event, items: list[str], acked: set, counts: dict) -> None:
    """Posts one positive event at a time for its own user, cycling over `items`; `acked` gets (user, item)."""
    with httpx.Client(base_url=base, timeout=10) as client:
        n = 0
        while not stop.is_set():
            user, item = f"{name}-user-{n // len(items)}", items[n % len(items)]
            try:
                r = client.post("/v1/events", json={"user": user, "item": item})
            except httpx.HTTPError:  # the kill: no answer, no promise
                counts["in_flight"] += 1
                return
            if r.status_code in (200, 201):
                acked.add((user, item))
                counts["events_acknowledged"] += 1
            else:
                counts["refused"] += 1
            n += 1


def check(index_dir: Path, acked: dict, events: set) -> int:
    """Acknowledged writes (items and events) missing from the directory as kill -9 left it (loaded
    read-only: the journal is replayed in memory, nothing is written)."""
    from solutions.recsys.live import Recommender

    rec = Recommender.load(index_dir)
    lost = 0
    for item, state in acked.items():
        if state == "unknown":
            continue
        if state == "deleted":
            lost += item in rec.index
        else:
            lost += item not in rec.index or (rec.index.metadata.get(item) or {}).get("tag") != state
    histories = rec.catalog.histories
    lost += sum(item not in histories.get(user, ()) for user, item in events)
    return lost  # not closed: close() would compact what it replayed, and the check writes nothing


def index_kind(index_dir: Path) -> str:
    """What the directory serves, by the model files beside the index."""
    for name, kind in (("cold_map.json", "ALS/BPR + cold-item map"), ("factors.json", "ALS/BPR"),
                       ("ease.json", "EASE"), ("set_autoencoder.json", "set autoencoder"),
                       ("sequential.json", "sequential")):
        if (index_dir / name).is_file():
            return kind
    return "text"


def run_index(index: str, rounds: int, rng: random.Random) -> dict:
    """The kill -9 rounds on a copy of one index directory; its counts and per-round losses."""
    from solutions.recsys.live import Recommender  # lazy: loads torch; the writers only need httpx

    work = Path(tempfile.mkdtemp()) / "index"
    shutil.copytree(index, work)
    items = Recommender.load(work).index.ids[:50]  # the items events point at
    acked: dict[str, str] = {}
    events: set[tuple[str, str]] = set()
    counts = {"acknowledged": 0, "events_acknowledged": 0, "refused": 0, "in_flight": 0}
    per_round = []
    for round_no in range(rounds):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start(work, port)
        stop = threading.Event()
        threads = [threading.Thread(target=writer, args=(base, f"w{i}", stop, acked, counts, random.Random(rng.random())))
                   for i in range(4)]
        threads += [threading.Thread(target=event_writer, args=(base, f"e{i}-r{round_no}", stop, items, events, counts))
                    for i in range(2)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.5, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        for t in threads:
            t.join()
        per_round.append({"round": round_no, "lost_so_far": check(work, acked, events)})
        print(json.dumps({"index": Path(index).name, **per_round[-1], **counts}), flush=True)
    shutil.rmtree(work.parent, ignore_errors=True)
    return {"index": Path(index).name, "kind": index_kind(Path(index)), "rounds": per_round, **counts,
            "lost": per_round[-1]["lost_so_far"] if per_round else 0,
            "items_checked": sum(v != "unknown" for v in acked.values()), "events_checked": len(events)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, action="append", help="an index directory (repeatable)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    results = [run_index(index, args.rounds, rng) for index in args.index]
    load = os.getloadavg()
    lines = [f"{args.rounds} rounds of kill -9 per index (seed {args.seed}), 4 item writers and 2 event writers; "
             f"load average at the end {load[0]:.2f} on {os.cpu_count()} CPUs.", "",
             "| index | item writes acknowledged | events acknowledged | lost | refused | in flight at a kill |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['kind']} | {r['acknowledged']} | {r['events_acknowledged']} | **{r['lost']}** | "
                     f"{r['refused']} | {r['in_flight']} |")
    table = "\n".join(lines) + "\n"
    write_record("recsys_durability", {"question": "acknowledged recsys writes lost to kill -9", "protocol": __doc__,
                                       "config": {"indexes": [Path(i).name for i in args.index], "rounds": args.rounds,
                                                  "seed": args.seed},
                                       "indexes": results, "lost": sum(r["lost"] for r in results),
                                       "load_average_end": load}, table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
