"""Question: what does the static-embedding tier cost and buy, beside MiniLM on PyTorch and ONNX Runtime?

Systems, per domain (support: BANKING77; finance: Financial PhraseBank, as the catalog splits them):
- static: the packaged recipe (`support/intent-static`, `finance/sentiment-static`): a model2vec table
  distilled from MiniLM (PCA 256, SIF), a logistic-regression head with C chosen on validation; NumPy;
- MiniLM probe: the frozen MiniLM with the same kind of head (`support/intent-probe`; finance: its
  full recipe as `mode=probe peft=frozen probe_c_search=true`), served three ways: PyTorch, ONNX
  Runtime fp32 and ONNX Runtime int8 (dynamic quantisation), `verticals export onnx --int8`;
- with `--finetuned support=RUN,finance=RUN` also: that fine-tuned run on the same three runtimes,
  and a static table distilled from its encoder (`static.source=RUN`);
- reference rows: the test accuracy of the full fine-tune and the probe in banking77.json /
  finance_phrasebank.json (read from those records, not re-run; no speed).
Both recipes run with `ood_scorer=none` here (out-of-scope fitting is not what is compared; it
would add the same kind of work to each). Training cost is each run's cost ledger (wall, CPU,
peak memory); accuracy is on the test split (all of it, or `--test-limit` rows). Speed: texts/s
in batches of 64 cycled over up to 1024 test texts for `--seconds` after a warm-up batch, plus
the single-query p50 over 30 calls (core.foundation.cost.measure_throughput); the systems are
timed in turn, `--repeats` rounds interleaved, and the median round is reported with every
round kept. Threads: torch and ONNX Runtime get `--threads` (default: all cores); the static
model runs in NumPy (one core for its lookups). The load average is recorded before and after.
Every model here is deterministic (lbfgs logistic regression, PCA by SVD): one seed (0).

Writes results/static_tier.{json,md} and static_tier.png, then refreshes the frontier and the
planner's priors (`python -m benchmarks.frontier`: the static tier's accuracy minus the probe's
becomes its `offset_vs_probe` prior). `--quick` is a smoke run (train rows limited, fewer test
rows, 1 s timings) that writes results/static_tier_quick.* and touches neither.

    python -m benchmarks.static_tier --data-dir ../shared/datasets        # both domains, ~15 min on 2 cores
    python -m benchmarks.static_tier --data-dir ../shared/datasets --quick   # ~4 min
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import verticals.registry  # noqa: F401 - installs the finance readers the catalog needs
from benchmarks.record import RESULTS, write_record
from core.classify.config import load_recipe_file
from core.classify.recipes import run_recipe
from core.data.catalog import load_classification
from core.data.splits import LabelMap, Split
from core.foundation.cost import measure_throughput
from core.foundation.plots import pyplot
from verticals.registry import RECIPES

# domain -> (catalog dataset, static recipe, probe recipe, probe overrides, reference record)
DOMAINS = {
    "support": ("banking77", "support/intent-static", "support/intent-probe", {}, "banking77"),
    "finance": ("financial_phrasebank", "finance/sentiment-static", "finance/sentiment-full",
                {"mode": "probe", "peft": "frozen", "probe_c_search": "true", "epochs": "0"}, "finance_phrasebank"),
}
RUNTIMES = (("torch", "PyTorch"), ("onnx", "ONNX Runtime fp32"), ("onnx-int8", "ONNX Runtime int8"))


def train(recipe: str, overrides: dict, run_dir: Path, data_dir: str | None) -> dict:
    """Train a packaged recipe with `overrides`; returns its report."""
    cfg = load_recipe_file(RECIPES[recipe], overrides, name=recipe)
    return run_recipe(cfg, run_dir, data_dir=data_dir, overwrite=True, progress=False)


def cost_of(report: dict) -> dict:
    c = report["cost"]
    return {k: c.get(k) for k in ("wall_seconds", "cpu_seconds", "peak_rss_mb", "trainable_params")}


def disk_mb(run_dir: Path, runtime: str) -> float:
    """Megabytes of the files a runtime loads (the model folder without the other runtimes' graphs)."""
    skip = {"torch": ("model.onnx", "model.int8.onnx"), "onnx": ("model.int8.onnx",), "onnx-int8": ("model.onnx",)}
    files = [p for p in (run_dir / "model").rglob("*") if p.is_file() and p.name not in skip.get(runtime, ())]
    return sum(p.stat().st_size for p in files) / 2**20


def accuracy(model, texts: list[str], labels: list[str]) -> float:
    y = np.asarray(LabelMap(model.labels).encode(labels))
    return float((model.predict_logits(texts).argmax(1) == y).mean())


def systems_of(domain: str, args, work: Path) -> list[dict]:
    """Train what one domain compares; returns one entry per (system, runtime) with its run."""
    from core.export.onnx import export_run_onnx  # lazy: loads the ONNX exporter only here

    name, static_recipe, probe_recipe, probe_extra, _ = DOMAINS[domain]
    common = {"data": name, "backbone": args.backbone, "ood_scorer": "none",
              **({"train_limit": str(args.train_limit)} if args.train_limit else {})}
    static = {"static.pca_dims": str(args.pca_dims)} if args.pca_dims else {}
    out = []
    report = train(static_recipe, common | static, work / f"{domain}-static", args.data_dir)
    encoder = {"minilm": "MiniLM"}.get(args.backbone, args.backbone)
    out.append({"key": "static", "system": f"static (model2vec from {encoder})", "runtime": "static",
                "run": work / f"{domain}-static", "report": report})
    report = train(probe_recipe, common | probe_extra, work / f"{domain}-probe", args.data_dir)
    export_run_onnx(work / f"{domain}-probe", int8=True)
    out += [{"key": f"probe-{rt}", "system": f"{encoder} probe ({label})", "runtime": rt, "run": work / f"{domain}-probe",
             "report": report} for rt, label in RUNTIMES]
    finetuned = args.finetuned.get(domain)
    if finetuned:
        report = train(static_recipe, common | static | {"static.source": finetuned}, work / f"{domain}-static-ft", args.data_dir)
        out.append({"key": "static-finetuned", "system": "static (model2vec from the fine-tuned run)",
                    "runtime": "static", "run": work / f"{domain}-static-ft", "report": report})
        export_run_onnx(finetuned, int8=True)
        out += [{"key": f"finetuned-{rt}", "system": f"fine-tuned {encoder} ({label})", "runtime": rt,
                 "run": Path(finetuned), "report": None} for rt, label in RUNTIMES]
    return out


def time_systems(entries: list[dict], texts: list[str], args) -> None:
    """Interleaved rounds of measure_throughput over every loaded system; medians into each entry."""
    for _ in range(args.repeats):
        for e in entries:
            speed = measure_throughput(lambda batch, m=e["model"]: m.predict_logits(batch), texts,
                                       min_seconds=args.seconds)
            e.setdefault("rounds", []).append(speed)
    for e in entries:
        rounds = e.pop("rounds")
        e["speed"] = {k: statistics.median(r[k] for r in rounds) for k in ("texts_per_second", "p50_ms", "busy_cores")}
        e["speed"]["texts_per_second_rounds"] = [round(r["texts_per_second"], 1) for r in rounds]


def reference(record_name: str) -> dict:
    """Test accuracies of the full fine-tune and the probe from an earlier benchmark record."""
    path = RESULTS / f"{record_name}.json"
    if not path.is_file():
        return {}
    r = json.loads(path.read_text())
    acc = {s["key"]: s.get("accuracy", (s.get("test") or {}).get("accuracy")) for s in r.get("systems", [])}
    return {"record": f"benchmarks/results/{record_name}.json", "train_rows": r["data"]["train"],
            **{k: acc[k] for k in ("full", "probe") if acc.get(k) is not None}}


def run_domain(domain: str, args, work: Path) -> dict:
    from core.models.predictor import load_run  # lazy: loads torch after the thread count is set

    data = load_classification(DOMAINS[domain][0], root=args.data_dir)
    test = data.test if not args.test_limit else Split(data.test.texts[:args.test_limit],
                                                       data.test.labels[:args.test_limit])
    entries = systems_of(domain, args, work)
    for e in entries:
        e["model"] = load_run(e["run"], "torch" if e["runtime"] == "static" else e["runtime"], threads=args.threads)
        e["accuracy"] = accuracy(e["model"], test.texts, test.labels)
        print(f"  {domain} {e['system']}: test accuracy {100 * e['accuracy']:.2f}%", flush=True)
    time_systems(entries, test.texts[:1024], args)
    systems = []
    for e in entries:
        r = e["report"]
        systems.append({"key": e["key"], "system": e["system"], "runtime": e["runtime"], "accuracy": e["accuracy"],
                        **e["speed"], "model_mb": round(disk_mb(e["run"], e["runtime"]), 1),
                        "train": cost_of(r) if r else None,
                        "validation_accuracy": r["metrics"]["validation"]["accuracy"] if r else None,
                        **({"static": r["static"]} if r and "static" in r else {})})
    return {"data": {"name": DOMAINS[domain][0], "train": len(data.train), "validation": len(data.validation),
                     "test_rows_scored": len(test), "train_used": args.train_limit or len(data.train),
                     "num_labels": len(data.labels)},
            "systems": systems, "reference": reference(DOMAINS[domain][4])}


def table(record: dict) -> str:
    lines = [(f"Load average before {record['load_average_before']}, after {record['load_average_after']}; "
              f"{record['config']['threads']} threads for torch and ONNX Runtime; median of {record['config']['repeats']} "
              f"interleaved rounds."), "![static tier](static_tier.png)", "",
             "| domain | system | test acc | texts/s (batch 64) | single-query p50 ms | busy cores | model MB | train wall s | train CPU s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for domain, d in record["domains"].items():
        for s in d["systems"]:
            t = s["train"] or {}
            wall, cpu = t.get("wall_seconds"), t.get("cpu_seconds")
            lines.append(f"| {domain} | {s['system']} | {100 * s['accuracy']:.2f}% | {s['texts_per_second']:.0f} | "
                         f"{s['p50_ms']:.2f} | {s['busy_cores']:.2f} | {s['model_mb']:.1f} | "
                         f"{'-' if wall is None else f'{wall:.1f}'} | {'-' if cpu is None else f'{cpu:.1f}'} |")
        ref = d["reference"]
        if ref.get("full") is not None:
            lines.append(f"| {domain} | full fine-tune (reference: {ref['record']}, {ref['train_rows']:,} rows) | "
                         f"{100 * ref['full']:.2f}% | - | - | - | - | - | - |")
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(record["domains"]), figsize=(6 * len(record["domains"]), 4.2), squeeze=False)
    for ax, (domain, d) in zip(axes[0], record["domains"].items()):
        for s in d["systems"]:
            ax.scatter(s["texts_per_second"], 100 * s["accuracy"], c="tab:red" if s["runtime"] == "static" else "tab:blue")
            ax.annotate(s["system"], (s["texts_per_second"], 100 * s["accuracy"]), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("texts/s, batches of 64 (log)")
        ax.set_ylabel("test accuracy, %")
        ax.set_title(f"{domain} ({d['data']['name']})")
    fig.suptitle("static tier (red) vs MiniLM runtimes (blue)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--domains", default="support,finance")
    parser.add_argument("--backbone", default="minilm", help="what both tiers are built on (tiny: a smoke test)")
    parser.add_argument("--pca-dims", type=int, default=0, help="static table width (0 = the recipe's, 256)")
    parser.add_argument("--finetuned", default="", help="DOMAIN=RUN[,DOMAIN=RUN]: fine-tuned runs to add")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="each throughput timing's minimum length")
    parser.add_argument("--train-limit", type=int, default=0, help="training rows (0 = all)")
    parser.add_argument("--test-limit", type=int, default=0, help="test rows scored for accuracy (0 = all)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2000 train rows, 1000 test rows, 1 s timings")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_limit, args.test_limit, args.seconds = args.train_limit or 2000, args.test_limit or 1000, 1.0
    args.finetuned = dict(item.split("=", 1) for item in args.finetuned.split(",") if item)
    if args.repeats < 3 and not args.quick:
        parser.error("--repeats must be at least 3 (medians of interleaved rounds)")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch  # lazy: the thread count is set before any model loads

    from core.foundation.quiet import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(args.threads)
    name = "static_tier_quick" if args.quick or args.backbone != "minilm" else "static_tier"
    started, load_before = time.time(), [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        domains = {d: run_domain(d, args, Path(tmp)) for d in args.domains.split(",")}
    from importlib.metadata import version

    record = {"protocol": __doc__.split("\n\n")[1], "config": {k: v for k, v in vars(args).items()},
              "quick": name != "static_tier", "seeds": [0], "load_average_before": load_before,
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "wall_seconds": time.time() - started,
              "versions": {p: version(p) for p in ("model2vec", "onnxruntime")}, "domains": domains}
    plot(record, RESULTS / f"{name}.png")
    md = table(record).replace("static_tier.png", f"{name}.png")
    write_record(name, record, md)
    print(md)
    if name == "static_tier":
        from benchmarks import frontier

        frontier.main([])


if __name__ == "__main__":
    main()
