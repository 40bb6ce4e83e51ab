"""The static-embedding tier: a model2vec static model (one vector per token, averaged) + a linear head.

A static model is distilled from a sentence encoder (core.classify.static): every token of the
vocabulary is embedded once by the encoder, the table is reduced with PCA and weighted (SIF), and
a text's embedding is then the mean of its tokens' rows: no attention, no matrix multiply per
layer, so it runs in NumPy at tens of thousands of texts/s on a CPU core, for lower accuracy than
the encoder it came from. `StaticClassifier` is a core.models.predictor.Predictor like
TextClassifier and OnnxClassifier (`labels`, `temperature`, `ood`, `predict_all`, `predict_logits`,
`predict_proba`, `encode`), so the router, the monitor, `verticals predict` / `eval`, temperature
scaling and the out-of-scope scorers take it unchanged (they need only logits and embeddings).

Saved layout (`model/`, safetensors and JSON only):
  classifier.json      kind "static", labels, temperature, where the table was distilled from
  head.safetensors     the linear head (weight [labels, dim], bias [labels]), as NumPy arrays
  static/              model2vec's own directory (model.safetensors, tokenizer.json, config.json)
The whole model is inside the run, so it loads wherever the package and the `static` extra are
installed; no backbone is needed to predict.
Leaves out: distilling and training the head (core.classify.static, core.classify.recipes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.confidence.calibrate import softmax
from core.confidence.ood import OutOfScopeDetector
from core.foundation.errors import UserError

KIND = "static"  # classifier.json's `kind` for this tier (absent: a transformer classifier)
STATIC_DIR = "static"
HEAD_FILE = "head.safetensors"
INSTALL = "pip install 'verticals[static]'"


def require_model2vec():
    """The model2vec package, or a UserError that says how to install it."""
    try:
        import model2vec  # lazy: an optional extra ([static])
    except ImportError as exc:
        raise UserError(f"the static-embedding tier needs model2vec: {INSTALL}") from exc
    return model2vec


class StaticClassifier:
    """A model2vec StaticModel + a linear head; see the module docstring."""

    def __init__(self, static_model, labels: list[str], *, source: str = "", weight: np.ndarray | None = None,
                 bias: np.ndarray | None = None):
        self.static_model, self.labels, self.source = static_model, list(labels), source
        dim = self.dim
        self.weight = np.zeros((len(self.labels), dim), np.float32) if weight is None else np.asarray(weight, np.float32)
        self.bias = np.zeros(len(self.labels), np.float32) if bias is None else np.asarray(bias, np.float32)
        if self.weight.shape != (len(self.labels), dim) or self.bias.shape != (len(self.labels),):
            raise UserError(f"static head of shape {self.weight.shape} + {self.bias.shape} does not fit "
                            f"{len(self.labels)} labels x {dim} dimensions")
        self.temperature = 1.0  # set by calibration (core.confidence.calibrate); divides logits in predict_proba
        self.ood = None  # a core.confidence.ood.OutOfScopeDetector, set by core.classify.finish.fit_confidence
        self.mixed_precision = "no"  # NumPy float32 whatever a recipe's train.mixed_precision says (precision_on)

    def precision_on(self, device: str) -> str:
        """What inference computes in: float32, in NumPy, on every device (the run report records this)."""
        return "fp32"

    @property
    def dim(self) -> int:
        return int(self.static_model.dim)

    def set_head(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight, self.bias = np.asarray(weight, np.float32), np.asarray(bias, np.float32)

    def encode(self, texts: list[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
        """[len(texts), dim] float32 unit embeddings in input order; (0, dim) for no texts. `device`
        is accepted for the Predictor contract and ignored (NumPy on the CPU). Texts past the
        model's max_length tokens are truncated (model2vec cuts the string first, then the tokens)."""
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1; got {batch_size}")
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)
        # batches of 1024: model2vec's own default; the cost per text barely depends on it.
        # No multiprocessing: a worker pool per call costs more than it saves at serving batch sizes.
        return np.asarray(self.static_model.encode(list(texts), batch_size=1024, use_multiprocessing=False),
                          dtype=np.float32)

    def predict_all(self, texts: list[str], batch_size: int = 64, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """(logits [n, labels], embeddings [n, dim]) in input order."""
        embeddings = self.encode(texts, batch_size, device)
        return embeddings @ self.weight.T + self.bias, embeddings

    def predict_logits(self, texts: list[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
        return self.predict_all(texts, batch_size, device)[0]

    def predict_proba(self, texts: list[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
        """Calibrated class probabilities: softmax(logits / temperature)."""
        return softmax(self.predict_logits(texts, batch_size, device), self.temperature).astype(np.float32)

    def trainable_parameters(self) -> int:
        return int(self.weight.size + self.bias.size)

    def total_parameters(self) -> int:
        return int(np.asarray(self.static_model.embedding).size) + self.trainable_parameters()

    def save(self, directory: Path) -> Path:
        return save_static(self, directory)


def save_static(model: StaticClassifier, directory: Path) -> Path:
    """Write `model` as the module docstring's layout; returns the directory."""
    from safetensors.numpy import save_file  # lazy: only when a static run is saved

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.static_model.save_pretrained(str(directory / STATIC_DIR))
    save_file({"weight": np.ascontiguousarray(model.weight), "bias": np.ascontiguousarray(model.bias)},
              str(directory / HEAD_FILE))
    meta = {"format_version": 2, "kind": KIND, "labels": model.labels, "temperature": model.temperature,
            "static": STATIC_DIR, "source": model.source, "hidden_size": model.dim,
            "max_length": model.static_model.max_length}
    if model.ood is not None:
        meta["ood"] = model.ood.save(directory)
    (directory / "classifier.json").write_text(json.dumps(meta, indent=2))
    return directory


def is_static(meta: dict) -> bool:
    """Whether a classifier.json describes a static-embedding model."""
    return meta.get("kind") == KIND


def load_static(directory: Path) -> StaticClassifier:
    """A saved static model directory (`model/` of a static run) as a StaticClassifier."""
    from safetensors.numpy import load_file  # lazy: only when a static run is loaded

    directory = Path(directory)
    meta = json.loads((directory / "classifier.json").read_text())
    static_dir = directory / meta.get("static", STATIC_DIR)
    if not (static_dir / "model.safetensors").is_file() or not (directory / HEAD_FILE).is_file():
        raise UserError(f"{directory}: the static model ({static_dir.name}/model.safetensors) or its head "
                        f"({HEAD_FILE}) is missing; copy the whole run directory again, or retrain it")
    static_model = require_model2vec().StaticModel.from_pretrained(str(static_dir))
    head = load_file(str(directory / HEAD_FILE))
    model = StaticClassifier(static_model, meta["labels"], source=meta.get("source", ""),
                             weight=head["weight"], bias=head["bias"])
    model.temperature = float(meta.get("temperature", 1.0))
    model.ood = OutOfScopeDetector.load(directory, meta.get("ood"))
    return model
