"""The trained-model contract: one protocol every consumer takes, and one loader of run directories.

`Predictor` is what the intent router, the finance monitor, `verticals predict` / `eval` and the
HTTP services take: the labels, a calibration temperature, an optional out-of-scope detector
(core.confidence.ood.OutOfScopeDetector) and batched `predict_all` (logits + pooled embeddings, one pass),
`predict_logits`, `predict_proba` (softmax(logits / temperature)) and `encode`. Three runtimes
implement it:
- core.models.classifier.TextClassifier: PyTorch (LoRA merged); zero-shot runs are saved as one too;
- core.models.onnx_runtime.OnnxClassifier: ONNX Runtime, fp32 (`onnx`) or dynamically int8-quantised (`onnx-int8`);
- core.models.zeroshot.ZeroShotClassifier: label descriptions and a backbone, no run directory;
- core.models.static.StaticClassifier: a distilled static-embedding model + a linear head, in NumPy
  (a static run's only runtime: `torch`, the default, loads it; the ONNX runtimes are refused).

`load_run(path, runtime=...)` is the only place that turns a run directory (or its model/ folder)
into a Predictor; `model_dir(path)` the only place that finds the model folder in a run.
It is a typing.Protocol (structural), so a user's own model with these members plugs into the
router and the monitor without inheriting from anything here.
Leaves out: training (core.classify.recipes), the Python API around a run (verticals.api).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from core.confidence.ood import OutOfScopeDetector
from core.foundation.errors import UserError
from core.models.static import is_static, load_static

RUNTIMES = ("torch", "onnx", "onnx-int8")
MODEL_FILE = "classifier.json"


@runtime_checkable
class Predictor(Protocol):
    labels: list[str]
    temperature: float
    ood: OutOfScopeDetector | None

    def predict_all(self, texts: list[str], batch_size: int = 64, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """(logits [n, labels], pooled embeddings [n, dim]) in input order."""

    def predict_logits(self, texts: list[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
        """Uncalibrated logits [n, labels]."""

    def predict_proba(self, texts: list[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
        """Calibrated probabilities softmax(logits / temperature) [n, labels]."""

    def encode(self, texts: list[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
        """Pooled embeddings [n, dim]."""


def model_dir(path: str | Path) -> Path:
    """The saved model folder of a run directory (`RUN/model`), or `path` itself when it is one."""
    path = Path(path).expanduser()
    for candidate in (path / "model", path):
        if (candidate / MODEL_FILE).is_file():
            return candidate
    if not path.exists():
        raise UserError(f"{path} does not exist; give a run directory made by `verticals train` (or its model/ folder)")
    if (path / "report.json").is_file():  # a finished run of another task (or its model/ was removed)
        task = (json.loads((path / "report.json").read_text()).get("config") or {}).get("task", "classification")
        raise UserError(f"{path} is a finished {task} run without a classifier (no model/{MODEL_FILE}): its README.md "
                        f"says how to use what it holds, and `verticals.load` opens it")
    raise UserError(f"{path} is not a trained classifier (no model/{MODEL_FILE} or {MODEL_FILE}); give a run "
                    f"directory made by `verticals train` (an unfinished run has no model yet: --resume it)")


def load_run(path: str | Path, runtime: str = "torch", *, threads: int | None = None) -> Predictor:
    """The Predictor of a trained run. `runtime`: torch (LoRA merged into the weights), onnx or
    onnx-int8 (ONNX Runtime: `verticals export onnx RUN [--int8]` first). `threads`: ONNX
    Runtime's intra-op threads (None: all cores; 1 is fastest for single queries). A static-embedding
    run (core.models.static) has one runtime, NumPy, which the default `torch` names."""
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime '{runtime}'; choose one of {', '.join(RUNTIMES)}")
    directory = model_dir(path)
    if is_static(json.loads((directory / MODEL_FILE).read_text())):
        if runtime != "torch":
            raise UserError(f"{path} is a static-embedding run: it runs in NumPy and has no ONNX twin; load it "
                            f"with the default runtime (torch) instead of '{runtime}'")
        return load_static(directory)
    if runtime == "torch":
        from core.models.classifier import load_classifier  # lazy: loads torch; `import verticals` must not

        return load_classifier(directory)
    from core.models.onnx_runtime import load_onnx_classifier  # lazy: as above

    return load_onnx_classifier(directory, threads, int8=runtime == "onnx-int8")
