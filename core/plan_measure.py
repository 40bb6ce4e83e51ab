"""What `verticals plan` (core.plan) measures on the user's data and machine: TF-IDF + linear SVM,
the frozen-encoder probe with its learning curve and zero-shot from label names, encoder speed,
and a short calibration of a fine-tune recipe (steady tokens/s, checkpoint time, busy cores, peak
memory). Each returns plain numbers and the ledger's Cost; the predictions are core.plan's job.
Leaves out: anything about the test split (validation only) and GPU-specific timing tricks.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np


def say(progress: bool, text: str) -> None:
    if progress:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def stderr(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def share_indices(labels: list[str], share: float, rng: np.random.Generator) -> np.ndarray:
    """About `share` of each label's rows (at least one), sorted."""
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    keep = [j for label in sorted(by_label) for j in
            rng.permutation(by_label[label])[:max(1, round(share * len(by_label[label])))]]
    return np.sort(np.asarray(keep))


def measure_tfidf(data, prices, min_seconds: float = 0.5) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import LinearSVC

    from core.cost import CostLedger, measure_throughput, usd_per_million

    best = None
    with CostLedger() as ledger:
        for c in (0.3, 1.0, 3.0):  # chosen on validation, as in benchmarks/banking77.py
            model = make_pipeline(make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                                             TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
                                  LinearSVC(C=c)).fit(data.train.texts, data.train.labels)
            acc = float(np.mean(model.predict(data.validation.texts) == np.asarray(data.validation.labels)))
            if best is None or acc > best[0]:
                best = (acc, c, model)
    speed = measure_throughput(best[2].predict, data.validation.texts, min_seconds=min_seconds)
    return {"accuracy": best[0], "c": best[1], "cost": ledger.cost, "speed": speed,
            "usd_per_million": usd_per_million(speed["texts_per_second"], cores=speed["busy_cores"], prices=prices)}


def measure_encoder(data, *, backbone: str, seed: int, shares: tuple[float, ...], prices, device: str,
                    progress: bool, min_seconds: float = 1.0) -> dict:
    """Probe (C chosen on validation), its learning curve, zero-shot, encoder speed, tokens."""
    from sklearn.linear_model import LogisticRegression

    from core.backbones import load_backbone
    from core.cost import CostLedger, measure_throughput, usd_per_million
    from core.data import LabelMap
    from core.model import build_classifier, choose_probe_c
    from core.recipes import label_descriptions
    from core.zeroshot import prototypes, zero_shot_probs

    model = build_classifier(load_backbone(backbone), data.labels, peft="frozen").to(device)
    label_map = LabelMap(data.labels)
    y, y_val = np.asarray(label_map.encode(data.train.labels)), np.asarray(label_map.encode(data.validation.labels))
    say(progress, f"probe: encoding {len(y)} training and {len(y_val)} validation texts with {backbone}")
    model.encode(data.train.texts[:8], device=device)  # warm-up (thread pools, lazy init): a run is already warm
    with CostLedger() as ledger:
        t0 = time.perf_counter()
        x = model.encode(data.train.texts, device=device)
        encode_train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        x_val = model.encode(data.validation.texts, device=device)
        encode_val_s = time.perf_counter() - t0
        c, by_c = choose_probe_c(x, y.tolist(), x_val, y_val.tolist())
        t0 = time.perf_counter()
        probe = LogisticRegression(C=c, max_iter=2000).fit(x, y)
        probe_fit_s = time.perf_counter() - t0
    curve_points, rng = [], np.random.default_rng(seed)
    for share in shares:
        idx = share_indices(data.train.labels, share, rng) if share < 1 else np.arange(len(y))
        if len(set(y[idx].tolist())) < 2:
            continue
        acc = by_c[c] if share == 1 else float(LogisticRegression(C=c, max_iter=2000).fit(x[idx], y[idx]).score(x_val, y_val))
        curve_points.append((len(idx), acc))
    say(progress, "probe learning curve: " + ", ".join(f"{n} labels {100 * a:.1f}%" for n, a in curve_points))
    with CostLedger() as zs_ledger:
        descriptions = label_descriptions("", data.labels)
        protos = prototypes([model.encode(descriptions[label], device=device) for label in data.labels])
    zs_acc = float(np.mean(zero_shot_probs(x_val, protos, 0.05).argmax(1) == y_val))  # recipe default T
    speed = measure_throughput(lambda texts: probe.predict(model.encode(texts, device=device)), data.validation.texts,
                               min_seconds=min_seconds)
    tokens = sum(len(ids) for ids in model.tokenizer(list(data.train.texts), truncation=True,
                                                     max_length=model.max_length)["input_ids"])
    return {"probe_accuracy": by_c[c], "c": c, "cost": ledger.cost, "zeroshot_accuracy": zs_acc,
            "zeroshot_cost": zs_ledger.cost, "encode_train_s": encode_train_s, "encode_val_s": encode_val_s,
            "probe_fit_s": probe_fit_s, "curve_points": curve_points, "train_tokens": tokens, "speed": speed,
            "usd_per_million": usd_per_million(speed["texts_per_second"], cores=speed["busy_cores"], prices=prices)}


def calibrate_recipe(spec: dict, data, *, backbone: str, steps: int, seed: int, device: str) -> dict:
    """`steps` optimizer steps of the fine-tune recipe `spec` (core.plan.RECIPES; a fresh backbone, random head: the
    head's start does not change the step time): steady tokens/s after 2 warm-up steps, the
    one validation pass + checkpoint at the end, busy cores and peak memory."""
    from core.backbones import load_backbone
    from core.config import TrainConfig
    from core.cost import CostLedger
    from core.data import Split
    from core.model import LoraSettings, build_classifier
    from core.train import fit

    lora = LoraSettings(r=spec["model"].get("lora_r", 8), alpha=spec["model"].get("lora_alpha", 16))
    model = build_classifier(load_backbone(backbone), data.labels, peft=spec["model"]["peft"], lora=lora)
    train_cfg = TrainConfig(max_steps=steps, batch_size=spec["train"]["batch_size"], lr=spec["train"]["lr"],
                            head_lr=spec["train"]["head_lr"], eval_every=steps, patience=0, log_every=10**6,
                            seed=seed)
    ticks = []
    tiny_val = Split(data.validation.texts[:8], data.validation.labels[:8])
    with tempfile.TemporaryDirectory() as tmp, CostLedger() as ledger:
        fit(model, data.train, tiny_val, train_cfg, device=device, run_dir=Path(tmp), progress=False,
            callbacks=(lambda state: ticks.append((time.perf_counter(), state["tokens_seen"])),))
    steady = ticks[1:-1]  # intervals between steps 2..K-1: no warm-up, no validation/checkpoint
    tokens_per_second = (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0])
    step_s = (steady[-1][0] - steady[0][0]) / (len(steady) - 1)
    checkpoint_s = max(0.0, ticks[-1][0] - ticks[-2][0] - step_s)
    return {"tokens_per_second": tokens_per_second, "checkpoint_s": checkpoint_s, "step_s": step_s,
            "busy_cores": ledger.cost.cpu_seconds / max(ledger.cost.wall_seconds, 1e-9),
            "peak_rss_mb": ledger.cost.peak_rss_mb, "trainable_params": model.trainable_parameters()}
