"""The drift baseline every classification run saves beside its model, and its reader.

`DriftBaseline` holds up to 2000 validation rows subsampled with the run's seed: embeddings
(float16), calibrated confidence, top-1 minus top-2 margin and the out-of-scope detector's
verdict, plus the predicted-label shares and the out-of-scope rate of the whole validation split,
in drift_baseline.safetensors (arrays) + drift_baseline.json (scalars, written last); no pickles.
With the validation labels it also holds the accuracy estimator's fit (core.evaluation.accuracy_estimate.
AccuracyFit: the ATC threshold over every validation row's calibrated confidence, the validation
accuracy and mean confidence), under "accuracy_estimate" in drift_baseline.json. A baseline saved
before that key existed gets the fit at load time from what it stored: its (subsampled) validation
confidences and the run's report.json validation accuracy (the ATC threshold needs only those);
without a report it has none, and `accuracy_note` says why.
A multi-label run's baseline (`from_multilabel_outputs`, `multi_label` True) reads the outputs as its
router does (core.models.multilabel.MultiLabelHead): `confidence` is the primary intent's calibrated
sigmoid probability, rounded to 4 places (the router's `confidence`, as the monitor's window sees it), `label_share` the share of each label among the
predicted label sets (every label at or above its threshold counts once per row), `no_label` marks
the rows where no label clears its threshold (what that router hands over, whatever its
min_confidence / min_margin), `out_of_scope` the head's rule (no label and the scorer says far);
it has no margin. Its accuracy fit is over the predicted set's probability (MultiLabelHead.
set_confidence, the router's `set_confidence`) against the validation exact-set accuracy
(core.evaluation.accuracy_estimate.SET_SCORE); one saved before that has none (MULTILABEL_ACCURACY_NOTE).
`save_drift_baseline` builds it from the validation outputs a run already computed;
`load_drift_baseline(run)` reads it (None for runs that predate baselines).
Leaves out: the measures (core.evaluation.drift, core.evaluation.accuracy_estimate).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.confidence.calibrate import softmax
from core.evaluation.accuracy_estimate import SET_SCORE, AccuracyFit
from core.foundation.errors import UserError
from core.models.predictor import model_dir

BASELINE_FILE = "drift_baseline.safetensors"
BASELINE_META = "drift_baseline.json"
BASELINE_ROWS = 2000
FORMAT_VERSION = 1
MULTILABEL_ACCURACY_NOTE = ("this multi-label run's baseline predates multi-label accuracy fits (retrain to get "
                            "one)")


# ---------------------------------------------------------------- the baseline


@dataclass
class DriftBaseline:
    """What validation traffic looked like at training time (see the module docstring)."""

    embeddings: np.ndarray  # [n, dim] float32, n <= 2000 validation rows
    confidence: np.ndarray  # [n] calibrated top-class probability
    label_share: dict[str, float]  # predicted-label share over the whole validation split (every label)
    fallback_rate: float | None  # None: core does not know the router; see fallback_rate_under
    model_version: str
    margin: np.ndarray | None = None  # [n] top-1 minus top-2 calibrated probability
    out_of_scope: np.ndarray | None = None  # [n] bool: below the OOS detector's threshold; None without one
    out_of_scope_rate: float | None = None  # over the whole validation split; None without a detector
    n_validation: int = 0  # rows of the validation split the baseline was built from
    seed: int = 0
    accuracy: AccuracyFit | None = None  # the accuracy estimator's fit; None: see accuracy_note
    accuracy_note: str = ""  # why there is no fit (e.g. an old run without a validation accuracy)
    multi_label: bool = False  # a multi-label run's baseline (module docstring)
    no_label: np.ndarray | None = None  # [n] bool, multi-label: no label at or above its threshold

    @classmethod
    def from_outputs(cls, model, logits: np.ndarray, embeddings: np.ndarray, *, model_version: str,
                     seed: int = 0, max_rows: int = BASELINE_ROWS, labels=None) -> "DriftBaseline | None":
        """The baseline from a trained model's validation outputs (logits, embeddings: one
        predict_all pass), using its temperature and out-of-scope detector; None for no rows.
        `labels`: the validation label ids, for the accuracy estimator's fit (None: no fit)."""
        if not len(logits):
            return None
        probs = softmax(np.asarray(logits), model.temperature)
        top2 = np.sort(probs, axis=1)[:, ::-1][:, :2]
        predicted = Counter(probs.argmax(axis=1).tolist())
        share = {label: predicted.get(i, 0) / len(probs) for i, label in enumerate(model.labels)}
        oos = None if model.ood is None else model.ood.is_out_of_scope(logits, embeddings, model.temperature)
        rows = np.arange(len(probs))
        if len(rows) > max_rows:
            rows = np.sort(np.random.default_rng(seed).choice(len(rows), max_rows, replace=False))
        margin = top2[:, 0] - (top2[:, 1] if top2.shape[1] > 1 else 0.0)
        accuracy = None if labels is None else AccuracyFit.fit(
            top2[:, 0], float((probs.argmax(axis=1) == np.asarray(labels)).mean()))
        return cls(embeddings=np.asarray(embeddings, dtype=np.float32)[rows],
                   confidence=top2[rows, 0].astype(np.float32),
                   label_share=share, fallback_rate=None, model_version=model_version,
                   margin=margin[rows].astype(np.float32), out_of_scope=None if oos is None else oos[rows],
                   out_of_scope_rate=None if oos is None else float(oos.mean()), n_validation=len(probs), seed=seed,
                   accuracy=accuracy, accuracy_note="" if labels is not None else "no validation labels given")

    @classmethod
    def from_multilabel_outputs(cls, model, head, logits: np.ndarray, embeddings: np.ndarray, *, model_version: str,
                                seed: int = 0, max_rows: int = BASELINE_ROWS, targets=None) -> "DriftBaseline | None":
        """The baseline of a multi-label run (module docstring) from its validation outputs; `head`:
        its core.models.multilabel.MultiLabelHead; `targets`: the validation rows' multi-hot label
        sets [rows, labels] (for the accuracy fit); None for no rows."""
        if not len(logits):
            return None
        probs = head.probabilities(np.asarray(logits), model.temperature)
        decided, primary = head.decide(probs), head.primary(probs)
        accuracy, note = None, "no validation labels given"
        if targets is not None:  # rounded as the router reports it, like `confidence` below
            exact = float((decided == np.asarray(targets, dtype=bool)).all(axis=1).mean())
            accuracy, note = AccuracyFit.fit(np.round(head.set_confidence(probs), 4), exact, score=SET_SCORE), ""
        counts = decided.sum(axis=0)
        share = {label: float(counts[i] / max(counts.sum(), 1)) for i, label in enumerate(model.labels)}
        scores = None if model.ood is None else model.ood.scores(logits, embeddings, model.temperature)
        oos = head.out_of_scope(probs, scores, None if model.ood is None else model.ood.threshold)
        rows = np.arange(len(probs))
        if len(rows) > max_rows:
            rows = np.sort(np.random.default_rng(seed).choice(len(rows), max_rows, replace=False))
        return cls(embeddings=np.asarray(embeddings, dtype=np.float32)[rows],
                   # rounded as the router reports it: near-saturated sigmoids differ only past 4 places
                   confidence=np.round(probs[np.arange(len(probs)), primary][rows], 4).astype(np.float32),
                   label_share=share, fallback_rate=None, model_version=model_version, margin=None,
                   out_of_scope=oos[rows], out_of_scope_rate=float(oos.mean()), n_validation=len(probs), seed=seed,
                   accuracy=accuracy, accuracy_note=note, multi_label=True,
                   no_label=~decided.any(axis=1)[rows])

    def fallback_rate_under(self, min_confidence: float, min_margin: float, use_out_of_scope: bool = True) -> float:
        """Share of the baseline rows a router would hand over with these settings: out of scope
        (when used), confidence below `min_confidence`, or margin below `min_margin`. A multi-label
        router hands over the rows with no label at or above its threshold, whatever the settings."""
        if self.multi_label:
            return float(self.no_label.mean()) if self.no_label is not None and len(self.no_label) else 0.0
        handover = self.confidence < min_confidence
        if self.margin is not None:
            handover |= self.margin < min_margin
        if use_out_of_scope and self.out_of_scope is not None:
            handover |= self.out_of_scope
        return float(handover.mean()) if len(handover) else 0.0

    def save(self, model_dir) -> Path:
        """model_dir/drift_baseline.safetensors (arrays) + drift_baseline.json (scalars, written last)."""
        from safetensors.numpy import save_file  # lazy: safetensors.torch pulls in torch

        model_dir = Path(model_dir)
        fits = np.abs(self.embeddings).max(initial=0.0) < np.finfo(np.float16).max
        emb = self.embeddings.astype(np.float16 if fits else np.float32)
        arrays = {"embeddings": np.ascontiguousarray(emb), "confidence": self.confidence.astype(np.float32)}
        if self.margin is not None:
            arrays["margin"] = self.margin.astype(np.float32)
        if self.out_of_scope is not None:
            arrays["out_of_scope"] = self.out_of_scope.astype(np.uint8)
        if self.no_label is not None:
            arrays["no_label"] = self.no_label.astype(np.uint8)
        path = model_dir / BASELINE_FILE
        save_file(arrays, str(path) + ".tmp")
        os.replace(str(path) + ".tmp", path)
        meta = {"format_version": FORMAT_VERSION, "label_share": self.label_share, "fallback_rate": self.fallback_rate,
                "model_version": self.model_version, "out_of_scope_rate": self.out_of_scope_rate,
                "n_validation": self.n_validation, "rows": len(self.confidence), "seed": self.seed,
                "accuracy_estimate": None if self.accuracy is None else self.accuracy.to_json(),
                **({"multi_label": True, "accuracy_note": self.accuracy_note} if self.multi_label else {})}
        tmp = model_dir / (BASELINE_META + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        os.replace(tmp, model_dir / BASELINE_META)
        return path

    @classmethod
    def load(cls, model_dir) -> "DriftBaseline | None":
        """The baseline saved in `model_dir`, or None for runs that predate baselines (or have no
        validation split)."""
        from safetensors import SafetensorError  # lazy: safetensors.torch pulls in torch
        from safetensors.numpy import load_file  # lazy: safetensors.torch pulls in torch

        model_dir = Path(model_dir)
        meta_path, path = model_dir / BASELINE_META, model_dir / BASELINE_FILE
        if not meta_path.is_file():
            return None
        try:
            meta, arrays = json.loads(meta_path.read_text(encoding="utf-8")), load_file(str(path))
            out_of_scope, no_label = arrays.get("out_of_scope"), arrays.get("no_label")
            multi_label = bool(meta.get("multi_label", False))
            accuracy, note = (_stored_multilabel_fit(meta) if multi_label
                              else _stored_or_refitted(meta, arrays["confidence"], model_dir))
            return cls(embeddings=arrays["embeddings"].astype(np.float32), confidence=arrays["confidence"],
                       label_share={str(k): float(v) for k, v in meta["label_share"].items()},
                       fallback_rate=meta.get("fallback_rate"), model_version=str(meta.get("model_version", "")),
                       margin=arrays.get("margin"),
                       out_of_scope=None if out_of_scope is None else out_of_scope.astype(bool),
                       out_of_scope_rate=meta.get("out_of_scope_rate"), n_validation=int(meta.get("n_validation", 0)),
                       seed=int(meta.get("seed", 0)), accuracy=accuracy, accuracy_note=note, multi_label=multi_label,
                       no_label=None if no_label is None else no_label.astype(bool))
        except (OSError, ValueError, TypeError, KeyError, AttributeError, SafetensorError) as exc:
            raise UserError(f"{model_dir}: the drift baseline cannot be read ({exc!r}); retrain the run or delete "
                            f"{BASELINE_META} and {BASELINE_FILE}") from exc

    def describe(self) -> dict:
        return {"model_version": self.model_version, "rows": len(self.confidence), "n_validation": self.n_validation,
                "embedding_dim": int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 0,
                "fallback_rate": self.fallback_rate, "out_of_scope_rate": self.out_of_scope_rate,
                "accuracy_estimate": None if self.accuracy is None else self.accuracy.to_json(),
                **({"multi_label": True, "accuracy_note": self.accuracy_note} if self.multi_label else {})}


def _stored_multilabel_fit(meta: dict) -> tuple[AccuracyFit | None, str]:
    """A multi-label baseline's stored fit (over SET_SCORE), or (None, why): a baseline saved before
    multi-label fits were stored keeps no set confidences to refit from."""
    if meta.get("accuracy_estimate"):
        return AccuracyFit.from_json(meta["accuracy_estimate"]), ""
    return None, MULTILABEL_ACCURACY_NOTE


def _stored_or_refitted(meta: dict, confidence: np.ndarray, model_dir: Path) -> tuple[AccuracyFit | None, str]:
    """The stored accuracy fit; for a baseline saved before fits were stored, one refitted from its
    stored validation confidences and the run's report.json validation accuracy; else (None, why)."""
    if meta.get("accuracy_estimate"):
        return AccuracyFit.from_json(meta["accuracy_estimate"]), ""
    report = model_dir.parent / "report.json"
    try:
        accuracy = json.loads(report.read_text(encoding="utf-8"))["metrics"]["validation"]["accuracy"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, (f"the run was trained before accuracy fits were stored and {report} holds no validation "
                      f"accuracy to refit one from")
    if accuracy is None or not len(confidence):
        return None, "the run's validation accuracy or confidences are missing"
    return AccuracyFit.fit(confidence, float(accuracy), fitted_from=(
        f"refitted at load time: {len(confidence)} stored validation confidences + report.json validation "
        f"accuracy (the run predates stored fits)")), ""


def load_drift_baseline(run_or_model_dir) -> DriftBaseline | None:
    """The DriftBaseline of a run directory (or its model/ folder), None for runs that predate it."""
    return DriftBaseline.load(model_dir(run_or_model_dir))


def save_drift_baseline(model, logits: np.ndarray, embeddings: np.ndarray, model_dir, *, model_version: str,
                        seed: int = 0, labels=None, multi_label=None) -> dict:
    """Build and save the baseline (core.classify.finish, core.classify.multilabel); returns the report's
    `drift_baseline` section. `labels`: the validation label ids (for the accuracy estimator's fit);
    `multi_label`: a multi-label run's MultiLabelHead (its baseline: from_multilabel_outputs; `labels`
    then the validation rows' multi-hot label sets)."""
    if multi_label is not None:
        baseline = DriftBaseline.from_multilabel_outputs(model, multi_label, logits, embeddings,
                                                         model_version=model_version, seed=seed, targets=labels)
    else:
        baseline = DriftBaseline.from_outputs(model, logits, embeddings, model_version=model_version, seed=seed,
                                              labels=labels)
    if baseline is None:
        return {"note": "no validation rows: no drift baseline saved"}
    baseline.save(model_dir)
    return {"file": f"model/{BASELINE_FILE}"} | baseline.describe()
