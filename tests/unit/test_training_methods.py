"""Adversarial training, EMA, layer-wise LR decay, gradual unfreezing and IA3: each changes what it should."""

import pytest
import torch
from safetensors.torch import load_file

from core.engine.adversarial import FGM, PGD, build_adversary, project_l2
from core.models.backbones import load_backbone
from core.classify.config import TrainConfig, build_recipe
from core.data.splits import LabelMap
from core.engine.ema import EMA
from core.foundation.errors import UserError
from core.engine.layerwise import GradualUnfreezing, layer_index, lr_scale
from core.models.classifier import LoraSettings, build_classifier, load_classifier, save_classifier
from core.classify.train import _param_groups, fit
from tests.unit.test_train import TRAIN, VAL, Interrupt, _crash_at, _weights


def _model(peft="none", seed=0):
    torch.manual_seed(seed)
    return build_classifier(load_backbone("tiny"), ["card", "transfer"], peft=peft, lora=LoraSettings(r=2))


def _batch(model, n=4):
    batch = model.tokenize(TRAIN.texts[:n])
    target = torch.tensor(LabelMap(model.labels).encode(TRAIN.labels[:n]))
    return batch, target


def _loss(model, batch, target):
    return torch.nn.functional.cross_entropy(model(**batch), target)


# ---------------------------------------------------------------- adversarial

def test_l2_projection_by_hand():
    delta = torch.tensor([[[3.0, 4.0]], [[0.3, 0.4]]])  # norms 5 and 0.5
    out = project_l2(delta, 1.0)
    assert out[0].flatten().tolist() == pytest.approx([0.6, 0.8])  # scaled onto the ball
    assert out[1].flatten().tolist() == pytest.approx([0.3, 0.4])  # inside: unchanged


@pytest.mark.parametrize("peft", ["none", "lora"])
def test_fgm_leaves_embedding_weights_untouched_and_adds_gradient(peft):
    model = _model(peft)
    model.train()
    torch.manual_seed(1)
    model.dropout.p = 0.0
    embeddings = model.encoder.get_input_embeddings()
    before = embeddings.weight.detach().clone()
    batch, target = _batch(model)
    fgm = FGM(embeddings, epsilon=1.0)
    _loss(model, batch, target).backward()
    clean_grad = model.head.weight.grad.clone()
    adv_loss = fgm.attack(lambda: _loss(model, batch, target))
    fgm.remove()
    assert torch.equal(embeddings.weight.detach(), before)  # weights never written
    assert not torch.equal(model.head.weight.grad, clean_grad)  # the adversarial pass added its gradient
    model.eval()
    with torch.no_grad():
        clean_eval = _loss(model, batch, target)
    assert adv_loss > 0 and torch.isfinite(adv_loss)
    assert fgm.delta is None and fgm.clean is None  # nothing left armed after the attack
    # hook removed: the model computes exactly what a fresh copy with the same weights computes
    with torch.no_grad():
        assert torch.allclose(_loss(model, batch, target), clean_eval)


def test_fgm_perturbation_raises_the_loss_and_has_norm_epsilon():
    model = _model()
    model.eval()  # no dropout: the only difference between passes is the perturbation
    batch, target = _batch(model)
    with torch.enable_grad():
        fgm = FGM(model.encoder.get_input_embeddings(), epsilon=0.5)
        clean = _loss(model, batch, target)
        clean.backward()
        grad = fgm.clean.grad.detach()
        seen = {}
        adv = fgm.attack(lambda: (seen.setdefault("delta", fgm.delta.clone()), _loss(model, batch, target))[1])
    norms = seen["delta"].flatten(1).norm(dim=1)
    assert norms.tolist() == pytest.approx([0.5] * len(norms), rel=1e-4)
    assert torch.allclose(seen["delta"] / 0.5 * grad.flatten(1).norm(dim=1).view(-1, 1, 1), grad, atol=1e-5)
    assert adv.item() > clean.item()


def test_pgd_stays_in_the_epsilon_ball_and_beats_one_small_step():
    model = _model()
    model.eval()
    batch, target = _batch(model)
    pgd = PGD(model.encoder.get_input_embeddings(), epsilon=0.5, alpha=0.2, steps=4)
    seen = []
    _loss(model, batch, target).backward()
    pgd.attack(lambda: (seen.append(pgd.delta.clone()), _loss(model, batch, target))[1])
    assert len(seen) == 4  # 3 inner ascent passes + the final one
    assert all((d.flatten(1).norm(dim=1) <= 0.5 + 1e-5).all() for d in seen)
    with torch.no_grad():
        losses = []
        for delta in (seen[0], seen[-1]):
            pgd.delta, pgd._keep = delta, False
            with torch.enable_grad():
                losses.append(_loss(model, batch, target).item())
        pgd.delta = None
    assert losses[1] > losses[0]  # more ascent steps: a stronger attack
    pgd.remove()


def test_fit_with_adversarial_training_learns_and_saves_a_clean_model(tmp_path):
    for kind in ("fgm", "pgd"):
        model = _model()
        cfg = TrainConfig(epochs=15, lr=1e-3, head_lr=1e-2, batch_size=8, patience=0, warmup=0.0,
                          adversarial=kind, adv_epsilon=0.5, adv_steps=2)
        result = fit(model, TRAIN, VAL, cfg, run_dir=tmp_path / kind, progress=False)
        assert result.best_metric == 1.0
        assert not model.encoder.get_input_embeddings()._forward_hooks  # the hook is gone after fit


def test_unknown_adversarial_method_is_a_config_error():
    with pytest.raises(UserError, match="adversarial"):
        build_recipe({}, {"adversarial": "fgsm"})
    with pytest.raises(ValueError, match="epsilon"):
        build_adversary("fgm", _model().encoder, epsilon=0.0, alpha=0.1, steps=1)


# ---------------------------------------------------------------- EMA

def test_ema_by_hand():
    layer = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    ema = EMA(layer, decay=0.5)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    ema.update()  # first decay = min(0.5, 1/10) = 0.1: 0.1 * 0 + 0.9 * 1
    assert ema.shadow["weight"].item() == pytest.approx(0.9)
    with ema.applied():
        assert layer.weight.item() == pytest.approx(0.9)
    assert layer.weight.item() == 1.0  # raw weights back after the block


def test_fit_with_ema_keeps_the_averaged_weights(tmp_path):
    seen = {}

    def remember(state):
        seen[state["step"]] = _weights(model)

    model = _model()
    cfg = TrainConfig(max_steps=6, lr=5e-3, head_lr=5e-2, batch_size=4, eval_every=3, patience=0, ema_decay=0.9)
    result = fit(model, TRAIN, VAL, cfg, run_dir=tmp_path, progress=False, callbacks=(remember,))
    final = _weights(model)
    raw = seen[result.best_step]  # callbacks see the raw weights
    assert any(not torch.equal(final[n], raw[n]) for n in final)  # what was kept is not the raw weights
    # the finished checkpoint holds the weights kept (the EMA ones) and no EMA state: nothing trains on from it
    assert not (tmp_path / "checkpoint" / "ema.safetensors").exists()
    kept = load_file(tmp_path / "checkpoint" / "trainable.safetensors")
    assert all(torch.equal(kept[n], final[n]) for n in final)
    with pytest.raises(Interrupt):  # one to resume training from holds the EMA state
        fit(_model(), TRAIN, VAL, cfg, run_dir=tmp_path / "mid", progress=False, callbacks=(_crash_at(3),))
    assert (tmp_path / "mid" / "checkpoint" / "ema.safetensors").is_file()
    save_classifier(model, tmp_path / "model")
    again = load_classifier(tmp_path / "model")
    assert torch.equal(again.head.weight, model.head.weight)  # the EMA weights are the ones saved


def test_ema_decay_must_be_below_one():
    with pytest.raises(UserError, match="below 1"):
        build_recipe({}, {"ema_decay": "1.0"})


# ---------------------------------------------------------------- layer-wise

def test_layer_index_and_lr_scale_by_hand():
    assert layer_index("encoder.embeddings.word_embeddings.weight", 2) == 0
    assert layer_index("encoder.encoder.layer.0.attention.self.query.weight", 2) == 1
    assert layer_index("encoder.base_model.model.encoder.layer.1.output.dense.lora_A.default.weight", 2) == 2
    assert layer_index("head.weight", 2) is None
    assert lr_scale("encoder.embeddings.word_embeddings.weight", 2, 0.5) == 0.25  # 0.5 ** (2 - 0)
    assert lr_scale("encoder.encoder.layer.1.output.dense.weight", 2, 0.5) == 1.0  # the top block
    assert lr_scale("head.weight", 2, 0.5) == 1.0


def test_layer_decay_gives_each_depth_its_learning_rate():
    model = _model()
    cfg = TrainConfig(lr=1e-3, head_lr=1e-2, layer_decay=0.5)
    lrs = {}
    for group in _param_groups(model, cfg):
        for p in group["params"]:
            lrs[id(p)] = group["lr"]
    names = dict(model.named_parameters())
    layers = model.encoder.config.num_hidden_layers
    assert lrs[id(names["head.weight"])] == 1e-2
    assert lrs[id(names["encoder.embeddings.word_embeddings.weight"])] == pytest.approx(1e-3 * 0.5 ** layers)
    top = f"encoder.encoder.layer.{layers - 1}.output.dense.weight"
    assert lrs[id(names[top])] == pytest.approx(1e-3)
    # off by default: two encoder groups and the head, as before
    assert len(_param_groups(model, TrainConfig())) == 3


def test_gradual_unfreezing_opens_the_top_first(tmp_path):
    model = _model()
    layers = model.encoder.config.num_hidden_layers
    unfreezing = GradualUnfreezing(model, layers, every=2)
    assert unfreezing.trainable_depths(0) == set() and unfreezing.trainable_depths(1) == set()
    assert unfreezing.trainable_depths(2) == {layers}
    assert unfreezing.trainable_depths(4) == {layers, layers - 1}
    start = _weights(model)
    cfg = TrainConfig(max_steps=2, lr=1e-2, head_lr=1e-2, batch_size=4, patience=0, unfreeze_every=2,
                      warmup=0.0, eval_every=1)
    fit(model, TRAIN, VAL, cfg, run_dir=tmp_path, progress=False)
    after = _weights(model)
    changed = {n for n in after if not torch.equal(after[n], start[n])}
    assert changed and all(n.startswith("head.") for n in changed)  # only the head trained so far


# ---------------------------------------------------------------- IA3

def test_ia3_trains_few_parameters_and_round_trips(tmp_path):
    model = _model("ia3")
    lora = _model("lora")
    assert 0 < model.trainable_parameters() < lora.trainable_parameters()
    cfg = TrainConfig(epochs=3, lr=3e-2, head_lr=1e-2, batch_size=8, patience=0, warmup=0.0)
    fit(model, TRAIN, VAL, cfg, run_dir=tmp_path, progress=False)
    save_classifier(model, tmp_path / "model")
    assert (tmp_path / "model" / "adapter" / "adapter_model.safetensors").is_file()
    again = load_classifier(tmp_path / "model")  # merged on load: plain BERT
    texts = VAL.texts[:4]
    assert torch.allclose(torch.tensor(again.predict_proba(texts)), torch.tensor(model.predict_proba(texts)), atol=1e-5)
