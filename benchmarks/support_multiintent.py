"""Multi-intent support queries on BANKING77: does a per-intent sigmoid head find every intent of
"cancel my order and refund the card", and what does it cost on plain single-intent queries?

Protocol. Multi-intent queries are two or three BANKING77 queries of different intents joined the
way people write them ("A and b", "A. Also, b", "A, plus b", "A, b and c", ...; TEMPLATES). Train:
the single-intent train rows (BANKING77 train minus a stratified 10% validation, seed 0) plus
--multi-train composed rows from them; validation: the validation rows plus --multi-val composed
from them (thresholds and the sigmoid temperature are chosen there); multi-intent test: --multi-test
rows composed from the official TEST split only, so no test sentence was ever seen in training.
Systems, each over --seeds:
- `support/intent-multilabel` (full fine-tune, one-vs-rest probe head, BCE) on that data;
- `support/intent-full` (single-label, softmax) on the single-intent rows, its top-1 intent taken
  as a one-label set on the multi-intent test;
- trivial baseline: TF-IDF (word 1-2) + one logistic regression per intent, thresholds 0.5.
Metrics: exact-set accuracy, micro/macro F1 on the multi-intent test; on the plain single-intent
test (3,080): top-1 accuracy and exact-set accuracy (a multi-label model may add a second intent);
for the multi-label system, its exact-set accuracy estimated without labels on each test and on
both mixed (`estimates`), beside the true one.

    python -m benchmarks.support_multiintent --data-dir ../shared/datasets            # full (hours on CPU)
    python -m benchmarks.support_multiintent --data-dir ../shared/datasets --tier probe --seeds 0  # minutes
    python -m benchmarks.support_multiintent --quick                                  # tiny backbone, demo data
--quick writes its record under --out-root only (never benchmarks/results).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.record import write_record
from core.data.catalog import load_classification
from core.data.splits import Split

TEMPLATES = {2: ("{a} and {b}", "{a}. Also, {b}", "{a}, plus {b}", "{a} Also {b}", "{a}; {b}"),
             3: ("{a}, {b} and {c}", "{a}. Also, {b}. And {c}", "{a}. {b} Oh and {c}")}


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def compose(split: Split, n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """`n` (text, "a|b[|c]") rows joining 2 (two thirds) or 3 queries of distinct intents of `split`."""
    by_label: dict[str, list[str]] = {}
    for text, label in zip(split.texts, split.labels):
        by_label.setdefault(label, []).append(text.strip().rstrip("."))
    labels = sorted(by_label)
    rows = []
    for _ in range(n):
        k = 3 if rng.random() < 1 / 3 else 2
        chosen = [labels[i] for i in rng.choice(len(labels), k, replace=False)]
        parts = [by_label[lab][rng.integers(len(by_label[lab]))] for lab in chosen]
        template = TEMPLATES[k][rng.integers(len(TEMPLATES[k]))]
        text = template.format(**{key: (p if j == 0 else _lower_first(p)) for j, (key, p) in enumerate(zip("abc", parts))})
        rows.append((text, "|".join(chosen)))
    return rows


def write_data(data, folder: Path, args, rng) -> dict[str, list]:
    """train/validation/test.csv with a `labels` column; returns the rows written per split."""
    folder.mkdir(parents=True, exist_ok=True)
    single = {name: list(zip(getattr(data, name).texts, getattr(data, name).labels)) for name in ("train", "validation")}
    splits = {"train": single["train"] + compose(data.train, args.multi_train, rng),
              "validation": single["validation"] + compose(data.validation, args.multi_val, rng),
              "test": compose(data.test, args.multi_test, rng)}
    for name, rows in splits.items():
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(("text", "labels"))
            writer.writerows(rows)
    return splits


def _sets(rows) -> list[tuple[str, ...]]:
    return [tuple(labels.split("|")) for _, labels in rows]


def scores_of(labels: list[str], truth, predicted_sets, scores=None) -> dict:
    from core.data.multilabel import multi_hot
    from core.evaluation.multilabel import multilabel_metrics

    known = [tuple(x for x in s if x in labels) for s in predicted_sets]
    return multilabel_metrics(multi_hot(truth, labels), multi_hot(known, labels), scores)


def run_multilabel(args, folder: Path, single_test: Split, multi_test, seed: int) -> dict:
    from core.classify.multilabel import train_multilabel
    from core.classify.multilabel_config import load_multilabel_recipe
    from core.models.multilabel import load_multilabel_head
    from core.models.predictor import load_run
    from verticals.registry import RECIPES

    out = Path(args.out_root) / f"multilabel-seed{seed}"
    cfg = load_multilabel_recipe(RECIPES["support/intent-multilabel"],
                                 {"data": str(folder), "seed": str(seed), "oos_label": "", **args.overrides,
                                  **args.multi_overrides})
    report = train_multilabel(cfg, out, overwrite=True, progress=False)
    model, head = load_run(out), load_multilabel_head(out / "model")
    probs = head.probabilities(model.predict_logits(single_test.texts), model.temperature)
    sets = [tuple(np.asarray(model.labels)[row]) for row in head.decide(probs)]
    single = scores_of(model.labels, [(lab,) for lab in single_test.labels], sets, probs)
    multi_probs = head.probabilities(model.predict_logits([t for t, _ in multi_test]), model.temperature)
    return {"multi_test": {k: report["metrics"]["test"][k] for k in ("exact_set_accuracy", "micro_f1", "macro_f1")},
            "single_test": {"top1_accuracy": single["top1_accuracy"], "exact_set_accuracy": single["exact_set_accuracy"]},
            "accuracy_estimate": estimates(out, model.labels, head, {
                "single-intent test": (probs, [(lab,) for lab in single_test.labels]),
                "multi-intent test": (multi_probs, _sets(multi_test))}),
            "test_ece_after": report["confidence"].get("test_ece_after"), "wall_seconds": report["cost"]["wall_seconds"]}


def estimates(run: Path, labels: list[str], head, traffic: dict[str, tuple]) -> dict:
    """The label-free exact-set accuracy estimate (ATC over the predicted-set probability, DoC beside
    it, from the run's stored fit) against the true exact-set accuracy, per test traffic and on both
    mixed: what the support service's /v1/drift would say if that were its traffic."""
    from core.evaluation.accuracy_estimate import atc_estimate, doc_estimate
    from core.evaluation.drift_baseline import load_drift_baseline

    fit = load_drift_baseline(run).accuracy
    both = (np.concatenate([p for p, _ in traffic.values()]), [s for _, sets in traffic.values() for s in sets])
    out = {}
    for name, (probs, truth) in {**traffic, "both mixed": both}.items():
        score = np.round(head.set_confidence(probs), 4)  # as the router reports it
        true = scores_of(labels, truth, [tuple(np.asarray(labels)[row]) for row in head.decide(probs)])
        out[name] = {"true": true["exact_set_accuracy"], "atc": atc_estimate(fit.threshold, score),
                     "doc": doc_estimate(fit.validation_accuracy, fit.validation_mean_confidence, score),
                     "rows": len(score)}
    return out | {"validation_exact_set_accuracy": fit.validation_accuracy}


def run_single_label(args, single_test: Split, multi_test, seed: int) -> dict:
    from core.classify.config import load_recipe_file
    from core.classify.recipes import run_recipe
    from core.models.predictor import load_run
    from verticals.registry import RECIPES

    out = Path(args.out_root) / f"single-seed{seed}"
    cfg = load_recipe_file(RECIPES[args.single_recipe], {"data": args.source, "seed": str(seed), "oos_label": "",
                                                           **args.overrides})
    report = run_recipe(cfg, out, data_dir=args.data_dir, overwrite=True, progress=False)
    model = load_run(out)
    top = model.predict_logits([t for t, _ in multi_test]).argmax(axis=1)
    multi = scores_of(model.labels, _sets(multi_test), [(model.labels[i],) for i in top])
    return {"multi_test": {k: multi[k] for k in ("exact_set_accuracy", "micro_f1", "macro_f1")},
            "single_test": {"top1_accuracy": report["metrics"]["test"]["accuracy"],
                            "exact_set_accuracy": report["metrics"]["test"]["accuracy"]},
            "wall_seconds": report["cost"]["wall_seconds"]}


def run_tfidf(splits: dict, single_test: Split) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    binarizer = MultiLabelBinarizer()
    y = binarizer.fit_transform(_sets(splits["train"]))
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    clf = OneVsRestClassifier(LogisticRegression(C=10, max_iter=2000)).fit(
        vectorizer.fit_transform([t for t, _ in splits["train"]]), y)
    labels = list(binarizer.classes_)

    def predict(texts):
        probs = clf.predict_proba(vectorizer.transform(texts))
        return [tuple(np.asarray(labels)[row >= 0.5]) for row in probs], probs

    multi_sets, _ = predict([t for t, _ in splits["test"]])
    single_sets, single_probs = predict(single_test.texts)
    multi = scores_of(labels, _sets(splits["test"]), multi_sets)
    single = scores_of(labels, [(lab,) for lab in single_test.labels], single_sets, single_probs)
    return {"multi_test": {k: multi[k] for k in ("exact_set_accuracy", "micro_f1", "macro_f1")},
            "single_test": {"top1_accuracy": single["top1_accuracy"], "exact_set_accuracy": single["exact_set_accuracy"]}}


def _mean_std(values: list[float]) -> str:
    return f"{100 * statistics.mean(values):.2f}" + (f" ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else "")


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| system | multi-intent exact-set acc | micro-F1 | macro-F1 | single-intent top-1 acc | single-intent exact-set acc |",
             "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        cells = [_mean_std([r["multi_test"][k] for r in runs]) for k in ("exact_set_accuracy", "micro_f1", "macro_f1")]
        cells += [_mean_std([r["single_test"][k] for r in runs]) for k in ("top1_accuracy", "exact_set_accuracy")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    estimated = [(name, r["accuracy_estimate"]) for name, runs in results.items() for r in runs if "accuracy_estimate" in r]
    if estimated:
        lines += ["", "Exact-set accuracy estimated without labels (the run's stored ATC fit over the predicted-set "
                  "probability; DoC beside it) against the true one:", "",
                  "| system | traffic | true | ATC | ATC - true | DoC |", "|---|---|---|---|---|---|"]
        for name, est in estimated:
            for traffic, e in est.items():
                if isinstance(e, dict):
                    lines.append(f"| {name} | {traffic} ({e['rows']}) | {100 * e['true']:.1f} | {100 * e['atc']:.1f} | "
                                 f"{100 * (e['atc'] - e['true']):+.1f} | {100 * e['doc']:.1f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--multi-train", type=int, default=6000)
    p.add_argument("--multi-val", type=int, default=600)
    p.add_argument("--multi-test", type=int, default=2000)
    p.add_argument("--out-root", default=str(Path(tempfile.gettempdir()) / "verticals-multiintent"))
    p.add_argument("--tier", choices=("finetune", "probe"), default="finetune",
                   help="finetune: intent-multilabel vs intent-full (hours on CPU); probe: both on frozen MiniLM "
                        "(mode=probe vs support/intent-probe; minutes)")
    p.add_argument("--epochs", type=int, help="train.epochs for both fine-tuned systems (default: the recipes' 3)")
    p.add_argument("--quick", action="store_true", help="tiny backbone, demo data, few steps: a check that it runs")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.source, args.overrides = "banking77", ({"epochs": str(args.epochs)} if args.epochs else {})
    args.single_recipe = "support/intent-probe" if args.tier == "probe" else "support/intent-full"
    args.multi_overrides = {"mode": "probe"} if args.tier == "probe" else {}
    if args.quick:
        args.source, args.seeds = "demo_support", [0]
        args.multi_train, args.multi_val, args.multi_test = 120, 40, 40
        args.overrides = {"backbone": "tiny", "max_steps": "8", "batch_size": "16", "probe_c": "10"}
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = load_classification(args.source, root=args.data_dir)
    folder = Path(args.out_root) / "data"
    splits = write_data(data, folder, args, np.random.default_rng(0))
    multi_name = "support/intent-multilabel" + (" mode=probe" if args.tier == "probe" else "")
    single_name = f"{args.single_recipe} (single-label)"
    results = {multi_name: [], single_name: [],
               "TF-IDF + logistic regression per intent": [run_tfidf(splits, data.test)]}
    for seed in args.seeds:
        results[multi_name].append(run_multilabel(args, folder, data.test, splits["test"], seed))
        results[single_name].append(run_single_label(args, data.test, splits["test"], seed))
    record = {"protocol": __doc__.split("Protocol. ")[1].split("\n\n")[0], "source": args.source, "seeds": args.seeds,
              "rows": {k: len(v) for k, v in splits.items()} | {"single_intent_test": len(data.test)},
              "overrides": args.overrides, "tier": args.tier, "results": results}
    epochs = f", {args.epochs} epoch(s)" if args.epochs and args.tier == "finetune" else ""
    md = (f"Multi-intent support queries (BANKING77 composed), {args.tier} tier{epochs}, seeds "
          f"{', '.join(map(str, args.seeds))}.\n\n" + table(results))
    if args.quick:
        (Path(args.out_root) / "record.json").write_text(json.dumps(record, indent=2))
        print(md)
    else:
        write_record(f"support_multiintent_{args.tier}", record, md)  # one record per tier
    return record


if __name__ == "__main__":
    main()
