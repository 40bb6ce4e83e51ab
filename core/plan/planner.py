"""`verticals plan`: predict what each recipe would reach and cost on the user's data, here, and
pick the cheapest one that meets a target accuracy within a training budget and a latency bound.

How each number is obtained (measured = on the user's data on this machine; prior = carried over
from our benchmark records, so it is an educated guess, not a measurement):
- TF-IDF + linear SVM, frozen-encoder probe, zero-shot (label names): measured outright. Accuracy
  is the validation accuracy (the test split is never touched); its range is +-1 binomial standard
  error, sqrt(p(1-p)/n_validation). Training time, CPU and memory come from the cost ledger.
- Learning curve: the probe is refitted on stratified shares (1/8, 1/4, 1/2, 1) of the labels;
  accuracy(n) = a - b * n**-c (a power law with a ceiling a <= 1; scipy curve_fit) is fitted to
  those points (a straight line in log n when the fit fails) and read at 2x and 4x the labels,
  and at the label count that would reach the target when that is within 4x (EXTRAPOLATION_FACTOR;
  beyond, the plan says so rather than print a number a curve fitted on n/8..n cannot support).
- The decision: the cheapest system predicted to meet the target and constraints; when none is,
  the cheapest recipe whose predicted range reaches the target (`within_range_recipe`), which
  `--run` then trains and measures rather than refusing: a prior's point can miss by its spread.
- Fine-tunes (full, LoRA, IA3): accuracy is a PRIOR. A fine-tune is assumed to close a share f of
  the probe's error: acc = probe + f * (1 - probe); f per recipe is what full fine-tunes and LoRA
  closed in our records (core/plan/priors.json: one record per benchmark with its label count and
  training rows, generated from benchmarks/results by `python -m benchmarks.frontier`), the range
  spanning the records; IA3, measured only against the full fine-tune, is full's prediction plus
  its recorded difference. Fine-tuning gains depend on the task in ways a probe cannot see (sentiment gains
  far more than intents did), so read these rows as a prior; benchmarks/plan_validation.py
  measures how far off they are.
- Time, two numbers per system: `train_seconds` = the run's cost-ledger wall (what the price is
  for) and `run_seconds` = the whole `verticals train` wall (setup + ledger + the final
  evaluation). Every part is measured here on its own (core.plan.measure) and the parts are
  added up, so one slow event is charged once, not per epoch:
  * probe ledger = first-encode warm-up + encode train + encode validation + C search + head fit
    (each timed); zero-shot ledger = warm-up + encoding the label names.
  * fine-tune ledger = warm-up + encode train x r + head fit (the probe-initialised head; r = the
    recipe's forward seconds per token / the frozen encoder's, 1 for full, > 1 for unmerged
    adapters) + tokenising + the sum over every optimizer step of the run of (a + b x padded
    tokens of that step) + validations x (validation pass + checkpoint write). The run's batches
    are replayed exactly (core.classify.train.epoch_order with the recipe's seed, batch size and length
    grouping), so the padded tokens of each step are known before training. a, b: a Theil-Sen
    line (robust to a few slow steps on a shared machine) through the calibration's steady steps
    (`calibration_steps` real optimizer steps of the exact recipe on the training split, steps 1-2
    and steps holding a validation left out). Checkpoint write = the median, over the
    calibration's three validation steps, of that step's interval minus its predicted step time
    minus the (timed) 8-row validation. Validations = one per epoch plus one at the last step
    (core.engine.loop); early stopping is not predicted (the prediction is for all `epochs`).
  * final evaluation (core.classify.recipes.finish, outside the ledger) = two validation passes + one test
    pass (at the recipe's seconds per token; only the test split's token count is read) + saving
    the model (timed on the calibrated model) + drift baseline + plots (timed on validation outputs).
  Busy cores x ledger wall = core-hours; core-hours x price (core.foundation.cost.Prices) = dollars.
- Static tier (`static`: a model2vec table distilled from the backbone + a logistic-regression
  head): accuracy is a PRIOR, the probe's measured accuracy plus the static tier's recorded offset
  to the probe (priors.json `offset_vs_probe`, written from benchmarks/static_tier.py's record; until
  that benchmark has run the prior is `pending` and the system is left out, with that reason, as it
  is without the `static` extra). Time and speed are measured on parts (core.plan.measure.measure_static:
  a timed sample of the distillation scaled to the vocabulary, PCA, and a stand-in table's encoding,
  saving and serving speed); the head is priced at the probe's C search + fit.
- Inference: one throughput/latency measurement per runtime kind (TF-IDF; the encoder + linear
  head, which every encoder recipe serves with after LoRA/IA3 merge), priced per 1e6 predictions.
`--run` (run_recommended) trains the pick and sets its predicted accuracy and times beside the
run's actual validation/test accuracy, ledger and wall seconds (plan.json `outcome`).
Leaves out: GPU calibration of CPU-only measurements (run it on the machine you will train on),
hyper-parameter search, out-of-scope detection quality, and few-shot contrastive recipes.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from core.classify.config import build_recipe
from core.classify.recipes import run_recipe
from core.data.catalog import load_classification
from core.foundation.cost import Prices, usd_per_million
from core.foundation.device import resolve_device
from core.foundation.errors import UserError
from core.foundation.settings import build_config, setting
from core.plan.measure import calibrate_recipe, measure_encoder, measure_static, measure_tfidf, say, stderr
from core.plan.predict import (
    SHARES,
    curve_accuracy,
    finetune_accuracy,
    finetune_times,
    fit_learning_curve,
    frozen_times,
    labels_needed,
    load_priors,
    predicted_accuracy,
    static_times,
)

_FINETUNE = {"mode": "finetune", "train": {"epochs": 3, "head_lr": 1e-3, "batch_size": 32, "warmup": 0.1, "patience": 2}}

# The candidate recipes, domain-free (the same settings as the packaged support/finance recipes).
# tfidf is a baseline measured beside them; it is not a verticals run.
RECIPES: dict[str, dict] = {
    "zeroshot": {"mode": "zeroshot", "model": {"peft": "frozen"}, "train": {"epochs": 0}},
    "probe": {"mode": "probe", "model": {"peft": "frozen", "probe_c_search": True}, "train": {"epochs": 0}},
    "ia3": {**_FINETUNE, "model": {"peft": "ia3"}, "train": {**_FINETUNE["train"], "lr": 5e-3}},
    "lora": {**_FINETUNE, "model": {"peft": "lora", "lora_r": 8, "lora_alpha": 16}, "train": {**_FINETUNE["train"], "lr": 1e-3}},
    "full": {**_FINETUNE, "model": {"peft": "none"}, "train": {**_FINETUNE["train"], "lr": 1e-4}},
    "static": {"mode": "static", "model": {"peft": "frozen", "probe_c_search": True}, "train": {"epochs": 0}},
}
SYSTEMS = ("tfidf", *RECIPES)
UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """'30m' -> 1800.0 seconds, '5ms' -> 0.005, '90s', '2h', '1.5' (seconds)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|min|m|h)?\s*", str(text))
    if not m:
        raise UserError(f"{text!r} is not a duration: write e.g. 30m, 2h, 90s or 5ms")
    return float(m.group(1)) * UNITS[m.group(2) or "s"]


def _duration_problem(value: str) -> str:
    try:
        parse_duration(value)
    except UserError:
        return "; write a duration such as 30m, 2h, 90s or 5ms"
    return ""


def _systems_problem(value: str) -> str:
    bad = [s for s in value.split(",") if s not in SYSTEMS]
    return f"; unknown system(s) {', '.join(bad)}: choose among {', '.join(SYSTEMS)}" if bad else ""


@dataclass(frozen=True)
class PlanConfig:
    data: str = setting("", required="a CSV/JSONL file, a folder or a catalog name")
    text_column: str = "text"
    label_column: str = "label"
    encoding: str = "utf-8"
    target: float = setting(0.9, positive=True, maximum=1, hint="an accuracy between 0 and 1")
    budget: str = setting("", check=_duration_problem)  # training wall-time limit; "" = none
    latency: str = setting("", check=_duration_problem)  # single-query p50 limit; "" = none
    backbone: str = "minilm"
    epochs: float = setting(3.0, positive=True)  # fine-tune epochs the predictions are for
    calibration_steps: int = setting(12, minimum=6)  # >= 6: warm-up, steady and 3 validation steps
    timing_seconds: float = setting(1.0, positive=True)  # how long each inference throughput is timed
    systems: str = setting(",".join(SYSTEMS), check=_systems_problem)
    seed: int = setting(0, minimum=0)
    device: str = setting("cpu", choices=("cpu", "cuda", "auto"))


@dataclass(frozen=True)
class Prediction:
    system: str
    how: str  # measured | prior
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    train_seconds: float
    train_core_hours: float
    train_usd: float
    peak_rss_mb: float
    p50_ms: float
    usd_per_million: float
    run_seconds: float = 0.0  # the whole run's wall: setup + ledger + final evaluation


def meets(p: Prediction, target: float, budget_s: float | None, latency_s: float | None,
          optimistic: bool = False) -> list[str]:
    """Why `p` fails the target or a constraint ([] when it meets them all); `optimistic`: its
    accuracy is the top of its predicted range."""
    why = []
    if (p.accuracy_high if optimistic else p.accuracy) < target:
        why.append(f"accuracy {100 * p.accuracy:.1f}% < {100 * target:.1f}%")
    if budget_s is not None and p.train_seconds > budget_s:
        why.append(f"training {p.train_seconds:.0f} s > budget {budget_s:.0f} s")
    if latency_s is not None and p.p50_ms > 1000 * latency_s:
        why.append(f"p50 {p.p50_ms:.1f} ms > {1000 * latency_s:g} ms")
    return why


def cheapest(predictions: list[Prediction], target: float, budget_s: float | None = None,
             latency_s: float | None = None, optimistic: bool = False) -> Prediction | None:
    """The prediction meeting everything with the lowest training dollars (then $/1e6 predictions)."""
    ok = [p for p in predictions if not meets(p, target, budget_s, latency_s, optimistic)]
    return min(ok, key=lambda p: (p.train_usd, p.usd_per_million)) if ok else None


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """For (cost, accuracy) points: True where no other point is at most as costly and at least
    as accurate with one of the two strictly better."""
    return [not any(c2 <= c and a2 >= a and (c2 < c or a2 > a) for c2, a2 in points) for c, a in points]


# ---------------------------------------------------------------- the plan


def plan_config(overrides: dict[str, str]) -> PlanConfig:
    return build_config(PlanConfig, {}, overrides)


def _prediction(system, how, acc, low, high, times, cores, rss, speed, per_million, prices) -> Prediction:
    core_hours = times["train_seconds"] * cores / 3600
    return Prediction(system, how, acc, max(0.0, low), min(1.0, high), times["train_seconds"], core_hours,
                      prices.usd(core_hours), rss, speed["p50_ms"], per_million, times["run_seconds"])


def make_plan(cfg: PlanConfig, *, data_dir: str | None = None, progress: bool = True, prices=None) -> dict:
    """Measure, calibrate and predict (see the module docstring); returns the plan as a dict:
    predictions (one per system), the learning curve, the recommendation and what more labels buy."""
    prices, device = prices or Prices.from_env(), resolve_device(cfg.device)
    priors = load_priors()
    t0 = time.perf_counter()
    data = load_classification(cfg.data, root=data_dir, text_column=cfg.text_column, label_column=cfg.label_column,
                               encoding=cfg.encoding)
    load_s = time.perf_counter() - t0
    if len(data.labels) < 2 or not len(data.validation):
        raise UserError(f"planning needs at least 2 labels and a validation split; {cfg.data} has "
                        f"{len(data.labels)} label(s) and {len(data.validation)} validation rows")
    systems, n_val, preds = cfg.systems.split(","), len(data.validation), []
    if "tfidf" in systems:
        say(progress, "tfidf: fitting TF-IDF + linear SVM")
        t = measure_tfidf(data, prices, min_seconds=cfg.timing_seconds)
        se = stderr(t["accuracy"], n_val)
        preds.append(_prediction("tfidf", "measured", t["accuracy"], t["accuracy"] - se, t["accuracy"] + se,
                                 {"train_seconds": t["cost"].wall_seconds, "run_seconds": t["cost"].wall_seconds}, t["cost"].cpu_seconds / max(t["cost"].wall_seconds, 1e-9),
                                 t["cost"].peak_rss_mb, t["speed"], t["usd_per_million"], prices))
    e = measure_encoder(data, backbone=cfg.backbone, seed=cfg.seed, shares=SHARES, prices=prices, device=device,
                        progress=progress, min_seconds=cfg.timing_seconds)
    curve = fit_learning_curve([n for n, _ in e["curve_points"]], [a for _, a in e["curve_points"]])
    probe, times = e["probe_accuracy"], {}
    for name, acc in (("zeroshot", e["zeroshot_accuracy"]), ("probe", probe)):
        if name in systems:
            se, cost = stderr(acc, n_val), e["cost"] if name == "probe" else e["zeroshot_cost"]
            times[name] = frozen_times(name, e, load_s)
            preds.append(_prediction(name, "measured", acc, acc - se, acc + se, times[name],
                                     cost.cpu_seconds / max(cost.wall_seconds, 1e-9), cost.peak_rss_mb, e["speed"],
                                     e["usd_per_million"], prices))
    skipped = {}
    if "static" in systems:
        static = static_prediction(cfg, data, e, priors, load_s, prices, device, progress)
        if isinstance(static, str):
            skipped["static"] = static
        else:
            times["static"] = static[1]
            preds.append(static[0])
    calibration = {}
    for name in (s for s in systems if RECIPES.get(s, {}).get("mode") == "finetune"):
        say(progress, f"{name}: calibrating {cfg.calibration_steps} optimizer steps")
        recipe = recipe_for(name, cfg)
        cal = calibration[name] = calibrate_recipe(recipe, data, steps=cfg.calibration_steps, device=device)
        times[name] = finetune_times(cal, e, recipe.train, load_s)
        point, low, high = predicted_accuracy(name, probe, priors)
        se = stderr(probe, n_val)
        preds.append(_prediction(name, "prior", point, low - se, high + se, times[name], cal["busy_cores"],
                                 cal["peak_rss_mb"], e["speed"], e["usd_per_million"], prices))
    budget_s = parse_duration(cfg.budget) if cfg.budget else None
    latency_s = parse_duration(cfg.latency) if cfg.latency else None
    pick = cheapest(preds, cfg.target, budget_s, latency_s)
    runnable = cheapest([p for p in preds if p.system in RECIPES], cfg.target, budget_s, latency_s)
    # none predicted to meet it: the cheapest recipe whose predicted range reaches the target (--run measures it)
    maybe = None if runnable else cheapest([p for p in preds if p.system in RECIPES], cfg.target, budget_s,
                                            latency_s, optimistic=True)
    n_train = len(data.train)
    more = [{"labels": k * n_train, "probe": curve_accuracy(curve, k * n_train),
             **{p.system: finetune_accuracy(curve_accuracy(curve, k * n_train), priors["gap_closure"][p.system]["mean"])
                for p in preds if p.system in priors["gap_closure"]}} for k in (2, 4)]
    needed = labels_needed(curve, cfg.target, n_train)
    return {"config": asdict(cfg), "data": data.summary(), "device": device, "prices": asdict(prices),
            "predictions": [asdict(p) for p in preds],
            "why_not": {p.system: meets(p, cfg.target, budget_s, latency_s) for p in preds},
            "recommendation": pick.system if pick else None,
            "recommended_recipe": runnable.system if runnable else None,  # what --run trains (tfidf is no run)
            "within_range_recipe": maybe.system if maybe else None,  # what --run trains when none is predicted to
            "learning_curve": {"points": e["curve_points"], "fit": curve, "labels_for_target_probe": needed["labels"],
                               "labels_for_target_note": needed["note"]},
            "more_labels": more, "calibration": calibration, "measurements": {
                "tfidf_c": t["c"] if "tfidf" in systems else None, "probe_c": e["c"], "tokens": e["tokens"],
                "data_load_s": load_s, "probe_steps_s": e["times"],
                "encode_s_per_token": e["encode_s_per_token"]},
            "time_parts": times, "skipped": skipped,
            "priors": {"source": priors["source"], "gap_closure": priors["gap_closure"],
                       "offset_vs_full": priors["offset_vs_full"], "offset_vs_probe": priors["offset_vs_probe"],
                       "records": priors["records"], "pending": priors["pending"]}}


def static_prediction(cfg, data, e: dict, priors: dict, load_s: float, prices, device: str,
                      progress: bool) -> tuple[Prediction, dict] | str:
    """(prediction, time parts) of the static tier (module docstring), or why it is left out."""
    from importlib.util import find_spec  # lazy: only when the static tier is planned

    if find_spec("model2vec") is None:
        return "needs the static extra: pip install 'verticals[static]'"
    if "static" not in priors["offset_vs_probe"]:
        return "no measured prior yet (priors.json pending): run python -m benchmarks.static_tier"
    say(progress, "static: timing a sample of the distillation and a stand-in table")
    pca_dims = recipe_for("static", cfg).static.pca_dims  # what --run would train
    s = measure_static(data, backbone=cfg.backbone, pca_dims=pca_dims, device=device, min_seconds=cfg.timing_seconds)
    times = static_times(s, e, load_s)
    point, low, high = predicted_accuracy("static", e["probe_accuracy"], priors)
    se = stderr(e["probe_accuracy"], len(data.validation))
    per_million = usd_per_million(s["speed"]["texts_per_second"], cores=s["speed"]["busy_cores"], prices=prices)
    return _prediction("static", "prior", point, low - se, high + se, times, s["busy_cores"], s["peak_rss_mb"],
                       s["speed"], per_million, prices), times


def format_plan(result: dict) -> str:
    cfg = result["config"]
    lines = [f"plan for {cfg['data']}: {result['data']['train']} training / {result['data']['validation']} validation "
             f"rows, {result['data']['num_labels']} labels; target {100 * cfg['target']:.1f}%"
             + (f", budget {cfg['budget']}" if cfg["budget"] else "") + (f", latency {cfg['latency']}" if cfg["latency"] else ""),
             f"prices: ${result['prices']['usd_per_core_hour']}/core-hour, ${result['prices']['usd_per_gpu_hour']}/GPU-hour "
             "(assumed defaults unless VERTICALS_USD_PER_CORE_HOUR / _GPU_HOUR are set)", "",
             f"{'system':9s} {'how':8s} {'accuracy (range)':20s} {'train s':>8s} {'run s':>7s} {'train $':>9s} {'peak MB':>8s} "
             f"{'p50 ms':>7s} {'$/1M pred':>9s}  meets"]
    for p in result["predictions"]:
        why = result["why_not"][p["system"]]
        lines.append(f"{p['system']:9s} {p['how']:8s} {100 * p['accuracy']:5.1f}% ({100 * p['accuracy_low']:4.1f}-"
                     f"{100 * p['accuracy_high']:4.1f})  {p['train_seconds']:8.1f} {p.get('run_seconds', 0):7.1f} {p['train_usd']:9.5f} "
                     f"{p['peak_rss_mb']:8.0f} {p['p50_ms']:7.2f} {p['usd_per_million']:9.3f}  "
                     + ("yes" if not why else "no: " + "; ".join(why)))
    lines.append("")
    if result["recommendation"]:
        lines.append(f"recommendation: {result['recommendation']} (the cheapest that meets the target and constraints)")
        if result["recommended_recipe"] != result["recommendation"]:
            lines.append(f"  the cheapest verticals recipe that meets them (what --run trains): "
                         f"{result['recommended_recipe'] or 'none'}")
    else:
        lines.append("recommendation: none of the systems is predicted to meet the target and constraints")
        maybe = next((p for p in result["predictions"] if p["system"] == result.get("within_range_recipe")), None)
        if maybe:
            lines.append(f"  within its predicted range: {maybe['system']} ({100 * maybe['accuracy_low']:.1f}-"
                         f"{100 * maybe['accuracy_high']:.1f}%) is the cheapest recipe that may meet it; --run trains "
                         f"and measures it")
    for row in result["more_labels"]:
        lines.append(f"  with {row['labels']} labels the learning curve predicts: "
                     + ", ".join(f"{k} {100 * v:.1f}%" for k, v in row.items() if k != "labels"))
    for system, why in result.get("skipped", {}).items():
        lines.append(f"  {system}: left out: {why}")
    lines.append("  " + result["learning_curve"]["labels_for_target_note"])
    lines.append("  fine-tune and static-tier accuracies are priors from our benchmark records, not measurements (see core/plan.py)")
    lines.append("  train s = the run's cost-ledger seconds (what train $ prices); run s = the whole run, with its final evaluation")
    return "\n".join(lines)


def outcome(result: dict, report: dict, run_wall_s: float) -> dict:
    """Predicted vs actual for the recipe `--run` trained: accuracy (validation, test), ledger and
    run seconds, with the errors (predicted - actual; time as a ratio - 1)."""
    system = result["recommended_recipe"] or result.get("within_range_recipe")
    p = next(p for p in result["predictions"] if p["system"] == system)
    actual = {"validation_accuracy": report["metrics"]["validation"]["accuracy"],
              "test_accuracy": report["metrics"]["test"]["accuracy"],
              "train_seconds": report["cost"]["wall_seconds"], "run_seconds": run_wall_s}
    return {"system": system, "predicted": {"accuracy": p["accuracy"], "accuracy_low": p["accuracy_low"],
                                            "accuracy_high": p["accuracy_high"], "train_seconds": p["train_seconds"],
                                            "run_seconds": p.get("run_seconds", 0.0)},
            "actual": actual,
            "error": {"validation_points": 100 * (p["accuracy"] - actual["validation_accuracy"]),
                      "test_points": 100 * (p["accuracy"] - actual["test_accuracy"]),
                      "train_seconds": p["train_seconds"] / actual["train_seconds"] - 1 if actual["train_seconds"] > 0 else None,
                      "run_seconds": p.get("run_seconds", 0.0) / run_wall_s - 1 if run_wall_s > 0 else None}}


def format_outcome(o: dict) -> str:
    p, a, err = o["predicted"], o["actual"], o["error"]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:+.0f}%"

    return "\n".join([
        f"predicted vs actual for {o['system']}:",
        f"  accuracy  predicted {100 * p['accuracy']:.1f}% ({100 * p['accuracy_low']:.1f}-{100 * p['accuracy_high']:.1f}); "
        f"actual validation {100 * a['validation_accuracy']:.1f}% ({err['validation_points']:+.1f} points), "
        f"test {100 * a['test_accuracy']:.1f}% ({err['test_points']:+.1f} points)",
        f"  train s   predicted {p['train_seconds']:.1f}; actual {a['train_seconds']:.1f} ({pct(err['train_seconds'])})",
        f"  run s     predicted {p['run_seconds']:.1f}; actual {a['run_seconds']:.1f} ({pct(err['run_seconds'])})"])


def run_recommended(result: dict, cfg: PlanConfig, out: Path, *, data_dir: str | None = None,
                    progress: bool = True) -> tuple[dict, Path]:
    """Train the recommended recipe into out/run-<recipe>, put its predicted-vs-actual `outcome` into
    `result` and out/plan.json; returns (the run's report, its directory)."""
    system = result["recommended_recipe"] or result.get("within_range_recipe")
    if not system:
        raise UserError("--run (run=True): no recipe is predicted to meet the target and constraints, even at the top "
                        "of its predicted range; lower target=, raise budget= or add labels (see above)")
    run_dir = Path(out) / f"run-{system}"
    t0 = time.perf_counter()
    report = run_recipe(recipe_for(system, cfg), run_dir, data_dir=data_dir, progress=progress)
    result["outcome"] = outcome(result, report, time.perf_counter() - t0)
    result["run"] = str(run_dir)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "plan.json").write_text(json.dumps(result, indent=2))
    return report, run_dir


def recipe_for(system: str, cfg: PlanConfig):
    """The RecipeConfig that trains `system` on the plan's data (for `--run`)."""
    spec = RECIPES[system]
    raw = {**spec, "name": f"plan-{system}",
           "data": {"source": cfg.data, "text_column": cfg.text_column, "label_column": cfg.label_column,
                    "encoding": cfg.encoding},
           "model": {**spec["model"], "backbone": cfg.backbone},
           "train": {**spec["train"], "seed": cfg.seed, **({"epochs": cfg.epochs} if spec["mode"] == "finetune" else {})}}
    return build_recipe(raw)
