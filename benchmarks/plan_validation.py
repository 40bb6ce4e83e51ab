"""Is `verticals plan` right? Predicted vs actual accuracy and training time for the recipes it ranks.

Protocol: for each data set, `core.plan.make_plan` (MiniLM, validation split only) predicts every
system; then each system is trained for real (TF-IDF + SVM fitted the planner's way; the probe,
zero-shot, LoRA and full fine-tune through core.recipes with core.plan.recipe_for, i.e. the
exact recipe the planner priced) and scored on the TEST split, which the planner never saw.
Actual time = the run's ledger wall seconds (what the planner predicts). IA3 is predicted but not
trained here (CPU budget). Targets: the recommended system's predicted accuracy within 2 points
of its actual test accuracy, predicted time within +-30%, and the pick on the measured frontier
(it actually meets the target and no system that actually meets it is cheaper).
Data sets (derived in a temporary folder, never written to the repo): the demo support set;
PhraseBank 50%-agree with 600 training labels (stratified, seed 0); BANKING77 with 20 intents
(the first 20 by name) and 25 training labels each. One seed (0); on a shared 2-core CPU.

    python -m benchmarks.plan_validation [--data-dir D] [--sets demo,phrasebank,banking20]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.record import write_record

TRAINED = ("tfidf", "zeroshot", "probe", "lora", "full")
TARGETS = {"demo": 0.85, "phrasebank": 0.80, "banking20": 0.90}


def _write(folder: Path, splits: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(("text", "label"))
            writer.writerows(zip(split.texts, split.labels))
    return folder


def _subset(split, keep_labels=None, per_label=None, total=None, rng=None):
    from core.data import Split

    idx = [i for i, label in enumerate(split.labels) if keep_labels is None or label in keep_labels]
    if per_label:
        by: dict[str, list[int]] = {}
        for i in idx:
            by.setdefault(split.labels[i], []).append(i)
        idx = sorted(j for v in by.values() for j in rng.permutation(v)[:per_label])
    if total and total < len(idx):
        from core.data import stratified_split

        part = Split([split.texts[i] for i in idx], [split.labels[i] for i in idx])
        return stratified_split(part, total / len(idx), rng)[1]
    return Split([split.texts[i] for i in idx], [split.labels[i] for i in idx])


def build_sets(names: list[str], root: Path, data_dir: str | None) -> dict[str, Path]:
    from core.data import load_classification

    out = {}
    for name in names:
        rng = np.random.default_rng(0)
        if name == "demo":
            d = load_classification("demo_support")
            out[name] = _write(root / name, {"train": d.train, "validation": d.validation, "test": d.test})
        elif name == "phrasebank":
            d = load_classification("financial_phrasebank", root=data_dir)
            out[name] = _write(root / name, {"train": _subset(d.train, total=600, rng=rng), "validation": d.validation,
                                             "test": d.test})
        elif name == "banking20":
            d = load_classification("banking77", root=data_dir)
            keep = set(sorted(set(d.train.labels))[:20])
            out[name] = _write(root / name, {"train": _subset(d.train, keep, per_label=25, rng=rng),
                                             "validation": _subset(d.validation, keep),
                                             "test": _subset(d.test, keep)})
        else:
            raise SystemExit(f"unknown set {name}")
    return out


def actual(system: str, cfg, folder: Path, out: Path) -> dict:
    """Train `system` for real; test accuracy and ledger wall seconds."""
    from core.data import load_classification

    if system == "tfidf":
        from core.cost import Prices
        from core.plan_measure import measure_tfidf

        data = load_classification(str(folder))
        t = measure_tfidf(data, Prices(), min_seconds=0.1)
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import make_pipeline, make_union
        from sklearn.svm import LinearSVC

        model = make_pipeline(make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                                         TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
                              LinearSVC(C=t["c"])).fit(data.train.texts, data.train.labels)
        acc = float(np.mean(model.predict(data.test.texts) == np.asarray(data.test.labels)))
        return {"accuracy": acc, "seconds": t["cost"].wall_seconds}
    from core.plan import recipe_for
    from core.recipes import run_recipe

    report = run_recipe(recipe_for(system, cfg), out / system, overwrite=True, progress=False)
    return {"accuracy": report["metrics"]["test"]["accuracy"], "seconds": report["cost"]["wall_seconds"]}


def validate(name: str, folder: Path, out: Path, backbone: str = "minilm") -> dict:
    from core.plan import make_plan, plan_config

    cfg = plan_config({"data": str(folder), "target": str(TARGETS[name]), "calibration_steps": "10",
                       "backbone": backbone})
    t0 = time.perf_counter()
    plan = make_plan(cfg, progress=True)
    plan_seconds = time.perf_counter() - t0
    rows = []
    for p in plan["predictions"]:
        row = {"system": p["system"], "predicted_accuracy": p["accuracy"], "predicted_seconds": p["train_seconds"],
               "how": p["how"], "predicted_usd": p["train_usd"]}
        if p["system"] in TRAINED:
            print(f"[{time.strftime('%H:%M:%S')}] {name}: training {p['system']} for real", flush=True)
            a = actual(p["system"], cfg, folder, out / name)
            row |= {"actual_accuracy": a["accuracy"], "actual_seconds": a["seconds"],
                    "accuracy_error_points": 100 * (p["accuracy"] - a["accuracy"]),
                    "time_error": p["train_seconds"] / a["seconds"] - 1 if a["seconds"] > 0 else None}
        rows.append(row)
    pick = plan["recommendation"]
    trained = [r for r in rows if "actual_accuracy" in r]
    meeting = [r for r in trained if r["actual_accuracy"] >= cfg.target]
    best = min(meeting, key=lambda r: r["predicted_usd"])["system"] if meeting else None
    picked = next((r for r in rows if r["system"] == pick), None)
    return {"set": name, "data": plan["data"], "target": cfg.target, "plan_seconds": plan_seconds,
            "recommendation": pick, "cheapest_actually_meeting": best, "pick_on_frontier": pick == best,
            "pick_accuracy_within_2_points": (picked is not None and "actual_accuracy" in picked
                                              and abs(picked["accuracy_error_points"]) <= 2),
            "pick_time_within_30_percent": (picked is not None and picked.get("time_error") is not None
                                            and abs(picked["time_error"]) <= 0.3),
            "rows": rows}


def table(results: list[dict]) -> str:
    lines = ["| set (train/labels) | target | system | how | predicted acc | actual test acc | error (points) | "
             "predicted s | actual s | time error |", "|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for r in res["rows"]:
            mark = " **(pick)**" if r["system"] == res["recommendation"] else ""
            has = "actual_accuracy" in r
            lines.append(f"| {res['set']} ({res['data']['train']}/{res['data']['num_labels']}) | "
                         f"{100 * res['target']:.0f}% | {r['system']}{mark} | {r['how']} | "
                         f"{100 * r['predicted_accuracy']:.1f}% | "
                         + (f"{100 * r['actual_accuracy']:.1f}% | {r['accuracy_error_points']:+.1f} | " if has else "- | - | ")
                         + f"{r['predicted_seconds']:.1f} | "
                         + (f"{r['actual_seconds']:.1f} | {100 * r['time_error']:+.0f}% |" if has and r["time_error"] is not None
                            else "- | - |"))
    lines.append("")
    for res in results:
        def mark(ok):
            return "n/a (no pick)" if res["recommendation"] is None else "yes" if ok else "NO"

        lines.append(f"- {res['set']}: pick {res['recommendation'] or 'none'}; cheapest that actually meets the target: "
                     f"{res['cheapest_actually_meeting'] or 'none'}; pick agrees with the measured frontier: "
                     f"{'yes' if res['pick_on_frontier'] else 'NO'}; accuracy within 2 points: "
                     f"{mark(res['pick_accuracy_within_2_points'])}; time within 30%: "
                     f"{mark(res['pick_time_within_30_percent'])} (planning took {res['plan_seconds']:.0f} s)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--sets", default=",".join(TARGETS))
    parser.add_argument("--out-root", default="benchmarks/runs/plan_validation")
    parser.add_argument("--backbone", default="minilm", help="tiny: a smoke run of the script, not a result")
    args = parser.parse_args(argv)
    from core.quiet import quiet_libraries
    from verticals.registry import install

    quiet_libraries()
    install()
    load_before = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    with tempfile.TemporaryDirectory() as tmp:
        sets = build_sets(args.sets.split(","), Path(tmp), args.data_dir)
        results = [validate(name, folder, Path(args.out_root), args.backbone) for name, folder in sets.items()]
    load_after = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    md = table(results) + (f"\nLoad average (1/5/15 min) before {load_before}, after {load_after}; MiniLM, "
                           f"2 shared CPU cores, one seed.\n")
    if args.backbone != "minilm":
        print(md)
        return
    write_record("plan_validation", {"protocol": __doc__.split("\n\n")[1], "load_average_before": load_before,
                                     "load_average_after": load_after, "results": results}, md)
    print(md)


if __name__ == "__main__":
    main()
