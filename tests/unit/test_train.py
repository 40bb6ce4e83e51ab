import json

import pytest
import torch

from core.models.backbones import load_backbone
from core.classify.config import TrainConfig
from core.data.splits import Split
from core.models.classifier import LoraSettings, build_classifier
from core.classify.train import class_weight_tensor, fit, has_checkpoint
from tests.conftest import CARD, TRANSFER

TRAIN = Split((CARD + TRANSFER) * 2, (["card"] * len(CARD) + ["transfer"] * len(TRANSFER)) * 2)
VAL = Split(CARD + TRANSFER, ["card"] * len(CARD) + ["transfer"] * len(TRANSFER))


def _model(peft="none", seed=0):
    torch.manual_seed(seed)
    return build_classifier(load_backbone("tiny"), ["card", "transfer"], peft=peft, lora=LoraSettings(r=2))


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_balanced_class_weights_by_hand():
    # 3 of class 0, 1 of class 1, none of class 2: n / (k * count)
    w = class_weight_tensor([0, 0, 0, 1], 3)
    assert w.tolist() == pytest.approx([4 / (3 * 3), 4 / (3 * 1), 0.0])


def test_fit_learns_two_separable_intents(tmp_path):
    model = _model()
    cfg = TrainConfig(epochs=15, lr=1e-3, head_lr=1e-2, batch_size=8, patience=0, warmup=0.0)
    result = fit(model, TRAIN, VAL, cfg, run_dir=tmp_path, progress=False)
    assert result.best_metric == 1.0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in rows if "train_loss" in r]
    assert losses[-1] < losses[0]


def test_early_stopping_stops_when_validation_does_not_improve(tmp_path):
    cfg = TrainConfig(epochs=50, lr=1e-9, head_lr=1e-9, batch_size=8, patience=2, eval_every=1, warmup=0.0)
    result = fit(_model(), TRAIN, VAL, cfg, run_dir=tmp_path, progress=False)
    assert result.stopped_early and result.steps == 3 and result.best_step == 1


def test_model_is_left_at_its_best_checkpoint(tmp_path):
    seen = {}

    def remember(state):
        seen[state["step"]] = _weights(model)

    model = _model()
    cfg = TrainConfig(max_steps=6, lr=5e-3, head_lr=5e-2, batch_size=4, eval_every=2, patience=0)
    result = fit(model, TRAIN, VAL, cfg, run_dir=tmp_path, progress=False, callbacks=(remember,))
    final = _weights(model)
    assert all(torch.equal(final[n], seen[result.best_step][n]) for n in final)


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=4, grad_accum=3, patience=0)
    result = fit(_model(), TRAIN, VAL, cfg, run_dir=tmp_path, progress=False)
    # 24 examples / batch 4 = 6 micro-batches per epoch; 3 per optimizer step -> 2 steps, 24 samples
    assert result.steps == 2 and result.samples_seen == 24


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("peft", ["none", "lora"])
def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, peft):
    cfg = TrainConfig(max_steps=6, lr=5e-3, head_lr=5e-2, batch_size=4, eval_every=2, patience=0)
    torch.manual_seed(1)
    straight = _model(peft)
    fit(straight, TRAIN, VAL, cfg, run_dir=tmp_path / "a", progress=False)

    def crash(state):
        if state["step"] == 3:  # one step past the checkpoint at step 2
            raise Interrupt

    torch.manual_seed(1)
    interrupted = _model(peft)
    with pytest.raises(Interrupt):
        fit(interrupted, TRAIN, VAL, cfg, run_dir=tmp_path / "b", progress=False, callbacks=(crash,))
    assert has_checkpoint(tmp_path / "b")
    torch.manual_seed(99)  # a fresh process: different RNG, fresh model
    resumed = _model(peft, seed=5)
    result = fit(resumed, TRAIN, VAL, cfg, run_dir=tmp_path / "b", resume=True, progress=False)
    assert result.steps == 6
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # rows written after the checkpoint were dropped, not duplicated


def _crash_at(step: int):
    def crash(state):
        if state["step"] == step:
            raise Interrupt
    return crash


def test_checkpoints_are_safetensors_only(tmp_path):
    cfg = TrainConfig(max_steps=2, batch_size=4, eval_every=1, patience=0)
    with pytest.raises(Interrupt):  # stopped after the checkpoint of step 1: one to resume training from
        fit(_model(), TRAIN, VAL, cfg, run_dir=tmp_path, progress=False, callbacks=(_crash_at(1),))
    files = {p.name for p in (tmp_path / "checkpoint").iterdir()}
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    best = set() if state["best_is_trainable"] else {"best.safetensors"}  # one file when they are the same
    assert files == {"trainable.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"} | best


def test_the_checkpoint_after_the_last_step_keeps_only_the_weights_the_run_ends_with(tmp_path):
    # nothing resumes training from it: no optimizer (2/3 of a full fine-tune's bytes), schedule or second weights
    cfg = TrainConfig(max_steps=6, lr=5e-3, head_lr=5e-2, batch_size=4, eval_every=2, patience=0)
    model = _model()
    with pytest.raises(Interrupt):  # a crash after the loop, before the model is saved
        fit(model, TRAIN, VAL, cfg, run_dir=tmp_path, progress=False, callbacks=(_crash_at(6),))
    assert {p.name for p in (tmp_path / "checkpoint").iterdir()} == {"trainable.safetensors", "rng.safetensors",
                                                                   "state.json"}
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["finished"] and state["step"] == 6 and not state["stopped_early"]
    straight = _model()
    expected = fit(straight, TRAIN, VAL, cfg, run_dir=tmp_path / "straight", progress=False)
    resumed = _model(seed=5)
    result = fit(resumed, TRAIN, VAL, cfg, run_dir=tmp_path, resume=True, progress=False)
    assert (result.steps, result.best_step, result.best_metric, result.samples_seen) == \
        (6, expected.best_step, expected.best_metric, expected.samples_seen)
    a, b = _weights(straight), _weights(resumed)  # the best weights, restored
    assert all(torch.equal(a[n], b[n]) for n in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 6  # nothing trained or logged again


def test_a_run_stopped_early_resumes_stopped_and_takes_no_step(tmp_path):
    cfg = TrainConfig(epochs=50, lr=1e-9, head_lr=1e-9, batch_size=8, patience=2, eval_every=1, warmup=0.0)
    with pytest.raises(Interrupt):
        fit(_model(), TRAIN, VAL, cfg, run_dir=tmp_path, progress=False, callbacks=(_crash_at(3),))
    result = fit(_model(seed=5), TRAIN, VAL, cfg, run_dir=tmp_path, resume=True, progress=False)
    assert result.stopped_early and result.steps == 3 and result.best_step == 1


def test_resuming_a_finished_checkpoint_with_more_steps_is_refused(tmp_path):
    from core.foundation.errors import UserError

    fit(_model(), TRAIN, VAL, TrainConfig(max_steps=2, batch_size=4, eval_every=1, patience=0), run_dir=tmp_path,
        progress=False)
    with pytest.raises(UserError, match="finished at step 2.*4 steps"):
        fit(_model(), TRAIN, VAL, TrainConfig(max_steps=4, batch_size=4, eval_every=1, patience=0), run_dir=tmp_path,
            resume=True, progress=False)


def test_the_best_weights_are_written_once_when_they_are_the_current_ones(tmp_path):
    from core.engine.checkpoint import load_checkpoint, save_checkpoint, trainable_state
    from core.engine.loop import LoopSettings
    from core.engine.schedule import optimizer_and_schedule

    module = torch.nn.Linear(3, 2)
    optimizer, scheduler = optimizer_and_schedule([{"params": list(module.parameters()), "lr": 0.1}],
                                                  LoopSettings(steps=4))
    module(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    current = trainable_state(module)
    save_checkpoint(tmp_path / "same", current, optimizer, scheduler, {"step": 1}, dict(current))
    older = {k: v + 1 for k, v in current.items()}
    save_checkpoint(tmp_path / "older", current, optimizer, scheduler, {"step": 1}, older)
    assert not (tmp_path / "same" / "best.safetensors").exists() and (tmp_path / "older" / "best.safetensors").exists()
    for name, expected in (("same", current), ("older", older)):
        restored = {}
        state, best = load_checkpoint(tmp_path / name, restored.update, optimizer, scheduler)
        assert "best_is_trainable" not in state and state["step"] == 1
        assert all(torch.equal(best[k], expected[k]) for k in expected)
        assert all(torch.equal(restored[k], current[k]) for k in current)


def test_validation_label_unknown_to_the_model_fails_before_training(tmp_path):
    from core.foundation.errors import UserError

    bad = Split(["hello"], ["refund"])
    with pytest.raises(UserError, match="never seen in training"):
        fit(_model(), TRAIN, bad, TrainConfig(max_steps=1), run_dir=tmp_path, progress=False)
