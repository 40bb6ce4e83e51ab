"""Drift of a deployed classifier's traffic against its training-time baseline: pure metrics,
their report against the baseline (core.evaluation.drift_baseline), and an in-memory window of
recent traffic.

Measures (each a pure function on arrays; `drift_report` puts them side by side):
- `psi` on the calibrated top-class confidence: the Population Stability Index over 10 quantile
  bins of the baseline. A cheap, scale-free summary of "the model is less sure than it was",
  and the one measure the prediction log alone (no embeddings) supports.
- `domain_auc` on pooled embeddings: a logistic regression (scikit-learn, standardised inputs,
  5-fold cross-validated) tries to tell recent traffic from the validation split; its ROC AUC is
  0.5 when it cannot and 1.0 when the two are separable (the domain-classifier test of Rabanser
  et al. 2019, "Failing Loudly"). It alerts because its scale is fixed, whatever the embedding.
- `mmd_rbf` on the same embeddings: the unbiased squared Maximum Mean Discrepancy with an RBF
  kernel whose width is the median heuristic (Gretton et al. 2012). Reported, never alerted on:
  its scale depends on the embedding geometry, so no threshold carries across backbones.
- `label_shift` on the predicted-label mix: total variation distance between the baseline's
  label shares and the recent counts (half the L1 distance: the share of predictions that would
  have to change label), 0 = same mix, 1 = disjoint.
- the fallback / out-of-scope rate: recent share minus the baseline's.
- the accuracy estimated without labels (core.evaluation.accuracy_estimate: ATC on the calibrated
  top-class confidence, DoC beside it) from the baseline's stored fit, and its drop below the
  validation accuracy.

Thresholds (`DriftThresholds`, all "alert when above"): psi_confidence 0.2 follows the credit-
scoring rule of thumb (PSI < 0.1 stable, 0.1-0.2 moderate shift, > 0.2 significant; Siddiqi 2006,
Yurdakul 2018). domain_auc 0.75 sits in the 0.7-0.8 band Hosmer & Lemeshow call "acceptable
discrimination": the classifier tells recent traffic apart reliably. label_shift 0.25 (a quarter
of the predicted-label mass moved) and a 0.15 absolute rise of the fallback or out-of-scope rate
are our defaults, not tuned on data: set them per deployment. accuracy_drop 0.05: alert when the
ATC estimate is more than 5 points below the validation accuracy; at 200 recent rows the estimate's
sampling noise alone is about sqrt(0.9 * 0.1 / 200) ~ 2 points (binomial sd at 90%), so a smaller
margin would alert on noise. Sampling noise at DriftWindow's
minimum (200 recent rows vs 2000 baseline rows): PSI ~ (bins - 1)(1/200 + 1/2000) ~ 0.05 and AUC
~ 0.5 +- 0.05 for identical distributions, well under the alerts.

`DriftBaseline` (saved by core.classify.recipes.finish beside the model: drift_baseline.safetensors with
the arrays, embeddings in float16, + drift_baseline.json with the scalars; no pickles) holds up to
2000 validation rows subsampled with the run's seed: embeddings, calibrated confidence, top-1 minus
top-2 margin and the out-of-scope detector's verdict, plus the predicted-label shares and the
out-of-scope rate of the whole validation split. Core knows no router, so `fallback_rate` is None
in a saved baseline; `fallback_rate_under(min_confidence, min_margin)` recomputes it for a router's
settings. `DriftWindow` keeps the last N routed rows of one model version in memory.
Both embedding measures run their BLAS work on one thread (threadpoolctl): the matrices are
small, and a multi-threaded OpenBLAS next to torch's threads (the service computes drift beside
inference) oversubscribed the cores: domain_auc on 2000 x 200 rows of 384-d took 12 s with default
threads vs 0.24 s with one on a loaded 2-core machine (see core.confidence.ood._cosines for the same effect).
Leaves out: the prediction log (core.mlops.feedback), /metrics and alerts (solutions/support/service.py).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from core.evaluation.accuracy_estimate import SET_SCORE, estimate_accuracy
from core.evaluation.drift_baseline import BASELINE_ROWS, DriftBaseline
from core.foundation.errors import UserError

PSI_FLOOR = 1e-4  # a bin share of 0 would make PSI infinite; floor both sides


# ---------------------------------------------------------------- pure metrics


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """Population Stability Index sum((a - e) * ln(a / e)) over `bins` quantile bins of `expected`
    (ties merge bins, so a constant `expected` gives one bin per side of its value); bin shares are
    floored at PSI_FLOOR. 0 for identical distributions."""
    expected, actual = np.asarray(expected, dtype=np.float64).ravel(), np.asarray(actual, dtype=np.float64).ravel()
    if not len(expected) or not len(actual):
        raise ValueError("psi needs at least one value on each side")
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    e = np.bincount(np.searchsorted(edges, expected, side="right"), minlength=len(edges) + 1) / len(expected)
    a = np.bincount(np.searchsorted(edges, actual, side="right"), minlength=len(edges) + 1) / len(actual)
    e, a = np.maximum(e, PSI_FLOOR), np.maximum(a, PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def _subsample(x: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    return x if n is None or len(x) <= n else x[np.sort(rng.choice(len(x), n, replace=False))]


def mmd_rbf(x: np.ndarray, y: np.ndarray, *, gamma: float | None = None, max_rows: int | None = 1000,
            seed: int = 0) -> float:
    """Unbiased squared MMD between rows of x and y with k(a, b) = exp(-gamma |a - b|^2); `gamma`
    None: 1 / median squared distance of the pooled rows (median heuristic). Each side is
    subsampled to `max_rows` (seeded) to bound the O(n^2) kernels. Near 0 (either sign) when
    x and y come from one distribution."""
    from sklearn.metrics.pairwise import (  # lazy: scikit-learn costs start-up; only when used
        euclidean_distances,
        rbf_kernel,
    )

    rng = np.random.default_rng(seed)
    x = _subsample(np.asarray(x, dtype=np.float64), max_rows, rng)
    y = _subsample(np.asarray(y, dtype=np.float64), max_rows, rng)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("mmd_rbf needs at least two rows on each side")
    if gamma is None:
        pooled = _subsample(np.concatenate([x, y]), max_rows, rng)
        with threadpool_limits(1, user_api="blas"):
            d2 = euclidean_distances(pooled, squared=True)[np.triu_indices(len(pooled), k=1)]
        median = float(np.median(d2))
        gamma = 1.0 / median if median > 0 else 1.0
    with threadpool_limits(1, user_api="blas"):  # one thread: module docstring
        kxx, kyy, kxy = rbf_kernel(x, x, gamma=gamma), rbf_kernel(y, y, gamma=gamma), rbf_kernel(x, y, gamma=gamma)
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def preload() -> None:
    """Import the scikit-learn modules `domain_auc` and `mmd_rbf` use, now. A service calls this
    before it takes traffic: importing them holds the GIL for a second or more, which, at the first
    drift report, stalled routing on the other threads (seen in a profile under load)."""
    import sklearn.linear_model  # lazy: scikit-learn costs start-up; only when used
    import sklearn.metrics.pairwise  # lazy: as above
    import sklearn.model_selection  # lazy: as above
    import sklearn.pipeline  # lazy: as above
    import sklearn.preprocessing  # noqa: F401  # lazy: as above


def domain_auc(reference: np.ndarray, recent: np.ndarray, *, seed: int = 0, folds: int = 5,
               max_rows: int | None = 2000, C: float = 0.1) -> float:
    """Cross-validated ROC AUC of a logistic regression (scikit-learn; standardised inputs, balanced
    class weights) telling `recent` rows (class 1) from `reference` rows (class 0): 0.5 = cannot
    tell them apart, 1.0 = separable. Each side is subsampled to `max_rows` (seeded). C = 0.1, ten
    times sklearn's default L2: 200 recent rows against 384+ dimensions overfit at C = 1, and on
    Gaussian mean shifts of 0.05 / 0.1 sd C = 0.1 separated more (AUC 0.63 / 0.82 vs 0.62 / 0.80)."""
    from sklearn.linear_model import LogisticRegression  # lazy: scikit-learn costs start-up; only when used
    from sklearn.metrics import roc_auc_score  # lazy: scikit-learn costs start-up; only when used
    from sklearn.model_selection import (  # lazy: scikit-learn costs start-up; only when used
        StratifiedKFold,
        cross_val_predict,
    )
    from sklearn.pipeline import make_pipeline  # lazy: scikit-learn costs start-up; only when used
    from sklearn.preprocessing import StandardScaler  # lazy: scikit-learn costs start-up; only when used
    rng = np.random.default_rng(seed)
    reference = _subsample(np.asarray(reference, dtype=np.float32), max_rows, rng)
    recent = _subsample(np.asarray(recent, dtype=np.float32), max_rows, rng)
    if min(len(reference), len(recent)) < folds:
        raise ValueError(f"domain_auc needs at least {folds} rows on each side")
    x = np.concatenate([reference, recent])
    y = np.concatenate([np.zeros(len(reference), dtype=int), np.ones(len(recent), dtype=int)])
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=1000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with threadpool_limits(1, user_api="blas"):  # one thread: module docstring
        scores = cross_val_predict(clf, x, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, scores))


def label_shift(expected: Mapping[str, float], actual: Mapping[str, int]) -> float:
    """Total variation distance 0.5 * sum |p - q| between label shares `expected` and the shares of
    the counts `actual`, over the union of labels (each side normalised to sum to 1)."""
    p_total, q_total = sum(expected.values()), sum(actual.values())
    if p_total <= 0 or q_total <= 0:
        raise ValueError("label_shift needs a positive total on each side")
    labels = set(expected) | set(actual)
    return float(0.5 * sum(abs(expected.get(k, 0) / p_total - actual.get(k, 0) / q_total) for k in labels))


# ---------------------------------------------------------------- the report


@dataclass(frozen=True)
class DriftThresholds:
    """Alert when a measure is above its threshold (defaults and their sources: module docstring)."""

    psi_confidence: float = 0.2
    domain_auc: float = 0.75
    label_shift: float = 0.25
    fallback_rate_increase: float = 0.15
    out_of_scope_rate_increase: float = 0.15
    accuracy_drop: float = 0.05  # estimated accuracy this far below the validation accuracy (ATC)
    min_embedding_rows: int = 20  # fewer recent embeddings: no domain AUC / MMD


def _label_counts(labels) -> dict[str, int]:
    if isinstance(labels, Mapping):
        return {str(k): int(v) for k, v in labels.items()}
    return dict(Counter(str(x) for x in labels))


def drift_report(baseline: DriftBaseline, *, embeddings: np.ndarray | None, confidence, labels,
                 fallback_rate: float | None, out_of_scope_rate: float | None = None,
                 thresholds: DriftThresholds = DriftThresholds(), seed: int = 0, set_confidence=None) -> dict:
    """Recent traffic against `baseline`. `labels`: predicted labels, or a {label: count} mapping;
    `embeddings` None (e.g. from the prediction log, which keeps none): no domain AUC or MMD.
    A fallback-rate alert needs the baseline's fallback_rate (see fallback_rate_under).
    `set_confidence`: a multi-label model's predicted-set probabilities, the score its accuracy fit
    thresholds (core.evaluation.accuracy_estimate.SET_SCORE); `confidence` is every other fit's."""
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    counts = _label_counts(labels)
    out = {"n": int(len(confidence)), "psi_confidence": None, "domain_auc": None, "mmd": None, "label_shift": None,
           "fallback_rate": fallback_rate, "fallback_rate_baseline": baseline.fallback_rate,
           "out_of_scope_rate": out_of_scope_rate, "out_of_scope_rate_baseline": baseline.out_of_scope_rate,
           "model_version": baseline.model_version, "baseline_rows": len(baseline.confidence),
           "thresholds": asdict(thresholds)}
    if len(confidence) and len(baseline.confidence):
        out["psi_confidence"] = psi(baseline.confidence, confidence)
    if sum(counts.values()) and sum(baseline.label_share.values()):
        out["label_shift"] = label_shift(baseline.label_share, counts)
    out["accuracy_estimate"] = _accuracy_estimate(baseline, confidence, set_confidence, thresholds)
    if embeddings is not None and len(embeddings) >= thresholds.min_embedding_rows \
            and len(baseline.embeddings) >= thresholds.min_embedding_rows:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != baseline.embeddings.shape[1]:
            raise UserError(f"recent embeddings have shape {embeddings.shape}; the baseline's are "
                            f"[n, {baseline.embeddings.shape[1]}]: compare traffic of the baseline's own model")
        out["domain_auc"] = domain_auc(baseline.embeddings, embeddings, seed=seed)
        out["mmd"] = mmd_rbf(baseline.embeddings, embeddings, seed=seed)
    checks = {"psi_confidence": (out["psi_confidence"], thresholds.psi_confidence),
              "domain_auc": (out["domain_auc"], thresholds.domain_auc),
              "label_shift": (out["label_shift"], thresholds.label_shift),
              "fallback_rate": (_increase(fallback_rate, baseline.fallback_rate), thresholds.fallback_rate_increase),
              "out_of_scope_rate": (_increase(out_of_scope_rate, baseline.out_of_scope_rate),
                                    thresholds.out_of_scope_rate_increase),
              "accuracy_estimate": (out["accuracy_estimate"].get("drop"), thresholds.accuracy_drop)}
    out["alerts"] = [name for name, (value, limit) in checks.items() if value is not None and value > limit]
    out["drifted"] = bool(out["alerts"])
    return out


def _accuracy_estimate(baseline: DriftBaseline, confidence: np.ndarray, set_confidence, thresholds) -> dict:
    fit, note = baseline.accuracy, baseline.accuracy_note
    if fit is not None and fit.score == SET_SCORE:
        confidence = np.asarray([] if set_confidence is None else set_confidence, dtype=np.float64).ravel()
        confidence = confidence[np.isfinite(confidence)]
        if not len(confidence):
            fit, note = None, "these predictions carry no set_confidence (a multi-label router's predicted-set probability)"
    return estimate_accuracy(fit, confidence, max_drop=thresholds.accuracy_drop, note=note)


def _increase(recent: float | None, base: float | None) -> float | None:
    return None if recent is None or base is None or not math.isfinite(recent) else recent - base


# ---------------------------------------------------------------- recent traffic


class DriftWindow:
    """The last `size` routed rows of one model version, in memory: embeddings, confidence,
    predicted label, handover and out-of-scope flags. Thread-safe (the inference thread adds,
    /metrics reads)."""

    def __init__(self, model_version: str, *, size: int = BASELINE_ROWS, min_rows: int = 200):
        if size < 1 or min_rows < 1:
            raise UserError(f"DriftWindow needs size and min_rows >= 1, got {size}, {min_rows}")
        self.model_version, self.size, self.min_rows = model_version, size, min_rows
        self._lock = threading.Lock()
        self._emb: np.ndarray | None = None
        self._conf = np.zeros(size, dtype=np.float32)
        self._set_conf = np.full(size, np.nan, dtype=np.float32)  # a multi-label route's set_confidence
        self._fallback = np.zeros(size, dtype=bool)
        self._oos = np.zeros(size, dtype=bool)
        self._labels: list[tuple[str, ...]] = [()] * size  # a row's predicted label(s)
        self._next, self._seen = 0, 0

    @property
    def n(self) -> int:
        return min(self._seen, self.size)

    def add(self, embeddings: np.ndarray | None, routes: Sequence[Mapping], *, label_key: str = "label",
            label_set_key: str | None = None) -> None:
        """One batch: `embeddings` [len(routes), dim] (None: no embedding measures) and the router's
        outputs (the predicted label under `label_key`, "confidence", "fallback_reason"). A route
        with a list under `label_set_key` (a multi-label router's `intents`, each a mapping with the
        label under `label_key`) counts every label of that list for the label shift, none when empty."""
        if embeddings is not None:
            embeddings = np.asarray(embeddings, dtype=np.float32)
            if embeddings.ndim != 2 or len(embeddings) != len(routes):
                raise ValueError(f"embeddings {embeddings.shape} do not match {len(routes)} routes")
        with self._lock:
            if embeddings is not None and self._emb is None:
                self._emb = np.zeros((self.size, embeddings.shape[1]), dtype=np.float32)
            for i, route in enumerate(routes):
                j = self._next
                self._conf[j] = float(route["confidence"])
                self._set_conf[j] = float(route.get("set_confidence", np.nan))
                reason = route.get("fallback_reason")
                self._fallback[j], self._oos[j] = reason is not None, reason == "out_of_scope"
                chosen = route.get(label_set_key) if label_set_key else None
                self._labels[j] = (tuple(str(item[label_key]) for item in chosen) if isinstance(chosen, list)
                                   else (str(route.get(label_key)),))
                if self._emb is not None:
                    self._emb[j] = embeddings[i] if embeddings is not None else np.nan
                self._next, self._seen = (j + 1) % self.size, self._seen + 1

    def report(self, baseline: DriftBaseline, thresholds: DriftThresholds = DriftThresholds()) -> dict | None:
        """drift_report of the window against `baseline`, or None while it holds fewer than min_rows."""
        with self._lock:
            n = self.n
            if n < self.min_rows:
                return None
            conf, labels = self._conf[:n].copy(), [label for row in self._labels[:n] for label in row]
            set_conf = self._set_conf[:n].copy()
            fallback, oos = float(self._fallback[:n].mean()), float(self._oos[:n].mean())
            emb = None
            if self._emb is not None:
                emb = self._emb[:n].copy()
                emb = emb[np.isfinite(emb).all(axis=1)]  # rows added without embeddings
        report = drift_report(baseline, embeddings=emb, confidence=conf, labels=labels, fallback_rate=fallback,
                              out_of_scope_rate=oos, thresholds=thresholds, set_confidence=set_conf)
        return report | {"window_model_version": self.model_version, "window_size": self.size}
