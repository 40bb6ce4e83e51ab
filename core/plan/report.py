"""The plan as text: the table of predictions, the recommendation, where each extrapolation is read
(`extrapolations`: every number read off a fitted line or curve says the range it was fitted on),
what the trial fine-tunes measured and cost, the precision fine-tunes were priced at; and, after
`--run`, predicted vs actual (`outcome`, `format_outcome`).

Leaves out: making the plan (core.plan.planner) and its plot (core.plan.plot).
"""

from __future__ import annotations

from core.plan.predict import EXTRAPOLATION_FACTOR


def _range(pair) -> str:
    return f"{pair[0]:,.0f}-{pair[1]:,.0f}"


def extrapolations(result: dict) -> list[str]:
    """One line per place the plan reads a fitted line or curve, with the range it was fitted on
    and the range it is read at (none is read further than EXTRAPOLATION_FACTOR x the fitted range
    where the reading is a curve)."""
    points, n = result["learning_curve"]["points"], result["data"]["train"]
    lines = [(f"learning curve: fitted on {points[0][0]:,}-{points[-1][0]:,} labels; read at most at "
              f"{EXTRAPOLATION_FACTOR * n:,} ({EXTRAPOLATION_FACTOR}x): the more-labels rows and the labels needed")]
    for name, parts in result["time_parts"].items():
        tokens = parts.get("step_tokens")
        if tokens:
            lines.append(f"{name} step time: a line through calibration steps of {_range(tokens['calibrated'])} "
                         f"padded tokens; the run's steps span {_range(tokens['run'])} "
                         f"({100 * tokens['share_outside']:.0f}% outside, read off the line extended)")
        scaled = parts.get("distillation_scaled")
        if scaled:
            lines.append(f"{name} distillation time: timed on {scaled['sample_tokens']:,} vocabulary tokens, scaled to "
                         f"all {scaled['vocabulary']:,}")
    for name, trial in result.get("trials", {}).items():
        lines.append(f"{name} trial: {trial['note']}")
    lines.append("validation and test passes: timed on up to 64 validation rows, scaled by token count")
    return lines


def trial_lines(result: dict) -> list[str]:
    """What each trial fine-tune measured and why it ran, what the prior said, and what trials cost;
    and the fine-tunes the priors are unsure of that were not tried (trial=never)."""
    lines, trials = [], result.get("trials", {})
    for name, trial in trials.items():
        band = result["prior_bands"].get(name)
        prior = f"{100 * band[0]:.1f}% ({100 * band[1]:.1f}-{100 * band[2]:.1f})" if band else "none"
        why = "; ".join(trial["reasons"]) or "trial=always"
        lines.append(f"  {name}: trial fine-tune of {trial['steps_run']} of the run's {trial['total_steps']} steps "
                     f"({trial['seconds']:.0f} s, {trial['precision']}), validated on {trial['validation_rows']} rows: "
                     f"{100 * trial['accuracy']:.1f}%; prior {prior}; tried because {why}")
    for name, reasons in result.get("trial_reasons", {}).items():
        if reasons and name not in trials:
            lines.append(f"  {name}: the prior is unsure ({'; '.join(reasons)}), not tried (trial="
                         f"{result['config']['trial']}): its accuracy is the prior's")
    if trials:
        spent = sum(t["seconds"] for t in trials.values())
        lines.append(f"  planning took {result['plan_seconds']:.0f} s, of which trial fine-tunes {spent:.0f} s "
                     "(trial=never skips them: fine-tunes then rest on the priors)")
    return lines


def precision_line(result: dict) -> list[str]:
    p = result.get("precision")
    if not p:
        return []
    priced = sorted(set(p["priced"].values()))
    native = "" if "cpu_bf16" not in p else (
        " (this CPU has native bf16)" if p["cpu_bf16"]["native"] else " (this CPU has no native bf16)")
    return [(f"  fine-tunes priced at {', '.join(priced)}: mixed_precision={p['mixed_precision']} resolves to "
             f"{p['resolved']} on {p['device']}{native}; the calibration steps and trials ran at it")]


def _table(result: dict) -> list[str]:
    cfg = result["config"]
    lines = [f"plan for {cfg['data']}: {result['data']['train']} training / {result['data']['validation']} validation "
             f"rows, {result['data']['num_labels']} labels; target {100 * cfg['target']:.1f}%"
             + (f", budget {cfg['budget']}" if cfg["budget"] else "") + (f", latency {cfg['latency']}" if cfg["latency"] else ""),
             (f"prices: ${result['prices']['usd_per_core_hour']}/core-hour, ${result['prices']['usd_per_gpu_hour']}/GPU-hour "
              "(assumed defaults unless VERTICALS_USD_PER_CORE_HOUR / _GPU_HOUR are set)"), "",
             (f"{'system':9s} {'how':8s} {'accuracy (range)':20s} {'train s':>8s} {'run s':>7s} {'train $':>9s} {'peak MB':>8s} "
              f"{'p50 ms':>7s} {'$/1M pred':>9s}  meets")]
    for p in result["predictions"]:
        why = result["why_not"][p["system"]]
        lines.append(f"{p['system']:9s} {p['how']:8s} {100 * p['accuracy']:5.1f}% ({100 * p['accuracy_low']:4.1f}-"
                     f"{100 * p['accuracy_high']:4.1f})  {p['train_seconds']:8.1f} {p.get('run_seconds', 0):7.1f} {p['train_usd']:9.5f} "
                     f"{p['peak_rss_mb']:8.0f} {p['p50_ms']:7.2f} {p['usd_per_million']:9.3f}  "
                     + ("yes" if not why else "no: " + "; ".join(why)))
    return lines + [""]


def format_plan(result: dict) -> str:
    lines = _table(result)
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
    lines += trial_lines(result) + precision_line(result)
    lines.append("  how: measured = on your validation split; trial = a trial fine-tune's validation curve on your data; "
                 "prior = from our benchmark records, not a measurement (see core/plan/planner.py)")
    lines.append("  train s = the run's cost-ledger seconds (what train $ prices); run s = the whole run, with its final evaluation")
    lines.append("extrapolations (each read within the range stated):")
    lines += [f"  {line}" for line in extrapolations(result)]
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
        (f"  accuracy  predicted {100 * p['accuracy']:.1f}% ({100 * p['accuracy_low']:.1f}-{100 * p['accuracy_high']:.1f}); "
         f"actual validation {100 * a['validation_accuracy']:.1f}% ({err['validation_points']:+.1f} points), "
         f"test {100 * a['test_accuracy']:.1f}% ({err['test_points']:+.1f} points)"),
        f"  train s   predicted {p['train_seconds']:.1f}; actual {a['train_seconds']:.1f} ({pct(err['train_seconds'])})",
        f"  run s     predicted {p['run_seconds']:.1f}; actual {a['run_seconds']:.1f} ({pct(err['run_seconds'])})"])
