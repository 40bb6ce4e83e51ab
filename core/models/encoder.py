"""One sentence encoder: texts -> pooled (optionally L2-normalised) embeddings, the way a backbone says.

Every text model of the package (core.models.classifier.TextClassifier, core.models.zeroshot.ZeroShotClassifier, the
recsys item encoder, the finance monitor through them) embeds texts here, so they batch, pool and
normalise alike:
- inference tokenises the whole list once (`encode_ids`: ids straight from a fast tokenizer), groups
  texts of similar token length into batches (`length_batches`), pads each batch only to its own
  longest text and returns rows in input order;
- pooling (`cls`, `mean`, `max`) and normalisation come from the backbone (its sentence-transformers
  modules.json, read by core.models.backbones), so a fine-tuned model pools the way it was pre-trained;
- `tokenize` + `embed` are the training side: dynamic padding, gradients kept.
Leaves out: heads and losses (core.models.classifier, the trainers), devices (the caller moves the encoder and
names the device), and the ONNX runtime twin (core.export.onnx, which reuses `token_batches`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from core.foundation.errors import UserError

POOLING_MODES = ("cls", "mean", "max")


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Sentence embedding from token states [B, T, H] and attention mask [B, T]: the first token
    (`cls`), the mean over real tokens (`mean`) or their element-wise maximum (`max`)."""
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def length_batches(lengths: list[int], batch_size: int, max_padding: float = 0.1) -> list[list[int]]:
    """Indices grouped into batches of similar token length, for inference.

    On CPU the cost of a batch is close to linear in its padded tokens, so padding a 12-token
    query to a 50-token neighbour costs four times its own work (measured on BANKING77 with the
    int8 ONNX router: 444 texts/s one by one, 224 in random batches of 16). Texts are sorted by
    length, and a batch closes when it holds `batch_size` texts or when adding the next (longer)
    text would make padding more than `max_padding` of the batch's tokens.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current, tokens = [], [], 0
    for i in order:
        n = lengths[i]
        if current and (len(current) == batch_size or (len(current) + 1) * n > (1 + max_padding) * (tokens + n)):
            batches.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += n
    if current:
        batches.append(current)
    return batches


def right_pad(token_ids: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id lists to the longest one: (input_ids, attention_mask), int64 [B, T]."""
    width = max(len(ids) for ids in token_ids)
    ids = np.full((len(token_ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(token_ids), width), dtype=np.int64)
    for row, seq in enumerate(token_ids):
        ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = 1
    return ids, mask


# One tokenizer call at a time: the truncation is set on the tokenizer's shared Rust object (by us or by
# transformers), and two threads doing so at once fail with "Already borrowed" (a service runs batches
# on several threads).
_TOKENIZE = threading.Lock()


def encode_ids(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids per text, special tokens added, truncated at `max_length`: what
    `tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]` returns. A fast tokenizer
    is called through its Rust backend (one `encode_batch`, ids only), set up the way transformers sets
    it for that call: transformers' own wrapper builds a full per-text encoding in Python (masks,
    type ids, offsets) that inference throws away, a cost per text as large as the Rust encoding."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    with _TOKENIZE:
        if backend is None or not getattr(tokenizer, "is_fast", False):
            return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        target = {"max_length": max_length, "stride": 0, "strategy": "longest_first",
                  "direction": tokenizer.truncation_side}
        current = backend.truncation
        if current is None or {key: current.get(key) for key in target} != target:
            backend.enable_truncation(**target)
        if backend.padding is not None:
            backend.no_padding()
        split = bool(getattr(tokenizer, "split_special_tokens", False))
        if backend.encode_special_tokens != split:
            backend.encode_special_tokens = split
        return [encoding.ids for encoding in backend.encode_batch(list(texts), add_special_tokens=True)]


def token_batches(tokenizer, texts: list[str], max_length: int,
                  batch_size: int) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
    """Yield (indices, input_ids, attention_mask) as int64 arrays, right-padded, one batch of
    similar lengths at a time (see `length_batches`); tokenizes once (`encode_ids`), truncating at max_length."""
    if not texts:
        return
    encoded = encode_ids(tokenizer, texts, max_length)
    pad_id = tokenizer.pad_token_id or 0
    for idx in length_batches([len(ids) for ids in encoded], batch_size):
        yield idx, *right_pad([encoded[i] for i in idx], pad_id)


class SentenceEncoder:
    """`encoder` (a transformers model: `last_hidden_state` out) + its tokenizer + pooling.

    Holds references, not copies: training `encoder` elsewhere changes what this encodes. Not an
    nn.Module, so wrapping an encoder in it changes no parameter names or saved state dicts.
    """

    def __init__(self, encoder: nn.Module, tokenizer, *, pooling: str, normalize: bool, max_length: int):
        if pooling not in POOLING_MODES:
            raise UserError(f"unknown pooling '{pooling}'; choose one of {', '.join(POOLING_MODES)} "
                            f"(the backbone's 1_Pooling/config.json sets it)")
        if int(max_length) < 1:
            raise UserError(f"max_length must be a positive number of tokens; got {max_length}")
        self.encoder, self.tokenizer = encoder, tokenizer
        self.pooling, self.normalize, self.max_length = pooling, bool(normalize), int(max_length)

    @classmethod
    def from_backbone(cls, backbone, max_length: int | None = None,
                      normalize: bool | None = None) -> SentenceEncoder:
        """Pooling, normalisation and max length as the core.models.backbones.Backbone declares them;
        `max_length` / `normalize` override the backbone's when given."""
        return cls(backbone.encoder, backbone.tokenizer, pooling=backbone.pooling,
                   normalize=backbone.normalize if normalize is None else normalize,
                   max_length=backbone.max_length if max_length is None else max_length)

    @property
    def dim(self) -> int:
        return int(self.encoder.config.hidden_size)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Dynamic padding (to the longest text of this batch), truncation at max_length: for training."""
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra) -> torch.Tensor:
        """[B, dim] pooled (and, if set, normalised) embeddings, with gradients."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        emb = pool(hidden, attention_mask, self.pooling)
        return nn.functional.normalize(emb, dim=-1) if self.normalize else emb

    def encode(self, texts: list[str], *, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
        """[len(texts), dim] float32 embeddings in input order; (0, dim) for no texts."""
        return self.map_batches(texts, lambda batch: self.embed(**batch), self.dim,
                                batch_size=batch_size, device=device)

    def map_batches(self, texts: list[str], fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                    width: int, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
        """[len(texts), width] float32: `fn` applied to length-bucketed batches (a dict with
        `input_ids` and `attention_mask` on `device`, -> [B, width]), rows put back in input order.

        Runs without gradients with the encoder in eval mode (dropout off), and restores the
        encoder's train/eval mode afterwards, also when `fn` raises. `fn` must not depend on
        modules outside the encoder being in eval mode (e.g. apply a head, not its dropout).
        """
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1; got {batch_size}")
        out = np.zeros((len(texts), width), dtype=np.float32)
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            with torch.no_grad():
                for idx, ids, mask in token_batches(self.tokenizer, texts, self.max_length, batch_size):
                    batch = {"input_ids": torch.from_numpy(ids).to(device),
                             "attention_mask": torch.from_numpy(mask).to(device)}
                    out[idx] = fn(batch).float().cpu().numpy()
        finally:
            self.encoder.train(was_training)
        return out
