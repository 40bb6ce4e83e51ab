"""Self-supervised domain adaptation: masked-language-model continued pre-training of a backbone.

`adapt_backbone(name, texts, out_dir, cfg)` trains BERT's MLM objective on unlabelled in-domain
text (transformers' `DataCollatorForLanguageModeling`: 15% of tokens chosen, 80/10/10
mask/random/keep; the vocabulary projection runs on the chosen tokens only, which halves the
cost of a step on MiniLM) and writes a backbone directory (safetensors + tokenizer + sentence-transformers
files) that any recipe takes as `backbone=<dir>`.

The MLM head. A `BertForMaskedLM` is built from the backbone's config and its encoder weights
are copied in. Its decoder is tied to the word embeddings, so only the head's transform
(dense + LayerNorm) and output bias can be missing. all-MiniLM-L6-v2 ships no MLM head (it was
distilled, then trained contrastively), so those start fresh; gradients from a random head
would drag the encoder around, so the first `head_warmup_steps` train the head alone (encoder
frozen) before the whole model trains. When the backbone ships its head (`cls.predictions.*` in
its weights) it is used and the warm-up is skipped.

The output keeps the backbone's pooling/normalisation files: adaptation changes weights, not how
sentences are pooled. Leaves out: whole-word masking, span masking, other objectives (SimCSE, TSDAE).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.engine.loop import Engine, LoopSettings, decay_groups, shard
from core.foundation import distributed
from core.foundation.cost import CostLedger
from core.foundation.errors import UserError
from core.models.backbones import load_backbone, write_sentence_transformers_files


@dataclass(frozen=True)
class AdaptConfig:
    max_steps: int = 300  # optimizer steps over the whole model (after the head warm-up)
    head_warmup_steps: int = 50  # head-only steps, used only when the MLM head starts fresh
    batch_size: int = 32
    lr: float = 5e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.06  # fraction of max_steps with linear learning-rate warm-up
    mlm_probability: float = 0.15
    max_length: int = 128
    seed: int = 0


@dataclass
class AdaptResult:
    output_dir: Path
    losses: list[float]  # one per optimizer step, head warm-up steps first
    head_was_fresh: bool
    cost: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)


def _masked_lm(backbone):
    """BertForMaskedLM carrying the backbone's encoder weights; True if its MLM head is fresh."""
    from transformers import BertForMaskedLM  # lazy: transformers costs seconds of start-up

    if backbone.encoder.config.model_type != "bert":
        raise UserError(f"domain adaptation supports BERT-family backbones; '{backbone.name}' is "
                        f"'{backbone.encoder.config.model_type}'. Use minilm, tiny or a BERT directory.")
    head_state = {}
    weights = Path(backbone.path) / "model.safetensors"
    if weights.is_file():
        from safetensors.torch import load_file  # lazy: safetensors.torch pulls in torch

        head_state = {k: v for k, v in load_file(weights).items() if k.startswith("cls.predictions.")}
    mlm = BertForMaskedLM(backbone.encoder.config)
    missing, _ = mlm.bert.load_state_dict(backbone.encoder.state_dict(), strict=False)
    if [k for k in missing if "position_ids" not in k]:
        raise RuntimeError(f"encoder weights did not fit BertForMaskedLM: missing {missing[:5]}")
    head_fresh = not any(k.startswith("cls.predictions.transform") for k in head_state)
    if head_state:
        mlm.load_state_dict(head_state, strict=False)
    mlm.tie_weights()
    return mlm, head_fresh


def _batches(texts: list[str], batch_size: int, rng: np.random.Generator):
    """Endless shuffled batches of texts (a fresh permutation per pass)."""
    while True:
        order = rng.permutation(len(texts))
        for start in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
            yield [texts[i] for i in order[start:start + batch_size]]


def adapt_backbone(backbone_name: str, texts: list[str], out_dir: Path, cfg: AdaptConfig = AdaptConfig(),
                   *, device: str = "cpu", progress: bool = True) -> AdaptResult:
    """MLM continued pre-training of `backbone_name` on `texts`; writes a backbone dir to `out_dir`."""
    import torch  # lazy: torch costs seconds of start-up

    texts = [t.strip() for t in texts if t and t.strip()]
    if len(texts) < 2:
        raise UserError(f"domain adaptation needs unlabelled texts; got {len(texts)}. Give a file "
                        f"with at least a few hundred in-domain sentences.")
    backbone = load_backbone(backbone_name)
    if backbone.tokenizer.mask_token is None:
        raise UserError(f"backbone '{backbone_name}' has a tokenizer without a [MASK] token; MLM needs one")
    # A forked, seeded RNG: the fresh head's init and dropout repeat; the caller's RNG is untouched.
    with torch.random.fork_rng(devices=[]), CostLedger() as ledger:
        torch.manual_seed(cfg.seed)
        mlm, head_fresh = _masked_lm(backbone)
        losses = _train_mlm(mlm, backbone, texts, cfg, head_fresh=head_fresh, device=device, progress=progress)

    out_dir = Path(out_dir)
    if distributed.is_main():  # every process trained the same weights; one writes them
        out_dir.mkdir(parents=True, exist_ok=True)
        encoder = backbone.encoder  # keeps the backbone's own extras (e.g. the unused pooler)
        encoder.load_state_dict(mlm.bert.state_dict(), strict=False)
        encoder.save_pretrained(out_dir, safe_serialization=True)
        backbone.tokenizer.save_pretrained(out_dir)
        write_sentence_transformers_files(out_dir, pooling=backbone.pooling, normalize=backbone.normalize,
                                          max_length=backbone.max_length)
    distributed.barrier()
    cost = ledger.cost
    cost.trainable_params = cost.total_params = sum(p.numel() for p in mlm.parameters())
    cost.train_samples = len(losses) * min(cfg.batch_size, len(texts))
    return AdaptResult(out_dir, losses, head_fresh, cost.to_dict(),
                       asdict(cfg) | {"backbone": backbone_name, "texts": len(texts)})


class MaskedLMStep(nn.Module):
    """A collated MLM batch -> cross-entropy on the chosen tokens; only they go through the
    30k-word vocabulary projection (about half the cost of a MiniLM step)."""

    def __init__(self, mlm):
        super().__init__()
        self.mlm = mlm

    def forward(self, batch: dict) -> torch.Tensor:
        labels = batch["labels"]
        picked = labels != -100  # the ~15% chosen tokens
        hidden = self.mlm.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               token_type_ids=batch.get("token_type_ids")).last_hidden_state
        if not picked.any():  # nothing masked (tiny texts): a zero loss that still touches the graph
            return hidden.sum() * 0.0
        return nn.functional.cross_entropy(self.mlm.cls(hidden[picked]), labels[picked])


def _train_mlm(mlm, backbone, texts: list[str], cfg: AdaptConfig, *, head_fresh: bool, device: str,
               progress: bool) -> list[float]:
    """Head-only warm-up (if the head is fresh), then the whole model; two runs of the engine
    (core.engine.loop). Returns per-step losses."""
    from transformers import DataCollatorForLanguageModeling  # lazy: transformers costs seconds of start-up

    tokenizer = backbone.tokenizer
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mlm_probability, seed=cfg.seed)
    batches = _batches(texts, min(cfg.batch_size, len(texts)), np.random.default_rng(cfg.seed))
    max_length = min(cfg.max_length, backbone.max_length)

    def micro_batch(_m: int) -> dict:  # batches in order: adaptation runs do not resume
        enc = tokenizer(shard(next(batches)), truncation=True, max_length=max_length)
        return collator([{k: enc[k][i] for k in enc} for i in range(len(enc["input_ids"]))])

    engine = Engine(device)
    step = MaskedLMStep(mlm)
    losses: list[float] = []
    if head_fresh and cfg.head_warmup_steps:  # only the fresh head: transform + output bias (decoder tied)
        for name, p in mlm.named_parameters():
            p.requires_grad_(name.startswith("cls."))
        head = [p for n, p in mlm.named_parameters() if n.startswith("cls.") and p.requires_grad]
        losses += engine.run(step, [{"params": head, "lr": cfg.head_lr, "weight_decay": 0.0}], micro_batch,
                             LoopSettings(steps=cfg.head_warmup_steps, schedule="constant", desc="mlm head"),
                             progress=progress).losses
        for p in mlm.parameters():
            p.requires_grad_(True)
    losses += engine.run(step, decay_groups(mlm.named_parameters(), cfg.lr, cfg.weight_decay), micro_batch,
                         LoopSettings(steps=cfg.max_steps, warmup=cfg.warmup, desc="mlm"), progress=progress).losses
    return losses
