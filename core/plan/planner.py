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
- Fine-tunes (full, LoRA, IA3): accuracy is a PRIOR unless the priors are unsure on this set, when
  a TRIAL fine-tune measures it (core.plan.trial: the run's first steps, at most `trial_steps`, on
  the training split, its validation curve read within 4x the steps it ran; `trial=never` opts out,
  `trial=always` tries every fine-tune; the trials' seconds are reported, as planning is timed too).
  The prior: a fine-tune is assumed to close a share f of the probe's error: acc = probe + f * (1 -
  probe); f per recipe is what full fine-tunes and LoRA closed in our records (core/plan/priors.json:
  one record per benchmark with its domain, label count and training rows, generated from
  benchmarks/results by `python -m benchmarks.frontier`), the range spanning the records; IA3,
  measured only against the full fine-tune, is full's prediction plus its recorded difference.
  Fine-tuning gains depend on the task in ways a probe cannot see (sentiment gains far more than
  intents did), which is why an unsure prior is replaced by a trial; benchmarks/plan_validation.py
  measures how far off either is, also with priors fitted without the set's own domain.
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
- Precision: the calibration steps and trials run at the recipe's `mixed_precision` (auto), so a
  device with native bf16 is priced in bf16 from steps timed in bf16; the plan says which (`precision`).
- Extrapolations are read within a stated range, printed with the plan (core.plan.report): the
  learning curve up to 4x the labels it was fitted on, a trial's curve up to 4x its steps, and the
  step-time line with the share of the run's steps outside the padded tokens it was fitted on.
`--run` (run_recommended) trains the pick and sets its predicted accuracy and times beside the
run's actual validation/test accuracy, ledger and wall seconds (plan.json `outcome`).
Leaves out: GPU calibration of CPU-only measurements (run it on the machine you will train on),
hyper-parameter search, out-of-scope detection quality, and few-shot contrastive recipes.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from core.classify.config import build_recipe
from core.classify.recipes import run_recipe
from core.data.catalog import load_classification
from core.foundation.cost import Prices, usd_per_million
from core.foundation.device import resolve_device
from core.foundation.errors import UserError
from core.foundation.precision import precision_section
from core.foundation.settings import build_config, setting
from core.plan.choose import Prediction, cheapest, meets
from core.plan.measure import calibrate_recipe, measure_encoder, measure_static, measure_tfidf, say, stderr
from core.plan.predict import (
    EXTRAPOLATION_FACTOR,
    SHARES,
    curve_accuracy,
    finetune_accuracy,
    finetune_times,
    fit_learning_curve,
    frozen_times,
    labels_needed,
    load_priors,
    static_times,
)
from core.plan.report import outcome
from core.plan.trial import TRIAL_MODES, prior_band, run_trial, settle, trial_decision

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
    # trial fine-tunes (core.plan.trial): auto = where the priors are unsure; never = priors only (faster)
    trial: str = setting("auto", choices=TRIAL_MODES)
    trial_steps: int = setting(200, minimum=4)  # the most optimizer steps of the run a trial takes
    timing_seconds: float = setting(1.0, positive=True)  # how long each inference throughput is timed
    systems: str = setting(",".join(SYSTEMS), check=_systems_problem)
    seed: int = setting(0, minimum=0)
    device: str = setting("cpu", choices=("cpu", "cuda", "auto"))


# ---------------------------------------------------------------- the plan


def plan_config(overrides: dict[str, str]) -> PlanConfig:
    return build_config(PlanConfig, {}, overrides)


def _prediction(system, how, acc, low, high, times, cores, rss, speed, per_million, prices) -> Prediction:
    core_hours = times["train_seconds"] * cores / 3600
    return Prediction(system, how, acc, max(0.0, low), min(1.0, high), times["train_seconds"], core_hours,
                      prices.usd(core_hours), rss, speed["p50_ms"], per_million, times["run_seconds"])


def _tfidf(data, cfg, prices) -> tuple[Prediction, dict]:
    t = measure_tfidf(data, prices, min_seconds=cfg.timing_seconds)
    se, cost = stderr(t["accuracy"], len(data.validation)), t["cost"]
    return _prediction("tfidf", "measured", t["accuracy"], t["accuracy"] - se, t["accuracy"] + se,
                       {"train_seconds": cost.wall_seconds, "run_seconds": cost.wall_seconds},
                       cost.cpu_seconds / max(cost.wall_seconds, 1e-9), cost.peak_rss_mb, t["speed"],
                       t["usd_per_million"], prices), t


def make_plan(cfg: PlanConfig, *, data_dir: str | None = None, progress: bool = True, prices=None,
              priors: dict | None = None) -> dict:
    """Measure, calibrate and predict (see the module docstring); returns the plan as a dict:
    predictions (one per system), the learning curve, the recommendation and what more labels buy.
    `priors`: core.plan.predict.load_priors()'s (default: the packaged ones)."""
    started, prices, device = time.perf_counter(), prices or Prices.from_env(), resolve_device(cfg.device)
    priors = load_priors() if priors is None else priors
    t0 = time.perf_counter()
    data = load_classification(cfg.data, root=data_dir, text_column=cfg.text_column, label_column=cfg.label_column,
                               encoding=cfg.encoding)
    load_s = time.perf_counter() - t0
    if len(data.labels) < 2 or not len(data.validation):
        raise UserError(f"planning needs at least 2 labels and a validation split; {cfg.data} has "
                        f"{len(data.labels)} label(s) and {len(data.validation)} validation rows")
    systems, n_val, preds, t = cfg.systems.split(","), len(data.validation), [], None
    constraints = {"budget_s": parse_duration(cfg.budget) if cfg.budget else None,
                   "latency_s": parse_duration(cfg.latency) if cfg.latency else None}
    if "tfidf" in systems:
        say(progress, "tfidf: fitting TF-IDF + linear SVM")
        tfidf, t = _tfidf(data, cfg, prices)
        preds.append(tfidf)
    e = measure_encoder(data, backbone=cfg.backbone, seed=cfg.seed, shares=SHARES, prices=prices, device=device,
                        progress=progress, min_seconds=cfg.timing_seconds)
    curve = fit_learning_curve([n for n, _ in e["curve_points"]], [a for _, a in e["curve_points"]])
    probe, times, skipped = e["probe_accuracy"], {}, {}
    for name, acc in (("zeroshot", e["zeroshot_accuracy"]), ("probe", probe)):
        if name in systems:
            se, cost = stderr(acc, n_val), e["cost"] if name == "probe" else e["zeroshot_cost"]
            times[name] = frozen_times(name, e, load_s)
            preds.append(_prediction(name, "measured", acc, acc - se, acc + se, times[name],
                                     cost.cpu_seconds / max(cost.wall_seconds, 1e-9), cost.peak_rss_mb, e["speed"],
                                     e["usd_per_million"], prices))
    if "static" in systems:
        static = static_prediction(cfg, data, e, priors, load_s, prices, device, progress)
        if isinstance(static, str):
            skipped["static"] = static
        else:
            times["static"] = static[1]
            preds.append(static[0])
    ft = finetune_predictions(cfg, data, e, priors, load_s, prices, device, progress, constraints)
    preds, times, skipped = preds + ft.pop("predictions"), times | ft.pop("times"), skipped | ft.pop("skipped")
    recipes = [p for p in preds if p.system in RECIPES]
    pick = cheapest(preds, cfg.target, constraints["budget_s"], constraints["latency_s"])
    runnable = cheapest(recipes, cfg.target, constraints["budget_s"], constraints["latency_s"])
    # none predicted to meet it: the cheapest recipe whose predicted range reaches the target (--run measures it)
    maybe = None if runnable else cheapest(recipes, cfg.target, constraints["budget_s"], constraints["latency_s"],
                                            optimistic=True)
    needed = labels_needed(curve, cfg.target, len(data.train))
    return {"config": asdict(cfg), "data": data.summary(), "device": device, "prices": asdict(prices),
            "predictions": [asdict(p) for p in preds], "constraints": constraints,
            "why_not": {p.system: meets(p, cfg.target, constraints["budget_s"], constraints["latency_s"]) for p in preds},
            "recommendation": pick.system if pick else None,
            "recommended_recipe": runnable.system if runnable else None,  # what --run trains (tfidf is no run)
            "within_range_recipe": maybe.system if maybe else None,  # what --run trains when none is predicted to
            "learning_curve": {"points": e["curve_points"], "fit": curve, "labels_for_target_probe": needed["labels"],
                               "labels_for_target_note": needed["note"]},
            "more_labels": more_labels(preds, curve, probe, len(data.train)), **ft, "measurements": {
                "tfidf_c": t["c"] if t else None, "probe_accuracy": probe, "probe_c": e["c"], "tokens": e["tokens"],
                "data_load_s": load_s, "probe_steps_s": e["times"], "encode_s_per_token": e["encode_s_per_token"]},
            "time_parts": times, "skipped": skipped, "plan_seconds": time.perf_counter() - started,
            "priors": {"source": priors["source"], "gap_closure": priors["gap_closure"],
                       "offset_vs_full": priors["offset_vs_full"], "offset_vs_probe": priors["offset_vs_probe"],
                       "records": priors["records"], "pending": priors["pending"],
                       "without_domain": priors.get("without_domain", "")}}


def finetune_predictions(cfg, data, e: dict, priors: dict, load_s: float, prices, device: str, progress: bool,
                         constraints: dict) -> dict:
    """The fine-tunes' predictions: time from a calibration each (core.plan.measure.calibrate_recipe),
    accuracy from the prior or, where the priors are unsure, from a trial (core.plan.trial); with the
    calibrations, trials, prior bands, the reasons to try each, and the precision they were priced at."""
    probe, n_val = e["probe_accuracy"], len(data.validation)
    se, regime = stderr(probe, n_val), {"num_labels": len(data.labels), "train_rows": len(data.train)}
    out = {"predictions": [], "times": {}, "skipped": {}, "calibration": {}, "trials": {}, "prior_bands": {},
           "trial_reasons": {}}
    for name in (s for s in cfg.systems.split(",") if RECIPES.get(s, {}).get("mode") == "finetune"):
        say(progress, f"{name}: calibrating {cfg.calibration_steps} optimizer steps")
        recipe = recipe_for(name, cfg)
        cal = out["calibration"][name] = calibrate_recipe(recipe, data, steps=cfg.calibration_steps, device=device)
        times = out["times"][name] = finetune_times(cal, e, recipe.train, load_s)
        timed = _prediction(name, "prior", 0.0, 0.0, 0.0, times, cal["busy_cores"], cal["peak_rss_mb"], e["speed"],
                            e["usd_per_million"], prices)
        band, reasons, use = trial_decision(timed, probe, se, priors, regime, cfg.target, constraints, cfg.trial)
        out["prior_bands"][name], out["trial_reasons"][name] = band, reasons
        if use:
            say(progress, f"{name}: trial fine-tune, up to {cfg.trial_steps} of the run's {times['steps']} steps ("
                + "; ".join(reasons or ["trial=always"]) + ")")
            trial = run_trial(recipe, data, e, trial_steps=cfg.trial_steps, total_steps=times["steps"], device=device)
            out["trials"][name] = trial | {"reasons": reasons}
        fields = settle(band, out["trials"].get(name), use)
        if fields is None:
            out["skipped"][name] = f"no prior record and no trial (trial={cfg.trial}; trial=auto measures one)"
        else:
            out["predictions"].append(replace(timed, **fields))
    if out["calibration"]:  # the fine-tunes share the plan's mixed_precision: the last recipe's stands for all
        out["precision"] = precision_section(recipe.train.mixed_precision, device) | {
            "priced": {n: c["precision"] for n, c in out["calibration"].items()}}
    return out


def more_labels(preds: list[Prediction], curve: dict, probe: float, n_train: int) -> list[dict]:
    """What 2x and 4x the labels would give (within EXTRAPOLATION_FACTOR x those the probe's learning
    curve was fitted on): the probe's curve, and each fine-tune closing the share of the probe's error
    it is predicted to close here (its prior's, or its trial's)."""
    closes = {p.system: (p.accuracy - probe) / (1 - probe) for p in preds
              if RECIPES.get(p.system, {}).get("mode") == "finetune" and probe < 1}
    rows = []
    for k in (k for k in (2, 4) if k <= EXTRAPOLATION_FACTOR):
        acc = curve_accuracy(curve, k * n_train)
        rows.append({"labels": k * n_train, "probe": acc, **{s: finetune_accuracy(acc, f) for s, f in closes.items()}})
    return rows


def static_prediction(cfg, data, e: dict, priors: dict, load_s: float, prices, device: str,
                      progress: bool) -> tuple[Prediction, dict] | str:
    """(prediction, time parts) of the static tier (module docstring), or why it is left out."""
    from importlib.util import find_spec  # lazy: only when the static tier is planned

    if find_spec("model2vec") is None:
        return "needs the static extra: pip install 'verticals[static]'"
    band = prior_band("static", e["probe_accuracy"], stderr(e["probe_accuracy"], len(data.validation)), priors)
    if band is None:
        return "no measured prior yet (priors.json pending): run python -m benchmarks.static_tier"
    say(progress, "static: timing a sample of the distillation and a stand-in table")
    pca_dims = recipe_for("static", cfg).static.pca_dims  # what --run would train
    s = measure_static(data, backbone=cfg.backbone, pca_dims=pca_dims, device=device, min_seconds=cfg.timing_seconds)
    times = static_times(s, e, load_s) | {"distillation_scaled": {"sample_tokens": s["sample_tokens"],
                                                                  "vocabulary": s["vocabulary"]}}
    per_million = usd_per_million(s["speed"]["texts_per_second"], cores=s["speed"]["busy_cores"], prices=prices)
    return _prediction("static", "prior", *band, times, s["busy_cores"], s["peak_rss_mb"],
                       s["speed"], per_million, prices), times


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
