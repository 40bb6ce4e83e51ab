import numpy as np
import pytest
import torch

from core.models.backbones import load_backbone
from core.models.classifier import LoraSettings, build_classifier, choose_probe_c, init_head_from_probe, load_classifier, save_classifier, save_merged_encoder
from core.models.encoder import length_batches, pool, token_batches
from tests.conftest import CARD, TRANSFER

TEXTS = CARD + TRANSFER
LABEL_IDS = [0] * len(CARD) + [1] * len(TRANSFER)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 4.0]]


def test_lora_trains_only_adapters_and_head():
    model = build_classifier(load_backbone("tiny"), ["card", "transfer"], peft="lora", lora=LoraSettings(r=2))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert model.trainable_parameters() < model.total_parameters() / 2


def test_probe_initialised_head_separates_training_data():
    model = build_classifier(load_backbone("tiny"), ["card", "transfer"])
    assert init_head_from_probe(model, TEXTS, LABEL_IDS, c=100.0) == 1.0
    assert (model.predict_proba(TEXTS).argmax(1) == np.array(LABEL_IDS)).mean() == 1.0


def _perturb_lora(model):
    with torch.no_grad():  # LoRA B starts at zero: make the adapter matter for the round trip
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)


def test_lora_model_reloads_with_its_head_and_merges_to_the_same_outputs(tmp_path):
    model = build_classifier(load_backbone("tiny"), ["card", "transfer", "refund"], peft="lora", lora=LoraSettings(r=2))
    _perturb_lora(model)
    with torch.no_grad():
        model.head.weight.normal_()
    expected = model.predict_proba(TEXTS)
    save_classifier(model, tmp_path / "model")
    names = {p.name for p in (tmp_path / "model").rglob("*") if p.is_file()}
    assert "head.safetensors" in names and "adapter_model.safetensors" in names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    merged = load_classifier(tmp_path / "model")  # merge=True by default
    unmerged = load_classifier(tmp_path / "model", merge=False)
    assert merged.labels == ["card", "transfer", "refund"]
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    # merging W + BA changes the float arithmetic (random large weights here): noise up to ~3e-5
    np.testing.assert_allclose(merged.predict_proba(TEXTS), expected, atol=2e-4)
    np.testing.assert_allclose(unmerged.predict_proba(TEXTS), expected, atol=1e-5)


def test_full_model_encoder_loads_in_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer

    model = build_classifier(load_backbone("tiny"), ["card", "transfer"])
    save_classifier(model, tmp_path / "model")
    st = SentenceTransformer(str(tmp_path / "model" / "encoder"), device="cpu")
    np.testing.assert_allclose(st.encode(TEXTS), model.encode(TEXTS), atol=1e-5)
    reloaded = load_classifier(tmp_path / "model")
    np.testing.assert_allclose(reloaded.predict_proba(TEXTS), model.predict_proba(TEXTS), atol=1e-6)


def test_merged_lora_encoder_is_a_plain_transformers_directory(tmp_path):
    from transformers import AutoModel

    model = build_classifier(load_backbone("tiny"), ["card", "transfer"], peft="lora", lora=LoraSettings(r=2))
    _perturb_lora(model)
    expected = model.encode(TEXTS)
    save_merged_encoder(model, tmp_path / "merged")
    plain = AutoModel.from_pretrained(tmp_path / "merged")
    batch = model.tokenize(TEXTS)
    with torch.no_grad():
        emb = pool(plain(**batch).last_hidden_state, batch["attention_mask"], "mean")
    # encode() batches by length, so padding differs from this one batch: float noise up to ~1e-5
    np.testing.assert_allclose(emb.numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("peft", ["none", "lora"])
def test_predict_proba_rows_sum_to_one_in_input_order(peft):
    model = build_classifier(load_backbone("tiny"), ["a", "b", "c"], peft=peft)
    texts = ["a much longer sentence about a card payment", "short"]
    probs = model.predict_proba(texts)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs[1], model.predict_proba(["short"])[0], atol=1e-6)


def test_length_batches_cover_every_index_once_with_bounded_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=500).tolist()
    batches = length_batches(lengths, batch_size=16, max_padding=0.1)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        assert 1 <= len(b) <= 16
        real = sum(lengths[i] for i in b)
        assert len(b) * max(lengths[i] for i in b) <= 1.1 * real + 1e-9
    # equal lengths fill whole batches; very different lengths never share one
    assert [len(b) for b in length_batches([8] * 40, batch_size=16)] == [16, 16, 8]
    assert len(length_batches([5, 50], batch_size=16)) == 2


def test_bucketed_inference_matches_one_text_at_a_time():
    model = build_classifier(load_backbone("tiny"), ["a", "b"], peft="none")
    texts = ["card", "a much longer sentence about a card payment that was declined twice", "transfer money",
             "my card", "where is the transfer i sent yesterday"]
    batches = list(token_batches(model.tokenizer, texts, model.max_length, batch_size=64))
    assert sorted(i for idx, _, _ in batches for i in idx) == list(range(len(texts)))
    for idx, ids, mask in batches:
        assert ids.shape == mask.shape and ids.dtype == np.int64
        assert (mask.sum(1) == [len(model.tokenizer(texts[i])["input_ids"]) for i in idx]).all()
    together = model.predict_logits(texts)
    alone = np.concatenate([model.predict_logits([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_probe_c_is_chosen_by_validation_accuracy():
    model = build_classifier(load_backbone("tiny"), ["card", "transfer"], peft="none")
    half = len(CARD) // 2
    train_texts, val_texts = CARD[:half] + TRANSFER[:half], CARD[half:] + TRANSFER[half:]
    train_ids = [0] * half + [1] * half
    val_ids = [0] * (len(CARD) - half) + [1] * (len(TRANSFER) - half)
    x, x_val = model.encode(train_texts), model.encode(val_texts)
    c, scores = choose_probe_c(x, train_ids, x_val, val_ids, grid=(100.0, 1e-6))
    assert list(scores) == [1e-6, 100.0]  # tried from the strongest regularisation up
    assert scores[100.0] > scores[1e-6] and c == 100.0
    c, _ = choose_probe_c(x, train_ids, x, train_ids, grid=(50.0, 100.0))
    assert c == 50.0  # both fit the training set: the tie goes to the smaller C
