"""Does the accuracy estimated without labels (core.evaluation.accuracy_estimate) track the true
accuracy when traffic shifts? BANKING77, five shifts built from our data, true accuracy known.

Model: the `support/intent-probe` recipe (frozen MiniLM, mean-pooled embeddings + logistic regression,
C chosen on validation, temperature-calibrated on validation; no out-of-scope scorer: the estimate
is about top-1 accuracy). Its run stores the ATC fit with its drift baseline, exactly as a
production run; the benchmark reads it back (core.evaluation.drift_baseline.load_drift_baseline).
Estimates per shift: ATC on the max probability (the one the service and reports use), ATC on the
negative entropy (fitted here on the run's validation split, Garg et al.'s other score), and DoC
(validation accuracy minus the drop in average confidence).

Shifts (each evaluated against its model's own validation fit; true accuracy = top-1 accuracy):
- iid: the official test split (the control: no shift).
- a_unseen_intents: 10 intents (seeded) removed from train and validation; the model trains on 67
  and sees the whole test split: the removed intents' rows are errors (nothing can be right).
- b_typos: the test split with core.data.perturb `mixed` noise on 30% of the words (seeded).
- c_other_domain: the test split plus Financial PhraseBank sentences (test split), one foreign
  sentence for every two queries. "Correct" for a foreign sentence: impossible, a BANKING77
  intent is never the right answer for a news sentence (the router should hand it over; the
  classifier's top-1 is wrong), so they count as errors.
- d_label_share: the test split resampled (with replacement, seeded, same size) so that the 15
  intents the model is least accurate on in validation take 60% of the traffic.
- e_time_order: BANKING77 has no timestamps. Proxy: within each intent, the row order of the
  original train.csv; the model trains on the first half of each intent's rows (validation
  carved from it, 10%), and the shifted traffic is the second half. Nothing says the file order
  is temporal; expect this shift to be close to none.
Target: |ATC (max probability) - true| <= 3 points on at least 4 of the 5 shifts. Seeds (0, 1, 2
by default) vary the removed intents, the noise, the foreign sample and the resampling; the
models of iid/b/c/d and e are trained with seed 0.

    python -m benchmarks.accuracy_estimate --data-dir ../shared/datasets     # full: BANKING77, MiniLM
    python -m benchmarks.accuracy_estimate --quick                           # smoke: tiny backbone, 8 intents

Writes results/accuracy_estimate.json, .md and .png (--quick: accuracy_estimate_quick.*).
Leaves out: the estimators' maths (core.evaluation.accuracy_estimate) and calibration (core.confidence).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.record import RESULTS, write_record
from core.evaluation.accuracy_estimate import atc_estimate, atc_threshold, doc_estimate, negative_entropy

HELD_OUT, HARD_INTENTS, HARD_SHARE, FOREIGN_PER_QUERY, TYPO_RATE, TARGET = 10, 15, 0.6, 0.5, 0.3, 0.03
METHODS = ("atc_max_probability", "atc_negative_entropy", "doc")
SHIFTS = ("a_unseen_intents", "b_typos", "c_other_domain", "d_label_share", "e_time_order")


def _train(name: str, splits: dict, args) -> Trained:
    """Write `splits` ({split: [(text, label)]}) as a folder, run the probe recipe on it, load the model."""
    from benchmarks.support_banking77 import _recipe_run  # lazy: imports the recipe machinery
    from core.data.catalog import write_labelled_csv  # lazy: as above
    from core.evaluation.drift_baseline import load_drift_baseline  # lazy: as above
    from core.models.predictor import load_run  # lazy: loads torch

    folder = Path(tempfile.mkdtemp(prefix=f"atc-{name}-"))
    for split, rows in splits.items():
        write_labelled_csv(folder / f"{split}.csv", rows)
    out = Path(args.out_root) / name
    overrides = {"data": folder, "backbone": args.backbone, "ood_scorer": "none", "seed": 0}
    report = _recipe_run("support/intent-probe", overrides, out, args.data_dir)
    model, fit = load_run(out), load_drift_baseline(out).accuracy
    val_texts, val_labels = _unzip(splits.get("validation") or [])
    if not val_texts:  # validation carved from train by the folder reader: read it back from the run's data
        from core.data.catalog import load_classification  # lazy: as above

        carved = load_classification(str(folder)).validation
        val_texts, val_labels = carved.texts, carved.labels
    val_probs = model.predict_proba(val_texts)
    ne_threshold = atc_threshold(negative_entropy(val_probs), fit.validation_accuracy)
    return Trained(model, fit, ne_threshold, _correct(model, val_probs, val_labels), val_labels,
                   report["cost"]["wall_seconds"])


class Trained:
    def __init__(self, model, fit, ne_threshold, val_correct, val_labels, seconds):
        self.model, self.fit, self.ne_threshold, self.seconds = model, fit, ne_threshold, seconds
        self.val_correct, self.val_labels = val_correct, val_labels


def _unzip(rows):
    return [t for t, _ in rows], [lab for _, lab in rows]


def _correct(model, probs: np.ndarray, labels) -> np.ndarray:
    """Top-1 right per row; a label the model does not know is always wrong."""
    names = np.asarray(model.labels)
    return names[probs.argmax(axis=1)] == np.asarray(labels, dtype=object)


def measure(trained: Trained, texts: list[str], labels: list) -> dict:
    """True accuracy and the three estimates on `texts` (labels None for rows nothing is right for)."""
    probs = trained.model.predict_proba(texts)
    conf, fit = probs.max(axis=1), trained.fit
    estimates = {"atc_max_probability": atc_estimate(fit.threshold, conf),
                 "atc_negative_entropy": atc_estimate(trained.ne_threshold, negative_entropy(probs)),
                 "doc": doc_estimate(fit.validation_accuracy, fit.validation_mean_confidence, conf)}
    true = float(_correct(trained.model, probs, labels).mean())
    return {"rows": len(texts), "true_accuracy": true, "validation_accuracy": fit.validation_accuracy,
            **estimates, **{f"error_{m}": abs(estimates[m] - true) for m in METHODS}}


def _rows(split, keep=None) -> list[tuple[str, str]]:
    return [(t, lab) for t, lab in zip(split.texts, split.labels) if keep is None or lab in keep]


def load_data(args):
    """(BANKING77 splits, Financial PhraseBank test sentences, train.csv rows in file order), limited to
    --intents intents and --per-intent train rows each when given (quick mode)."""
    import verticals  # noqa: F401  # lazy: installs the solutions' data readers (financial_phrasebank's)
    from core.data.catalog import load_classification  # lazy: loads the data layer

    data = load_classification("banking77", root=args.data_dir)
    finance = load_classification("financial_phrasebank", root=args.data_dir).test.texts
    root = Path(args.data_dir or os.environ.get("VERTICALS_DATA", "")) / "banking77" / "train.csv"
    with open(root, encoding="utf-8") as handle:
        ordered = [(r["text"], r["category"]) for r in csv.DictReader(handle)]
    keep = set(sorted(data.labels)[:args.intents]) if args.intents else None
    splits = {name: _limit(_rows(getattr(data, name), keep), args.per_intent and (
        args.per_intent if name == "train" else max(args.per_intent // 3, 4))) for name in ("train", "validation", "test")}
    ordered = _limit([r for r in ordered if keep is None or r[1] in keep], args.per_intent and 2 * args.per_intent)
    return splits, finance, ordered


def _limit(rows, per_intent: int | None):
    if not per_intent:
        return rows
    seen: dict[str, int] = {}
    out = []
    for text, label in rows:
        if seen.get(label, 0) < per_intent:
            seen[label] = seen.get(label, 0) + 1
            out.append((text, label))
    return out


def time_halves(ordered):
    """(first half of each intent's rows, second half), in file order."""
    by_label: dict[str, list] = {}
    for row in ordered:
        by_label.setdefault(row[1], []).append(row)
    first = [r for rows in by_label.values() for r in rows[:len(rows) // 2]]
    second = [r for rows in by_label.values() for r in rows[len(rows) // 2:]]
    return first, second


def shifted_sets(splits, finance, base: Trained, seed: int, hard: int) -> dict:
    """Shifts b, c, d on the main model's test split: {name: (texts, labels)}."""
    from core.data.perturb import perturb_texts  # lazy: only here

    rng = np.random.default_rng(seed)
    texts, labels = _unzip(splits["test"])
    noisy = perturb_texts(texts, "mixed", TYPO_RATE, rng)
    n_foreign = min(int(len(texts) * FOREIGN_PER_QUERY), len(finance))
    foreign = [finance[i] for i in rng.choice(len(finance), n_foreign, replace=False)]
    per_intent = {}
    for correct, label in zip(base.val_correct, base.val_labels):
        per_intent.setdefault(label, []).append(correct)
    worst = set(sorted(per_intent, key=lambda k: (np.mean(per_intent[k]), k))[:hard])
    weights = np.array([HARD_SHARE if lab in worst else 1 - HARD_SHARE for lab in labels], dtype=np.float64)
    counts = {True: sum(lab in worst for lab in labels), False: sum(lab not in worst for lab in labels)}
    weights /= np.array([counts[lab in worst] for lab in labels], dtype=np.float64)
    picked = rng.choice(len(texts), len(texts), replace=True, p=weights / weights.sum())
    return {"b_typos": (noisy, labels), "c_other_domain": (texts + foreign, labels + [None] * n_foreign),
            "d_label_share": ([texts[i] for i in picked], [labels[i] for i in picked])}


def run(args) -> dict:
    splits, finance, ordered = load_data(args)
    labels = sorted({lab for _, lab in splits["train"]})
    hard = min(HARD_INTENTS, max(len(labels) // 5, 1))
    held_n = min(HELD_OUT, max(len(labels) // 5, 1))
    base = _train("main", splits, args)
    first, second = time_halves(ordered)
    early = _train("time-first-half", {"train": first}, args)
    results = {"iid": [measure(base, *_unzip(splits["test"]))] * len(args.seeds), "e_time_order":
               [measure(early, *_unzip(second))] * len(args.seeds)}
    held_out = {}
    for seed in args.seeds:
        held = sorted(np.random.default_rng(seed).choice(labels, size=held_n, replace=False).tolist())
        held_out[seed] = held
        kept = {name: [r for r in rows if r[1] not in held] for name, rows in splits.items() if name != "test"}
        unseen = _train(f"unseen-seed{seed}", kept | {"test": [r for r in splits["test"] if r[1] not in held]}, args)
        results.setdefault("a_unseen_intents", []).append(measure(unseen, *_unzip(splits["test"])))
        for name, (texts, truth) in shifted_sets(splits, finance, base, seed, hard).items():
            results.setdefault(name, []).append(measure(base, texts, truth))
        print(f"seed {seed}: " + ", ".join(f"{k} true {v[-1]['true_accuracy']:.3f} atc "
                                            f"{v[-1]['atc_max_probability']:.3f}" for k, v in results.items()), flush=True)
    return {"per_seed": results, "held_out_intents": held_out, "hard_intents": hard,
            "intents": len(labels), "rows": {k: len(v) for k, v in splits.items()},
            "time_rows": {"first_half": len(first), "second_half": len(second)}}


def summarise(per_seed: dict) -> dict:
    out = {}
    for shift, runs in per_seed.items():
        row = {}
        for key in ("true_accuracy", *METHODS, *(f"error_{m}" for m in METHODS)):
            values = [r[key] for r in runs]
            row[key] = statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        row["rows"], row["validation_accuracy"] = runs[0]["rows"], runs[0]["validation_accuracy"]
        out[shift] = row
    hits = {m: sum(out[s][f"error_{m}"] <= TARGET for s in SHIFTS if s in out) for m in METHODS}
    return {"shifts": out, "within_3_points": hits, "target_met": hits["atc_max_probability"] >= 4}


def table(record: dict) -> str:
    s, p = record["summary"], record["protocol"]
    lines = [(f"Accuracy estimated without labels on BANKING77 shifts ({p['backbone']} probe, {p['intents']} intents, "
             f"seeds {p['seeds']}; mean ± std over seeds; errors in accuracy points). "
             f"ATC (max probability) within {100 * TARGET:.0f} points on "
             f"{s['within_3_points']['atc_max_probability']} of {len(SHIFTS)} shifts "
             f"(target 4: {'met' if s['target_met'] else 'missed'})."), "",
             "| shift | rows | true accuracy | ATC (max prob.) | error | ATC (neg. entropy) | error | DoC | error |",
             "|---|---|---|---|---|---|---|---|---|"]
    for shift, row in s["shifts"].items():
        cells = [f"{row['true_accuracy']:.3f} ± {row['true_accuracy_std']:.3f}"]
        for m in METHODS:
            cells += [f"{row[m]:.3f}", f"{100 * row[f'error_{m}']:.1f} ± {100 * row[f'error_{m}_std']:.1f}"]
        lines.append(f"| {shift} | {row['rows']} | " + " | ".join(cells) + " |")
    lines += ["", f"![estimated vs true accuracy]({record['benchmark_name']}.png)", "",
              f"Wall time {record['wall_seconds']:.0f} s. Protocol and shift definitions: benchmarks/accuracy_estimate.py."]
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> Path:
    from core.foundation.plots import pyplot  # lazy: matplotlib only when a plot is drawn

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 6))
    shifts = record["summary"]["shifts"]
    for method, marker in zip(METHODS, "os^"):
        xs = [row["true_accuracy"] for row in shifts.values()]
        ax.scatter(xs, [row[method] for row in shifts.values()], marker=marker, label=method, alpha=0.8)
    for name, row in shifts.items():
        ax.annotate(name, (row["true_accuracy"], row["atc_max_probability"]), fontsize=7, xytext=(4, -8),
                    textcoords="offset points")
    grid = np.linspace(0, 1, 2)
    ax.plot(grid, grid, color="grey", linewidth=1)
    ax.fill_between(grid, grid - TARGET, grid + TARGET, color="grey", alpha=0.15, label="±3 points")
    ax.set(xlabel="true accuracy", ylabel="estimated accuracy (no labels)", xlim=(0, 1), ylim=(0, 1),
           title=f"estimated vs true accuracy ({record['protocol']['backbone']})")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help="data root (default: $VERTICALS_DATA)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny backbone, 8 intents, 30 rows each, 1 seed")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--intents", type=int, default=None, help="only the first N intents (by name)")
    parser.add_argument("--per-intent", type=int, default=None, help="at most N train rows per intent")
    parser.add_argument("--out-root", default="benchmarks/runs/accuracy_estimate")
    args = parser.parse_args(argv)
    if args.quick:
        args.backbone, args.intents, args.per_intent, args.seeds = "tiny", args.intents or 8, args.per_intent or 30, "0"
        args.out_root = str(Path(args.out_root).with_name("accuracy_estimate_quick"))
    args.seeds = [int(s) for s in args.seeds.split(",")]
    started = time.time()
    result = run(args)
    name = "accuracy_estimate_quick" if args.quick else "accuracy_estimate"
    record = {"benchmark_name": name,
              "protocol": {"dataset": "banking77 (+ financial_phrasebank test sentences for c_other_domain)",
                           "recipe": "support/intent-probe (ood_scorer=none, seed 0)", "backbone": args.backbone,
                           "seeds": args.seeds, "intents": result["intents"], "rows": result["rows"],
                           "time_rows": result["time_rows"], "held_out_intents": result["held_out_intents"],
                           "hard_intents": result["hard_intents"], "hard_share": HARD_SHARE,
                           "foreign_per_query": FOREIGN_PER_QUERY, "typo_rate": TYPO_RATE, "target_points": 100 * TARGET,
                           "per_intent_limit": args.per_intent},
              "summary": summarise(result["per_seed"]), "per_seed": result["per_seed"],
              "wall_seconds": time.time() - started,
              "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    write_record(name, record, table(record))
    plot(record, RESULTS / f"{name}.png")
    print((RESULTS / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
