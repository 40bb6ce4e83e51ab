"""Support intents on BANKING77: few-shot, zero-shot, calibration, out-of-scope detection, speed.

Parts (`--parts`, comma-separated):
- fewshot: k in {5, 10} examples per class, seeds 0,1,2: the recipes in --fewshot-recipes (the
  frozen probe, the few-shot recipe: contrastive phase + probe-initialised head fine-tuned, the
  mpnet probe); official test split; mean and std. Wall seconds are the training phase's.
- zeroshot: no labelled data; intent names turned into descriptions ("card arrival", "a
  customer asks about card arrival"); core.models.zeroshot with the packaged MiniLM.
- oos: 10 intents (seeded) held out as out-of-scope; the LoRA recipe trains on the other 67;
  each out-of-scope scorer is fitted on training embeddings and thresholded on validation for
  95% in-scope recall; AUROC and recalls on the test split (in-scope) vs the held-out intents'
  test queries. The held-out intents' validation queries give a validation AUROC, the one to
  choose a scorer by. ECE before/after temperature scaling on the in-scope test split.
- latency: the trained LoRA router (merged) on PyTorch vs ONNX Runtime vs a plain transformers
  feature-extraction pipeline + the same head: single-query p50/p99 and batch-64 throughput;
  then a bounded concurrent load test of `verticals serve` on loopback.

    python -m benchmarks.support_banking77 --data-dir ../shared/datasets --parts oos,latency
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import http_load
from benchmarks.record import RESULTS, write_record
from core.data.catalog import load_classification

HELD_OUT = 10


def _recipe_run(name: str, overrides: dict, out: Path, data_dir, reuse: bool = False) -> dict:
    """Run a recipe into `out`; with `reuse` (--reuse), read the report of a finished run instead."""
    from core.classify.config import load_recipe_file
    from core.classify.recipes import run_recipe
    from verticals.registry import RECIPES

    if reuse and (out / "report.json").is_file():
        return json.loads((out / "report.json").read_text())
    cfg = load_recipe_file(RECIPES[name], {k: str(v) for k, v in overrides.items()}, name=name)
    return run_recipe(cfg, out, data_dir=data_dir, progress=False, overwrite=True)


def part_fewshot(data, args) -> dict:
    rows = dict(args.previous.get("fewshot", {}))  # recipes not run this time keep their rows
    for shots in (5, 10):
        for name in args.fewshot_recipes.split(","):
            accs, walls = [], []
            for seed in args.seeds:
                out = Path(args.out_root) / f"fewshot-{name.split('/')[1]}-{shots}-seed{seed}"
                report = _recipe_run(name, {"shots": shots, "seed": seed, "ood_scorer": "none"}, out, args.data_dir,
                                     args.reuse)
                accs.append(report["metrics"]["test"]["accuracy"])
                walls.append(report["cost"]["wall_seconds"])
                print(f"    {name} {shots}-shot seed {seed}: {accs[-1]:.4f} ({walls[-1]:.0f} s)", flush=True)
            rows[f"{name}@{shots}"] = {"recipe": name, "shots": shots, "seeds": args.seeds, "accuracy": accs,
                                       "mean": statistics.mean(accs),
                                       "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                                       "mean_wall_seconds": statistics.mean(walls)}
    return rows


def intent_descriptions(labels: list[str]) -> dict[str, list[str]]:
    return {lab: [lab.replace("_", " "), f"a customer asks about {lab.replace('_', ' ')}",
                  f"a bank customer has a question about {lab.replace('_', ' ')}"] for lab in labels}


def part_zeroshot(data, args) -> dict:
    from core.foundation.cost import CostLedger
    from core.data.splits import LabelMap
    from core.evaluation.metrics import classification_metrics
    from core.models.zeroshot import ZeroShotClassifier

    with CostLedger() as ledger:
        clf = ZeroShotClassifier("minilm", intent_descriptions(data.labels))
        probs = clf.predict_proba(data.test.texts)
    y = LabelMap(clf.labels).encode(data.test.labels)
    return {"descriptions": "intent name; 'a customer asks about <name>'; 'a bank customer has a question about <name>'",
            **classification_metrics(y, probs.argmax(1)), "cost": ledger.cost.to_dict()}


def _write_split(folder: Path, split, keep: set[str]) -> None:
    from core.data.catalog import write_labelled_csv

    write_labelled_csv(folder, ((t, lab) for t, lab in zip(split.texts, split.labels) if lab in keep))


def part_oos(data, args) -> dict:
    from core.data.splits import LabelMap
    from core.models.classifier import load_classifier
    from core.confidence.ood import SCORERS, auroc, fit_scorer, in_scope_scores, threshold_for_recall

    rng = np.random.default_rng(0)
    held = sorted(rng.choice(data.labels, size=HELD_OUT, replace=False).tolist())
    keep = set(data.labels) - set(held)
    folder = Path(tempfile.mkdtemp(prefix="b77-oos-"))
    for name, split in (("train", data.train), ("validation", data.validation), ("test", data.test)):
        _write_split(folder / f"{name}.csv", split, keep)
    out = Path(args.out_root) / "oos-lora"
    report = _recipe_run("support/intent-lora", {"data": folder, **args.oos_overrides}, out, args.data_dir,
                         args.reuse)
    model = load_classifier(out / "model")
    labels = LabelMap(model.labels)
    in_data = load_classification(str(folder))
    train_emb = model.encode(in_data.train.texts)
    val_logits, val_emb = model.predict_all(in_data.validation.texts)
    test_logits, test_emb = model.predict_all(in_data.test.texts)
    oos_texts = [t for t, lab in zip(data.test.texts, data.test.labels) if lab in held]
    oos_logits, oos_emb = model.predict_all(oos_texts)
    # the held-out intents' validation queries: a separate out-of-scope set to choose a scorer on
    oos_val_texts = [t for t, lab in zip(data.validation.texts, data.validation.labels) if lab in held]
    oos_val_logits, oos_val_emb = model.predict_all(oos_val_texts)
    scorers = {}
    for name in SCORERS:
        scorer = fit_scorer(name, train_emb, labels.encode(in_data.train.labels), val_logits, val_emb,
                            model.temperature)
        val_in = in_scope_scores(scorer, val_logits, val_emb, model.temperature)
        t = threshold_for_recall(val_in, 0.95)
        s_in = in_scope_scores(scorer, test_logits, test_emb, model.temperature)
        s_out = in_scope_scores(scorer, oos_logits, oos_emb, model.temperature)
        scorers[name] = {"validation_auroc": auroc(val_in, in_scope_scores(scorer, oos_val_logits, oos_val_emb,
                                                                             model.temperature)),
                         "auroc": auroc(s_in, s_out), "threshold": t,
                         "in_scope_recall": float((s_in >= t).mean()),
                         "out_of_scope_recall": float((s_out < t).mean())}
        print(f"    {name}: validation AUROC {scorers[name]['validation_auroc']:.4f}, "
              f"test AUROC {scorers[name]['auroc']:.4f}", flush=True)
    return {"held_out_intents": held, "n_in_scope_test": len(s_in), "n_out_of_scope_test": len(oos_texts),
            "n_in_scope_validation": len(val_logits), "n_out_of_scope_validation": len(oos_val_texts),
            "in_scope_test_accuracy": report["metrics"]["test"]["accuracy"],
            "temperature": report["confidence"]["temperature"],
            "ece_before": report["confidence"]["test_ece_before"],
            "ece_after": report["confidence"]["test_ece_after"], "scorers": scorers,
            "run": str(out), "cost": report["cost"]}


def _time_single(fn, texts, repeats: int) -> dict:
    for t in texts[:10]:
        fn([t])  # warm-up
    samples = []
    for i in range(repeats):
        start = time.perf_counter()
        fn([texts[i % len(texts)]])
        samples.append(time.perf_counter() - start)
    return http_load.percentiles(samples)


def _throughput(fn, texts, batch: int = 64) -> float:
    fn(texts[:batch])
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        fn(texts[i:i + batch])
    return len(texts) / (time.perf_counter() - start)


def part_latency(data, args) -> dict:
    import torch
    from transformers import pipeline

    from core.data.splits import LabelMap
    from core.export.onnx import INT8_FILE, export_onnx, quantize_int8
    from core.models.onnx_runtime import ONNX_FILE
    from core.models.classifier import load_classifier
    from solutions.support.router import IntentRouter

    run = Path(args.latency_run)
    model_dir = run / "model"
    if not (model_dir / ONNX_FILE).is_file():
        export_onnx(load_classifier(model_dir), model_dir / ONNX_FILE)
    if not (model_dir / INT8_FILE).is_file():
        quantize_int8(model_dir / ONNX_FILE, model_dir / INT8_FILE)
    texts = data.test.texts[:1000]
    results = {}
    torch_router = IntentRouter.from_run(run)
    onnx_router = IntentRouter.from_run(run, runtime="onnx")
    int8_router_1 = IntentRouter.from_run(run, runtime="onnx-int8", threads=1)
    int8_router_2 = IntentRouter.from_run(run, runtime="onnx-int8", threads=2)
    model = torch_router.model
    extractor = pipeline("feature-extraction", model=model.encoder, tokenizer=model.tokenizer, device="cpu")

    def plain_pipeline(batch):  # the transformers pipeline on the same merged encoder + the same head
        feats = extractor(batch, return_tensors=True, truncation=True)
        emb = torch.stack([f[0].mean(dim=0) for f in feats])
        emb = torch.nn.functional.normalize(emb, dim=-1) if model.normalize else emb
        with torch.no_grad():
            return torch.softmax(model.head(emb) / model.temperature, dim=-1)

    systems = {"router (PyTorch, LoRA merged)": torch_router,
               "router (ONNX Runtime fp32)": onnx_router,
               "router (ONNX Runtime int8, 1 thread)": int8_router_1,
               "router (ONNX Runtime int8, 2 threads)": int8_router_2,
               "transformers pipeline + head": None}
    # accuracy of each runtime on the test texts of the intents the run knows (in-scope test)
    known = set(torch_router.model.labels)
    in_scope = [(t, lab) for t, lab in zip(data.test.texts, data.test.labels) if lab in known]
    for name, router in systems.items():
        fn = router.route_batch if router is not None else plain_pipeline
        single = _time_single(fn, texts, args.latency_queries)
        results[name] = {**single, "batch64_texts_per_second": _throughput(fn, texts)}
        if router is not None:
            y = np.asarray(LabelMap(router.model.labels).encode([lab for _, lab in in_scope]))
            results[name]["in_scope_test_accuracy"] = float(
                (router.model.predict_logits([t for t, _ in in_scope]).argmax(axis=1) == y).mean())
        print(f"    {name}: p50 {single['p50_ms']:.2f} ms, p99 {single['p99_ms']:.2f} ms, "
              f"batch {results[name]['batch64_texts_per_second']:.0f} texts/s, "
              f"accuracy {results[name].get('in_scope_test_accuracy', float('nan')):.4f}", flush=True)
    results["service"] = load_test(run, texts, args)
    return results


def load_test(run: Path, texts: list[str], args) -> dict:
    """Start `verticals serve` on loopback and send a bounded number of requests from concurrent
    keep-alive clients (benchmarks.http_load); CPU of server and load generator measured over the run."""
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "verticals.cli", "serve", str(run), "--port", str(port),
                             "--runtime", args.service_runtime]
                            + (["--threads", str(args.service_threads)] if args.service_threads else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        result = http_load.load_test(port, proc.pid, texts, requests=args.requests, concurrency=args.concurrency)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"runtime": args.service_runtime, "threads": args.service_threads, **result}


PARTS = {"fewshot": part_fewshot, "zeroshot": part_zeroshot, "oos": part_oos, "latency": part_latency}


def table(record: dict) -> str:
    lines = []
    if "fewshot" in record:
        lines += ["| few-shot system | k per class | test accuracy (mean ± std over seeds) | seeds | mean wall s |",
                  "|---|---|---|---|---|"]
        for r in record["fewshot"].values():
            lines.append(f"| {r['recipe']} | {r['shots']} | {100 * r['mean']:.2f}% ± {100 * r['std']:.2f} | "
                         f"{len(r['seeds'])} | {r['mean_wall_seconds']:.0f} |")
        lines.append("")
    if "zeroshot" in record:
        z = record["zeroshot"]
        lines += [f"Zero-shot (no labelled data, intent names as descriptions): test accuracy "
                  f"{100 * z['accuracy']:.2f}%, macro-F1 {100 * z['macro_f1']:.2f}%, {z['cost']['wall_seconds']:.0f} s.", ""]
    if "oos" in record:
        o = record["oos"]
        lines += [f"Out-of-scope: {len(o['held_out_intents'])} intents held out; LoRA recipe on the other 67 "
                  f"(in-scope test accuracy {100 * o['in_scope_test_accuracy']:.2f}%); ECE on the in-scope test split "
                  f"{o['ece_before']:.4f} before, {o['ece_after']:.4f} after temperature scaling (T = {o['temperature']:.2f}).", "",
                  "| scorer | validation AUROC | test AUROC | in-scope recall | out-of-scope recall |",
                  "|---|---|---|---|---|"]
        for name, s in o["scorers"].items():
            val = f"{s['validation_auroc']:.4f}" if "validation_auroc" in s else "-"
            lines.append(f"| {name} | {val} | {s['auroc']:.4f} | {100 * s['in_scope_recall']:.1f}% | "
                         f"{100 * s['out_of_scope_recall']:.1f}% |")
        lines.append("")
    if "latency" in record:
        lines += ["| inference (2 CPU cores) | single query p50 | p99 | batch-64 texts/s | in-scope test accuracy |",
                  "|---|---|---|---|---|"]
        for name, r in record["latency"].items():
            if name != "service":
                acc = f"{100 * r['in_scope_test_accuracy']:.2f}%" if "in_scope_test_accuracy" in r else "-"
                lines.append(f"| {name} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | "
                             f"{r['batch64_texts_per_second']:.0f} | {acc} |")
        s = record["latency"]["service"]
        threads = f" --threads {s['threads']}" if s.get("threads") else ""
        cpu = (f"; CPU: server {s['server_cpu_cores']:.2f} cores, load generator {s['client_cpu_cores']:.2f} cores"
               if "server_cpu_cores" in s else "")
        lines += ["", f"Service load test (`verticals serve --runtime {s['runtime']}{threads}`, loopback, {s['concurrency']} "
                  f"concurrent keep-alive clients, {s['requests']} requests): {s['requests_per_second']:.0f} requests/s, "
                  f"{s['errors']} errors, p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms{cpu}.", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--parts", default="zeroshot,oos,latency,fewshot")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out-root", default="benchmarks/runs/support")
    parser.add_argument("--oos-epochs", type=float, default=None, help="override the LoRA recipe's epochs for the OOS run")
    parser.add_argument("--latency-run", default="benchmarks/runs/support/oos-lora")
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument("--service-runtime", default="onnx-int8", choices=["torch", "onnx", "onnx-int8"])
    parser.add_argument("--service-threads", type=int, default=2, help="ONNX Runtime threads in the service (0 = all)")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs under --out-root")
    parser.add_argument("--fewshot-recipes", default="support/intent-probe,support/intent-fewshot")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.oos_overrides = {"epochs": args.oos_epochs} if args.oos_epochs else {}
    from core.foundation.quiet import quiet_libraries

    quiet_libraries()
    data = load_classification("banking77", root=args.data_dir)
    path = RESULTS / "support_banking77.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    args.previous = dict(record)
    for part in args.parts.split(","):
        print(f"[{time.strftime('%H:%M:%S')}] {part}", flush=True)
        record[part] = PARTS[part](data, args)
    record = {k: v for k, v in record.items() if k in PARTS}
    write_record("support_banking77", {"protocol": __doc__.split("\n\n")[1], "data": data.summary(), **record},
                 table(record))
    print(table(record))


if __name__ == "__main__":
    main()
