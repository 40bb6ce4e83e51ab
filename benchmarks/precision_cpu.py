"""float32 or bf16 autocast on this CPU: which trains and predicts faster, and what does bf16 cost in accuracy?

One question, for the CPU the script runs on: MiniLM's training samples/s and inference texts/s
in float32 (`mixed_precision=no`) and under bf16 autocast (`mixed_precision=bf16`, forced, so it is
measured also where the CPU only emulates bf16), the test accuracy of a fine-tune in each
precision on BANKING77 and Financial PhraseBank, and whether `mixed_precision=auto`
(core.foundation.precision: bf16 only on a CPU with native bf16) picks the faster precision on
every shape timed here. The record also holds what the detector saw on this CPU.

Speed (both precisions in one process, interleaved: fp32, bf16, fp32, bf16, ... over `--repeats`
rounds after one warm-up of each; the median of the rounds is reported, every timing keeps the
1-minute load average before and after it):
- train: `--train-steps` optimizer steps of the engine (core.engine.loop.Engine, the
  classification step of core.classify.train, fused AdamW) on length-grouped batches of 32
  BANKING77 training texts, max length 64; samples/s = samples / loop seconds.
- infer-batch: TextClassifier.predict_proba on `--infer-texts` BANKING77 test texts, batches of 64
  (length-bucketed); texts/s.
- infer-single: `--single-queries` calls of one text each; texts/s = calls / seconds.
Accuracy (per dataset, fp32 then bf16, the same data, seed and hyper-parameters): a full fine-tune
of MiniLM from the probe head (core.classify.train.fit; head from logistic regression on the
run's own embeddings, C = 10), one epoch over `--train-examples` training rows of a seeded
shuffle, batch 32, max length 64, lr 1e-4 (PhraseBank 8e-5, as its recipe), the step kept by
accuracy on the first 64 validation rows; test accuracy on `--test-examples` test rows of a seeded
shuffle (PhraseBank: its whole 483-row test split by default). Beside them: the float32 model
predicting under bf16 (inference precision alone) and the share of test rows on which the fp32
and bf16 models agree. Target: bf16 within 0.3 accuracy points of fp32. One seed (`--seed`): the
two precisions differ by float rounding only, and bf16 is slow to train where it is emulated;
the fp32 fine-tune is the baseline every bf16 number is read against. The sizes are small so that
a full run, most of it the bf16 fine-tunes where bf16 is emulated, fits in well under 20 minutes on
2 CPU cores (--quick: a few minutes).

    python -m benchmarks.precision_cpu --data-dir ../shared/datasets            # full: MiniLM
    python -m benchmarks.precision_cpu --data-dir ../shared/datasets --quick    # a smaller check

Writes results/precision_cpu.json, .md and .png (--quick: precision_cpu_quick.*; --no-record:
prints the tables only). Leaves out: GPUs (mixed precision there is accelerate's), fp16 and int8
on a CPU (the ONNX runtime's int8: benchmarks/support_banking77.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import verticals  # noqa: F401  installs the solutions' data readers (the phrasebank card format)
from benchmarks.record import RESULTS, write_record
from core.classify.config import TrainConfig
from core.classify.train import ClassificationStep, epoch_order, fit, pad_batch
from core.data.catalog import load_classification
from core.data.splits import LabelMap, Split
from core.engine.loop import Engine, LoopSettings, decay_groups
from core.evaluation.metrics import classification_metrics
from core.foundation.device import seed_everything
from core.foundation.plots import pyplot
from core.foundation.precision import cpu_bf16, resolve_precision
from core.models.backbones import load_backbone
from core.models.classifier import build_classifier, init_head_from_probe

SETTINGS = {"fp32": "no", "bf16": "bf16"}  # precision -> the mixed_precision that forces it
BATCH, INFER_BATCH, MAX_LENGTH, VALIDATION_ROWS, TARGET_POINTS = 32, 64, 64, 64, 0.3
LR = {"banking77": 1e-4, "financial_phrasebank": 8e-5}  # the recipes' (support/intent-full, finance/sentiment-full)
FULL = {"repeats": 3, "train_steps": 3, "infer_texts": 192, "single_queries": 16,
        "train_examples": {"banking77": 512, "financial_phrasebank": 192},
        "test_examples": {"banking77": 616, "financial_phrasebank": 483}}
QUICK = {"repeats": 3, "train_steps": 1, "infer_texts": 64, "single_queries": 4,
         "train_examples": {"banking77": 96, "financial_phrasebank": 64},
         "test_examples": {"banking77": 96, "financial_phrasebank": 64}}
SHAPES = {"train": "train, batch 32 (samples/s)", "infer_batch": "inference, batch 64 (texts/s)",
          "infer_single": "inference, one text a call (texts/s)"}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def subset(split: Split, n: int, seed: int) -> Split:
    """The first `n` rows of a seeded shuffle of `split` (all of it when n >= its size)."""
    order = np.random.default_rng(seed).permutation(len(split.texts))[:n]
    return Split([split.texts[i] for i in order], [split.labels[i] for i in order])


def new_model(backbone: str, labels: list[str], setting: str, seed: int):
    seed_everything(seed)
    model = build_classifier(load_backbone(backbone, max_length=MAX_LENGTH), labels)
    model.mixed_precision = setting
    return model


# ---------------------------------------------------------------- speed


def time_training(model, batches: list[dict], setting: str) -> dict:
    """Samples/s of len(batches) optimizer steps of the engine at `setting` (no validation, no checkpoint)."""
    engine = Engine("cpu", setting)
    step = ClassificationStep(model, None, 0.0)
    settings = LoopSettings(steps=len(batches), warmup=0.0, log_every=10**9, desc="speed")
    before = load()
    result = engine.run(step, decay_groups(model.named_parameters(), 1e-5, 0.01), lambda m: batches[m], settings,
                        progress=False)
    return {"rate": result.samples_seen / result.train_seconds, "seconds": result.train_seconds,
            "precision": engine.precision, "load_before": before, "load_after": load()}


def time_inference(model, texts: list[str], single: int) -> tuple[dict, dict]:
    """(batch texts/s over `texts`, one-text-a-call texts/s over `single` calls)."""
    before = load()
    start = time.perf_counter()
    model.predict_proba(texts, batch_size=INFER_BATCH)
    batch_seconds = time.perf_counter() - start
    middle = load()
    start = time.perf_counter()
    for text in texts[:single]:
        model.predict_proba([text])
    single_seconds = time.perf_counter() - start
    return ({"rate": len(texts) / batch_seconds, "seconds": batch_seconds, "load_before": before, "load_after": middle},
            {"rate": single / single_seconds, "seconds": single_seconds, "load_before": middle, "load_after": load()})


def training_batches(model, texts: list[str], labels: list[int], steps: int, seed: int) -> list[dict]:
    """`steps` batches of BATCH texts as the classification trainer builds them (length-grouped)."""
    token_ids = model.tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    order = epoch_order(np.asarray([len(ids) for ids in token_ids]), BATCH, seed, 0, True)
    y = np.asarray(labels)
    return [{**pad_batch([token_ids[i] for i in idx], model.tokenizer.pad_token_id or 0),
             "labels": torch.from_numpy(y[idx])}
            for idx in (order[k * BATCH:(k + 1) * BATCH] for k in range(steps))]


def speed(data, backbone: str, sizes: dict, seed: int) -> dict:
    """Every shape timed in both precisions, interleaved; medians and each timing."""
    label_ids = LabelMap(data.labels).encode(data.train.labels)
    models = {p: new_model(backbone, data.labels, s, seed) for p, s in SETTINGS.items()}
    batches = training_batches(models["fp32"], data.train.texts, label_ids, sizes["train_steps"], seed)
    texts = subset(data.test, sizes["infer_texts"], seed).texts
    for precision, model in models.items():  # warm-up: one step and one batch of each (oneDNN primitives, caches)
        time_training(model, batches[:1], SETTINGS[precision])
        time_inference(model, texts[:INFER_BATCH], 1)
    runs = {shape: {p: [] for p in SETTINGS} for shape in SHAPES}
    for round_ in range(sizes["repeats"]):
        for precision, model in models.items():
            runs["train"][precision].append(time_training(model, batches, SETTINGS[precision]))
            batch, single = time_inference(model, texts, sizes["single_queries"])
            runs["infer_batch"][precision].append(batch)
            runs["infer_single"][precision].append(single)
            print(f"  round {round_}: {precision} train {runs['train'][precision][-1]['rate']:.1f} samples/s, "
                  f"inference {batch['rate']:.1f} texts/s, single {single['rate']:.1f} texts/s", flush=True)
    auto = resolve_precision("auto", "cpu")
    out = {}
    for shape, by in runs.items():
        median = {p: statistics.median(r["rate"] for r in by[p]) for p in SETTINGS}
        faster = max(median, key=median.get)
        out[shape] = {"median": median, "bf16_over_fp32": median["bf16"] / median["fp32"], "faster": faster,
                      "auto_picks": auto, "auto_picks_faster": auto == faster, "runs": by}
    return out


# ---------------------------------------------------------------- accuracy


def fine_tune(data, train: Split, test: Split, dataset: str, precision: str, backbone: str, seed: int) -> dict:
    """A fine-tune at `precision` from the probe head; test accuracy, its predictions, and the times."""
    model = new_model(backbone, data.labels, SETTINGS[precision], seed)
    label_map = LabelMap(data.labels)
    cfg = TrainConfig(epochs=1, lr=LR[dataset], head_lr=1e-3, batch_size=BATCH, warmup=0.1, patience=0,
                      seed=seed, mixed_precision=SETTINGS[precision])
    validation = subset(data.validation, VALIDATION_ROWS, seed)
    start = time.perf_counter()
    init_head_from_probe(model, train.texts, label_map.encode(train.labels), c=10.0)
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(model, train, validation, cfg, run_dir=Path(run_dir), progress=False)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    predicted = model.predict_proba(test.texts).argmax(axis=1)
    test_seconds = time.perf_counter() - start
    metrics = classification_metrics(label_map.encode(test.labels), predicted)
    return {"model": model, "predicted": predicted, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "precision": model.precision_on("cpu"), "steps": result.steps, "validation_accuracy": result.best_metric,
            "train_seconds": round(train_seconds, 2), "test_seconds": round(test_seconds, 2)}


def accuracy(dataset: str, data_dir: str, backbone: str, sizes: dict, seed: int) -> dict:
    """fp32 and bf16 fine-tunes on `dataset`, and the fp32 model predicting under bf16."""
    data = load_classification(dataset, root=data_dir)
    train = subset(data.train, sizes["train_examples"][dataset], seed)
    test = subset(data.test, sizes["test_examples"][dataset], seed)
    runs = {p: fine_tune(data, train, test, dataset, p, backbone, seed) for p in SETTINGS}
    fp32_model = runs["fp32"].pop("model")
    runs["bf16"].pop("model")
    fp32_model.mixed_precision = "bf16"
    y = LabelMap(data.labels).encode(test.labels)
    bf16_inference = fp32_model.predict_proba(test.texts).argmax(axis=1)
    delta = 100 * (runs["bf16"]["accuracy"] - runs["fp32"]["accuracy"])
    out = {"train_rows": len(train), "test_rows": len(test), "validation_rows": VALIDATION_ROWS,
           "fp32": {k: v for k, v in runs["fp32"].items() if k != "predicted"},
           "bf16": {k: v for k, v in runs["bf16"].items() if k != "predicted"},
           "bf16_minus_fp32_points": delta, "within_target": abs(delta) <= TARGET_POINTS,
           "fp32_model_bf16_inference_accuracy": classification_metrics(y, bf16_inference)["accuracy"],
           "agreement_fp32_vs_bf16_models": float(np.mean(runs["fp32"]["predicted"] == runs["bf16"]["predicted"])),
           "agreement_fp32_model_fp32_vs_bf16_inference": float(np.mean(runs["fp32"]["predicted"] == bf16_inference))}
    print(f"  {dataset}: fp32 {out['fp32']['accuracy']:.4f}, bf16 {out['bf16']['accuracy']:.4f} "
          f"({delta:+.2f} points)", flush=True)
    return out


# ---------------------------------------------------------------- record


def table(record: dict) -> str:
    detector, auto = record["cpu_bf16"], record["auto_resolves_to"]
    native = f"yes ({', '.join(detector['flags'])})" if detector["native"] else "no"
    lines = [(f"CPU: {detector['capability']}, native bf16: {native}; `mixed_precision=auto` resolves to **{auto}** "
              f"here. {record['protocol']['torch_threads']} torch threads."), "",
             "| shape | fp32 | bf16 | bf16 / fp32 | faster | auto picks the faster |", "|---|---|---|---|---|---|"]
    for shape, name in SHAPES.items():
        s = record["speed"][shape]
        lines.append(f"| {name} | {s['median']['fp32']:.1f} | {s['median']['bf16']:.1f} | {s['bf16_over_fp32']:.2f}x "
                     f"| {s['faster']} | {'yes' if s['auto_picks_faster'] else '**no**'} |")
    lines += ["", ("| data | train / test rows | fp32 accuracy | bf16 accuracy | bf16 - fp32 (points) | "
                   "fp32 model, bf16 inference | models agree | fit + probe s (fp32 / bf16) |"),
              "|---|---|---|---|---|---|---|---|"]
    for dataset, a in record["accuracy"].items():
        lines.append(f"| {dataset} | {a['train_rows']} / {a['test_rows']} | {100 * a['fp32']['accuracy']:.2f}% | "
                     f"{100 * a['bf16']['accuracy']:.2f}% | {a['bf16_minus_fp32_points']:+.2f} | "
                     f"{100 * a['fp32_model_bf16_inference_accuracy']:.2f}% | "
                     f"{100 * a['agreement_fp32_vs_bf16_models']:.1f}% | "
                     f"{a['fp32']['train_seconds']:.0f} / {a['bf16']['train_seconds']:.0f} |")
    low, high = record["load_average_range"]
    lines += ["", (f"Speed: median of {record['protocol']['repeats']} interleaved rounds; load average {low}-{high} "
                   f"during the timings. Target: bf16 within {TARGET_POINTS} points of fp32. One seed."),
              "", f"![bf16 speed over fp32 per shape]({record['benchmark_name']}.png)"]
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> Path:
    plt = pyplot()
    ratios = [record["speed"][shape]["bf16_over_fp32"] for shape in SHAPES]
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.barh(list(SHAPES.values()), ratios, color=["tab:green" if r > 1 else "tab:red" for r in ratios])
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("bf16 speed / fp32 speed (above 1: bf16 faster)")
    cpu = record["cpu_bf16"]
    ax.set_title(f"{cpu['capability']} CPU, native bf16: {'yes' if cpu['native'] else 'no'}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("VERTICALS_DATA"))
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a check in a few minutes")
    parser.add_argument("--backbone", default="minilm", help="minilm (the question); tiny only to check the script")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="print the tables, write nothing")
    args = parser.parse_args()
    sizes, name = (QUICK, "precision_cpu_quick") if args.quick else (FULL, "precision_cpu")
    started = time.perf_counter()
    print(f"speed ({sizes['repeats']} rounds)", flush=True)
    timings = speed(load_classification("banking77", root=args.data_dir), args.backbone, sizes, args.seed)
    print(f"accuracy ({time.perf_counter() - started:.0f} s so far)", flush=True)
    results = {d: accuracy(d, args.data_dir, args.backbone, sizes, args.seed) for d in LR}
    loads = [r[k] for by in timings.values() for runs in by["runs"].values() for r in runs
             for k in ("load_before", "load_after")]
    record = {"benchmark_name": name, "cpu_bf16": cpu_bf16().to_dict(),
              "auto_resolves_to": resolve_precision("auto", "cpu"),
              "protocol": {"backbone": args.backbone, "seed": args.seed, "batch_size": BATCH,
                           "inference_batch": INFER_BATCH, "max_length": MAX_LENGTH,
                           "torch_threads": torch.get_num_threads(), **sizes,
                           "settings": SETTINGS, "target_points": TARGET_POINTS},
              "speed": timings, "accuracy": results, "load_average_range": [min(loads), max(loads)],
              "wall_seconds": round(time.perf_counter() - started, 1)}
    md = table(record)
    if not args.no_record:
        write_record(name, record, md)
        plot(record, RESULTS / f"{name}.png")
    print(md)
    print(f"took {record['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
