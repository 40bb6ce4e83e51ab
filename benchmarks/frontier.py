"""The cost-accuracy frontier per domain, generated from the benchmark records (never typed).

Reads benchmarks/results/*.json: banking77 and support_banking77 (support: TF-IDF, probe, full,
LoRA, zero-shot, few-shot and the mpnet probe at k shots), finance_phrasebank (finance),
training_methods_{support,finance} (10% of the labels: full fine-tune variants, IA3, LoRA ranks),
static_tier (the static-embedding tier, both domains, with its own NumPy speed), and inference_cost (written by `--measure`: TF-IDF, MiniLM and mpnet texts/s on each domain's test
texts, here) plus the ONNX rows of support_banking77's latency table. For every system: test
accuracy, training cost (core-hours = the ledger's cpu_seconds / 3600 where the record has it,
else wall seconds x the machine's cores, marked *), dollars at core.foundation.cost.Prices (assumed
defaults unless VERTICALS_USD_PER_* are set), and inference dollars per 1e6 predictions on its
runtime. Pareto points (nothing cheaper is at least as accurate) are marked per axis. Writes
results/frontier.{json,md}, results/frontier_<domain>.png, the README block, and the planner's
priors (core/plan/priors.json: the share of the probe's error that full fine-tunes and LoRA closed,
IA3's offset to the full fine-tune, and the static tier's offset to the probe; a prior with no
record yet is listed under `pending` with the benchmark that measures it).

    python -m benchmarks.frontier [--measure [--data-dir D]]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.record import RESULTS, write_record
from core.foundation.cost import Prices, usd_per_million
from core.plan.predict import PRIORS_FILE
from core.plan.choose import pareto

DOMAINS = {"support": "banking77", "finance": "financial_phrasebank"}
DOMAIN_STATIC = {"support": "support/intent-static", "finance": "finance/sentiment-static"}


def _read(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _runtime(system: str) -> str | None:
    if system.startswith("static"):
        return "static"
    if system.startswith("TF-IDF"):
        return "tfidf"
    if "mpnet" in system:
        return "mpnet-torch"
    return None if system.startswith("majority") else "minilm-torch"


def _point(domain, system, source, labels, accuracy, *, cpu_seconds=None, wall_seconds=None, cores=2) -> dict:
    basis = "cpu" if cpu_seconds is not None else "wall x cores"
    core_seconds = cpu_seconds if cpu_seconds is not None else (wall_seconds or 0.0) * cores
    return {"domain": domain, "system": system, "source": source, "labels": labels, "accuracy": accuracy,
            "train_core_hours": core_seconds / 3600, "train_basis": basis, "runtime": _runtime(system)}


def support_points() -> list[dict]:
    out = []
    if (r := _read("banking77")):
        for s in r["systems"]:
            out.append(_point("support", s["system"], "banking77", r["data"]["train"],
                              s["accuracy"], cpu_seconds=s["cost"]["cpu_seconds"]))
    if (r := _read("support_banking77")):
        cores = r["environment"]["cpus"]
        z = r["zeroshot"]
        out.append(_point("support", "MiniLM zero-shot, intent names", "support_banking77", 0, z["accuracy"],
                          cpu_seconds=z["cost"]["cpu_seconds"]))
        for key, f in r.get("fewshot", {}).items():
            out.append(_point("support", f"{f['recipe']} ({f['shots']} per class)", "support_banking77",
                              f["shots"] * r["data"]["num_labels"], f["mean"], wall_seconds=f["mean_wall_seconds"],
                              cores=cores))
    return out + methods_points("support") + static_points("support")


def finance_points() -> list[dict]:
    out = []
    if (r := _read("finance_phrasebank")):
        for s in r["systems"]:
            out.append(_point("finance", s["system"], "finance_phrasebank", 0 if s["key"] == "zeroshot" else r["data"]["train"],
                              s["test"]["accuracy"], cpu_seconds=s["cost"]["cpu_seconds"]))
    return out + methods_points("finance") + static_points("finance")


def static_points(domain: str) -> list[dict]:
    """The static tier distilled from the backbone (benchmarks/static_tier.py), with its ledger's CPU time."""
    r = _read("static_tier")
    d = (r or {}).get("domains", {}).get(domain)
    if not d:
        return []
    return [_point(domain, f"{s['system']} ({DOMAIN_STATIC[domain]})", "static_tier", d["data"]["train_used"],
                   s["accuracy"], cpu_seconds=s["train"]["cpu_seconds"]) for s in d["systems"] if s["key"] == "static"]


def static_runtime_rows(prices: Prices) -> list[dict]:
    """The static tier's own inference speed (NumPy), from benchmarks/static_tier.py."""
    r = _read("static_tier")
    rows = []
    for domain, d in (r or {}).get("domains", {}).items():
        for s in d["systems"]:
            if s["key"] == "static":
                rows.append({"domain": domain, "runtime": "static", "texts_per_second": s["texts_per_second"],
                             "busy_cores": s["busy_cores"], "p50_ms": s["p50_ms"], "cores_basis": "cpu",
                             "usd_per_million": usd_per_million(s["texts_per_second"], cores=max(s["busy_cores"], 1.0),
                                                                prices=prices)})
    return rows


def methods_points(domain: str) -> list[dict]:
    r = _read(f"training_methods_{domain}")
    if not r:
        return []
    used = {run["method"]: run["train_used"] for run in r["runs"]}
    return [_point(domain, f"{s['description']} ({round(100 * r['fraction'])}% labels)", f"training_methods_{domain}",
                   used.get(s["method"], 0), s["test_accuracy_mean"],
                   wall_seconds=s["train_wall_seconds_mean"] + s.get("adaptation_wall_seconds", 0.0),
                   cores=r["environment"]["cpus"]) for s in r["summary"]]


def runtime_rows(prices: Prices) -> list[dict]:
    """Inference cost per runtime: our own measurements (--measure) + support_banking77's ONNX rows."""
    rows = []
    if (m := _read("inference_cost")):
        for row in m["runtimes"]:
            rows.append({**row, "usd_per_million": usd_per_million(row["texts_per_second"], cores=row["busy_cores"],
                                                                   prices=prices)})
    if (r := _read("support_banking77")):
        for name, lat in r.get("latency", {}).items():
            if "ONNX" not in name:
                continue
            threads = 1 if "1 thread" in name else r["environment"]["cpus"]
            rows.append({"domain": "support", "runtime": name.replace("router ", "MiniLM router "),
                         "texts_per_second": lat["batch64_texts_per_second"], "busy_cores": threads,
                         "p50_ms": lat["p50_ms"], "cores_basis": "threads",
                         "usd_per_million": usd_per_million(lat["batch64_texts_per_second"], cores=threads, prices=prices)})
    return rows + static_runtime_rows(prices)


def measure_inference(data_dir: str | None) -> None:
    """TF-IDF, MiniLM and mpnet (encoder + linear head) texts/s on each domain's test texts."""
    from sklearn.linear_model import LogisticRegression

    from core.models.backbones import load_backbone
    from core.foundation.cost import measure_throughput
    from core.data.catalog import load_classification
    from core.plan.measure import measure_tfidf
    from verticals.registry import install

    install()  # the finance reader (financial_phrasebank's card format)
    rows = []
    for domain, name in DOMAINS.items():
        data = load_classification(name, root=data_dir)
        texts = data.test.texts[:1024]
        t = measure_tfidf(data, Prices())
        rows.append({"domain": domain, "runtime": "tfidf", **t["speed"]})
        print(f"  {domain} tfidf: {t['speed']['texts_per_second']:.0f} texts/s", flush=True)
        for backbone in ("minilm", "mpnet"):
            try:
                bb = load_backbone(backbone)
            except Exception as exc:  # mpnet is optional
                print(f"  {backbone}: skipped ({exc})")
                continue
            from core.models.classifier import build_classifier

            model = build_classifier(bb, data.labels, peft="frozen")
            head = LogisticRegression(max_iter=200).fit(model.encode(data.validation.texts), data.validation.labels)
            speed = measure_throughput(lambda b: head.predict(model.encode(b)), texts, min_seconds=3.0)
            rows.append({"domain": domain, "runtime": f"{backbone}-torch", **speed})
            print(f"  {domain} {backbone}: {speed['texts_per_second']:.0f} texts/s, p50 {speed['p50_ms']:.1f} ms", flush=True)
    load = Path("/proc/loadavg").read_text().split()[:3]
    write_record("inference_cost", {"protocol": "batch 64 cycled over the first 1024 test texts for >= 3 s after a "
                                                "warm-up batch (TF-IDF >= 0.5 s); busy cores = CPU s / wall s; "
                                                "single-query p50 over 30 calls",
                                    "load_average_after": [float(x) for x in load], "runtimes": rows},
                 "| domain | runtime | texts/s | busy cores | p50 ms |\n|---|---|---|---|---|\n" + "".join(
                     f"| {r['domain']} | {r['runtime']} | {r['texts_per_second']:.0f} | {r['busy_cores']:.2f} | "
                     f"{r['p50_ms']:.2f} |\n" for r in rows))


# domain -> the record with the probe, full fine-tune and LoRA on every label of that domain's data set
DOMAIN_RECORDS = {"support": "banking77", "finance": "finance_phrasebank"}


def _regime(name: str, domain: str, num_labels, train_rows) -> dict:
    """A prior record's data regime, its domain (what benchmarks/plan_validation.py leaves out to
    check the planner on a domain its priors have not seen) and the benchmark record it comes from."""
    return {"num_labels": num_labels, "train_rows": train_rows, "domain": domain,
            "record": f"benchmarks/results/{name}.json"}


def priors(points: list[dict]) -> dict:
    """The planner's prior records: per benchmark record, the share of the probe's error the full
    fine-tune and LoRA closed (full labels, test), and IA3's accuracy minus the full fine-tune's
    (training_methods, same labels), each with its data regime (labels, training rows)."""
    records = []
    for domain, name in DOMAIN_RECORDS.items():
        r = _read(name)
        if not r:
            continue
        acc = {s["key"]: s["accuracy"] if "accuracy" in s else s["test"]["accuracy"] for s in r["systems"]}
        regime = _regime(name, domain, r["data"]["num_labels"], r["data"]["train"])
        for system in ("full", "lora"):
            if "probe" in acc and system in acc:
                records.append({"system": system, "measure": "gap_closure",
                                "value": (acc[system] - acc["probe"]) / (1 - acc["probe"]), **regime})
    for domain, record in DOMAIN_RECORDS.items():
        r = _read(f"training_methods_{domain}")
        by = {s["method"]: s["test_accuracy_mean"] for s in (r or {}).get("summary", [])}
        if "ia3" in by and "baseline" in by:
            num_labels = ((_read(record) or {}).get("data") or {}).get("num_labels")
            train_rows = r["runs"][0]["train_used"] if r.get("runs") else None
            records.append({"system": "ia3", "measure": "offset_vs_full", "value": by["ia3"] - by["baseline"],
                            **_regime(f"training_methods_{domain}", domain, num_labels, train_rows)})
    records += static_priors()
    pending = [] if any(r["system"] == "static" for r in records) else [
        {"system": "static", "measure": "offset_vs_probe", "measured_by": "python -m benchmarks.static_tier"}]
    return {"generated_by": "python -m benchmarks.frontier", "date": time.strftime("%Y-%m-%d"),
            "source": "benchmarks/results: gap closure of the full fine-tune and LoRA over the probe (full labels, "
                      "test); training_methods_* (IA3 - full fine-tune, 10% labels); static_tier (static tier - "
                      "probe, same rows, test)",
            "records": records, "pending": pending}


def static_priors() -> list[dict]:
    """The static tier's accuracy minus the MiniLM probe's (PyTorch), per domain of static_tier.json
    (both trained on the same rows there and scored on the same test rows); a --quick record is never
    written under that name, so a smoke run never becomes a prior."""
    r = _read("static_tier")
    records = []
    for domain, d in (r or {}).get("domains", {}).items():
        acc = {s["key"]: s["accuracy"] for s in d["systems"]}
        if "static" in acc and "probe-torch" in acc:
            records.append({"system": "static", "measure": "offset_vs_probe", "value": acc["static"] - acc["probe-torch"],
                            **_regime("static_tier", domain, d["data"]["num_labels"], d["data"]["train_used"])})
    return records


def plot(domain: str, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, label in ((axes[0], "train_usd", "training cost, $ (log)"),
                           (axes[1], "usd_per_million", "inference, $ per 1M predictions (log)")):
        pts = [r for r in rows if r.get(key)]
        flags = pareto([(r[key], r["accuracy"]) for r in pts])
        for r, on in zip(pts, flags):
            ax.scatter(r[key], 100 * r["accuracy"], s=40 if on else 18, c="tab:red" if on else "tab:gray", zorder=3)
            ax.annotate(r["system"][:38], (r[key], 100 * r["accuracy"]), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
        front = sorted((r[key], 100 * r["accuracy"]) for r, on in zip(pts, flags) if on)
        if front:
            ax.step(*zip(*front), where="post", color="tab:red", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy, %")
    fig.suptitle(f"{domain} ({DOMAINS[domain]}): cost vs accuracy, Pareto points in red")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[dict], runtimes: list[dict], prices: Prices, pareto_only: bool = False) -> str:
    out = [f"Prices (assumed defaults, core.foundation.cost.Prices): ${prices.usd_per_core_hour}/core-hour, "
           f"${prices.usd_per_gpu_hour}/GPU-hour. * = core-hours from wall seconds x the record machine's cores "
           "(the record has no CPU time). P = on the Pareto frontier (training cost / inference cost). Labels = "
           "labelled training examples used. Inference: each system on its PyTorch runtime (`--measure`); the "
           "static tier on its own (NumPy, benchmarks/static_tier.py).", ""]
    for domain in DOMAINS:
        out += [f"**{domain}** ({DOMAINS[domain]}): ![frontier](benchmarks/results/frontier_{domain}.png)", "",
                "| system | labels | test acc | train core-h | train $ | $/1M predictions | P train | P infer |",
                "|---|---|---|---|---|---|---|---|"]
        mine = [r for r in rows if r["domain"] == domain and (not pareto_only or r["pareto_train"] or r["pareto_inference"])]
        for r in sorted(mine, key=lambda r: r["train_usd"]):
            inf = f"{r['usd_per_million']:.3f} ({r['runtime']})" if r.get("usd_per_million") else "-"
            out.append(f"| {r['system']} | {r['labels']:,} | {100 * r['accuracy']:.2f}% | {r['train_core_hours']:.4f}"
                       f"{'*' if r['train_basis'] != 'cpu' else ''} | {r['train_usd']:.5f} | {inf} | "
                       f"{'P' if r['pareto_train'] else ''} | {'P' if r['pareto_inference'] else ''} |")
        out.append("")
    if runtimes:
        out += ["| domain | runtime | texts/s (batch 64) | busy cores | single-query p50 ms | $/1M predictions |",
                "|---|---|---|---|---|---|"]
        out += [f"| {r['domain']} | {r['runtime']} | {r['texts_per_second']:.0f} | {r['busy_cores']:.2f} | "
                f"{r['p50_ms']:.2f} | {r['usd_per_million']:.3f} |" for r in runtimes]
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", action="store_true", help="first measure inference speed (results/inference_cost.json)")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    if args.measure:
        from core.foundation.quiet import quiet_libraries

        quiet_libraries()
        measure_inference(args.data_dir)
    prices = Prices.from_env()
    runtimes = runtime_rows(prices)
    speed = {(r["domain"], r["runtime"]): r for r in runtimes}
    rows = support_points() + finance_points()
    for r in rows:
        r["train_usd"] = prices.usd(r["train_core_hours"])
        rt = speed.get((r["domain"], r["runtime"]))
        r["usd_per_million"] = rt["usd_per_million"] if rt else None
    for domain in DOMAINS:
        mine = [r for r in rows if r["domain"] == domain]
        for key, flag in (("train_usd", "pareto_train"), ("usd_per_million", "pareto_inference")):
            pts = [r for r in mine if r.get(key)]  # the majority class costs $0: no frontier point
            for r, on in zip(pts, pareto([(r[key], r["accuracy"]) for r in pts])):
                r[flag] = on
            for r in mine:
                r.setdefault(flag, False)
        plot(domain, mine, RESULTS / f"frontier_{domain}.png")
    PRIORS_FILE.write_text(json.dumps(priors(rows), indent=2) + "\n")
    md = table(rows, runtimes, prices)
    (RESULTS / "frontier_all.md").write_text(md)
    md = (table(rows, runtimes, prices, pareto_only=True)
          + "\nPareto rows only; every system: benchmarks/results/frontier_all.md.\n")
    write_record("frontier", {"protocol": __doc__.split("\n\n")[1], "prices": asdict(prices), "points": rows, "runtimes": runtimes}, md)
    print(md)
    print(f"wrote {PRIORS_FILE}")


if __name__ == "__main__":
    main()
