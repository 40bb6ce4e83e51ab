"""Self-supervised domain adaptation: unsupervised SimCSE (Gao et al. 2021) of a backbone.

`simcse_adapt(name, texts, out_dir, cfg)` trains the backbone's sentence embeddings on unlabelled
in-domain text and writes a backbone directory (safetensors + tokenizer + sentence-transformers
files) that any recipe takes as `backbone=<dir>`, like `core.adapt.mlm.adapt_backbone` (MLM) does.

The objective. Each text is its own positive: a batch is encoded twice in train mode, so the two
views differ only by dropout, and the other texts of the batch are the negatives. The loss is
sentence-transformers' `MultipleNegativesRankingLoss` (InfoNCE over cosine similarities, scale
20 = 1/temperature 0.05 as in the paper) on the backbone's own pooling, trained by the shared
engine (core.engine.loop, core.engine.contrastive): AdamW, linear warm-up, gradient clipping 1.0. Batches
hold distinct texts (NoDuplicatesBatchSampler): a copy of the anchor would be a false negative.

The output keeps the backbone's pooling/normalisation files: adaptation changes weights, not how
sentences are pooled. Leaves out: supervised SimCSE (NLI triplets), the paper's MLP head over
[CLS] during training, large-batch tricks (GradCache), and evaluation (the caller's job).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from core.adapt.mlm import AdaptResult
from core.engine.contrastive import PairStep, no_duplicate_batches
from core.engine.loop import Engine, LoopSettings, shard
from core.foundation import distributed
from core.foundation.cost import CostLedger
from core.foundation.errors import UserError
from core.models.backbones import load_backbone, write_sentence_transformers_files
from core.models.encoder import pool


@dataclass(frozen=True)
class SimCSEConfig:
    max_steps: int = 200  # optimizer steps
    batch_size: int = 32  # texts per step; each is the others' in-batch negative
    lr: float = 3e-5
    warmup: float = 0.1  # fraction of max_steps with linear learning-rate warm-up
    max_length: int = 64  # tokens per text (capped by the backbone's own limit)
    scale: float = 20.0  # 1 / temperature; the paper's temperature is 0.05
    seed: int = 0


def simcse_step(backbone, scale: float = 20.0):
    """The engine step: a batch of texts, tokenised once and passed twice ((features, features));
    in train mode the two forwards draw different dropout masks, so each text's second view is
    its positive and the batch's other texts are its negatives (core.engine.contrastive.PairStep)."""
    encoder = backbone.encoder

    def embed(input_ids, attention_mask):
        hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, backbone.pooling)  # the loss is on cosines: no need to normalise

    return PairStep(encoder, embed, scale=scale)


def simcse_adapt(backbone_name: str, texts: list[str], out_dir: Path, cfg: SimCSEConfig = SimCSEConfig(),
                 *, device: str = "cpu", progress: bool = True) -> AdaptResult:
    """Unsupervised SimCSE of `backbone_name` on `texts`; writes a backbone dir to `out_dir`."""
    import torch  # lazy: torch costs seconds of start-up

    texts = [t.strip() for t in texts if t and t.strip()]
    if len(set(texts)) < 2:
        raise UserError(f"SimCSE needs unlabelled texts, at least 2 distinct non-empty ones; got "
                        f"{len(set(texts))}. Give a file with a few hundred in-domain sentences.")
    if cfg.batch_size < 2:
        raise UserError(f"SimCSE batch_size must be >= 2 (the other texts are the negatives); got {cfg.batch_size}")
    backbone = load_backbone(backbone_name)
    # A forked, seeded RNG: dropout masks repeat; the caller's RNG is untouched.
    with torch.random.fork_rng(devices=[]), CostLedger() as ledger:
        torch.manual_seed(cfg.seed)
        losses, tokens = _train_simcse(backbone, texts, cfg, device=device, progress=progress)

    out_dir = Path(out_dir)
    if distributed.is_main():  # every process trained the same weights; one writes them
        out_dir.mkdir(parents=True, exist_ok=True)
        backbone.encoder.save_pretrained(out_dir, safe_serialization=True)
        backbone.tokenizer.save_pretrained(out_dir)
        write_sentence_transformers_files(out_dir, pooling=backbone.pooling, normalize=backbone.normalize,
                                          max_length=backbone.max_length)
    distributed.barrier()
    cost = ledger.cost
    cost.trainable_params = cost.total_params = sum(p.numel() for p in backbone.encoder.parameters())
    cost.train_samples = len(losses) * min(cfg.batch_size, len(texts))
    cost.tokens_seen = tokens
    return AdaptResult(out_dir, losses, False, cost.to_dict(),
                       asdict(cfg) | {"backbone": backbone_name, "texts": len(texts), "objective": "simcse"})


def _train_simcse(backbone, texts: list[str], cfg: SimCSEConfig, *, device: str,
                  progress: bool) -> tuple[list[float], int]:
    """On the engine: AdamW + linear warm-up/decay, clipping 1.0; batches of distinct texts from
    sentence-transformers' NoDuplicatesBatchSampler. Returns per-step losses and tokens seen."""
    distinct = list(dict.fromkeys(texts))  # a duplicate in a batch would be a false negative
    batches = no_duplicate_batches({"text": distinct}, min(cfg.batch_size, len(distinct)), cfg.max_steps, cfg.seed)
    max_length = min(cfg.max_length, backbone.max_length)

    def micro_batch(m: int) -> tuple:
        features = dict(backbone.tokenizer([distinct[i] for i in shard(batches[m])], padding=True, truncation=True,
                                           max_length=max_length, return_tensors="pt"))
        return features, features

    step = simcse_step(backbone, cfg.scale)
    # weight_decay 0: the SimCSE reference code trains with the HF Trainer default.
    result = Engine(device).run(step, [{"params": [p for p in backbone.encoder.parameters() if p.requires_grad],
                                        "lr": cfg.lr, "weight_decay": 0.0}], micro_batch,
                                LoopSettings(steps=len(batches), warmup=cfg.warmup, desc="simcse"), progress=progress)
    return result.losses, result.tokens_seen
