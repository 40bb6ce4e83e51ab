"""Active learning on BANKING77: accuracy against labels used, per strategy (core.mlops.selection).

Question: how many labels does each strategy `verticals support select` offers need to reach the
accuracy random sampling reaches with `--target` (800) labels?

Protocol (nothing here is tuned on the test split):
- Pool: BANKING77's training split as the catalog splits it (9,000 rows; its 10% stratified validation
  split, seed 0, is held apart). Evaluation: the official test split (3,080 rows), accuracy.
- Learner: the project's probe, frozen MiniLM embeddings (computed once for pool, validation and test,
  cached under --out) + multinomial logistic regression; its C is chosen once on the validation split
  from (1, 10, 100), fitted on a random --tune-labels sample of the pool (seed 0), and then fixed for
  every strategy and seed.
- Rounds: per seed, `--initial` pool rows drawn at random (the same draw for every strategy of that
  seed) are labelled; then each round the learner is fitted on the labelled rows and scored on test,
  and the strategy chooses the next batch from the unlabelled pool (probabilities of the current
  learner; its input embeddings for badge and coreset; coreset counts the labelled rows as centres),
  until --max-labels. Label counts: --initial, then every --step.
- Seeds: --seeds (>= 3); per strategy and label count, mean +- std of test accuracy over seeds.
- Baselines: random sampling (the target), and the learner on the whole pool (the ceiling).
- Headline: per strategy, the fewest labels at which its mean accuracy reaches random's mean at
  --target labels (on the label-count grid), and that as a share of --target.

    python -m benchmarks.active_learning --data-dir ../shared/datasets      # ~15 min on 2 idle CPU cores
    python -m benchmarks.active_learning --quick          # tiny backbone on the demo support set: a smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.record import RESULTS, write_record
from core.data.catalog import load_classification
from core.data.splits import LabelMap
from core.foundation.plots import pyplot
from core.foundation.quiet import quiet_libraries
from core.mlops.selection import STRATEGIES, Pool, select
from core.models.backbones import load_backbone
from core.models.encoder import SentenceEncoder

C_GRID = (1.0, 10.0, 100.0)


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--quick", action="store_true", help="tiny backbone on the demo support set (smoke run)")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--initial", type=int, default=154, help="labels drawn at random before the first round")
    parser.add_argument("--step", type=int, default=50, help="labels chosen per round")
    parser.add_argument("--max-labels", type=int, default=1000)
    parser.add_argument("--target", type=int, default=800, help="random sampling's label count to match")
    parser.add_argument("--tune-labels", type=int, default=480, help="random pool rows that choose C on validation")
    parser.add_argument("--out", default="benchmarks/runs/active-learning")
    args = parser.parse_args(argv)
    if args.quick:
        args.backbone, args.initial, args.step, args.max_labels, args.target, args.tune_labels = "tiny", 12, 24, 96, 72, 60
    return args


def schedule(args) -> list[int]:
    """Label counts at which the learner is fitted and scored: --initial, then every --step."""
    counts = [args.initial]
    while counts[-1] < args.max_labels:
        counts.append(min(args.max_labels, (counts[-1] // args.step + 1) * args.step))
    return counts


def embeddings(data, backbone_name: str, out: Path) -> dict[str, np.ndarray]:
    """Frozen-encoder embeddings of pool, validation and test, cached in `out` by backbone and texts."""
    texts = {"pool": data.train.texts, "validation": data.validation.texts, "test": data.test.texts}
    key = hashlib.sha256(json.dumps([backbone_name, texts]).encode()).hexdigest()[:12]
    cache = out / f"embeddings-{data.name}-{backbone_name}-{key}.npz"
    if cache.is_file():
        return dict(np.load(cache))
    encoder = SentenceEncoder.from_backbone(load_backbone(backbone_name))
    t0 = time.time()
    arrays = {name: encoder.encode(split) for name, split in texts.items()}
    print(f"encoded {sum(len(t) for t in texts.values())} texts in {time.time() - t0:.0f} s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **arrays)
    return arrays


def fit(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression  # lazy: as the probe does (core.models.classifier)

    return LogisticRegression(C=c, max_iter=2000).fit(x, y)


def full_probs(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """[n, n_classes] probabilities (0 for classes no labelled row has yet)."""
    probs = np.zeros((len(x), n_classes))
    probs[:, model.classes_] = model.predict_proba(x)
    return probs


def choose_c(emb, y, args) -> dict:
    """C by validation accuracy, fitted on a random --tune-labels sample of the pool (seed 0)."""
    rows = np.random.default_rng(0).choice(len(y["pool"]), size=min(args.tune_labels, len(y["pool"])), replace=False)
    scores = {c: float((fit(emb["pool"][rows], y["pool"][rows], c).predict(emb["validation"]) == y["validation"]).mean())
              for c in C_GRID}
    best = max(scores.values())
    return {"c": next(c for c, s in scores.items() if s == best), "validation_accuracy_by_c": scores}


def curve(name: str, seed: int, emb, y, counts: list[int], c: float, n_classes: int) -> dict:
    """Test accuracy at each label count for one strategy and seed (module docstring)."""
    n_pool = len(y["pool"])
    labelled = np.random.default_rng(seed).choice(n_pool, size=counts[0], replace=False).tolist()
    rng = np.random.default_rng([seed, 1])  # the strategy's draws, apart from the initial set's
    accuracy, seconds = [], []
    for i, n in enumerate(counts):
        model = fit(emb["pool"][labelled], y["pool"][labelled], c)
        accuracy.append(float((model.predict(emb["test"]) == y["test"]).mean()))
        if i + 1 == len(counts):
            break
        unlabelled = np.setdiff1d(np.arange(n_pool), labelled)
        x = emb["pool"][unlabelled]
        pool = Pool(full_probs(model, x, n_classes), x, emb["pool"][labelled])
        t0 = time.perf_counter()
        picks = select(name, pool, counts[i + 1] - n, rng)
        seconds.append(time.perf_counter() - t0)
        labelled += unlabelled[picks.index].tolist()
    return {"accuracy": accuracy, "select_seconds": seconds}


def reach(means: list[float], counts: list[int], goal: float) -> int | None:
    """The fewest labels on the grid at which `means` reaches `goal` (None: never)."""
    return next((n for n, m in zip(counts, means) if m >= goal - 1e-12), None)


def summarise(curves: dict, counts: list[int], target: int) -> dict:
    summary = {}
    for name, runs in curves.items():
        acc = np.array([r["accuracy"] for r in runs.values()])
        summary[name] = {"mean": acc.mean(axis=0).tolist(), "std": acc.std(axis=0).tolist(),
                         "select_seconds_per_round": float(np.mean([np.mean(r["select_seconds"]) for r in runs.values()]))}
    goal = summary["random"]["mean"][counts.index(target)] if "random" in summary and target in counts else None
    for row in summary.values():
        row["labels_to_random_at_target"] = None if goal is None else reach(row["mean"], counts, goal)
        row["share_of_target"] = None if row["labels_to_random_at_target"] is None else row["labels_to_random_at_target"] / target
    return {"strategies": summary, "random_at_target": goal}


def _plot(record: dict, path: Path) -> None:
    plt = pyplot()
    counts, p = record["label_counts"], record["protocol"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, row in record["summary"]["strategies"].items():
        mean, std = np.array(row["mean"]), np.array(row["std"])
        ax.plot(counts, mean, "o-" if name != "random" else "k--", ms=3, label=name)
        ax.fill_between(counts, mean - std, mean + std, alpha=0.15)
    ax.axhline(record["ceiling"]["accuracy"], color="grey", lw=0.8, ls=":", label=f"whole pool ({p['pool_rows']} labels)")
    if record["summary"]["random_at_target"] is not None:
        ax.axhline(record["summary"]["random_at_target"], color="k", lw=0.6, alpha=0.5)
    ax.set_xlabel("labels used")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{p['dataset']}: frozen {p['backbone']} + logistic regression, {len(p['seeds'])} seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(record: dict) -> str:
    p, s, counts = record["protocol"], record["summary"], record["label_counts"]
    names = list(s["strategies"])
    goal = s["random_at_target"]
    intro = (f"{p['dataset']}: pool {p['pool_rows']} training rows, test {p['test_rows']} rows; learner frozen "
             f"{p['backbone']} embeddings + logistic regression (C = {record['c']['c']:g}, chosen on validation); "
             f"{p['initial']} random labels, then {p['step']} per round; seeds {', '.join(map(str, p['seeds']))}. "
             f"Whole pool: {record['ceiling']['accuracy']:.1%}. Wall {record['wall_seconds'] / 60:.1f} min, load average "
             f"{record['load_average']}.")
    header = (f"| strategy | labels to reach random at {p['target']} ({'-' if goal is None else f'{goal:.1%}'}) | "
              f"share of {p['target']} | accuracy at {p['target']} | selection s per round |")
    lines = [intro, "", header, "|---|---|---|---|---|"]
    at = counts.index(p["target"]) if p["target"] in counts else None
    for name in names:
        row = s["strategies"][name]
        n = row["labels_to_random_at_target"]
        acc = "-" if at is None else f"{row['mean'][at]:.1%} ± {row['std'][at]:.1%}"
        reached, share = (f"> {counts[-1]}", "-") if n is None else (str(n), f"{row['share_of_target']:.0%}")
        lines.append(f"| {name} | {reached} | {share} | {acc} | {row['select_seconds_per_round']:.2f} |")
    lines += ["", "| labels | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for i, n in enumerate(counts):
        lines.append(f"| {n} | " + " | ".join(f"{s['strategies'][k]['mean'][i]:.1%} ± {s['strategies'][k]['std'][i]:.1%}"
                                              for k in names) + " |")
    lines += ["", f"![accuracy vs labels used]({record['benchmark_name']}.png)"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    quiet_libraries()
    started = time.time()
    data = load_classification("demo_support" if args.quick else "banking77", root=args.data_dir)
    label_map = LabelMap(data.labels)
    y = {name: np.asarray(label_map.encode(split.labels))
         for name, split in (("pool", data.train), ("validation", data.validation), ("test", data.test))}
    emb = embeddings(data, args.backbone, Path(args.out))
    counts, seeds, names = schedule(args), [int(s) for s in args.seeds.split(",")], args.strategies.split(",")
    c = choose_c(emb, y, args)
    print(f"C = {c['c']} (validation accuracy by C: {c['validation_accuracy_by_c']}); label counts {counts}", flush=True)
    curves = {}
    for name in names:
        curves[name] = {}
        for seed in seeds:
            curves[name][seed] = curve(name, seed, emb, y, counts, c["c"], len(data.labels))
            print(f"[{time.time() - started:5.0f} s] {name} seed {seed}: "
                  + " ".join(f"{n}:{a:.3f}" for n, a in zip(counts, curves[name][seed]["accuracy"])), flush=True)
    ceiling = float((fit(emb["pool"], y["pool"], c["c"]).predict(emb["test"]) == y["test"]).mean())
    name = "active_learning_quick" if args.quick else "active_learning"
    record = {"benchmark_name": name,
              "protocol": {"dataset": data.name, "backbone": args.backbone, "learner": "logistic regression on frozen embeddings",
                           "pool_rows": len(y["pool"]), "validation_rows": len(y["validation"]), "test_rows": len(y["test"]),
                           "initial": args.initial, "step": args.step, "max_labels": args.max_labels, "target": args.target,
                           "tune_labels": args.tune_labels, "seeds": seeds, "strategies": names,
                           "data_root": "../shared/datasets"},
              "c": c, "label_counts": counts, "curves": {k: {str(s): r for s, r in v.items()} for k, v in curves.items()},
              "summary": summarise(curves, counts, args.target), "ceiling": {"accuracy": ceiling},
              "wall_seconds": time.time() - started, "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    write_record(name, record, _table(record))
    _plot(record, RESULTS / f"{name}.png")
    print((RESULTS / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
