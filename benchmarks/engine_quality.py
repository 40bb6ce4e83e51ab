"""Did moving every trainer onto core.engine.loop change what the recipes reach?

Question: the benchmark rows recorded before the engine (benchmarks/results/*.json at commit
BASE_COMMIT), trained again through the same recipes, data, splits and seeds on the engine:
- `banking77-full`: support/intent-full on BANKING77, seed 0 (record: banking77.json);
- `phrasebank-full`: finance/sentiment-full on Financial PhraseBank (50agree), seed 0, test and
  test_allagree (record: finance_phrasebank.json);
- `fewshot-10`: support/intent-fewshot at 10 shots per intent, the benchmark's seeds (record:
  support_banking77.json, which has 3 seeds: the before/after of each seed is paired).
The MovieLens row is rerun by its own script (benchmarks/recsys_movielens.py) and compared with
its earlier record in the closing note of the change. Parts run one at a time (`--parts`); each
run merges its rows into results/engine_quality.json, so parts can be run on different days.
Before = the earlier record's number; after = this run's; both on the test split, hyper-parameters
untouched (the recipes' own).

    python -m benchmarks.engine_quality --data-dir ../shared/datasets --parts phrasebank-full,fewshot-10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from benchmarks.record import RESULTS, write_record

BASE_COMMIT = "b0aaacd"
PARTS = ("banking77-full", "phrasebank-full", "fewshot-10")


def _before(name: str) -> dict:
    """The record of benchmark `name` as it was at BASE_COMMIT (the last run before the engine)."""
    text = subprocess.run(["git", "show", f"{BASE_COMMIT}:benchmarks/results/{name}.json"], capture_output=True,
                          text=True, check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    return json.loads(text)


def _run(recipe: str, overrides: dict, out: Path, data_dir: str) -> tuple[dict, float]:
    import verticals  # noqa: F401  (the solutions' data readers: PhraseBank)
    from core.classify.config import load_recipe_file
    from core.classify.recipes import run_recipe
    from verticals.registry import RECIPES

    cfg = load_recipe_file(RECIPES[recipe], {k: str(v) for k, v in overrides.items()}, name=recipe)
    start = time.perf_counter()
    report = run_recipe(cfg, out, data_dir=data_dir, overwrite=True, progress=False)
    return report, time.perf_counter() - start


def banking77_full(args) -> list[dict]:
    before = next(r for r in _before("banking77")["systems"] if r["key"] == "full")
    report, wall = _run("support/intent-full", {"seed": 0}, Path(args.out_root) / "quality-banking77-full", args.data_dir)
    return [{"row": "BANKING77 full fine-tune (support/intent-full), test accuracy", "seed": 0,
             "before": before["accuracy"], "after": report["metrics"]["test"]["accuracy"],
             "wall_seconds": wall, "train_samples_per_second": report["cost"]["train_samples_per_second"]}]


def phrasebank_full(args) -> list[dict]:
    before = next(r for r in _before("finance_phrasebank")["systems"] if r["key"] == "full")
    report, wall = _run("finance/sentiment-full", {"seed": 0}, Path(args.out_root) / "quality-phrasebank-full",
                        args.data_dir)
    rows = []
    for split in ("test", "test_allagree"):
        rows.append({"row": f"PhraseBank full fine-tune (finance/sentiment-full), {split} accuracy", "seed": 0,
                     "before": before[split]["accuracy"], "after": report["metrics"][split]["accuracy"],
                     "wall_seconds": wall, "train_samples_per_second": report["cost"]["train_samples_per_second"]})
    return rows


def fewshot_10(args) -> list[dict]:
    before = _before("support_banking77")["fewshot"]["support/intent-fewshot@10"]
    rows = []
    for seed in args.seeds:
        report, wall = _run("support/intent-fewshot", {"shots": 10, "seed": seed, "ood_scorer": "none"},
                            Path(args.out_root) / f"quality-fewshot-10-seed{seed}", args.data_dir)
        rows.append({"row": "support/intent-fewshot, 10 shots, test accuracy", "seed": seed,
                     "before": before["accuracy"][before["seeds"].index(seed)],
                     "after": report["metrics"]["test"]["accuracy"], "wall_seconds": wall})
    return rows


RUNNERS = {"banking77-full": banking77_full, "phrasebank-full": phrasebank_full, "fewshot-10": fewshot_10}


def table(rows: list[dict]) -> str:
    lines = ["| row | seed | before (previous loop) | after (engine) | Δ points | wall s | load avg |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['seed']} | {100 * r['before']:.2f}% | {100 * r['after']:.2f}% | "
                     f"{100 * (r['after'] - r['before']):+.2f} | {r['wall_seconds']:.0f} | {r['load_average']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("VERTICALS_DATA"))
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--seeds", default="0", help="few-shot seeds (the earlier record has 0,1,2)")
    parser.add_argument("--out-root", default="benchmarks/runs")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    from core.foundation.quiet import quiet_libraries

    quiet_libraries()
    path = RESULTS / "engine_quality.json"
    kept = json.loads(path.read_text())["rows"] if path.is_file() else []
    for part in args.parts.split(","):
        load = os.getloadavg()[0]
        new = [{**r, "part": part, "load_average": load} for r in RUNNERS[part](args)]
        for r in new:
            print(json.dumps(r), flush=True)
        kept = [r for r in kept if not (r["part"] == part and r["seed"] in {n["seed"] for n in new})] + new
    order = {p: i for i, p in enumerate(PARTS)}
    kept.sort(key=lambda r: (order[r["part"]], r["row"], r["seed"]))
    write_record("engine_quality", {"protocol": {"base_commit": BASE_COMMIT, "parts": list(PARTS)}, "rows": kept},
                 table(kept))
    print(table(kept))


if __name__ == "__main__":
    main()
