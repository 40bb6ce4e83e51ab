"""A deployment simulated on BANKING77: intents missing at training time, feedback on part of the
routed traffic, warm-started retraining behind the promotion gate, round after round.

Protocol (seeded, nothing here tuned on the test split):
- 10 of the 77 intents (seeded) are absent at training time. The deployed model (recipe
  `support/intent-full`, MiniLM, `--per-class` training rows for each of the other 67 intents) is
  trained on those rows; its original test split is BANKING77's test rows of the 67 intents.
- Traffic: the BANKING77 training rows not used for training, all 77 intents, shuffled, cut into
  `--rounds` rounds of `--traffic` queries. Each round the champion routes the round's traffic
  (core router defaults: out-of-scope score, confidence 0.5, margin 0.1), every route is written to
  a core.mlops.feedback.PredictionLog, and a `--feedback-share` of the round's routes (seeded) gets
  its true intent back as feedback (the absent intents under their own names).
- Then `core.mlops.retrain.retrain` builds a challenger from the champion and all feedback so far (it
  holds out part of the feedback for the gate and replays original training rows), and the gate
  decides. The champion is replaced only when the gate promotes.
- Scratch baseline: the same recipe from the base backbone on the original rows plus ALL feedback
  labels so far (more labelled rows than the challenger trains on: it needs no gate holdout).
- Per round: accuracy on the full 77-intent test split (the absent intents count as errors for a
  model that does not know them) and on the original 67-intent test split; the handover rate and
  the absent intents' handover rate on the round's traffic; drift of the round's traffic against
  the champion's training baseline (core.evaluation.drift); labels spent; retraining cost from the ledger;
  the gate's decision and whether it was right (right = promoted iff the challenger is better on
  the full test split, which the gate never sees).

    python -m benchmarks.feedback_loop --data-dir ../shared/datasets
    python -m benchmarks.feedback_loop --quick          # tiny backbone on the demo set: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.record import RESULTS, write_record
from core.classify.config import load_recipe_file
from core.classify.recipes import run_recipe
from core.data.catalog import load_classification, write_labelled_csv
from core.evaluation.drift import drift_report
from core.evaluation.drift_baseline import load_drift_baseline
from core.foundation.plots import pyplot
from core.foundation.quiet import quiet_libraries
from core.mlops.feedback import PredictionLog
from core.mlops.retrain import retrain
from core.mlops.retrain_plan import RetrainSettings
from core.models.predictor import load_run
from solutions.support.router import LABEL_KEY, IntentRouter
from verticals.registry import RECIPES


def _train(recipe: str, overrides: dict, out: Path) -> dict:
    cfg = load_recipe_file(RECIPES[recipe], {k: str(v) for k, v in overrides.items()}, name=recipe)
    return run_recipe(cfg, out, progress=False, overwrite=True)


def _accuracy(model, texts: list[str], labels: list[str]) -> float:
    logits, _ = model.predict_all(texts)
    predicted = [model.labels[i] for i in np.argmax(logits, axis=1)]
    return float(np.mean([p == t for p, t in zip(predicted, labels)]))


_SCORED: dict[Path, dict] = {}


def _scores(run_dir: Path, test_all, test_known) -> dict:
    """Accuracy of a run on the full and the original test split (computed once per run)."""
    if run_dir not in _SCORED:
        model = load_run(run_dir)
        _SCORED[run_dir] = {"accuracy_all": _accuracy(model, *test_all),
                            "accuracy_original": _accuracy(model, *test_known), "labels": len(model.labels)}
    return dict(_SCORED[run_dir])


def _cpu_seconds(report: dict) -> float | None:
    return report["retrain"].get("cost", {}).get("cpu_seconds")


def _plot(rounds: list[dict], path: Path, initial: dict, title: str) -> None:
    plt = pyplot()
    labels = [0] + [r["labels_spent"] for r in rounds]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(labels, [initial["accuracy_all"]] + [r["champion_after"]["accuracy_all"] for r in rounds], "o-",
            label="deployed (warm retrain + gate)")
    ax.plot(labels, [initial["accuracy_all"]] + [r["challenger"]["accuracy_all"] for r in rounds], "s--", alpha=0.7,
            label="challenger (before the gate)")
    ax.plot(labels, [initial["accuracy_all"]] + [r["scratch"]["accuracy_all"] for r in rounds], "^-",
            label="from scratch on the same labels")
    for r in rounds:
        ax.annotate("promoted" if r["gate"]["promote"] else "kept", (r["labels_spent"], r["champion_after"]["accuracy_all"]),
                    textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7)
    ax.set_xlabel("labels fed back (cumulative)")
    ax.set_ylabel("accuracy, full test split (all intents)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(record: dict) -> str:
    p = record["protocol"]
    lines = [f"{p['dataset']}, {p['absent_intents']} of {p['intents']} intents absent at training time, {p['per_class']} training rows per "
             f"known intent, {p['traffic_per_round']} routed queries per round, {p['feedback_share']:.0%} of them labelled "
             f"back. Accuracy on the full test split ({p['test_all_rows']} rows, all intents) and on the original test split "
             f"({p['test_original_rows']} rows, the known intents). Load average {record['load_average']}.", "",
             "| round | labels fed back | handover rate | absent intents handed over | drift (domain AUC / label shift) | "
             "challenger acc all / original | champion acc all / original | gate | right call | retrain s (CPU s) | "
             "scratch acc all / original | scratch s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    init = record["initial"]
    lines.append(f"| 0 | 0 | - | - | - | - | {init['accuracy_all']:.1%} / {init['accuracy_original']:.1%} | - | - | "
                 f"{init['train_seconds']:.0f} | - | - |")
    for r in record["rounds"]:
        d = r["drift"]
        ch, cp, sc = r["challenger"], r["champion_after"], r["scratch"]
        lines.append(
            f"| {r['round']} | {r['labels_spent']} | {r['handover_rate']:.1%} | {r['absent_handover_rate']:.1%} | "
            f"{d.get('domain_auc', float('nan')):.2f} / {d.get('label_shift', float('nan')):.2f} | "
            f"{ch['accuracy_all']:.1%} / {ch['accuracy_original']:.1%} | {cp['accuracy_all']:.1%} / {cp['accuracy_original']:.1%} | "
            f"{'promote' if r['gate']['promote'] else 'keep'} | {'yes' if r['gate_right'] else 'no'} | "
            f"{r['retrain_seconds']:.0f} ({r['retrain_cpu_seconds'] or 0:.0f}) | "
            f"{sc['accuracy_all']:.1%} / {sc['accuracy_original']:.1%} | {sc['train_seconds']:.0f} |")
    lines += ["", f"![accuracy vs labels fed back]({record['benchmark_name']}.png)"]
    return "\n".join(lines) + "\n"


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--quick", action="store_true", help="tiny backbone on the demo support set (smoke run)")
    parser.add_argument("--recipe", default="support/intent-full")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--per-class", type=int, default=20, help="training rows per known intent")
    parser.add_argument("--absent", type=int, default=10, help="intents absent at training time")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--traffic", type=int, default=1000, help="routed queries per round")
    parser.add_argument("--feedback-share", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/runs/feedback-loop")
    args = parser.parse_args(argv)
    if args.quick:
        args.backbone, args.per_class, args.absent, args.rounds, args.traffic = "tiny", 8, 2, 2, 60
        args.feedback_share, args.epochs = 0.5, 1
    return args


@dataclass
class Scenario:
    """The simulated deployment: which intents are absent, the rows the first model trains on, the
    traffic it routes (every intent), the two test splits, and the settings every training shares."""

    dataset: str
    labels: list[str]
    absent: list[str]
    train_rows: list[tuple[str, str]]
    traffic: list[tuple[str, str]]
    test_all: tuple[list[str], list[str]]
    test_known: tuple[list[str], list[str]]
    out: Path
    common: dict  # recipe overrides of every training run (backbone, epochs, seed)


def set_up(args, rng: np.random.Generator) -> Scenario:
    """Draw the absent intents and the training rows (the rest of the pool is traffic), and write the
    first model's data (its test split: the known intents only)."""
    dataset = "demo_support" if args.quick else "banking77"
    data = load_classification(dataset, root=args.data_dir)
    absent = sorted(rng.choice(data.labels, size=args.absent, replace=False).tolist())
    known = [label for label in data.labels if label not in absent]
    pool = list(zip(data.train.texts, data.train.labels)) + list(zip(data.validation.texts, data.validation.labels))
    train_rows, traffic, taken = [], [], {label: 0 for label in known}
    for i in rng.permutation(len(pool)):
        text, label = pool[i]
        if label in taken and taken[label] < args.per_class:
            train_rows.append((text, label))
            taken[label] += 1
        else:
            traffic.append((text, label))
    test_all = (list(data.test.texts), list(data.test.labels))
    known_set = set(known)
    test_known = ([t for t, y in zip(*test_all) if y in known_set], [y for y in test_all[1] if y in known_set])
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    (out / "data").mkdir(parents=True)
    write_labelled_csv(out / "data" / "train.csv", train_rows)
    write_labelled_csv(out / "data" / "test.csv", list(zip(*test_known)))
    common = {"backbone": args.backbone, "epochs": args.epochs, "seed": args.seed}
    if args.quick:
        common |= {"max_steps": 6, "epochs": 0}
    return Scenario(dataset, list(data.labels), absent, train_rows, traffic, test_all, test_known, out, common)


def route_and_label(champion: Path, batch: list[tuple[str, str]], log: PredictionLog, share: float,
                    rng: np.random.Generator) -> tuple[list[dict], dict, list[tuple[str, str]]]:
    """The champion routes the round's traffic into the prediction log; a `share` of it (seeded) gets
    its true intent back as feedback. Returns the routes, the traffic's drift and the labelled rows."""
    router = IntentRouter(load_run(champion))
    texts = [t for t, _ in batch]
    routes = router.route_batch(texts)
    ids = log.log(routes, model_version=champion.name, label_key=LABEL_KEY)
    _, embeddings = router.model.predict_all(texts)
    baseline = load_drift_baseline(champion)
    drift = {} if baseline is None else drift_report(
        baseline, embeddings=embeddings, confidence=np.array([r["confidence"] for r in routes]),
        labels=[r["intent"] for r in routes], fallback_rate=float(np.mean([r["handover"] for r in routes])))
    labelled = rng.choice(len(batch), size=int(round(share * len(batch))), replace=False)
    for i in labelled:
        log.record_feedback(ids[i], batch[i][1])
    return routes, drift, [batch[i] for i in labelled]


def train_from_scratch(scenario: Scenario, args, fed_back: list[tuple[str, str]], out: Path) -> dict:
    """The baseline: the recipe from the base backbone on the original rows plus every label so far."""
    (out / "data").mkdir(parents=True)
    write_labelled_csv(out / "data" / "train.csv", scenario.train_rows + fed_back)
    write_labelled_csv(out / "data" / "test.csv", list(zip(*scenario.test_known)))
    report = _train(args.recipe, {"data": str(out / "data")} | scenario.common, out / "run")
    return (_scores(out / "run", scenario.test_all, scenario.test_known)
            | {"train_seconds": report["cost"]["wall_seconds"]})


def run_round(number: int, champion: Path, scenario: Scenario, args, log: PredictionLog,
              fed_back: list[tuple[str, str]], rng: np.random.Generator) -> tuple[dict, Path, list] | None:
    """One round: route and label the traffic, retrain behind the gate, train the scratch baseline.
    Returns the round's row, the champion after it and every label fed back so far (None when the
    traffic ran out)."""
    batch = scenario.traffic[(number - 1) * args.traffic: number * args.traffic]
    if not batch:
        return None
    routes, drift, labelled = route_and_label(champion, batch, log, args.feedback_share, rng)
    fed_back = fed_back + labelled
    handover = [r["handover"] for r in routes]
    absent_mask = [y in scenario.absent for _, y in batch]

    challenger_dir = scenario.out / f"round{number}-challenger"
    t0 = time.time()
    report = retrain(champion, log.labelled(), out=challenger_dir, data_dir=args.data_dir,
                     settings=RetrainSettings(seed=args.seed), progress=False)
    retrain_seconds = time.time() - t0
    gate = report["retrain"]["gate"]
    challenger = _scores(challenger_dir, scenario.test_all, scenario.test_known)
    before = _scores(champion, scenario.test_all, scenario.test_known)
    after = challenger if gate["promote"] else before
    scratch = train_from_scratch(scenario, args, fed_back, scenario.out / f"round{number}-scratch")
    row = {"round": number, "traffic": len(batch), "labels_spent": len(fed_back),
           "handover_rate": float(np.mean(handover)),
           "absent_handover_rate": float(np.mean([h for h, a in zip(handover, absent_mask) if a])) if any(absent_mask) else None,
           "drift": {k: v for k, v in drift.items() if isinstance(v, (int, float, bool, list))},
           "retrain": {k: v for k, v in report["retrain"].items() if k != "gate"},
           "gate": gate, "champion_before": before, "challenger": challenger, "champion_after": after,
           "gate_right": bool(gate["promote"]) == (challenger["accuracy_all"] > before["accuracy_all"]),
           "retrain_seconds": retrain_seconds, "retrain_cpu_seconds": _cpu_seconds(report), "scratch": scratch}
    print(json.dumps({k: row[k] for k in ("round", "labels_spent", "handover_rate", "gate_right")}
                     | {"challenger": challenger, "scratch": scratch, "promote": gate["promote"]}), flush=True)
    return row, challenger_dir if gate["promote"] else champion, fed_back


def main(argv=None) -> None:
    args = parse_args(argv)
    quiet_libraries()
    rng = np.random.default_rng(args.seed)
    scenario = set_up(args, rng)
    out = scenario.out

    started = time.time()
    initial_report = _train(args.recipe, {"data": str(out / "data")} | scenario.common, out / "round0")
    initial = (_scores(out / "round0", scenario.test_all, scenario.test_known)
               | {"train_seconds": initial_report["cost"]["wall_seconds"]})
    print(f"initial: {initial}", flush=True)

    champion = out / "round0"
    log = PredictionLog(out / "predictions.db", store_text=True)
    rounds, fed_back = [], []
    for number in range(1, args.rounds + 1):
        result = run_round(number, champion, scenario, args, log, fed_back, rng)
        if result is None:
            break
        row, champion, fed_back = result
        rounds.append(row)
    log.close()

    absent, labels = scenario.absent, scenario.labels
    record = {"protocol": {"dataset": scenario.dataset, "recipe": args.recipe, "backbone": args.backbone,
                           "seed": args.seed, "intents": len(labels), "absent_intents": len(absent), "absent": absent,
                           "per_class": args.per_class, "traffic_per_round": args.traffic,
                           "feedback_share": args.feedback_share, "epochs": args.epochs,
                           "retrain_settings": asdict(RetrainSettings(seed=args.seed)),
                           "test_all_rows": len(scenario.test_all[0]),
                           "test_original_rows": len(scenario.test_known[0]), "data_root": "../shared/datasets"},
              "initial": initial, "rounds": rounds, "wall_seconds": time.time() - started,
              "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    name = "feedback_loop_quick" if args.quick else "feedback_loop"
    record["benchmark_name"] = name
    write_record(name, record, _table(record))
    _plot(rounds, RESULTS / f"{name}.png", initial,
          f"{scenario.dataset}: {len(absent)} of {len(labels)} intents absent at training time")
    print((RESULTS / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
