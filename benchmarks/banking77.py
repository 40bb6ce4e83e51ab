"""BANKING77: what each way of training an intent classifier on MiniLM buys and costs.

Protocol: the official test split (3,080) is used only for the final numbers; a validation split
(10% of train, stratified, seed 0, from the catalog card) picks the probe's C and each fine-tune's
best checkpoint. Systems: majority class, TF-IDF + linear SVM, frozen MiniLM embeddings + logistic
regression (linear probe), full fine-tune and LoRA (the recipes support/intent-full and
support/intent-lora). Costs come from the cost ledger of each system's training.

    python -m benchmarks.banking77 [--data-dir D] [--systems tfidf,probe,full,lora] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.record import RESULTS, write_record
from core.foundation.cost import CostLedger
from core.data.splits import LabelMap
from core.data.catalog import load_classification
from core.evaluation.metrics import classification_metrics

PUBLISHED = [  # Casanueva et al. 2020, arXiv:2003.04807, Table 3 (full training data)
    {"system": "BERT-large fine-tuned (published)", "accuracy": 0.9366},
    {"system": "USE+ConveRT frozen + MLP (published)", "accuracy": 0.9336},
]


def majority(data, y_train, y_test, **_):
    with CostLedger() as ledger:
        label = np.bincount(y_train).argmax()
    return {"pred": np.full(len(y_test), label), "cost": ledger.cost.to_dict(), "config": {}}


def tfidf_svm(data, y_train, y_test, **_):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import LinearSVC

    best = None
    for c in (0.3, 1.0, 3.0):  # chosen on validation
        model = make_pipeline(make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                                         TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
                              LinearSVC(C=c))
        with CostLedger() as ledger:
            model.fit(data.train.texts, y_train)
        val = classification_metrics(LabelMap(data.labels).encode(data.validation.labels),
                                     model.predict(data.validation.texts))["accuracy"]
        if best is None or val > best[0]:
            best = (val, c, model, ledger.cost)
    val, c, model, cost = best
    cost.train_samples = len(y_train)
    return {"pred": model.predict(data.test.texts), "cost": cost.to_dict(),
            "config": {"C": c, "validation_accuracy": val}}


def linear_probe(data, y_train, y_test, **_):
    from sklearn.linear_model import LogisticRegression

    from core.models.backbones import load_backbone
    from core.models.classifier import build_classifier

    backbone = load_backbone("minilm")
    model = build_classifier(backbone, data.labels)
    y_val = LabelMap(data.labels).encode(data.validation.labels)
    with CostLedger() as ledger:
        x_train = model.encode(data.train.texts)
        best = None
        for c in (1.0, 10.0, 100.0):  # chosen on validation
            probe = LogisticRegression(C=c, max_iter=3000).fit(x_train, y_train)
            val = classification_metrics(y_val, probe.predict(model.encode(data.validation.texts)))["accuracy"]
            if best is None or val > best[0]:
                best = (val, c, probe)
    val, c, probe = best
    cost = ledger.cost
    cost.trainable_params = probe.coef_.size + probe.intercept_.size
    cost.total_params = model.total_parameters()
    cost.train_samples = len(y_train)
    return {"pred": probe.predict(model.encode(data.test.texts)), "cost": cost.to_dict(),
            "config": {"C": c, "validation_accuracy": val}}


def recipe(name):
    def run(data, y_train, y_test, *, data_dir, seed, out_root, reuse=False, **_):
        from core.classify.config import load_recipe_file
        from core.classify.recipes import run_recipe
        from core.runs.rundir import read_report
        from verticals.registry import RECIPES

        run_dir = out_root / f"{name.replace('/', '-')}-seed{seed}"
        if reuse and (run_dir / "report.json").is_file():  # a finished run of this recipe: read its record
            report = read_report(run_dir)
        else:
            cfg = load_recipe_file(RECIPES[name], {"seed": str(seed)}, name=name)
            report = run_recipe(cfg, run_dir, data_dir=data_dir, overwrite=True)
        return {"metrics": report["metrics"]["test"], "cost": report["cost"],
                "config": {"recipe": name, **report["config"]["model"], **report["config"]["train"],
                           "best_step": report["fit"]["best_step"], "steps": report["fit"]["steps"],
                           "validation_accuracy": report["metrics"]["validation"]["accuracy"]}}
    return run


SYSTEMS = {
    "majority": ("majority class", majority),
    "tfidf": ("TF-IDF (word 1-2 + char 2-5) + linear SVM", tfidf_svm),
    "probe": ("MiniLM frozen, mean-pooled + logistic regression", linear_probe),
    "full": ("MiniLM full fine-tune, probe-initialised head (support/intent-full)", recipe("support/intent-full")),
    "lora": ("MiniLM LoRA r=8, probe-initialised head (support/intent-lora)", recipe("support/intent-lora")),
}


def train_speed(data, steps: int = 40) -> list[dict]:
    """Training throughput alone: `steps` optimizer steps of batch 32 on BANKING77 texts, no probe,
    a 10-example validation pass at the end; samples/s = samples seen / train seconds."""
    from core.models.backbones import load_backbone
    from core.classify.config import TrainConfig
    from core.foundation.cost import CostLedger
    from core.data.splits import Split
    from core.models.classifier import build_classifier
    from core.classify.train import fit
    from core.foundation.device import seed_everything

    rows = []
    tiny_val = Split(data.validation.texts[:10], data.validation.labels[:10])
    for peft in ("none", "lora"):
        seed_everything(0)
        model = build_classifier(load_backbone("minilm"), data.labels, peft=peft)
        cfg = TrainConfig(max_steps=steps, batch_size=32, patience=0, eval_every=10**6, log_every=10**6)
        with CostLedger() as ledger:
            result = fit(model, data.train, tiny_val, cfg, run_dir=Path("benchmarks/runs/speed") / peft, progress=False)
        rows.append({"peft": peft, "steps": steps, "samples_per_second": result.samples_seen / result.train_seconds,
                     "tokens_per_second": result.tokens_seen / result.train_seconds,
                     "trainable_params": model.trainable_parameters(), "peak_rss_mb": ledger.cost.peak_rss_mb})
        print(f"    {peft}: {rows[-1]['samples_per_second']:.1f} samples/s", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| system | test accuracy | macro-F1 | train wall s | train samples/s | trainable params | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r.get("cost", {})
        acc = f"{100 * r['accuracy']:.2f}%"
        f1 = f"{100 * r['macro_f1']:.2f}%" if r.get("macro_f1") is not None else "-"
        lines.append(f"| {r['system']} | {acc} | {f1} | {c.get('wall_seconds', '-')} | "
                     f"{c.get('train_samples_per_second', '-')} | {c.get('trainable_params', '-'):,} | "
                     f"{c.get('peak_rss_mb', '-')} |" if c else
                     f"| {r['system']} | {acc} | {f1} | - | - | - | - |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-root", default="benchmarks/runs")
    parser.add_argument("--speed", action="store_true", help="also measure training throughput alone (40 steps each)")
    parser.add_argument("--reuse", action="store_true",
                        help="for recipe systems, read report.json of a finished run in --out-root instead of training")
    args = parser.parse_args(argv)
    from core.foundation.quiet import quiet_libraries
    from core.foundation.device import seed_everything

    quiet_libraries()
    seed_everything(args.seed)
    data = load_classification("banking77", root=args.data_dir)
    label_map = LabelMap(data.labels)
    y_train, y_test = np.asarray(label_map.encode(data.train.labels)), np.asarray(label_map.encode(data.test.labels))
    previous = RESULTS / "banking77.json"
    rows = {r["key"]: r for r in json.loads(previous.read_text())["systems"]} if previous.is_file() else {}
    for key in args.systems.split(","):
        title, system = SYSTEMS[key]
        print(f"[{time.strftime('%H:%M:%S')}] {key}: {title}", flush=True)
        out = system(data, y_train, y_test, data_dir=args.data_dir, seed=args.seed, out_root=Path(args.out_root),
                     reuse=args.reuse)
        metrics = out.get("metrics") or classification_metrics(y_test, out["pred"])
        rows[key] = {"key": key, "system": title, "seed": args.seed, "accuracy": metrics["accuracy"],
                     "macro_f1": metrics["macro_f1"], "cost": out["cost"], "config": out["config"]}
        print(f"    test accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
              f"wall {out['cost']['wall_seconds']} s", flush=True)
    ordered = [rows[k] for k in SYSTEMS if k in rows]
    previous_speed = json.loads(previous.read_text()).get("train_speed") if previous.is_file() else None
    speed = train_speed(data) if args.speed else previous_speed
    md = table(ordered + [{**p, "macro_f1": None} for p in PUBLISHED])
    if speed:
        md += ("\nTraining throughput alone (40 steps, batch 32, no other jobs on the machine): "
               + "; ".join(f"{'full fine-tune' if r['peft'] == 'none' else 'LoRA'} {r['samples_per_second']:.1f} samples/s "
                           f"({r['tokens_per_second']:.0f} tokens/s)" for r in speed) + ".\n")
    write_record("banking77", {
        "protocol": "BANKING77 official test split (3,080); validation = 10% of train, stratified, seed 0; "
                    "hyper-parameters and checkpoints chosen on validation only",
        "data": data.summary(), "systems": ordered, "published": PUBLISHED, "train_speed": speed}, md)
    print(md)


if __name__ == "__main__":
    main()
