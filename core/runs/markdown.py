"""report.md: a run's report.json written out for a person to read.

`render_markdown(report)` turns the report dict into sections: what the run is (recipe, mode,
backbone, data, when, how long), the data as a table, metrics per split, the test split's
most-confused class pairs and worst classes by F1 (a 150-class confusion matrix alone says
little), calibration and out-of-scope detection with the split each number comes from, the cost
with units, and the plots with captions that name their split and row count. Every section reads
only the keys it needs with defaults, so reports of older versions (fewer keys) and of other
tasks (the recsys item encoder: interactions and a loss, no labels) render what they hold and
skip the rest. Hand-written because it is a few string tables over our own report layout (a
template engine or pandas' `to_markdown` would add a dependency, not remove code). Leaves out:
computing anything (metrics come from core.evaluation.metrics / core.confidence.calibrate / core.confidence.ood, recorded by the
recipes) and the plots themselves (core.evaluation.metrics, core.confidence.calibrate).
"""

from __future__ import annotations

import math

import numpy as np

MOST_CONFUSED = 10  # pairs listed from the test confusion matrix
WORST_CLASSES = 10  # classes listed by F1 (at most half of them, so a 12-class run keeps its best ones out)
PERCENT_METRICS = {"accuracy": "accuracy", "macro_f1": "macro-F1"}
CORE_DATA_KEYS = {"name", "num_labels", "train", "validation", "test", "train_used",
                  "out_of_scope_rows_set_aside", "source_sha256"}


def render_markdown(report: dict) -> str:
    """report.md for `report` (a run's report.json dict); missing sections are left out."""
    sections = [_header(report), _data_section(report), _metrics_section(report), _errors_section(report),
                _confidence_section(report), _zeroshot_section(report), _training_section(report),
                _cost_section(report)]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


# ---------------------------------------------------------------- number formats

def _pct(x, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def _num(x, digits: int = 4) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "-" if x is None else str(x)
    return f"{x:,}" if isinstance(x, int) else f"{x:.{digits}f}"


def _rows(n) -> str:
    return f"{n:,} rows" if isinstance(n, int) else "rows unknown"


def _duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes} min {sec} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _count_short(n: int) -> str:
    """22742861 -> 22.7M; below a million the exact count."""
    return f"{n / 1e6:.1f}M" if n >= 1_000_000 else f"{n:,}"


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """The lines of a markdown table; cells as str() gives them (format them first)."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])



# ---------------------------------------------------------------- sections

def _model_line(model: dict) -> str:
    peft = model.get("peft")
    text = f"backbone `{model.get('backbone', '?')}`"
    if peft == "lora":
        text += f", LoRA adapters (r {model.get('lora_r', '?')}, alpha {model.get('lora_alpha', '?')})"
    elif peft == "none":
        text += ", every weight trained"
    elif peft:
        text += f", peft `{peft}`"
    return text


def _header(report: dict) -> list[str]:
    cfg, cost, env = report.get("config") or {}, report.get("cost") or {}, report.get("environment") or {}
    data = report.get("data") or {}
    lines = [f"# Run report: {cfg.get('name') or 'unnamed run'}", ""]
    if cfg.get("description"):
        lines += [cfg["description"], ""]
    kind = ", ".join(f"{k} `{cfg[k]}`" for k in ("task", "mode") if cfg.get(k))
    if cfg.get("name") or kind:
        lines.append(f"- **recipe**: `{cfg.get('name') or 'unnamed'}`" + (f" ({kind})" if kind else ""))
    if cfg.get("model"):
        lines.append(f"- **model**: {_model_line(cfg['model'])}")
    source = (cfg.get("data") or {}).get("source")
    if data.get("name") or source:
        named = f"`{data.get('name') or source}`"
        lines.append(f"- **data**: {named}" + (f" (source `{source}`)" if source and source != data.get("name") else ""))
    when = report.get("finished_at") or report.get("created_at")
    if when:
        lines.append(f"- **finished**: {when}")
    if "wall_seconds" in cost:
        took = f"{_duration(cost['wall_seconds'])} wall"
        train_seconds = (report.get("fit") or {}).get("train_seconds")
        if train_seconds:
            took += f", of which {_duration(train_seconds)} in the training loop"
        lines.append(f"- **took**: {took}")
    if env:
        packages = env.get("packages") or {}
        where = [env.get("device") or "", f"{env['cpus']} CPU cores" if env.get("cpus") else "",
                 f"load average {env['load_average_1_5_15'][0]}" if env.get("load_average_1_5_15") else "",
                 ", ".join(f"{p} {v}" for p, v in packages.items() if v and p in ("torch", "transformers"))]
        lines.append(f"- **ran on**: {'; '.join(w for w in where if w)}")
    return lines


def _split_notes(name: str, report: dict) -> str:
    """What became of an extra evaluation set (scored for out-of-scope detection, scored, skipped)."""
    if f"out_of_scope_{name}" in (report.get("confidence") or {}):
        return "out-of-scope rows: scored for out-of-scope detection"
    if name in (report.get("skipped_evaluations") or {}):
        return f"not evaluated: {report['skipped_evaluations'][name]}"
    if name in (report.get("metrics") or {}):
        return "extra labelled set: scored like test"
    return ""


def _data_section(report: dict) -> list[str]:
    data, card = report.get("data") or {}, report.get("data_card") or {}
    if not data:
        return []
    lines = ["## Data", ""]
    if "train" in data or "test" in data:
        test_classes = sum(1 for c in (report.get("per_class_test") or {}).values() if c.get("support"))
        aside = data.get("out_of_scope_rows_set_aside") or {}
        oos_label = (report.get("config") or {}).get("data", {}).get("oos_label") or "out-of-scope"
        rows = []
        for split in ("train", "validation", "test"):
            if split not in data:
                continue
            classes = data.get("num_labels", "-") if split == "train" else (
                test_classes or "-") if split == "test" else "-"
            notes = []
            if split == "train" and "train_used" in data:
                notes.append(f"training used {data['train_used']:,} of them")
            if aside.get(split):
                notes.append(f"{aside[split]:,} `{oos_label}` rows set aside (not a class)")
            rows.append([split, f"{data[split]:,}", classes, "; ".join(notes)])
        for name, n in data.items():
            if name not in CORE_DATA_KEYS and isinstance(n, int):
                rows.append([name, f"{n:,}", "-", _split_notes(name, report)])
        lines += markdown_table(["split", "rows", "classes", "note"], rows)
        if data.get("num_labels"):
            lines += ["", f"The classifier predicts {data['num_labels']} classes (the training split's labels)."]
    else:  # another task's data summary (e.g. recsys: items, interactions, users)
        lines += markdown_table(["quantity", "count"], [[k, _num(v)] for k, v in data.items()
                                                if k != "name" and isinstance(v, (int, float))])
    card_lines = [f"- {key}: {str(card[key]).strip()}" for key in ("license", "citation", "url") if card.get(key)]
    if card_lines:
        lines += ["", f"Data card `{card.get('name') or data.get('name')}`:", *card_lines]
    return lines


def _metric_names(metrics: dict) -> list[str]:
    names = []
    for m in metrics.values():
        names += [k for k, v in (m or {}).items() if k != "n" and isinstance(v, (int, float)) and k not in names]
    return [k for k in PERCENT_METRICS if k in names] + [k for k in names if k not in PERCENT_METRICS]


def _metrics_section(report: dict) -> list[str]:
    metrics = report.get("metrics") or {}
    names = _metric_names(metrics)
    if not names:
        return []
    rows = [[split, _num(m.get("n")), *(_pct(m.get(k)) if k in PERCENT_METRICS else _num(m.get(k)) for k in names)]
            for split, m in metrics.items()]
    lines = ["## Metrics", "", *markdown_table(["split", "rows", *(PERCENT_METRICS.get(k, k) for k in names)], rows)]
    fit = report.get("fit") or {}
    if fit.get("metric") and isinstance(fit.get("best_metric"), (int, float)):
        best = (f"Best validation {fit['metric']}: {_pct(fit['best_metric'])} at step {fit.get('best_step')} "
                f"of {fit.get('steps')}{' (stopped early)' if fit.get('stopped_early') else ''}.")
        lines += ["", best]
    return lines


def most_confused_pairs(matrix, labels: list[str], top: int = MOST_CONFUSED) -> list[tuple[str, str, int, float]]:
    """(true label, predicted label, count, count / rows of the true class) for the `top` largest
    off-diagonal cells of a [true, predicted] count matrix; ties by share, then label order."""
    m = np.asarray(matrix, dtype=np.int64)
    row_totals = m.sum(axis=1)
    cells = [(int(m[i, j]), m[i, j] / row_totals[i], i, j) for i, j in zip(*np.nonzero(m)) if i != j]
    cells.sort(key=lambda c: (-c[0], -c[1], c[2], c[3]))
    return [(labels[i], labels[j], count, float(share)) for count, share, i, j in cells[:top]]


def _errors_section(report: dict) -> list[str]:
    matrix, labels = report.get("confusion_matrix_test"), report.get("labels")
    per_class = report.get("per_class_test") or {}
    if not (matrix and labels) and not per_class:
        return []
    n_test = (report.get("metrics") or {}).get("test", {}).get("n")
    if n_test is None and matrix:
        n_test = int(np.asarray(matrix).sum())
    lines = [f"## Errors on the test split ({_rows(n_test)})"]
    if matrix and labels and len(matrix) == len(labels):
        pairs = most_confused_pairs(matrix, labels)
        lines += ["", f"Most confused pairs (true class -> predicted class, top {MOST_CONFUSED}):", ""]
        lines += markdown_table(["true", "predicted", "count", "share of the true class' rows"],
                        [[f"`{t}`", f"`{p}`", c, _pct(s, 1)] for t, p, c, s in pairs]) if pairs else \
            ["No test row was misclassified."]
    scored = [(lab, c) for lab, c in per_class.items() if c.get("support")]  # a class absent from test has no F1
    imperfect = [(lab, c) for lab, c in scored if c.get("f1", 0.0) < 1.0]
    if imperfect:
        worst = sorted(imperfect, key=lambda lc: (lc[1].get("f1", 0.0), -lc[1]["support"], lc[0]))
        worst = worst[:min(WORST_CLASSES, max(1, len(scored) // 2))]
        lines += ["", f"Worst classes by F1 (the {len(worst)} lowest of {len(scored)} classes):", ""]
        lines += markdown_table(["class", "F1", "precision", "recall", "test rows"],
                        [[f"`{lab}`", _pct(c.get("f1"), 1), _pct(c.get("precision"), 1), _pct(c.get("recall"), 1),
                          c["support"]] for lab, c in worst])
    if matrix or (report.get("config") or {}).get("task") == "classification":
        lines += _plot("confusion_matrix.png", f"Confusion matrix, test split ({_rows(n_test)}); each row "
                                               f"normalised by its true class' rows")
    return lines


def _plot(file: str, caption: str) -> list[str]:
    return ["", f"![{file.removesuffix('.png').replace('_', ' ')}]({file})", "", f"*{caption}.*"]


def _confidence_section(report: dict) -> list[str]:
    conf = report.get("confidence") or {}
    if not conf:
        return []
    n_val = (report.get("data") or {}).get("validation")
    n_test = (report.get("metrics") or {}).get("test", {}).get("n") or (report.get("data") or {}).get("test")
    fitted_on = conf.get("temperature_fitted_on", n_val)
    lines = ["## Calibration and out-of-scope detection", ""]
    if "temperature" in conf:
        lines.append(f"- temperature {conf['temperature']:.3f}, fitted on the validation split ({_rows(fitted_on)})")
    if "test_ece_before" in conf:
        lines.append(f"- expected calibration error on the test split ({_rows(n_test)}): "
                     f"{_num(conf['test_ece_before'])} before temperature scaling, "
                     f"{_num(conf.get('test_ece_after'))} after")
    if conf.get("temperature_note"):
        lines.append(f"- note: {conf['temperature_note']}")
    if "ood_scorer" in conf:
        recall = conf.get("ood_target_in_scope_recall")
        lines.append(f"- out-of-scope scorer `{conf['ood_scorer']}`, threshold {_num(conf.get('ood_threshold'))}: "
                     f"set on the validation split to keep {_pct(recall, 0)} of its in-scope rows")
    if conf.get("ood_note"):
        lines.append(f"- note: {conf['ood_note']}")
    sets = {k[len("out_of_scope_"):]: v for k, v in conf.items() if k.startswith("out_of_scope_") and isinstance(v, dict)}
    if sets:
        lines += ["", ("Out-of-scope detection at that threshold, on each out-of-scope set against the in-scope "
                       "test rows:"), ""]
        lines += markdown_table(["out-of-scope set", "out-of-scope rows", "in-scope test rows", "AUROC",
                         "out-of-scope recall (handed over)", "in-scope recall (kept)"],
                        [[f"`{name}`", _num(v.get("n_out_of_scope")), _num(v.get("n_in_scope")), _num(v.get("auroc")),
                          _pct(v.get("out_of_scope_recall"), 1), _pct(v.get("in_scope_recall"), 1)]
                         for name, v in sets.items()])
    if "test_ece_before" in conf:
        lines += _plot("reliability.png", f"Reliability diagram, test split ({_rows(n_test)}): accuracy against "
                                          f"confidence, before and after temperature scaling")
    return lines


def _zeroshot_section(report: dict) -> list[str]:
    zeroshot = report.get("zeroshot")
    if not zeroshot:
        return []
    return ["## Zero-shot", "",
            (f"- descriptions: {zeroshot.get('descriptions', '-')}; starting temperature "
             f"{zeroshot.get('temperature', '-')} (probabilities: {zeroshot.get('probabilities', '-')})"),
            f"- labelled data used: {zeroshot.get('labelled_data_used', '-')}"]


def _training_section(report: dict) -> list[str]:
    fit, data = report.get("fit") or {}, report.get("data") or {}
    lines = []
    probe = report.get("probe") or {}
    if "c" in probe:
        lines.append(f"- linear-probe head: C = {probe['c']} (chosen on the validation split)")
    if not fit.get("steps"):
        mode = (report.get("config") or {}).get("mode")
        frozen = (f"- no gradient steps{f' (mode `{mode}`)' if mode else ''}: the encoder stays frozen and the "
                  f"head is set directly (a linear probe, or label prototypes)")
        return ["## Training", "", *lines, frozen] if fit else []
    if "pairs" in fit:  # the recsys item encoder: co-consumption pairs, no validation split
        lines.append(f"- {fit['steps']:,} steps on {fit['pairs']:,} co-consumption pairs ({fit.get('samples', 0):,} "
                     f"pairs seen){', stopped by the time limit' if fit.get('stopped_by_time') else ''}"
                     f"{', ' + str(fit['processes']) + ' processes' if fit.get('processes', 1) > 1 else ''}")
        first, last = fit.get("loss_first") or [], fit.get("loss_last") or []
        if first and fit["steps"] <= len(first) + len(last):  # first and last overlap: every step's loss
            losses = first + last[len(first) + len(last) - fit["steps"]:]
            lines.append(f"- training loss by step: {', '.join(f'{x:.4f}' for x in losses)}")
        elif first and last:
            lines.append(f"- training loss {np.mean(first):.4f} (first {len(first)} steps) -> {np.mean(last):.4f} "
                         f"(last {len(last)})")
        caption = f"Training loss by step, on {fit['pairs']:,} co-consumption pairs (no validation split)"
    else:
        n_train = data.get("train_used", data.get("train"))
        lines.append(f"- {fit['steps']:,} optimizer steps{' (stopped early)' if fit.get('stopped_early') else ''}")
        caption = (f"Training curve: training loss by step (training split, {_rows(n_train)}) and validation "
                   f"{fit.get('metric', 'metric')} (validation split, {_rows(data.get('validation'))})")
    return ["## Training", "", *lines, *_plot("loss_curve.png", caption)]


COST_ROWS = {"wall_seconds": "wall time", "cpu_seconds": "CPU time", "peak_rss_mb": "peak memory (RSS)",
             "train_samples": "training samples seen", "tokens_seen": "tokens seen"}


def _cost_section(report: dict) -> list[str]:
    cost = report.get("cost") or {}
    if not cost:
        return []
    rows = []
    for key, name in COST_ROWS.items():
        value = cost.get(key)
        if not isinstance(value, (int, float)) or (key in ("train_samples", "tokens_seen") and not value):
            continue  # a counter left at 0 was not counted by this run's trainer
        if key.endswith("seconds"):
            text = _duration(value)
        elif key == "peak_rss_mb":
            text = f"{value:,.0f} MB"
        else:
            text = f"{value:,}"
        if key == "train_samples" and cost.get("train_samples_per_second"):
            text += f" ({cost['train_samples_per_second']:,.1f} per second of wall time)"
        rows.append([name, text])
    total, trainable = cost.get("total_params"), cost.get("trainable_params")
    if isinstance(total, int) and total:
        share = (trainable or 0) / total
        params = f"{trainable or 0:,} of {_count_short(total)} ({_pct(share, 2 if 0 < share < 0.01 else 1)})"
        rows.insert(3, ["trainable parameters", params])
    known = set(COST_ROWS) | {"total_params", "trainable_params", "train_samples_per_second", "trainable_fraction"}
    rows += [[key, _num(value)] for key, value in cost.items() if key not in known]
    return ["## Cost", "", *markdown_table(["item", "value"], rows)]
