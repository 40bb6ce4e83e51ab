"""Self-supervised domain adaptation: unsupervised SimCSE (Gao et al. 2021) of a backbone.

`simcse_adapt(name, texts, out_dir, cfg)` trains the backbone's sentence embeddings on unlabelled
in-domain text and writes a backbone directory (safetensors + tokenizer + sentence-transformers
files) that any recipe takes as `backbone=<dir>`, like `core.adapt.adapt_backbone` (MLM) does.

The objective. Each text is its own positive: a batch is encoded twice in train mode, so the two
views differ only by dropout, and the other texts of the batch are the negatives. The loss is
sentence-transformers' `MultipleNegativesRankingLoss` (InfoNCE over cosine similarities, scale
20 = 1/temperature 0.05 as in the paper) on a `SentenceTransformer` with the backbone's own
pooling (and normalisation), run in a plain loop: AdamW, linear warm-up, gradient clipping 1.0.
Duplicate texts in a batch are dropped: a copy of the anchor would be a false negative.

The output keeps the backbone's pooling/normalisation files: adaptation changes weights, not how
sentences are pooled. Leaves out: supervised SimCSE (NLI triplets), the paper's MLP head over
[CLS] during training, large-batch tricks (GradCache), and evaluation (the caller's job).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.adapt import AdaptResult, _batches
from core.errors import UserError


@dataclass(frozen=True)
class SimCSEConfig:
    max_steps: int = 200  # optimizer steps
    batch_size: int = 32  # texts per step; each is the others' in-batch negative
    lr: float = 3e-5
    warmup: float = 0.1  # fraction of max_steps with linear learning-rate warm-up
    max_length: int = 64  # tokens per text (capped by the backbone's own limit)
    scale: float = 20.0  # 1 / temperature; the paper's temperature is 0.05
    seed: int = 0


def _mnrl_class():
    """MultipleNegativesRankingLoss: sentence-transformers 6.2 moved it; older releases keep `losses`."""
    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:
        from sentence_transformers.losses import MultipleNegativesRankingLoss
    return MultipleNegativesRankingLoss


def sentence_model(backbone, max_length: int, device: str = "cpu"):
    """A SentenceTransformer over the backbone's directory: Transformer + Pooling (+ Normalize)."""
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Normalize, Pooling, Transformer
    from sentence_transformers import SentenceTransformer

    modules = [Transformer(backbone.path, max_seq_length=min(max_length, backbone.max_length)),
               Pooling(backbone.dim, pooling_mode=backbone.pooling)]
    if backbone.normalize:
        modules.append(Normalize())
    return SentenceTransformer(modules=modules, device=device)


def two_view_loss(model, loss_fn, texts: list[str]):
    """MNRL of `texts` against themselves; in train mode the two forwards see different dropout.

    The features dict is copied per view because each forward writes its outputs into the dict.
    Returns (loss, number of non-padding tokens in one view).
    """
    import torch

    features = getattr(model, "preprocess", model.tokenize)(texts)  # `tokenize` before 6.x
    features = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in features.items()}
    loss = loss_fn([dict(features), dict(features)], labels=None)
    return loss, int(features["attention_mask"].sum())


def simcse_adapt(backbone_name: str, texts: list[str], out_dir: Path, cfg: SimCSEConfig = SimCSEConfig(),
                 *, device: str = "cpu", progress: bool = True) -> AdaptResult:
    """Unsupervised SimCSE of `backbone_name` on `texts`; writes a backbone dir to `out_dir`."""
    import torch

    from core.backbones import load_backbone, write_sentence_transformers_files
    from core.cost import CostLedger

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
        model = sentence_model(backbone, cfg.max_length, device)
        losses, tokens = _train_simcse(model, texts, cfg, progress=progress)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model[0].auto_model.save_pretrained(out_dir, safe_serialization=True)
    model[0].tokenizer.save_pretrained(out_dir)
    write_sentence_transformers_files(out_dir, pooling=backbone.pooling, normalize=backbone.normalize,
                                      max_length=backbone.max_length)
    cost = ledger.cost
    cost.trainable_params = cost.total_params = sum(p.numel() for p in model.parameters())
    cost.train_samples = len(losses) * min(cfg.batch_size, len(texts))
    cost.tokens_seen = tokens
    return AdaptResult(out_dir, losses, False, cost.to_dict(),
                       asdict(cfg) | {"backbone": backbone_name, "texts": len(texts), "objective": "simcse"})


def _train_simcse(model, texts: list[str], cfg: SimCSEConfig, *, progress: bool) -> tuple[list[float], int]:
    """The loop: two dropout views per batch, MNRL, AdamW + warm-up; returns per-step losses, tokens."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    loss_fn = _mnrl_class()(model, scale=cfg.scale)
    model.train()
    # weight_decay 0: the SimCSE reference code trains with the HF Trainer default.
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup * cfg.max_steps), cfg.max_steps)
    batches = _batches(texts, min(cfg.batch_size, len(texts)), np.random.default_rng(cfg.seed))
    losses: list[float] = []
    tokens = 0
    bar = tqdm(total=cfg.max_steps, desc="simcse", disable=not progress)
    for _ in range(cfg.max_steps):
        batch = list(dict.fromkeys(next(batches)))  # drop duplicates: they would be false negatives
        loss, batch_tokens = two_view_loss(model, loss_fn, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        tokens += 2 * batch_tokens
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    return losses, tokens
