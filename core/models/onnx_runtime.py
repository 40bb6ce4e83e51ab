"""The ONNX Runtime twin of a trained classifier: the same predict interface as TextClassifier.

`load_onnx_classifier(model_dir, int8=...)` reads model.onnx (or model.int8.onnx) written by
core.export.onnx, with the run's labels, temperature and out-of-scope detector, so the router,
the monitor and `verticals predict --runtime onnx` take it as any other Predictor.
Leaves out: writing the graph (core.export.onnx).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.confidence.calibrate import softmax
from core.foundation.errors import UserError
from core.models.classifier import load_ood
from core.models.encoder import token_batches

INT8_FILE = "model.int8.onnx"
ONNX_FILE = "model.onnx"


class OnnxClassifier:
    """Runs an exported classifier with ONNX Runtime: a core.models.predictor.Predictor like
    core.models.classifier.TextClassifier (`.labels`, `.temperature`, `.ood` (an OutOfScopeDetector or None),
    `predict_all`, `predict_logits`, `predict_proba`, `encode`)."""

    def __init__(self, path: Path, tokenizer, labels: list[str], *, max_length: int, temperature: float = 1.0,
                 ood=None, threads: int | None = None):
        import onnxruntime as ort  # lazy: an optional extra ([serve])

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer, self.labels, self.max_length = tokenizer, list(labels), max_length
        self.temperature, self.ood = temperature, ood

    def predict_all(self, texts: list[str], batch_size: int = 64, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            dim = self.session.get_outputs()[1].shape[-1]
            return (np.zeros((0, len(self.labels)), dtype=np.float32),
                    np.zeros((0, dim if isinstance(dim, int) else 0), dtype=np.float32))
        logits, embeddings = [None] * len(texts), [None] * len(texts)
        for idx, ids, mask in token_batches(self.tokenizer, texts, self.max_length, batch_size):
            out_logits, out_emb = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
            for j, i in enumerate(idx):
                logits[i], embeddings[i] = out_logits[j], out_emb[j]
        return np.stack(logits), np.stack(embeddings)

    def predict_logits(self, texts, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
        return self.predict_all(texts, batch_size)[0]

    def predict_proba(self, texts, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
        return softmax(self.predict_logits(texts, batch_size), self.temperature).astype(np.float32)

    def encode(self, texts, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
        return self.predict_all(texts, batch_size)[1]


def load_onnx_classifier(model_dir: Path, threads: int | None = None, *, int8: bool = False) -> OnnxClassifier:
    """The ONNX twin of a saved model directory (after `verticals export onnx`, `--int8` for the
    quantised one)."""
    from transformers import AutoTokenizer  # lazy: transformers costs seconds of start-up

    model_dir = Path(model_dir)
    name = INT8_FILE if int8 else ONNX_FILE
    if not (model_dir / name).is_file():
        raise UserError(f"{model_dir} has no {name}; run `verticals export onnx RUN_DIR{' --int8' if int8 else ''}` first")
    meta = json.loads((model_dir / "classifier.json").read_text())
    tok_dir = model_dir / ("encoder" if (model_dir / "encoder").is_dir() else "tokenizer")
    ood = load_ood(model_dir, meta)
    return OnnxClassifier(model_dir / name, AutoTokenizer.from_pretrained(tok_dir), meta["labels"],
                          max_length=meta["max_length"], temperature=float(meta.get("temperature", 1.0)),
                          ood=ood, threads=threads)
