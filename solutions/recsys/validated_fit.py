"""The fitting schedule of the recommenders trained on the core engine (solutions.recsys.sequential,
set_recommender): a validated run, then a refit on every training interaction.

1. Train a fresh model on `protocol.validation_split(split)` (the training histories cut again in
   time), validating NDCG@10 on that cut every `validate_every` steps, keeping the best weights and
   stopping after `patience` passes without improvement (core.engine.loop.Validation).
2. With `refit`, train another fresh model on the whole of `split` for the best step count.
The test windows are never read. `engine_run` is the one call into the engine both make (AdamW with
decay groups, the validation rows kept for the report).
Leaves out: the networks, their batches and their scoring (the recommenders themselves).
"""

from __future__ import annotations

from collections.abc import Callable

from core.engine.loop import Engine, LoopSettings, Validation, decay_groups
from solutions.recsys.protocol import RankingSplit, evaluate_scores, validation_split

METRIC = "ndcg@10"


def engine_run(step, micro_batch, settings: LoopSettings, *, lr: float, weight_decay: float, device: str,
               progress: bool, validation: Validation | None = None, **options):
    """Engine.run over `step` -> (LoopResult, the validation rows of its metrics log)."""
    rows = []
    result = Engine(device).run(step, decay_groups(step.named_parameters(), lr, weight_decay), micro_batch, settings,
                                validation=validation, progress=progress, metric_sinks=(rows.append,), **options)
    return result, [r for r in rows if f"validation_{METRIC}" in r]


def validated_then_refit(owner, split: RankingSplit, cfg, *, new_model: Callable[[RankingSplit], object],
                         train: Callable, first_options: dict | None = None,
                         refit_options: Callable[[int], dict] = lambda best: {}) -> dict:
    """Fit `owner.model` by the schedule above and return the fit report. `owner.score_users(cut)` scores
    with `owner.model`; `train(model, split, steps, validation, **options)` -> (LoopResult, history);
    `cfg` has steps, validate_every, patience and refit."""
    cut = validation_split(split)
    owner.model = new_model(cut)
    users = cut.eval_users()
    validation = None
    if users:
        validation = Validation(lambda: evaluate_scores(owner.score_users(cut), cut, users=users),
                                every=cfg.validate_every, metric=METRIC, patience=cfg.patience)
    first, history = train(owner.model, cut, cfg.steps, validation, **(first_options or {}))
    best = first.best_step if first.best_metric is not None else first.steps
    report = {f"validation_{METRIC}": first.best_metric, "best_step": best, "steps": first.steps,
              "stopped_early": first.stopped_early, "history": history, "train_seconds": first.train_seconds}
    if cfg.refit and best > 0:
        owner.model = new_model(split)
        second, _ = train(owner.model, split, best, None, **refit_options(best))
        report["refit_seconds"] = second.train_seconds
    owner.model.eval()
    return report
