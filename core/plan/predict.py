"""The planner's predictions: accuracy from a learning curve and the benchmark priors, and training
time from per-step measurements replayed over the run's own batches.

Accuracy: the frozen probe's learning curve (fit_learning_curve, curve_accuracy) extrapolated to the
full training set, and for fine-tunes the share of the probe's error they closed in our benchmark
records (priors.json: one record per system and data regime, summarised by `load_priors`;
`finetune_accuracy`). Time: a robust line of step seconds against padded tokens
(`step_time_line`), summed over the exact padded batches core.classify.train.fit would take
(`padded_tokens_per_step`, `run_steps`), plus the validation and checkpoint terms
(`finetune_seconds`, `finetune_times`). Pure functions over the measurements of core.plan.measure.
Leaves out: measuring (core.plan.measure) and choosing (core.plan.planner).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from core.classify.train import epoch_order
from core.foundation.errors import UserError

PRIORS_FILE = Path(__file__).with_name("priors.json")
# what a prior record measures: the share of the probe's error a fine-tune closed, or its accuracy minus the full fine-tune's
# ... or (the static tier) its accuracy minus the frozen probe's on the same rows
PRIOR_MEASURES = ("gap_closure", "offset_vs_full", "offset_vs_probe")
SHARES = (0.125, 0.25, 0.5, 1.0)


# ---------------------------------------------------------------- pure parts (unit-tested)


def fit_learning_curve(n: list[float], acc: list[float]) -> dict:
    """{'kind', 'params'} of accuracy(n) = a - b * n**-c (0 < a <= 1, b >= 0, 0.01 <= c <= 3),
    or of acc = alpha + beta * ln n when curve_fit fails or there are fewer than 3 points."""
    from scipy.optimize import curve_fit  # lazy: scipy costs start-up; only when used

    x, y = np.asarray(n, dtype=float), np.asarray(acc, dtype=float)
    if len(x) >= 3 and np.ptp(y) > 0:
        try:
            p, _ = curve_fit(lambda t, a, b, c: a - b * t ** -c, x, y, p0=(min(1.0, y.max() + 0.02), 1.0, 0.5),
                             bounds=([0.0, 0.0, 0.01], [1.0, np.inf, 3.0]), maxfev=20000)
            return {"kind": "power", "params": [float(v) for v in p]}
        except (RuntimeError, ValueError):
            pass
    beta, alpha = np.polyfit(np.log(x), y, 1) if len(x) >= 2 else (0.0, float(y.mean()))
    return {"kind": "log", "params": [float(alpha), float(beta)]}


def curve_accuracy(curve: dict, n: float) -> float:
    if curve["kind"] == "power":
        a, b, c = curve["params"]
        return float(min(1.0, max(0.0, a - b * n ** -c)))
    alpha, beta = curve["params"]
    return float(min(1.0, max(0.0, alpha + beta * math.log(n))))


def labels_for(curve: dict, target: float) -> float | None:
    """The label count at which the curve reaches `target` (None when it never does)."""
    if curve["kind"] == "power":
        a, b, c = curve["params"]
        return None if a <= target else (b / (a - target)) ** (1 / c) if b > 0 else 1.0
    alpha, beta = curve["params"]
    return math.exp((target - alpha) / beta) if beta > 0 and target < 1 else None


EXTRAPOLATION_FACTOR = 4  # the learning curve is read up to this many times the labels it was fitted on


def labels_needed(curve: dict, target: float, n_fitted: int) -> dict:
    """{"labels", "note"}: the label count at which the probe's curve reaches `target`, only when it
    is within EXTRAPOLATION_FACTOR x the `n_fitted` labels the curve was fitted on (None beyond:
    a power law fitted on n/8..n says little about 100n), and a note saying which case it is."""
    need, limit = labels_for(curve, target), EXTRAPOLATION_FACTOR * n_fitted
    if need is None:
        return {"labels": None, "note": "the probe's learning curve levels off below the target"}
    if need > limit:
        return {"labels": None, "note": f"the probe would need more than {limit:,} labels ({EXTRAPOLATION_FACTOR}x the "
                                        f"{n_fitted:,} its learning curve was fitted on), beyond where the curve is read"}
    return {"labels": need, "note": f"the probe reaches the target at about {need:,.0f} labels (the learning curve, "
                                    f"read within {EXTRAPOLATION_FACTOR}x the {n_fitted:,} labels it was fitted on)"}


def finetune_accuracy(probe: float, closure: float) -> float:
    """A fine-tune that closes `closure` of the probe's error: probe + closure * (1 - probe)."""
    return probe + closure * (1.0 - probe)


def spread(values: list[float]) -> dict:
    """{"mean", "min", "max", "n"} of the values one prior is recorded with."""
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values), "n": len(values)}


def load_priors(path: Path = PRIORS_FILE, *, without_domain: str = "") -> dict:
    """The planner's priors from priors.json's records (one measured value per system, measure and
    data regime: its label count and training rows, its domain, and the benchmark record it comes from):
    {"source", "records", "pending", "gap_closure": {system: spread}, "offset_vs_full": {system: spread},
    "offset_vs_probe": {system: spread}}; `pending` lists priors with no record yet (the static tier's
    until benchmarks/static_tier.py has run), which the planner leaves out with that reason.
    `without_domain`: leave out the records of that domain (benchmarks/plan_validation.py's
    leave-one-domain-out check: priors fitted without the set's own domain). A system left with
    no record has no prior (`has_prior`)."""
    try:
        data = json.loads(Path(path).read_text())
        records = [r for r in data["records"] if not without_domain or r["domain"] != without_domain]
        values: dict[str, dict[str, list[float]]] = {measure: {} for measure in PRIOR_MEASURES}
        for record in records:
            values[record["measure"]].setdefault(record["system"], []).append(float(record["value"]))
        priors = {measure: {system: spread(v) for system, v in by.items()} for measure, by in values.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"planner priors {path} are missing or malformed ({exc}); regenerate them with "
                        f"`python -m benchmarks.frontier`") from None
    return {"source": data.get("source"), "records": records, "pending": data.get("pending", []),
            "without_domain": without_domain, **priors}


def has_prior(system: str, priors: dict) -> bool:
    """Whether `predicted_accuracy` can predict `system` from these priors."""
    if system in priors["offset_vs_full"]:
        return "full" in priors["gap_closure"]
    return system in priors["gap_closure"] or system in priors["offset_vs_probe"]


def predicted_accuracy(system: str, probe: float, priors: dict) -> tuple[float, float, float]:
    """(point, low, high) prior accuracy of a fine-tune `system` given the probe's accuracy."""
    if system in priors["gap_closure"]:
        g = priors["gap_closure"][system]
        return tuple(finetune_accuracy(probe, g[k]) for k in ("mean", "min", "max"))
    if system in priors["offset_vs_full"]:
        o = priors["offset_vs_full"][system]
        full = predicted_accuracy("full", probe, priors)
        return tuple(min(1.0, max(0.0, f + o[k])) for f, k in zip(full, ("mean", "min", "max")))
    if system in priors.get("offset_vs_probe", {}):
        o = priors["offset_vs_probe"][system]
        return tuple(min(1.0, max(0.0, probe + o[k])) for k in ("mean", "min", "max"))
    raise UserError(f"no prior for {system!r}")


def padded_tokens_per_step(lengths, batch_size: int, seed: int, steps: int, group_by_length: bool = True) -> np.ndarray:
    """Batch size x longest sequence of each of the first `steps` optimizer steps of core.classify.train.fit
    (grad_accum 1), replaying its epoch order (core.classify.train.epoch_order)."""
    lengths = np.asarray(lengths)
    per_epoch = math.ceil(len(lengths) / batch_size)
    out, order, epoch = np.zeros(steps), None, -1
    for step in range(steps):
        e, offset = divmod(step, per_epoch)
        if e != epoch:
            order, epoch = epoch_order(lengths, batch_size, seed, e, group_by_length), e
        batch = lengths[order[offset * batch_size:(offset + 1) * batch_size]]
        out[step] = len(batch) * batch.max()
    return out


def run_steps(n_train: int, batch_size: int, epochs: float, eval_every: int = 0) -> tuple[int, int]:
    """(optimizer steps, validation passes) of core.classify.train.fit without early stopping: a pass every
    `eval_every` steps (0 = once per epoch) and one at the last step."""
    per_epoch = math.ceil(n_train / batch_size)
    steps = math.ceil(epochs * per_epoch)
    every = eval_every or max(1, per_epoch)
    return steps, steps // every + (1 if steps % every else 0)


def step_time_line(seconds, padded_tokens) -> tuple[float, float]:
    """(a, b) of step seconds = a + b x padded tokens: a Theil-Sen line (the median of pairwise
    slopes, then the median residual; robust to a few slow steps), clipped to a, b >= 0; with one distinct token count, or a
    negative slope, the median seconds per token through the origin."""
    from scipy.stats import theilslopes  # lazy: scipy costs start-up; only when used

    t, x = np.asarray(seconds, dtype=float), np.asarray(padded_tokens, dtype=float)
    if len(t) >= 3 and np.ptp(x) > 0:
        slope = theilslopes(t, x)[0]
        intercept = float(np.median(t - slope * x))  # median residual: robust where scipy's median(y) - slope median(x) is not
        if slope >= 0 and intercept >= 0:
            return float(intercept), float(slope)
        if slope > 0:  # the line crosses zero above 0 tokens: keep its slope, no negative overhead
            return 0.0, float(np.median(t / x))
    return 0.0, float(np.median(t / x))


def finetune_seconds(*, fixed_s: float, step_line: tuple[float, float], step_tokens, validations: int,
                     validation_s: float, checkpoint_s: float) -> float:
    """Predicted ledger wall of a fine-tune: fixed work (warm-up, head, tokenising) + each step's
    a + b x padded tokens + validations x (validation pass + checkpoint)."""
    a, b = step_line
    return fixed_s + float(np.sum(a + b * np.asarray(step_tokens, dtype=float))) + validations * (validation_s + checkpoint_s)


def frozen_times(system: str, e: dict, load_s: float) -> dict:
    """Predicted ledger and run seconds of the probe or zero-shot recipe from core.plan.measure's
    timed steps (module docstring), with each part."""
    m = e["times"]
    ledger = m["warmup"] + (m["encode_train"] + m["encode_validation"] + m["c_search"] + m["head_fit"]
                            if system == "probe" else e["zeroshot_cost"].wall_seconds)
    test_pass = m["validation_pass"] * e["tokens"]["test"] / max(e["tokens"]["validation"], 1)
    parts = {"setup": load_s + m["setup"], "ledger": ledger, "validation_passes": 2 * m["validation_pass"],
             "test_pass": test_pass, "save_drift_plots": m["save"] + m["drift"] + m["plots"]}
    return {"train_seconds": ledger, "run_seconds": sum(parts.values()), "parts": parts}


def finetune_times(cal: dict, e: dict, train_cfg, load_s: float) -> dict:
    """Predicted ledger and run seconds of a fine-tune recipe from its calibration (module docstring)."""
    m, c = e["times"], cal["times"]
    numbers, seconds = np.asarray(cal["step_numbers"]), np.asarray(cal["step_seconds"])
    tokens, validated = np.asarray(cal["step_padded_tokens"]), np.asarray(cal["validated"])
    steady = (numbers >= 3) & ~validated
    line = step_time_line(seconds[steady], tokens[steady])
    a, b = line
    checkpoint_s = max(0.0, float(np.median(seconds[validated] - (a + b * tokens[validated]) - cal["tiny_validation_s"])))
    steps, validations = run_steps(len(e["train_lengths"]), train_cfg.batch_size, train_cfg.epochs, train_cfg.eval_every)
    step_tokens = padded_tokens_per_step(e["train_lengths"], train_cfg.batch_size, train_cfg.seed, steps,
                                         train_cfg.group_by_length)
    per_token, tok = cal["validation_s_per_token"], e["tokens"]
    ratio = per_token / max(e["encode_s_per_token"], 1e-12)
    fixed = m["warmup"] + m["encode_train"] * ratio + m["head_fit"] + m["tokenize_train"]
    validation_s = per_token * tok["validation"]
    ledger = finetune_seconds(fixed_s=fixed, step_line=line, step_tokens=step_tokens, validations=validations,
                              validation_s=validation_s, checkpoint_s=checkpoint_s)
    parts = {"setup": load_s + c["setup"], "head_and_tokenize": fixed,
             "optimizer_steps": float(np.sum(a + b * step_tokens)), "validations": validations * validation_s,
             "checkpoints": validations * checkpoint_s, "validation_passes": 2 * validation_s,
             "test_pass": per_token * tok["test"], "save_drift_plots": c["save"] + m["drift"] + m["plots"] + c["loss_plot"]}
    return {"train_seconds": ledger, "run_seconds": sum(parts.values()), "parts": parts,
            "steps": steps, "validations_predicted": validations, "step_line_a_b": [a, b],
            "checkpoint_s": checkpoint_s, "forward_ratio_vs_frozen": ratio,
            "step_tokens": token_range(tokens[steady], step_tokens)}


def token_range(calibrated, run) -> dict:
    """Where the step-time line is read: the padded tokens of the calibration steps it was fitted
    on, those of the run's steps, and the share of the run's steps outside the calibrated range
    (their time is the line extended, not a measurement)."""
    calibrated, run = np.asarray(calibrated, dtype=float), np.asarray(run, dtype=float)
    low, high = float(calibrated.min()), float(calibrated.max())
    return {"calibrated": [low, high], "run": [float(run.min()), float(run.max())],
            "share_outside": float(np.mean((run < low) | (run > high)))}


def static_times(s: dict, e: dict, load_s: float) -> dict:
    """Predicted ledger and run seconds of the static recipe from core.plan.measure.measure_static (`s`)
    and the probe's measurements (`e`): ledger = distillation + encoding train and validation + the
    head (the probe's C search and fit, timed on the encoder's wider embeddings: an upper bound);
    the run adds loading the backbone, saving the table, and the drift baseline and plots."""
    m = e["times"]
    ledger = s["distill_seconds"] + s["times"]["encode"] + m["c_search"] + m["head_fit"]
    parts = {"setup": load_s + m["setup"], "ledger": ledger,
             "save_drift_plots": s["times"]["save"] + m["drift"] + m["plots"]}
    return {"train_seconds": ledger, "run_seconds": sum(parts.values()), "parts": parts}
