"""The engine's pieces that a trainer relies on, checked by hand."""

import torch

from core.engine.loop import batch_count, decay_groups, shard, to_device


def test_batch_count_reads_samples_and_real_tokens_of_dicts_pairs_and_batch_encodings():
    from transformers import BatchEncoding

    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    single = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": mask}
    assert batch_count(single) == (2, 3)
    assert batch_count(BatchEncoding(single)) == (2, 3)  # a UserDict, not a dict
    assert batch_count((single, BatchEncoding(single))) == (2, 6)  # pairs: samples once, tokens of both sides


def test_to_device_turns_batch_encodings_into_dicts_of_tensors():
    from transformers import BatchEncoding

    moved = to_device((BatchEncoding({"input_ids": torch.ones(1, 2)}), [torch.zeros(1)]), "cpu")
    assert isinstance(moved[0], dict) and torch.equal(moved[0]["input_ids"], torch.ones(1, 2))


def test_shard_gives_each_process_an_interleaved_equal_slice():
    idx = list(range(8))
    assert shard(idx, rank=0, world=2) == [0, 2, 4, 6] and shard(idx, rank=1, world=2) == [1, 3, 5, 7]
    assert shard(idx, rank=0, world=1) == idx


def test_decay_groups_skip_biases_layernorms_and_frozen_weights():
    layer = torch.nn.Linear(2, 2)
    norm = torch.nn.LayerNorm(2)
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    named = [("dense.weight", layer.weight), ("dense.bias", layer.bias), ("LayerNorm.weight", norm.weight),
             ("frozen.weight", frozen.weight)]
    decay, no_decay = decay_groups(named, lr=0.1, weight_decay=0.01)
    assert decay["params"] == [layer.weight] and decay["weight_decay"] == 0.01
    assert no_decay["params"] == [layer.bias, norm.weight] and no_decay["weight_decay"] == 0.0


def test_the_schedules_are_transformers_multipliers_and_state_step_for_step():
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    from core.engine.loop import LoopSettings
    from core.engine.schedule import optimizer_and_schedule

    def lrs(scheduler, steps=12):
        out = []
        for _ in range(steps):
            out.append(scheduler.get_last_lr()[0])
            scheduler.optimizer.step()
            scheduler.step()
        return out

    for schedule, theirs in (("linear", lambda opt: get_linear_schedule_with_warmup(opt, 3, 10)),
                             ("constant", lambda opt: get_constant_schedule_with_warmup(opt, 3))):
        ours = optimizer_and_schedule([{"params": [torch.nn.Parameter(torch.ones(2))], "lr": 0.1}],
                                      LoopSettings(steps=10, warmup=0.3, schedule=schedule))[1]
        reference = theirs(torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))], lr=0.1))
        assert lrs(ours) == lrs(reference)  # exactly: the same formulas
        assert ours.state_dict() == reference.state_dict()  # checkpoints written with either load into the other


def test_stop_after_runs_the_first_steps_of_the_whole_schedule():
    from core.engine.loop import Engine, LoopSettings

    def run(steps, stop_after=0):
        torch.manual_seed(0)
        layer = torch.nn.Linear(1, 1, bias=False)
        weights = []
        result = Engine("cpu", "no").run(
            _LossOf(layer), [{"params": list(layer.parameters()), "lr": 0.1}], lambda m: {"x": torch.ones(1, 1)},
            LoopSettings(steps=steps, warmup=0.2, stop_after=stop_after), progress=False,
            callbacks=(lambda state: weights.append(layer.weight.item()),))
        return result.steps, weights

    assert run(10)[0] == 10
    steps, weights = run(10, stop_after=4)
    assert steps == 4 and weights == run(10)[1][:4]  # the whole run's first 4 steps, exactly
    assert weights != run(4)[1]  # not a 4-step run (its warm-up and decay span 4 steps)


class _LossOf(torch.nn.Module):
    """loss = |w x|: a step for the engine over a single weight."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, batch):
        return self.layer(batch["x"]).abs().sum()
