"""The trial fine-tune: where the priors are unsure of a fine-tune's accuracy on the user's set, the
plan trains the recipe's first steps on the user's training split and reads its validation curve.

Why: a fine-tune's accuracy prior (core.plan.predict: the share of the probe's error it closed in
our benchmark records) comes from a few other data sets. On an unseen intent set asked for 96% it
predicted LoRA 95.4% (94.5-96.4) and said no system met the target; LoRA reached 96.49%. Where the
decision rests on a prior the plan is unsure of, a measurement on the user's data settles it.

When (`trial_reasons`: the priors are unsure; `trial=auto`, the default): the system has no prior
record, or one (MIN_PRIOR_RECORDS: a single record has no spread to go by); the prior's own range is
wider than WIDE_PRIOR points; the set's label count or training rows lie outside those of the
records the prior was fitted on; or the target lies within the predicted range (the pick depends on
which side it falls). A system that the budget or latency rules out is not tried. `trial=always`
tries every fine-tune; `trial=never` keeps the priors (the opt-out). The trials' wall seconds are
reported in the plan (`trials`), as they are part of what planning costs.

What it runs (`run_trial`): the recipe `--run` would train (core.plan.planner.recipe_for), seeded
and started as the run is (the head from the probe; the probe's own training embeddings are reused:
at step 0 the encoder and its adapters compute what the frozen probe's did), on the same engine
(core.classify.train.fit) with the run's batches and learning-rate schedule, stopped after its first
S = min(T, trial_steps) of the run's T steps (train.stop_after: the schedule still spans T, so the
trial is the run's prefix, not a shorter run), validated TRIAL_POINTS times at even steps on up to
TRIAL_VALIDATION_ROWS validation rows (a stratified sample). It runs at the recipe's precision
(mixed_precision=auto), like the calibration steps.

What it predicts (`trial_accuracy`, pure): when S = T the trial is the run: its last validation
accuracy, +- one binomial standard error. Otherwise accuracy(step) = a - b * step**-c (the power law
of the probe's learning curve, core.plan.predict.fit_learning_curve) is fitted to the points and read
at min(T, EXTRAPOLATION_FACTOR x S): never further than 4x the steps measured; when T is further,
the read at 4S is short of the run's end (and so, on a rising curve, low), and the note says so.
Range: the lower to the higher of the last measured point and the read, each +- one standard error.
Where it ran, the trial's accuracy replaces the prior's (`settle`): it is a measurement of this
recipe on this set, the prior one of other sets; the prior's band is kept beside it in the plan.
`reprice` settles a finished plan's accuracies again under other priors or another `trial`
setting, from the trials it measured (benchmarks/plan_validation.py's leave-one-domain-out check).
Leaves out: hyper-parameter search, and trials of the static tier (its prior stays a prior).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.classify.recipes import build_model
from core.classify.train import fit
from core.data.splits import LabelMap, Split
from core.foundation.cost import CostLedger
from core.foundation.device import seed_everything
from core.foundation.precision import resolve_precision
from core.models.classifier import init_head_from_probe
from core.plan.choose import Prediction, meets
from core.plan.measure import share_indices, stderr
from core.plan.predict import EXTRAPOLATION_FACTOR, curve_accuracy, fit_learning_curve, has_prior, predicted_accuracy

TRIAL_MODES = ("auto", "always", "never")
TRIAL_POINTS = 4  # validation passes of a trial, at even steps
TRIAL_VALIDATION_ROWS = 1000  # a stratified sample of the validation split beyond this
MIN_PRIOR_RECORDS = 2  # fewer records: the prior has no spread to go by
WIDE_PRIOR = 0.02  # a prior whose own range is wider than this (accuracy) is unsure


# ---------------------------------------------------------------- pure parts (unit-tested)


def trial_schedule(total_steps: int, trial_steps: int) -> tuple[int, int]:
    """(steps the trial runs, steps between its validations): all T when T <= trial_steps (its
    validations every ceil(T / TRIAL_POINTS) and at T), else TRIAL_POINTS x (trial_steps // TRIAL_POINTS)."""
    if total_steps <= trial_steps:
        return total_steps, max(1, math.ceil(total_steps / TRIAL_POINTS))
    every = max(1, trial_steps // TRIAL_POINTS)
    return TRIAL_POINTS * every, every


def trial_accuracy(points: list[tuple[int, float]], total_steps: int, n_validation: int) -> dict:
    """{"accuracy", "accuracy_low", "accuracy_high", "read_at", "note"} from a trial's validation
    points (step, accuracy) for a run of `total_steps` (the module docstring)."""
    steps, acc = [s for s, _ in points], [a for _, a in points]
    done, last = steps[-1], acc[-1]
    if done >= total_steps:
        se = stderr(last, n_validation)
        return {"accuracy": last, "accuracy_low": max(0.0, last - se), "accuracy_high": min(1.0, last + se),
                "read_at": total_steps, "note": f"the trial ran all {total_steps} steps of the run: measured"}
    read_at = min(total_steps, EXTRAPOLATION_FACTOR * done)
    point = curve_accuracy(fit_learning_curve(steps, acc), read_at)
    se = stderr(point, n_validation)
    note = (f"its validation curve over steps {steps[0]}-{done} read at step {read_at}"
            + (" (the run's end)" if read_at == total_steps else
               f", {EXTRAPOLATION_FACTOR}x the steps measured, short of the run's {total_steps}: likely low"))
    return {"accuracy": point, "accuracy_low": max(0.0, min(point, last) - se),
            "accuracy_high": min(1.0, max(point, last) + se), "read_at": read_at, "note": note}


def prior_band(system: str, probe: float, se: float, priors: dict) -> tuple[float, float, float] | None:
    """(point, low, high) of the prior, the range widened by the probe's standard error `se`; None
    without a prior."""
    if not has_prior(system, priors):
        return None
    point, low, high = predicted_accuracy(system, probe, priors)
    return point, max(0.0, low - se), min(1.0, high + se)


def prior_records(system: str, priors: dict) -> list[dict]:
    """The records `system`'s prior rests on (IA3's offset rests on the full fine-tune's too)."""
    systems = {system} | ({"full"} if system in priors["offset_vs_full"] else set())
    return [r for r in priors["records"] if r["system"] in systems]


def _outside(value: int, values: list, what: str) -> list[str]:
    known = [v for v in values if v is not None]
    if not known or min(known) <= value <= max(known):
        return []
    return [f"{value:,} {what}, outside the {min(known):,}-{max(known):,} {what} of its records"]


def trial_reasons(system: str, probe: float, se: float, priors: dict, regime: dict, target: float) -> list[str]:
    """Why the priors are unsure of `system` on this set ([] = sure; the module docstring), given
    the probe's accuracy and standard error and the set's `regime` {"num_labels", "train_rows"}."""
    if not has_prior(system, priors):
        return [f"no prior record for {system}"]
    own = [r for r in priors["records"] if r["system"] == system]
    why = [f"{len(own)} prior record (a spread needs {MIN_PRIOR_RECORDS})"] if len(own) < MIN_PRIOR_RECORDS else []
    _, low, high = predicted_accuracy(system, probe, priors)
    if high - low > WIDE_PRIOR:
        why.append(f"its prior's range is {100 * (high - low):.1f} points wide (> {100 * WIDE_PRIOR:.0f})")
    records = prior_records(system, priors)
    why += _outside(regime["num_labels"], [r.get("num_labels") for r in records], "labels")
    why += _outside(regime["train_rows"], [r.get("train_rows") for r in records], "training rows")
    _, low, high = prior_band(system, probe, se, priors)
    if low <= target <= high:
        why.append(f"the target {100 * target:.1f}% lies within its predicted {100 * low:.1f}-{100 * high:.1f}%: "
                   "the pick depends on which side it falls")
    return why


def settle(band, trial: dict | None, use_trial: bool) -> dict | None:
    """The accuracy fields of a prior-based system's Prediction: the trial's where it ran and is to
    be used, else the prior band's; None with neither (the system is left out)."""
    if trial is not None and use_trial:
        return {"how": "trial", "accuracy": trial["accuracy"], "accuracy_low": trial["accuracy_low"],
                "accuracy_high": trial["accuracy_high"]}
    if band is None:
        return None
    return {"how": "prior", "accuracy": band[0], "accuracy_low": band[1], "accuracy_high": band[2]}


def uses_trial(mode: str, reasons: list[str]) -> bool:
    return mode == "always" or (mode == "auto" and bool(reasons))


def trial_decision(timed: Prediction, probe: float, se: float, priors: dict, regime: dict, target: float,
                   constraints: dict, mode: str) -> tuple[tuple | None, list[str], bool]:
    """(prior band, reasons to try, whether the trial's accuracy is to be used) for a fine-tune
    whose time and latency are predicted (`timed`); `constraints`: {"budget_s", "latency_s"}. One
    that the budget or latency rules out whatever its accuracy is not tried under `auto`."""
    band = prior_band(timed.system, probe, se, priors)
    if meets(timed, 0.0, constraints["budget_s"], constraints["latency_s"]):
        return band, [], mode == "always"
    reasons = trial_reasons(timed.system, probe, se, priors, regime, target)
    return band, reasons, uses_trial(mode, reasons)


def reprice(result: dict, priors: dict, mode: str) -> list[Prediction]:
    """A finished plan's predictions with its prior-based systems settled again under `priors` and
    the trial setting `mode`, from what the plan measured (its probe and the trials it ran: one it did
    not run is not used); a system left with neither a prior nor a trial is left out."""
    d, probe = result["data"], result["measurements"]["probe_accuracy"]
    se, regime = stderr(probe, d["validation"]), {"num_labels": d["num_labels"], "train_rows": d["train"]}
    out = []
    for p in (Prediction(**p) for p in result["predictions"]):
        if p.how == "measured":
            out.append(p)
            continue
        if p.system in result["calibration"]:  # a fine-tune
            band, _, use = trial_decision(p, probe, se, priors, regime, result["config"]["target"],
                                          result["constraints"], mode)
        else:
            band, use = prior_band(p.system, probe, se, priors), False
        fields = settle(band, result["trials"].get(p.system), use)
        if fields is not None:
            out.append(replace(p, **fields))
    return out


# ---------------------------------------------------------------- the measurement


def validation_sample(split: Split, rows: int, seed: int) -> Split:
    """The split, or about `rows` of it, stratified by label (seeded)."""
    if len(split) <= rows:
        return split
    keep = share_indices(split.labels, rows / len(split), np.random.default_rng(seed))
    return Split([split.texts[i] for i in keep], [split.labels[i] for i in keep])


def run_trial(recipe, data, e: dict, *, trial_steps: int, total_steps: int, device: str) -> dict:
    """Train the fine-tune RecipeConfig `recipe`'s first steps on `data` (the module docstring);
    `e`: core.plan.measure.measure_encoder's result (the probe's C and training embeddings). Returns
    the validation points, what they predict (`trial_accuracy`), the precision it ran at, and its cost."""
    steps, every = trial_schedule(total_steps, trial_steps)
    validation = validation_sample(data.validation, TRIAL_VALIDATION_ROWS, recipe.train.seed)
    train_cfg = replace(recipe.train, stop_after=steps if steps < total_steps else 0, eval_every=every,
                        patience=0, log_every=10**6)
    with CostLedger() as ledger, tempfile.TemporaryDirectory() as tmp:
        seed_everything(recipe.train.seed)  # as the run does (core.runs.scaffold): the trial is its prefix
        model = build_model(recipe, data.labels)
        if recipe.model.head_init == "probe":
            c = e["c"] if recipe.model.probe_c_search else recipe.model.probe_c
            init_head_from_probe(model, data.train.texts, LabelMap(data.labels).encode(data.train.labels), c=c,
                                 device=device, embeddings=e["train_embeddings"])
        result = fit(model, data.train, validation, train_cfg, device=device, run_dir=Path(tmp), progress=False)
    points = [(int(row["step"]), float(row["validation_accuracy"])) for row in result.history]
    return {"steps_run": result.steps, "total_steps": total_steps, "validate_every": every,
            "validation_rows": len(validation), "points": points,
            "precision": resolve_precision(train_cfg.mixed_precision, device),
            "seconds": ledger.cost.wall_seconds, "cpu_seconds": ledger.cost.cpu_seconds,
            **trial_accuracy(points, total_steps, len(validation))}
