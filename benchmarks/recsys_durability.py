"""Question: does any write that `verticals recsys serve` acknowledged get lost to kill -9?

Protocol: copy an index directory; for each round, start `verticals recsys serve` on it, run
4 writer threads that add, update and delete their own items as fast as the server answers,
kill -9 the server at a random moment (seeded), load the directory as the kill left it (the
journal replayed, read-only) and check every acknowledged write: an added or updated item is
there with the metadata of its last acknowledged write, a deleted one is gone; the next round
restarts the server on the same directory. Writes in flight at the kill (no
answer) may land or not; they are counted apart. Writes journal an fsync each, so the rate
depends on the disk. Writes benchmarks/results/recsys_durability.json.

  python -m benchmarks.recsys_durability --index runs/shop-index --rounds 10
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


def check(index_dir: Path, acked: dict) -> int:
    """Acknowledged writes missing from the directory as kill -9 left it (loaded read-only: the
    journal is replayed in memory, nothing is written)."""
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
    return lost


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp()) / "index"
    shutil.copytree(args.index, work)
    acked: dict[str, str] = {}
    counts = {"acknowledged": 0, "refused": 0, "in_flight": 0}
    rounds = []
    for round_no in range(args.rounds):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start(work, port)
        stop = threading.Event()
        before = counts["acknowledged"]
        threads = [threading.Thread(target=writer, args=(base, f"w{i}", stop, acked, counts, random.Random(rng.random())))
                   for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.5, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        for t in threads:
            t.join()
        lost = check(work, acked)
        rounds.append({"round": round_no, "acknowledged": counts["acknowledged"] - before, "lost_so_far": lost})
        print(json.dumps(rounds[-1]), flush=True)
    load = os.getloadavg()
    lost = rounds[-1]["lost_so_far"] if rounds else 0
    checked = sum(v != "unknown" for v in acked.values())
    table = (f"{args.rounds} rounds of kill -9 (seed {args.seed}), 4 writer threads: **{counts['acknowledged']} writes "
             f"acknowledged, {lost} lost** ({checked} items checked at the end); {counts['in_flight']} writes were in flight "
             f"at a kill (no answer, so no promise). Load average at the end {load[0]:.2f} on {os.cpu_count()} CPUs.\n")
    write_record("recsys_durability", {"question": "acknowledged recsys writes lost to kill -9", "protocol": __doc__,
                                       "config": {"index": args.index, "rounds": args.rounds, "seed": args.seed},
                                       "rounds": rounds, **counts, "lost": lost, "items_checked": checked,
                                       "load_average_end": load}, table)
    print(table)
    shutil.rmtree(work.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
