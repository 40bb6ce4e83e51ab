"""The embedding recommender trained on interactions: a SASRec-style sequence model served by one index search.

The model (solutions.recsys.sasrec) reads a user's training positives, oldest first, and gives a
user vector that scores every item by a dot product with the item table (id embedding + the
projected text vector). Training runs through the core engine (AdamW, warm-up, clipping,
validation with best weights and early stopping). Cold items (no training interactions) are
ranked by their projected text, and a new item added to a served index gets the same treatment
(`ItemTextEncoder`).

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
Leaves out: the network itself (sasrec), and online (incremental) training.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from core.engine.loop import LoopSettings
from core.foundation.errors import UserError
from solutions.recsys.baselines import History
from solutions.recsys.catalog import save_catalog
from solutions.recsys.content import MAX_LENGTH
from solutions.recsys.index import ItemIndex, to_cosine_items, to_cosine_users
from solutions.recsys.protocol import RankingSplit
from solutions.recsys.sasrec import NextItemsStep, SASRec, SequentialConfig, training_batch
from solutions.recsys.validated_fit import engine_run, validated_then_refit

MODEL_FILE, CONFIG_FILE = "sequential.safetensors", "sequential.json"


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
        return engine_run(NextItemsStep(model), micro_batch, settings, lr=cfg.lr, weight_decay=cfg.weight_decay,
                          device=self.device, progress=self.progress, validation=validation)

    def fit(self, split: RankingSplit) -> SequentialRecommender:
        self.items = list(split.items)
        self.item_index = split.item_index
        # the refit takes as many warm-up steps as the validated run, so it follows its path
        self.fit_report = validated_then_refit(
            self, split, self.cfg, new_model=self._new_model, train=self._train,
            refit_options=lambda best: {"warmup": min(1.0, self.cfg.warmup * self.cfg.steps / best)})
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
                           metadata: dict | None = None, max_length: int = MAX_LENGTH):
    """Write a servable index dir: the item vectors (cosine-mapped, see the module docstring) in an
    ItemIndex, the catalog (user histories; `encoder` = the text encoder name or path the model's
    text vectors came from, for new items) and the model. Returns the ItemIndex."""
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
