"""What `verticals plan` (core.plan.planner) measures on the user's data and machine: TF-IDF + linear SVM,
the frozen-encoder probe (each step of the probe recipe timed on its own), its learning curve,
zero-shot from label names, encoder speed, and a short calibration of each fine-tune recipe
(per-step time against padded tokens, validation-pass, checkpoint and save times, busy cores,
peak memory). Each returns plain numbers and the ledger's Cost; the predictions are core.plan.planner's.

What the probe recipe does (core.classify.recipes.train_probe + finish) and where each part is timed:
setup (load the backbone, build the classifier: timed on a second load, as a run after the plan sees it), inside the ledger: encode train, encode
validation, the C search, the head fit (init_head_from_probe, as the recipe calls it), each timed;
after it (`finish`): two validation passes (calibration/drift outputs, then the validation
metrics), one test pass (priced from the encoder's seconds per token and the test split's token
count: its texts are tokenised, never scored), saving the model, the drift baseline and the plots
(those three timed once here on validation outputs). The first encode of a fresh model is slower
(thread pools, lazy init): `warmup_s` times it so a run's cold start is predicted too.
The static tier (`measure_static`) is not distilled in full (a vocabulary's worth of encoder
passes): model2vec's own token pass is timed on a sample of the vocabulary and scaled to all of it,
its PCA is timed on a table of the full size, and a stand-in static model (a random table of the
same shape on the backbone's tokenizer: the speed of a lookup does not depend on the values)
is timed encoding the training and validation texts, saving, and serving (texts/s, p50).
Leaves out: the test split's labels and scores, and GPU-specific timing tricks.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.classify.recipes import build_model, label_descriptions
from core.classify.train import evaluate_split, fit
from core.confidence.calibrate import plot_reliability, softmax
from core.data.splits import LabelMap, Split
from core.engine.metrics_log import MetricsLog
from core.evaluation.drift_baseline import save_drift_baseline
from core.evaluation.metrics import confusion, plot_confusion_matrix, plot_loss_curve
from core.foundation.cost import CostLedger, measure_throughput, usd_per_million
from core.foundation.precision import resolve_precision
from core.models.backbones import load_backbone
from core.models.classifier import build_classifier, choose_probe_c, init_head_from_probe, save_classifier
from core.models.zeroshot import prototypes, zero_shot_probs
from core.plan.predict import padded_tokens_per_step


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


class Stopwatch:
    """Named wall-clock laps: `with watch("encode_train"): ...`; `watch.laps` maps name -> seconds."""

    def __init__(self):
        self.laps: dict[str, float] = {}

    def __call__(self, name: str):
        watch = self

        class _Lap:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                watch.laps[name] = watch.laps.get(name, 0.0) + time.perf_counter() - self.t0

        return _Lap()


def token_lengths(tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    if not texts:
        return np.zeros(0, dtype=int)
    return np.asarray([len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]])


def measure_tfidf(data, prices, min_seconds: float = 0.5) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer  # lazy: scikit-learn costs start-up; only when used
    from sklearn.pipeline import make_pipeline, make_union  # lazy: scikit-learn costs start-up; only when used
    from sklearn.svm import LinearSVC  # lazy: scikit-learn costs start-up; only when used

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


def _finish_extras(model, outputs, y_val, watch: Stopwatch) -> None:
    """Time what `finish` does besides its encoder passes, on validation outputs: save, drift, plots."""
    logits, embeddings = outputs
    with tempfile.TemporaryDirectory() as tmp:
        with watch("save"):
            save_classifier(model, Path(tmp) / "model")
        with watch("drift"):
            save_drift_baseline(model, logits, embeddings, Path(tmp) / "model", model_version="plan")
        with watch("plots"):
            plot_confusion_matrix(confusion(y_val, logits.argmax(1), len(model.labels)), model.labels,
                                  Path(tmp) / "confusion_matrix.png")
            plot_reliability({"before (T=1)": (softmax(logits), y_val)}, Path(tmp) / "reliability.png")


def measure_encoder(data, *, backbone: str, seed: int, shares: tuple[float, ...], prices, device: str,
                    progress: bool, min_seconds: float = 1.0) -> dict:
    """The probe recipe step by step (see the module docstring), its learning curve, zero-shot,
    encoder speed and the token counts of every split."""
    from sklearn.linear_model import LogisticRegression  # lazy: scikit-learn costs start-up; only when used

    watch = Stopwatch()
    with watch("first_setup"):  # pays one-time imports and a cold file cache
        build_classifier(load_backbone(backbone), data.labels, peft="frozen")
    with watch("setup"):  # what a run started after the plan pays
        model = build_classifier(load_backbone(backbone), data.labels, peft="frozen").to(device)
    label_map = LabelMap(data.labels)
    y, y_val = np.asarray(label_map.encode(data.train.labels)), np.asarray(label_map.encode(data.validation.labels))
    say(progress, f"probe: encoding {len(y)} training and {len(y_val)} validation texts with {backbone}")
    with watch("warmup"):
        model.encode(data.train.texts[:8], device=device)  # a fresh model's first call is slower
    with CostLedger() as ledger:
        with watch("encode_train"):
            x = model.encode(data.train.texts, device=device)
        with watch("encode_validation"):
            x_val = model.encode(data.validation.texts, device=device)
        with watch("c_search"):
            c, by_c = choose_probe_c(x, y.tolist(), x_val, y_val.tolist())
        with watch("head_fit"):
            init_head_from_probe(model, data.train.texts, y.tolist(), c=c, device=device, embeddings=x)
    with watch("validation_pass"):
        outputs = model.predict_all(data.validation.texts, device=device)
    _finish_extras(model, outputs, y_val, watch)
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
    speed = measure_throughput(lambda texts: model.predict_logits(texts, device=device), data.validation.texts,
                               min_seconds=min_seconds)
    with watch("tokenize_train"):
        lengths = {"train": token_lengths(model.tokenizer, data.train.texts, model.max_length)}
    lengths |= {name: token_lengths(model.tokenizer, getattr(data, name).texts, model.max_length)
                for name in ("validation", "test")}
    tokens = {name: int(v.sum()) for name, v in lengths.items()}
    encoded = tokens["train"] + tokens["validation"]
    return {"probe_accuracy": by_c[c], "c": c, "cost": ledger.cost, "zeroshot_accuracy": zs_acc,
            "zeroshot_cost": zs_ledger.cost, "times": watch.laps, "curve_points": curve_points,
            "tokens": tokens, "train_lengths": lengths["train"], "train_embeddings": x,
            "encode_s_per_token": (watch.laps["encode_train"] + watch.laps["encode_validation"]) / max(encoded, 1),
            "speed": speed,
            "usd_per_million": usd_per_million(speed["texts_per_second"], cores=speed["busy_cores"], prices=prices)}


def calibrate_recipe(recipe, data, *, steps: int, device: str) -> dict:
    """`steps` optimizer steps of the fine-tune RecipeConfig `recipe` on the real training split
    (so its first batches are the run's; a random head: the head's start does not change the step
    time), validating on 8 rows every steps // 3 steps so that the engine's checkpoint path runs
    three times, at the recipe's precision (`auto`: bf16 where this device has it natively, so a
    bf16 machine's steps are timed in bf16; returned as `precision`). Returns per-step (seconds,
    padded tokens) pairs, the intervals that also held a validation + checkpoint, and, timed on
    their own after it: one validation pass on up to 64
    validation rows (scaled to the split by tokens), saving the model and plotting its loss curve;
    setup time, busy cores and peak memory."""
    watch = Stopwatch()
    with watch("setup"):
        model = build_model(recipe, data.labels)
    every = max(2, steps // 3)
    train_cfg = replace(recipe.train, max_steps=steps, eval_every=every, patience=0, log_every=10**6)
    ticks: list[float] = []
    tiny_val = Split(data.validation.texts[:8], data.validation.labels[:8])
    with tempfile.TemporaryDirectory() as tmp:
        with CostLedger() as ledger:
            fit(model, data.train, tiny_val, train_cfg, device=device, run_dir=Path(tmp), progress=False,
                callbacks=(lambda state: ticks.append(time.perf_counter()),))
        label_map = LabelMap(model.labels)
        sample = Split(data.validation.texts[:64], data.validation.labels[:64])
        evaluate_split(model, tiny_val, label_map, device)  # warm the eval path
        with watch("validation_sample"):
            evaluate_split(model, sample, label_map, device)
        with watch("tiny_validation"):
            evaluate_split(model, tiny_val, label_map, device)
        with watch("save"):
            save_classifier(model, Path(tmp) / "model")
        with watch("loss_plot"):
            plot_loss_curve(MetricsLog.read(Path(tmp) / "metrics.jsonl"), Path(tmp) / "loss_curve.png")
    lengths = np.asarray([len(ids) for ids in model.tokenizer(list(data.train.texts), truncation=True,
                                                               max_length=model.max_length)["input_ids"]])
    padded = padded_tokens_per_step(lengths, train_cfg.batch_size, train_cfg.seed, steps, train_cfg.group_by_length)
    sample_tokens = int(token_lengths(model.tokenizer, sample.texts, model.max_length).sum())
    intervals = np.diff(np.asarray(ticks))  # interval k is step k + 2 (step 1 has no tick before it)
    step_numbers = np.arange(2, len(ticks) + 1)
    validated = (step_numbers % every == 0) | (step_numbers == steps)
    return {"steps": steps, "validate_every": every,
            "step_seconds": intervals.tolist(), "step_padded_tokens": padded[1:].tolist(),
            "step_numbers": step_numbers.tolist(), "validated": validated.tolist(),
            "validation_s_per_token": watch.laps["validation_sample"] / max(sample_tokens, 1),
            "tiny_validation_s": watch.laps["tiny_validation"], "times": watch.laps,
            "busy_cores": ledger.cost.cpu_seconds / max(ledger.cost.wall_seconds, 1e-9),
            "peak_rss_mb": ledger.cost.peak_rss_mb, "trainable_params": model.trainable_parameters(),
            "precision": resolve_precision(train_cfg.mixed_precision, device)}


STATIC_SAMPLE = 1024  # vocabulary tokens passed through the encoder to time model2vec's distillation


def measure_static(data, *, backbone: str, pca_dims: int, device: str, min_seconds: float = 1.0) -> dict:
    """What the static recipe's parts take here (module docstring): distillation seconds (a timed
    sample of the token pass, scaled to the vocabulary, plus PCA), encoding train + validation,
    saving, and serving speed, with the busy cores and peak memory of the timed token pass."""
    from model2vec import StaticModel  # lazy: an optional extra ([static]); the planner checks it first
    from model2vec.distill.inference import apply_pca, create_embeddings  # lazy: as above; loads torch

    watch, b = Stopwatch(), load_backbone(backbone)
    tok = b.tokenizer
    vocab, hidden = len(tok.get_vocab()), b.encoder.config.hidden_size
    ids = np.random.default_rng(0).choice(vocab, size=min(vocab, STATIC_SAMPLE + 64), replace=False)
    wrap = [[tok.cls_token_id, int(i), tok.sep_token_id] if tok.cls_token_id is not None else [int(i)] for i in ids]
    create_embeddings(b.encoder, wrap[:64], device, tok.pad_token_id or 0)  # warm-up: a fresh model's first pass is slower
    with CostLedger() as ledger, watch("token_pass"):
        create_embeddings(b.encoder, wrap[64:], device, tok.pad_token_id or 0)
    dims = min(pca_dims or hidden, hidden)
    table = np.random.default_rng(0).standard_normal((vocab, hidden)).astype(np.float32)
    with watch("pca"):
        apply_pca(table, dims)
    stand_in = StaticModel(vectors=table[:, :dims].copy(), tokenizer=tok.backend_tokenizer, normalize=True)
    with watch("encode"):
        for split in (data.train, data.validation):
            stand_in.encode(list(split.texts), use_multiprocessing=False)
    with tempfile.TemporaryDirectory() as tmp, watch("save"):
        stand_in.save_pretrained(tmp)
    speed = measure_throughput(lambda texts: stand_in.encode(texts, use_multiprocessing=False),
                               data.validation.texts, min_seconds=min_seconds)
    distill = watch.laps["token_pass"] * vocab / max(len(wrap) - 64, 1) + watch.laps["pca"]
    return {"distill_seconds": distill, "vocabulary": vocab, "sample_tokens": len(wrap) - 64, "dims": dims, "times": watch.laps, "speed": speed,
            "busy_cores": ledger.cost.cpu_seconds / max(ledger.cost.wall_seconds, 1e-9),
            "peak_rss_mb": ledger.cost.peak_rss_mb}
