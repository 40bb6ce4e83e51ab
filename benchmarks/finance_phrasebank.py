"""Financial PhraseBank: how close a 22M MiniLM gets to FinBERT (110M), and what domain adaptation buys.

Protocol: the catalog split of the deduplicated 50%-agree file (stratified 80/10/10, seed 0);
test = its 10% test part, test_allagree = the test sentences that are also in the AllAgree file
(none of them is trained on). Hyper-parameters were fixed before the run; the validation split
picks the probe's C, the zero-shot temperature is irrelevant to accuracy, and each fine-tune's
best checkpoint is chosen on validation accuracy. Systems: majority class, TF-IDF + linear SVM,
frozen MiniLM + logistic regression (probe), zero-shot with label descriptions, full fine-tune
(finance/sentiment-full), LoRA (finance/sentiment-lora), and MLM domain adaptation (core.adapt.mlm on
the training sentences' text, no labels, plus the demo stream's texts) followed by the full
fine-tune. FinBERT's published numbers (10-fold CV on the authors' split) sit beside them: the
protocols differ.

    python -m benchmarks.finance_phrasebank --data-dir ../shared/datasets [--systems a,b] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import verticals  # noqa: F401  installs the solutions' data readers (the phrasebank card format)
from benchmarks.record import RESULTS, write_record
from core.foundation.cost import CostLedger
from core.data.splits import LabelMap
from core.data.catalog import builtin_datasets_dir, load_classification
from core.evaluation.metrics import classification_metrics

PUBLISHED = [  # Araci 2019, arXiv:1908.10063, Table 2 (10-fold CV on the authors' split; ../shared/ANCHORS.md)
    {"system": "FinBERT, 110M params (published)", "test": {"accuracy": 0.86, "macro_f1": 0.84},
     "test_allagree": {"accuracy": 0.97, "macro_f1": 0.95}},
    {"system": "ULMFit (published)", "test": {"accuracy": 0.83, "macro_f1": 0.79},
     "test_allagree": {"accuracy": 0.93, "macro_f1": 0.91}},
    {"system": "LPS, Malo et al. (published)", "test": {"accuracy": 0.71, "macro_f1": 0.71},
     "test_allagree": {"accuracy": 0.79, "macro_f1": 0.80}},
]
EVAL_SETS = ("test", "test_allagree")


def _eval_sets(data):
    return {"test": data.test, "test_allagree": data.extra["test_allagree"]}


def _metrics_of(predict, data) -> dict:
    label_map = LabelMap(data.labels)
    return {name: classification_metrics(label_map.encode(split.labels), predict(split.texts))
            for name, split in _eval_sets(data).items()}


def majority(data, **_):
    y = np.asarray(LabelMap(data.labels).encode(data.train.labels))
    with CostLedger() as ledger:
        label = np.bincount(y).argmax()
    return {"metrics": _metrics_of(lambda texts: np.full(len(texts), label), data),
            "cost": ledger.cost.to_dict(), "config": {}}


def tfidf_svm(data, **_):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import LinearSVC

    label_map = LabelMap(data.labels)
    y, y_val = label_map.encode(data.train.labels), label_map.encode(data.validation.labels)
    best = None
    for c in (0.1, 0.3, 1.0, 3.0):  # chosen on validation
        model = make_pipeline(make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                                         TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
                              LinearSVC(C=c))
        with CostLedger() as ledger:
            model.fit(data.train.texts, y)
        val = classification_metrics(y_val, model.predict(data.validation.texts))["accuracy"]
        if best is None or val > best[0]:
            best = (val, c, model, ledger.cost)
    val, c, model, cost = best
    cost.train_samples = len(y)
    return {"metrics": _metrics_of(model.predict, data), "cost": cost.to_dict(),
            "config": {"C": c, "validation_accuracy": val}}


def linear_probe(data, **_):
    from sklearn.linear_model import LogisticRegression

    from core.models.backbones import load_backbone
    from core.models.classifier import build_classifier

    model = build_classifier(load_backbone("minilm"), data.labels)
    label_map = LabelMap(data.labels)
    y, y_val = label_map.encode(data.train.labels), label_map.encode(data.validation.labels)
    with CostLedger() as ledger:
        x_train, x_val = model.encode(data.train.texts), model.encode(data.validation.texts)
        best = None
        for c in (1.0, 10.0, 100.0):  # chosen on validation
            probe = LogisticRegression(C=c, max_iter=3000).fit(x_train, y)
            val = classification_metrics(y_val, probe.predict(x_val))["accuracy"]
            if best is None or val > best[0]:
                best = (val, c, probe)
    val, c, probe = best
    cost = ledger.cost
    cost.trainable_params, cost.total_params = probe.coef_.size + probe.intercept_.size, model.total_parameters()
    cost.train_samples = len(y)
    return {"metrics": _metrics_of(lambda texts: probe.predict(model.encode(texts)), data),
            "cost": cost.to_dict(), "config": {"C": c, "validation_accuracy": val}}


def zero_shot(data, **_):
    from core.models.zeroshot import ZeroShotClassifier
    from solutions.finance.sentiment import ZERO_SHOT_DESCRIPTIONS

    with CostLedger() as ledger:
        clf = ZeroShotClassifier("minilm", ZERO_SHOT_DESCRIPTIONS)
    order = [clf.labels.index(label) for label in data.labels]  # model columns -> dataset label ids

    def predict(texts):
        return clf.predict_proba(texts)[:, order].argmax(axis=1)

    return {"metrics": _metrics_of(predict, data), "cost": ledger.cost.to_dict(),
            "config": {"descriptions": ZERO_SHOT_DESCRIPTIONS, "temperature": clf.temperature}}


def _run_recipe(name: str, overrides: dict, run_dir: Path, data_dir) -> dict:
    from core.classify.config import load_recipe_file
    from core.classify.recipes import run_recipe
    from verticals.registry import RECIPES

    cfg = load_recipe_file(RECIPES[name], overrides, name=name)
    report = run_recipe(cfg, run_dir, data_dir=data_dir, overwrite=True)
    return report


def _recipe_row(report: dict, name: str) -> dict:
    return {"metrics": {k: report["metrics"][k] for k in EVAL_SETS}, "cost": report["cost"],
            "config": {"recipe": name, **report["config"]["model"], **report["config"]["train"],
                       "best_step": report["fit"]["best_step"], "steps": report["fit"]["steps"],
                       "validation_accuracy": report["metrics"]["validation"]["accuracy"]}}


def recipe(name):
    def run(data, *, data_dir, seed, out_root, **_):
        run_dir = out_root / f"{name.replace('/', '-')}-seed{seed}"
        return _recipe_row(_run_recipe(name, {"seed": str(seed)}, run_dir, data_dir), name)
    return run


def stream_texts() -> list[str]:
    path = builtin_datasets_dir() / "demo_finance_stream" / "stream.jsonl"
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def adapted_full(data, *, data_dir, seed, out_root, adapt_steps=300, adapt_head_steps=50, finetune_steps=0, **_):
    from core.adapt.mlm import AdaptConfig, adapt_backbone

    texts = list(data.train.texts) + stream_texts()  # unlabelled: training sentences + demo stream
    adapt_cfg = AdaptConfig(max_steps=adapt_steps, head_warmup_steps=adapt_head_steps, seed=seed)
    adapted = adapt_backbone("minilm", texts, out_root / f"minilm-finance-mlm-seed{seed}", adapt_cfg)
    name = "finance/sentiment-full"
    run_dir = out_root / f"finance-sentiment-full-adapted-seed{seed}"
    overrides = {"seed": str(seed), "backbone": str(adapted.output_dir), "max_steps": str(finetune_steps)}
    row = _recipe_row(_run_recipe(name, overrides, run_dir, data_dir), name)
    row["cost"] = {k: round(v + adapted.cost.get(k, 0), 3) if k in ("wall_seconds", "cpu_seconds") else v
                   for k, v in row["cost"].items()}
    row["config"]["adapt"] = adapted.config | {"head_was_fresh": adapted.head_was_fresh,
                                               "mlm_loss_first10": float(np.mean(adapted.losses[:10])),
                                               "mlm_loss_last10": float(np.mean(adapted.losses[-10:])),
                                               "adapt_wall_seconds": adapted.cost["wall_seconds"]}
    return row


SYSTEMS = {
    "majority": ("majority class", majority),
    "tfidf": ("TF-IDF (word 1-2 + char 2-5) + linear SVM", tfidf_svm),
    "probe": ("MiniLM frozen + logistic regression", linear_probe),
    "zeroshot": ("MiniLM zero-shot, label descriptions", zero_shot),
    "full": ("MiniLM full fine-tune (finance/sentiment-full)", recipe("finance/sentiment-full")),
    "lora": ("MiniLM LoRA r=16 (finance/sentiment-lora)", recipe("finance/sentiment-lora")),
    "adapted": ("MiniLM + MLM domain adaptation, then full fine-tune", adapted_full),
}


def _pct(v) -> str:
    return f"{100 * v:.1f}%" if v is not None else "-"


def table(rows: list[dict]) -> str:
    lines = ["| system | test acc | test macro-F1 | AllAgree acc | AllAgree macro-F1 | train wall s | trainable params "
             "| steps (best) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, a, c = r["test"], r["test_allagree"], r.get("cost") or {}
        params = f"{c['trainable_params']:,}" if c.get("trainable_params") else "-"
        cfg = r.get("config") or {}
        steps = f"{cfg['steps']} ({cfg['best_step']})" if "steps" in cfg else "-"
        lines.append(f"| {r['system']} | {_pct(t['accuracy'])} | {_pct(t['macro_f1'])} | {_pct(a['accuracy'])} | "
                     f"{_pct(a['macro_f1'])} | {c.get('wall_seconds', '-')} | {params} | {steps} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adapt-steps", type=int, default=300, help="MLM steps over the whole model")
    parser.add_argument("--adapt-head-steps", type=int, default=50, help="MLM head-only warm-up steps")
    parser.add_argument("--finetune-steps", type=int, default=0,
                        help="cap the fine-tune after adaptation (0 = the recipe's epochs)")
    parser.add_argument("--out-root", default="benchmarks/runs")
    args = parser.parse_args(argv)
    from core.foundation.quiet import quiet_libraries
    from core.foundation.device import seed_everything

    quiet_libraries()
    seed_everything(args.seed)
    data = load_classification("financial_phrasebank", root=args.data_dir)
    rows = {}
    for key in [k for k in args.systems.split(",") if k]:  # --systems "" re-renders the table
        title, system = SYSTEMS[key]
        print(f"[{time.strftime('%H:%M:%S')}] {key}: {title}", flush=True)
        out = system(data, data_dir=args.data_dir, seed=args.seed, out_root=Path(args.out_root),
                     adapt_steps=args.adapt_steps, adapt_head_steps=args.adapt_head_steps,
                     finetune_steps=args.finetune_steps)
        rows[key] = {"key": key, "system": title, "seed": args.seed, **out["metrics"],
                     "cost": out["cost"], "config": out["config"]}
        print(f"    test acc {out['metrics']['test']['accuracy']:.4f} F1 {out['metrics']['test']['macro_f1']:.4f}  "
              f"allagree acc {out['metrics']['test_allagree']['accuracy']:.4f}  wall {out['cost']['wall_seconds']} s",
              flush=True)
        _write(rows, data)  # after every system, so an interrupted run keeps what it measured
    print(_write(rows, data))


def _write(measured: dict, data) -> str:
    """Merge this run's rows into the record on disk (other systems may have been run separately)."""
    previous = RESULTS / "finance_phrasebank.json"
    rows = {r["key"]: r for r in json.loads(previous.read_text())["systems"]} if previous.is_file() else {}
    rows.update(measured)
    ordered = [rows[k] for k in SYSTEMS if k in rows]
    summary = data.summary()
    md = table(ordered + PUBLISHED) + (
        f"\nTest split: {summary['test']} sentences, its AllAgree part: {summary['test_allagree']} (train "
        f"{summary['train']}, validation {summary['validation']}). One seed (0) per system; fine-tune wall "
        f"times were measured on 2 CPU cores shared with other jobs, so they overstate the cost. The "
        f"domain-adapted row's wall time includes the MLM adaptation.\n")
    write_record("finance_phrasebank", {
        "protocol": "financial_phrasebank 50%-agree, deduplicated, stratified 80/10/10 (seed 0); test and its "
                    "AllAgree subset; hyper-parameters fixed in advance, checkpoints and probe C chosen on "
                    "validation; one seed per system; published rows use 10-fold CV on another split",
        "data": data.summary(), "systems": ordered, "published": PUBLISHED}, md)
    return md


if __name__ == "__main__":
    main()
