"""The embedding recommender trained on interactions: a SASRec-style sequence model served by one index search.

Model (Kang & McAuley 2018, "Self-Attentive Sequential Recommendation"). A user's training
positives, oldest first, are a sequence of item ids; causal self-attention over the latest
`max_len` of them gives, at every position, a user state that scores every item by a dot product
with the item table. Each position is trained to put the next `target_window` items of the same
user (all of them, not only the very next one: the protocol's test window is a set of later
items) on top of a full softmax over the catalog (9.7k items on MovieLens: one [positions, items]
matmul, cheaper than sampling negatives and with no sampling bias). Positions count from the
latest item backwards, so the newest item always sits at position 0. Training runs through the
core engine (AdamW, warm-up, clipping, validation with best weights and early stopping).

Item table = id embedding (only for items with training interactions) + a linear projection of
the item's text vector (content.embed_catalog), when text vectors are given. An item nobody has
interacted with has no id embedding, so its vector is its projected text: cold items are
rankable, and a new item added to a served index gets the same treatment (`ItemTextEncoder`).

Fitting (`fit(split)`): train on `protocol.validation_split(split)` (the same temporal cut inside
the training histories) with early stopping on its NDCG@10, then, with `refit`, train a fresh
model on the whole training histories for the best number of steps. The test windows are never
read. The schedule is constant after warm-up so the refit follows the validated run's path.

Serving through the FAISS index (solutions.recsys.index normalises everything: cosine). A dot
product is made a cosine without changing any ranking by the MIPS-to-cosine map (Bachrach et al.
2014): item v -> [v, sqrt(M^2 - |v|^2)] / M (M = the largest item norm: all unit length), user
u -> [u, 0]; then cos = u.v / (M |u|), monotone in u.v for one user. `build_sequential_index`
writes such an index plus the model (safetensors + JSON, never pickle) and the catalog;
`Recommender.load` (solutions.recsys.live) finds the model there and `recommend` becomes one
search with the model's user vector.
Hand-written rather than RecBole's SASRec: that needs its own dataset/config/trainer stack and
would not train through our engine; the model itself is torch's TransformerEncoder.
Leaves out: side features other than text, negative sampling for catalogs too large for a full
softmax (millions of items), and online (incremental) training.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.foundation.errors import UserError
from solutions.recsys.baselines import History
from solutions.recsys.protocol import RankingSplit, evaluate_scores, validation_split

MODEL_FILE, CONFIG_FILE = "sequential.safetensors", "sequential.json"


@dataclass(frozen=True)
class SequentialConfig:
    dim: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 100  # latest items of a history the model reads
    dropout: float = 0.2
    # each position predicts the next this many items of the user (8 beat 1 on ml-latest-small's validation cut)
    target_window: int = 8
    steps: int = 400  # cap on optimizer steps of the validated run
    batch_size: int = 64  # users per step (each a random crop of its history)
    loss_positions: int = 1024  # positions per step scored against the full catalog (random subset); 0 = all
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.05
    validate_every: int = 50
    patience: int = 2  # validation passes without improvement before stopping
    max_seconds: float = 900.0  # wall-clock cap per training run
    refit: bool = True  # retrain on the full training histories for the best step count
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict) -> SequentialConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown sequential setting '{unknown[0]}'; valid settings: {', '.join(sorted(known))}")
        return cls(**values)


class SASRec(nn.Module):
    """Item table + causal transformer. Row 0 of every item tensor is padding; item i is row i+1."""

    def __init__(self, n_items: int, cfg: SequentialConfig, has_id: torch.Tensor,
                 text_vectors: torch.Tensor | None = None):
        super().__init__()
        if cfg.dim % cfg.heads:
            raise UserError(f"sequential dim ({cfg.dim}) must be a multiple of heads ({cfg.heads})")
        self.cfg, self.n_items = cfg, n_items
        self.item_ids = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
        nn.init.normal_(self.item_ids.weight, std=cfg.dim ** -0.5)
        self.register_buffer("has_id", torch.cat([torch.zeros(1), has_id.float()]).unsqueeze(1))
        self.text_dim = 0 if text_vectors is None else int(text_vectors.shape[1])
        if text_vectors is not None:
            self.register_buffer("text", torch.cat([torch.zeros(1, self.text_dim), text_vectors.float()]))
            self.text_proj = nn.Linear(self.text_dim, cfg.dim, bias=False)
        self.positions = nn.Embedding(cfg.max_len, cfg.dim)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, dim_feedforward=2 * cfg.dim, dropout=cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # no dropout on the attention weights: with it torch falls back to the unfused attention,
        # whose [B, heads, L, L] dropout mask was 40% of a CPU step; dropout stays on embeddings and FFN
        layer.self_attn.dropout = 0.0
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)

    def project_text(self, text_vectors: torch.Tensor) -> torch.Tensor:
        return self.text_proj(text_vectors)

    def item_table(self) -> torch.Tensor:
        """[n_items + 1, dim]: id embedding where the item has training interactions, + projected text."""
        table = self.item_ids.weight * self.has_id
        return table + self.project_text(self.text) if self.text_dim else table

    def states(self, inputs: torch.Tensor, lengths: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """[B, L, dim] user states; `inputs` [B, L] are left-aligned (padding 0 after the items),
        so under the causal mask a real position never attends to padding."""
        steps = inputs.shape[1]
        ages = (lengths.unsqueeze(1) - 1 - torch.arange(steps, device=inputs.device)).clamp(min=0)
        x = self.drop(table[inputs] + self.positions(ages))
        causal = torch.triu(torch.ones(steps, steps, dtype=torch.bool, device=inputs.device), diagonal=1)
        return self.norm(self.blocks(x, mask=causal, is_causal=True))

    def user_vectors(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, dim]: the state at each sequence's latest item (zeros for an empty sequence)."""
        states = self.states(inputs, lengths.clamp(min=1), self.item_table())
        last = states[torch.arange(len(inputs)), (lengths - 1).clamp(min=0)]
        return last * (lengths > 0).unsqueeze(1)


class NextItemsStep(nn.Module):
    """Engine step: batch {"inputs" [B, L], "lengths" [B], "targets" [B, L, W]} -> mean cross-entropy
    of each target item (row index, 0 = none) under a full softmax at its position."""

    def __init__(self, model: SASRec):
        super().__init__()
        self.model = model

    def forward(self, batch) -> torch.Tensor:
        table = self.model.item_table()
        states = self.model.states(batch["inputs"], batch["lengths"], table)
        targets = batch["targets"]
        used = (targets > 0).any(dim=2)
        states, targets = states[used], targets[used]
        if "keep" in batch:  # a random subset of the positions: the [positions, items] softmax dominates the cost
            keep = batch["keep"][batch["keep"] < len(states)][:self.model.cfg.loss_positions]
            states, targets = states[keep], targets[keep]
        return next_items_loss(states, table[1:], targets - 1)


def next_items_loss(states: torch.Tensor, items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """states [P, d], items [N, d], targets [P, W] item columns (-1 = none) -> mean of -log softmax
    over the N items at each real target."""
    log_probs = torch.log_softmax(states @ items.T, dim=1)
    real = targets >= 0
    picked = log_probs.gather(1, targets.clamp(min=0))
    return -(picked * real).sum() / real.sum().clamp(min=1)


def training_batch(sequences: list[np.ndarray], users: np.ndarray, max_len: int, window: int,
                   rng: np.random.Generator, positions: int = 0) -> dict[str, torch.Tensor]:
    """Inputs/targets for the chosen users: a random crop of at most max_len + window items
    (augmentation for long histories), inputs = all but the last item, targets = the next
    `window` items after each input position, within the crop. `positions` > 0 adds "keep", a
    random order of the positions from which the step scores the first `positions` real ones."""
    crops = []
    for u in users:
        seq = sequences[u]
        span = min(len(seq), max_len + window)
        end = int(rng.integers(span, len(seq) + 1))
        crops.append(seq[end - span:end])
    steps = max(min(len(c) - 1, max_len) for c in crops)
    inputs = np.zeros((len(crops), steps), dtype=np.int64)
    targets = np.zeros((len(crops), steps, window), dtype=np.int64)
    lengths = np.zeros(len(crops), dtype=np.int64)
    for r, crop in enumerate(crops):
        n = min(len(crop) - 1, max_len)
        inputs[r, :n] = crop[:n]
        lengths[r] = n
        for w in range(window):
            ahead = crop[1 + w:n + 1 + w]
            targets[r, :len(ahead), w] = ahead
    out = {"inputs": torch.from_numpy(inputs), "lengths": torch.from_numpy(lengths),
           "targets": torch.from_numpy(targets)}
    if positions:  # a permutation of every possible position; the step keeps the first valid ones
        out["keep"] = torch.from_numpy(rng.permutation(len(crops) * steps))
    return out


class SequentialRecommender:
    """`fit(split)` / `score(histories)` like the baselines; `user_vectors` / `item_vectors` for serving."""

    name = "sequential"

    def __init__(self, cfg: SequentialConfig = SequentialConfig(), text_vectors: np.ndarray | None = None,
                 *, device: str = "cpu", progress: bool = False):
        self.cfg, self.text_vectors, self.device, self.progress = cfg, text_vectors, device, progress
        self.model: SASRec | None = None
        self.fit_report: dict = {}

    # ------------------------------------------------------------ training
    def _sequences(self, split: RankingSplit) -> list[np.ndarray]:
        index = self.item_index
        seqs = [np.asarray([index[i] + 1 for i, _ in split.history(u) if i in index], dtype=np.int64)
                for u in sorted(split.train)]
        return [s for s in seqs if len(s) >= 2]

    def _new_model(self, split: RankingSplit) -> SASRec:
        torch.manual_seed(self.cfg.seed)
        has_id = torch.zeros(len(self.items))
        for u in split.train:
            for item, _ in split.history(u):
                has_id[self.item_index[item]] = 1.0
        text = None if self.text_vectors is None else torch.as_tensor(np.asarray(self.text_vectors, dtype=np.float32))
        if text is not None and len(text) != len(self.items):
            raise UserError(f"text_vectors has {len(text)} rows but the catalog has {len(self.items)} items")
        return SASRec(len(self.items), self.cfg, has_id, text)

    def _train(self, model: SASRec, split: RankingSplit, steps: int, validation=None, warmup: float | None = None):
        from core.engine.loop import Engine, LoopSettings, decay_groups

        cfg = self.cfg
        sequences = self._sequences(split)
        if not sequences:
            raise UserError("no user has two or more training positives; the sequential model needs histories")

        def micro_batch(m: int):
            rng = np.random.default_rng([cfg.seed, m])
            return training_batch(sequences, rng.integers(0, len(sequences), cfg.batch_size),
                                  cfg.max_len, cfg.target_window, rng, cfg.loss_positions)

        settings = LoopSettings(steps=steps, warmup=cfg.warmup if warmup is None else warmup, schedule="constant",
                                max_seconds=cfg.max_seconds, desc="sequential", log_every=max(1, cfg.validate_every),
                                steps_per_epoch=len(sequences) / cfg.batch_size)
        step, rows = NextItemsStep(model), []
        result = Engine(self.device).run(step, decay_groups(step.named_parameters(), cfg.lr, cfg.weight_decay),
                                         micro_batch, settings, validation=validation, progress=self.progress,
                                         metric_sinks=(rows.append,))
        return result, [r for r in rows if "validation_ndcg@10" in r]

    def fit(self, split: RankingSplit) -> SequentialRecommender:
        from core.engine.loop import Validation

        self.items = list(split.items)
        self.item_index = split.item_index
        cut = validation_split(split)
        self.model = self._new_model(cut)
        users = cut.eval_users()
        validation = None
        if users:
            validation = Validation(lambda: evaluate_scores(self.score_users(cut), cut, users=users),
                                    every=self.cfg.validate_every, metric="ndcg@10", patience=self.cfg.patience)
        first, history = self._train(self.model, cut, self.cfg.steps, validation)
        best = first.best_step if first.best_metric is not None else first.steps
        self.fit_report = {"validation_ndcg@10": first.best_metric, "best_step": best, "steps": first.steps,
                           "stopped_early": first.stopped_early, "history": history,
                           "train_seconds": first.train_seconds}
        if self.cfg.refit and best > 0:
            self.model = self._new_model(split)
            # the same number of warm-up steps as the validated run, so the refit follows its path
            second, _ = self._train(self.model, split, best, warmup=min(1.0, self.cfg.warmup * self.cfg.steps / best))
            self.fit_report["refit_seconds"] = second.train_seconds
        self.model.eval()
        return self

    # ------------------------------------------------------------ scoring
    def _encode_histories(self, histories: list[History]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [[self.item_index[i] + 1 for i, _ in h if i in self.item_index][-self.cfg.max_len:] for h in histories]
        width = max([len(r) for r in rows] + [1])
        inputs = np.zeros((len(rows), width), dtype=np.int64)
        for r, row in enumerate(rows):
            inputs[r, :len(row)] = row
        return torch.from_numpy(inputs), torch.tensor([len(r) for r in rows], dtype=torch.long)

    def user_vectors(self, histories: list[History], batch: int = 256) -> np.ndarray:
        """[len(histories), dim]; items the model does not know are skipped."""
        self._require_model()
        out = []
        with torch.no_grad():
            for start in range(0, len(histories), batch):
                inputs, lengths = self._encode_histories(histories[start:start + batch])
                out.append(self.model.user_vectors(inputs.to(self.model.has_id.device),
                                                   lengths.to(self.model.has_id.device)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.cfg.dim), dtype=np.float32)

    def item_vectors(self) -> np.ndarray:
        """[n_items, dim] in catalog order; score = user vector . item vector."""
        self._require_model()
        with torch.no_grad():
            return self.model.item_table()[1:].cpu().numpy()

    def score(self, histories: list[History]) -> np.ndarray:
        return self.user_vectors(histories) @ self.item_vectors().T

    def query_vector(self, history: list[str]) -> np.ndarray | None:
        """The index query (cosine-mapped user vector, module docstring) for a history of item ids,
        oldest first; None if the model knows none of them."""
        known = [(item, 0.0) for item in history if item in self.item_index]
        return to_cosine_users(self.user_vectors([known])) if known else None

    def score_users(self, split: RankingSplit):
        return lambda users: self.score([split.history(u) for u in users])

    def _require_model(self) -> None:
        if self.model is None:
            raise UserError("the sequential model is not trained; call fit(split) or load a saved one")

    # ------------------------------------------------------------ persistence (safetensors + JSON)
    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        self._require_model()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
                  directory / MODEL_FILE)
        (directory / CONFIG_FILE).write_text(json.dumps(
            {"config": asdict(self.cfg), "items": self.items, "text_dim": self.model.text_dim, **(extra or {})}))
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> SequentialRecommender:
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / MODEL_FILE).is_file() or not (directory / CONFIG_FILE).is_file():
            raise UserError(f"{directory} holds no sequential model ({MODEL_FILE} + {CONFIG_FILE}); "
                            f"train one and save it with build_sequential_index or save().")
        meta = json.loads((directory / CONFIG_FILE).read_text())
        self = cls(SequentialConfig.from_dict(meta["config"]), device=device)
        self.items = list(meta["items"])
        self.item_index = {item: i for i, item in enumerate(self.items)}
        self.meta = meta
        state = load_file(directory / MODEL_FILE)
        text = state["text"][1:] if meta["text_dim"] else None
        self.model = SASRec(len(self.items), self.cfg, state["has_id"][1:, 0], text)
        self.model.load_state_dict(state)
        self.model.to(device).eval()
        return self


# ---------------------------------------------------------------- serving through the index

def to_cosine_items(vectors: np.ndarray, max_norm: float) -> np.ndarray:
    """Item vectors with one extra coordinate so every row has norm `max_norm` (module docstring).
    A vector longer than `max_norm` (a new item) gets 0 there: its rank is then approximate."""
    vectors = np.asarray(vectors, dtype=np.float32)
    extra = np.sqrt(np.maximum(max_norm ** 2 - (vectors ** 2).sum(axis=1), 0.0))
    return np.hstack([vectors, extra[:, None]]).astype(np.float32)


def to_cosine_users(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return np.hstack([vectors, np.zeros((len(vectors), 1), dtype=np.float32)])


class ItemTextEncoder:
    """Text -> the served index's item space (projected text, as for a cold item): what a live
    Recommender embeds new items with when its index holds a sequential model."""

    def __init__(self, text_encoder, model: SequentialRecommender, max_norm: float):
        self.text_encoder, self.model, self.max_norm = text_encoder, model, max_norm
        self.max_length = text_encoder.max_length

    @property
    def dim(self) -> int:
        return self.model.cfg.dim + 1

    def encode(self, texts: list[str], **options) -> np.ndarray:
        if not self.model.model.text_dim:
            raise UserError("this index's sequential model was trained without text vectors, so a text cannot be "
                            "placed in its item space; retrain it with text_vectors (content.embed_catalog)")
        text = torch.as_tensor(self.text_encoder.encode(texts, **options))
        with torch.no_grad():
            projected = self.model.model.project_text(text.to(self.model.model.has_id.device)).cpu().numpy()
        return to_cosine_items(projected, self.max_norm)


def build_sequential_index(model: SequentialRecommender, data, out: str | Path, *, encoder: str,
                           factory: str = "Flat", threshold: float | None = None,
                           metadata: dict | None = None, max_length: int = 64):
    """Write a servable index dir: the item vectors (cosine-mapped, see the module docstring) in an
    ItemIndex, the catalog (user histories; `encoder` = the text encoder name or path the model's
    text vectors came from, for new items) and the model. Returns the ItemIndex."""
    from solutions.recsys.catalog import save_catalog
    from solutions.recsys.index import ItemIndex

    vectors = model.item_vectors()
    max_norm = float(np.linalg.norm(vectors, axis=1).max()) or 1.0
    index = ItemIndex.build(model.items, to_cosine_items(vectors, max_norm), factory, metadata)
    out = Path(out)
    index.save(out)
    model.save(out, extra={"max_norm": max_norm})
    save_catalog(data, out, encoder, max_length, threshold=threshold)
    return index


def load_served_model(directory: str | Path, text_encoder) -> tuple[SequentialRecommender, ItemTextEncoder]:
    """The model saved by `build_sequential_index` and the encoder that puts new items' texts in
    its space (for the live Recommender)."""
    model = SequentialRecommender.load(directory)
    return model, ItemTextEncoder(text_encoder, model, float(model.meta.get("max_norm", 1.0)))


def has_served_model(directory: str | Path) -> bool:
    return (Path(directory) / CONFIG_FILE).is_file()
