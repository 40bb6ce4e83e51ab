"""Fitting, scoring, saving and serving the set autoencoder (solutions.recsys.autoencoder).

Fitting (`fit(split)`), as for the sequential model (solutions.recsys.validated_fit): a validated run
on the training histories cut again in time through the core engine (early stopping on NDCG@10),
then, with `refit`, a fresh model on the whole training histories for the best number of steps. The
test windows are never read.

Serving: `item_vectors()` = [output embedding, bias] and `query_vector(history)` = [user vector,
1] mapped onto the cosine index (solutions.recsys.index.to_cosine_items / to_cosine_users), so one
index search ranks exactly as `score` does. `build_set_index` writes the index, the model
(safetensors + JSON, never pickle) and the catalog; `Recommender.load` (solutions.recsys.live)
finds the model there. Leaves out: the network (autoencoder) and online training.
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
from solutions.recsys.autoencoder import SetAutoencoder, SetConfig, SetStep, bag, training_batch
from solutions.recsys.baselines import History
from solutions.recsys.catalog import save_catalog
from solutions.recsys.index import ItemIndex, to_cosine_items, to_cosine_users
from solutions.recsys.protocol import RankingSplit
from solutions.recsys.validated_fit import engine_run, validated_then_refit

MODEL_FILE, CONFIG_FILE = "set_autoencoder.safetensors", "set_autoencoder.json"


class SetRecommender:
    """`fit(split)` / `score(histories)` like the baselines; `item_vectors` / `query_vector` for serving."""

    name = "set-autoencoder"

    def __init__(self, cfg: SetConfig = SetConfig(), text_vectors: np.ndarray | None = None,
                 *, device: str = "cpu", progress: bool = False):
        self.cfg, self.text_vectors, self.device, self.progress = cfg, text_vectors, device, progress
        self.model: SetAutoencoder | None = None
        self.fit_report: dict = {}

    # ------------------------------------------------------------ training
    def _sequences(self, split: RankingSplit) -> list[np.ndarray]:
        seqs = [np.asarray([self.item_index[i] for i, _ in split.history(u)], dtype=np.int64)
                for u in sorted(split.train)]
        return [s for s in seqs if len(s)]

    def _new_model(self) -> SetAutoencoder:
        torch.manual_seed(self.cfg.seed)
        return SetAutoencoder(len(self.items), self.cfg, self.text_vectors)

    def _train(self, model: SetAutoencoder, split: RankingSplit, steps: int, validation=None, *,
               checkpoint_dir: Path | None = None, resume: bool = False):
        cfg = self.cfg
        sequences = self._sequences(split)
        if not sequences:
            raise UserError("no user has a training positive; the set autoencoder needs histories")

        def micro_batch(m: int):
            rng = np.random.default_rng([cfg.seed, m])
            return training_batch(sequences, rng.integers(0, len(sequences), cfg.batch_size), cfg, rng)

        settings = LoopSettings(steps=steps, warmup=cfg.warmup, schedule="constant", max_seconds=cfg.max_seconds,
                                desc="set-autoencoder", log_every=max(1, cfg.validate_every),
                                steps_per_epoch=len(sequences) / cfg.batch_size)
        return engine_run(SetStep(model), micro_batch, settings, lr=cfg.lr, weight_decay=cfg.weight_decay,
                          device=self.device, progress=self.progress, validation=validation,
                          checkpoint_dir=checkpoint_dir, resume=resume)

    def fit(self, split: RankingSplit, *, checkpoint_dir: str | Path | None = None,
            resume: bool = False) -> SetRecommender:
        """Train (module docstring). `checkpoint_dir`: the validated run's checkpoints (safetensors,
        after each validation pass), from which `resume` continues it; the refit starts afresh."""
        self.items, self.item_index = list(split.items), split.item_index
        self.active = np.asarray(sorted({self.item_index[i] for u in split.train for i, _ in split.history(u)}),
                                 dtype=np.int64)  # the items with a training positive: the learned ones
        self.fit_report = validated_then_refit(
            self, split, self.cfg, new_model=lambda part: self._new_model(), train=self._train,
            first_options={"checkpoint_dir": Path(checkpoint_dir) if checkpoint_dir else None, "resume": resume})
        return self

    # ------------------------------------------------------------ scoring
    def user_vectors(self, histories: list[History], batch: int = 256) -> np.ndarray:
        """[len(histories), dim + 1] = [user vector, 1]; items the model does not know are skipped,
        and only the latest `max_history` known items are read."""
        self._require_model()
        out = []
        with torch.no_grad():
            for start in range(0, len(histories), batch):
                rows = [np.asarray([self.item_index[i] for i, _ in h if i in self.item_index][-self.cfg.max_history:],
                                   dtype=np.int64) for h in histories[start:start + batch]]
                users = self.model.user_vectors(*bag(rows)) * torch.tensor([[float(len(r) > 0)] for r in rows])
                out.append(torch.cat([users, torch.ones(len(rows), 1)], dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.cfg.dim + 1), dtype=np.float32)

    def item_vectors(self) -> np.ndarray:
        """[n_items, dim + 1] in catalog order; score = user vector . item vector."""
        self._require_model()
        with torch.no_grad():
            return self.model.item_vectors().numpy()

    def score(self, histories: list[History]) -> np.ndarray:
        return self.user_vectors(histories) @ self.item_vectors().T

    def score_users(self, split: RankingSplit):
        return lambda users: self.score([split.history(u) for u in users])

    def query_vector(self, history: list[str]) -> np.ndarray | None:
        """The index query (cosine-mapped) for a history of item ids, oldest first; None if the
        model knows none of them."""
        known = [(item, 0.0) for item in history if item in self.item_index]
        return to_cosine_users(self.user_vectors([known])) if known else None

    def _require_model(self) -> None:
        if self.model is None:
            raise UserError("the set autoencoder is not trained; call fit(split) or load a saved one")

    # ------------------------------------------------------------ persistence (safetensors + JSON)
    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        self._require_model()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
                  directory / MODEL_FILE)
        (directory / CONFIG_FILE).write_text(json.dumps({"config": asdict(self.cfg), "items": self.items,
                                                         "active": [int(i) for i in self.active],
                                                         "fit": _plain(self.fit_report), **(extra or {})}))
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> SetRecommender:
        directory = Path(directory)
        if not has_set_model(directory) or not (directory / MODEL_FILE).is_file():
            raise UserError(f"{directory} holds no set autoencoder ({MODEL_FILE} + {CONFIG_FILE}); "
                            f"train one (`verticals train recsys/set`) and index it.")
        meta = json.loads((directory / CONFIG_FILE).read_text())
        self = cls(SetConfig.from_dict(meta["config"]), device=device)
        self.items = list(meta["items"])
        self.item_index = {item: i for i, item in enumerate(self.items)}
        self.meta, self.fit_report = meta, meta.get("fit", {})
        self.active = np.asarray(meta.get("active", range(len(self.items))), dtype=np.int64)
        self.model = SetAutoencoder(len(self.items), self.cfg)
        self.model.load_state_dict(load_file(directory / MODEL_FILE))
        self.model.to(device).eval()
        return self


def _plain(report: dict) -> dict:
    """The fit report without the per-pass history (kept in the run's report instead)."""
    return {k: v for k, v in report.items() if k != "history"}


def has_set_model(directory: str | Path) -> bool:
    return (Path(directory) / CONFIG_FILE).is_file()


def is_set_run(path: str | Path) -> bool:
    """A run directory of the set recipe (`verticals train recsys/set`): its model/ holds the network."""
    return has_set_model(Path(path) / "model")


class NoItemText:
    """The encoder slot of a set-autoencoder index: a new item has no learned vector, so adding or
    re-embedding items by text is refused with the reason (a 400 through the service)."""

    max_length = 0

    def __init__(self, dim: int):
        self.dim = dim

    def encode(self, texts: list[str], **options) -> np.ndarray:
        raise UserError("this index serves a set autoencoder's learned item vectors: an item it was not trained on "
                        "has none, so items cannot be added or re-embedded by text here; add the item's "
                        "interactions to your data and retrain (`verticals train recsys/set`)")


def load_set_model(directory: str | Path) -> tuple[SetRecommender, NoItemText]:
    """The user model and the encoder slot of an index written by `build_set_index`."""
    model = SetRecommender.load(directory)
    return model, NoItemText(model.cfg.dim + 2)


def build_set_index(model: SetRecommender, data, out: str | Path, *, factory: str = "Flat",
                    threshold: float | None = None, metadata: dict | None = None) -> ItemIndex:
    """Write a servable index dir: the item vectors (cosine-mapped) in an ItemIndex, the model and
    the catalog (user histories). Returns the ItemIndex."""
    vectors = model.item_vectors()
    max_norm = float(np.linalg.norm(vectors, axis=1).max()) or 1.0
    index = ItemIndex.build(model.items, to_cosine_items(vectors, max_norm), factory, metadata)
    out = Path(out)
    index.save(out)
    model.save(out, extra={"max_norm": max_norm})
    save_catalog(data, out, "", 0, threshold=threshold)
    return index
