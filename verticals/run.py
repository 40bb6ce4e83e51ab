"""A trained classifier's run directory in the Python API: `verticals.Run`.

    run = verticals.load("runs/x")                 # or verticals.train(...)
    run.predict(["my card was declined"])          # [{"label", "confidence", "top_k"}]
    run.predict_entities(news, ["Siemens", "Ocado"])  # finance: sentiment per company, with evidence
    run.evaluate()                                 # its own test split, rebuilt as training split it
    run.route(["..."]); run.serve(port=8000)       # the intent router, over HTTP
    run.select("predictions.db", budget=100)       # which logged queries to label next (active learning)
    run.export_onnx(); run.export_hf("out/")       # other runtimes and tools
    run.monitor("monitor.db", watchlist="watch.yaml")

A thin layer over what the CLI runs (core.models.predictor.load_run, core.classify.scoring,
solutions.support.router and its service, solutions.support.labelling, core.export), with the same
validation and errors.
Leaves out: training (verticals.api.train), other tasks' runs (verticals.recommender.EncoderRun)
and the finance monitor itself (verticals.monitor).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import numpy as np

from core.classify.multilabel_report import MULTILABEL_REPORT
from core.classify.report import CLASSIFICATION_REPORT
from core.foundation.errors import UserError
from core.foundation.quiet import quieted
from core.foundation.text import check_text
from core.mlops.prediction_logs import open_prediction_log
from core.models.multilabel import MultiLabelHead, load_multilabel_head
from core.models.predictor import RUNTIMES, load_run, model_dir
from solutions.support.deployment import ServedModel, load_baseline, model_version
from solutions.support.labelling import check_sheet_path, select_queries
from solutions.support.router import IntentRouter, RouterSettings, RoutingTable
from verticals.monitor import Monitor


def _texts(texts: str | Iterable[str]) -> tuple[list[str], bool]:
    """(checked texts, whether one bare string was given)."""
    single = isinstance(texts, str)
    items = [texts] if single else list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise UserError(f"text {i + 1} is a {type(text).__name__}, not a string")
    return [check_text(t, f"text {i + 1}") for i, t in enumerate(items)], single


class Run:
    """A trained classifier's run directory: its report, its model (a core.models.predictor.Predictor,
    loaded on first use in `runtime`) and what to do with it."""

    def __init__(self, path: str | os.PathLike, *, runtime: str = "torch", threads: int | None = None):
        if runtime not in RUNTIMES:
            raise UserError(f"unknown runtime '{runtime}'; choose one of {', '.join(RUNTIMES)}")
        self.path, self.runtime, self.threads = Path(path), runtime, threads
        self.model_dir = model_dir(self.path)
        self._model = None

    def __repr__(self) -> str:
        test = self.metrics.get("test", {})
        key = "exact_set_accuracy" if self.multi_label is not None else "accuracy"
        score = f", test {key.replace('_', ' ')} {test[key]:.4f}" if key in test else ""
        return f"Run({str(self.path)!r}, {len(self.labels)} labels{score}, runtime={self.runtime!r})"

    # ------------------------------------------------------------ what the run says
    @cached_property
    def report(self) -> dict:
        """report.json (config, data, metrics, confidence, cost, environment); {} for a bare model/ folder."""
        path = self.model_dir.parent / "report.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def config(self) -> dict:
        return self.report.get("config", {})

    @property
    def metrics(self) -> dict:
        """{split: {n, accuracy, macro_f1, ...}} as measured when the run finished."""
        return self.report.get("metrics", {})

    @property
    def cost(self) -> dict:
        return self.report.get("cost", {})

    @cached_property
    def labels(self) -> list[str]:
        return list(json.loads((self.model_dir / "classifier.json").read_text())["labels"])

    @cached_property
    def multi_label(self) -> MultiLabelHead | None:
        """The per-label thresholds of a multi-label run (model/multilabel.json); None: single-label."""
        return load_multilabel_head(self.model_dir)

    @property
    def model(self):
        """The Predictor (PyTorch TextClassifier or ONNX Runtime twin), loaded once."""
        if self._model is None:
            with quieted():
                self._model = load_run(self.model_dir, self.runtime, threads=self.threads)
        return self._model

    # ------------------------------------------------------------ using the model
    def predict(self, texts: str | Iterable[str], top_k: int = 3):
        """{"text", "label", "confidence", "top_k"} per text (a list, or one dict for one string);
        confidences are calibrated probabilities, as `verticals predict` prints them. A multi-label run
        adds "labels" (every label at or above its threshold, with probability and threshold; "label" is
        the most probable of them, None when there is none) and "out_of_scope"
        (core.classify.multilabel_scoring.predict_multilabel)."""
        from core.classify.scoring import predict_texts  # lazy: loads torch; `import verticals` must not

        items, single = _texts(texts)
        rows = predict_texts(self.model, items, top_k=top_k, multi_label=self.multi_label) if items else []
        return rows[0] if single else rows

    def predict_proba(self, texts: Iterable[str]) -> np.ndarray:
        """[n, len(labels)] calibrated probabilities, columns in `labels` order: softmax, or for a
        multi-label run one sigmoid per label (rows need not sum to 1)."""
        items, _ = _texts(texts)
        if not items:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if self.multi_label is not None:
            return self.multi_label.probabilities(self.model.predict_logits(items), self.model.temperature)
        return self.model.predict_proba(items)

    def predict_entities(self, texts: str | Iterable[str], entities=None, *, max_sentences: int | None = None):
        """Sentiment per company and per whole text, with the sentences that drove it (a sentiment run:
        solutions.finance.targeted). `entities`: None (every cashtag), a list of names or tickers, or a
        watchlist {TICKER: [names]}. One dict per text ({"document", "entities", "sentences_scored",
        "sentences_dropped", "truncated"}), or one dict for one string."""
        from solutions.finance.targeted import MAX_SENTENCES, predict_entities  # lazy: loads the sentiment helpers

        items, single = _texts(texts)
        rows = [r.to_dict() for r in predict_entities(self.model, items, entities,
                                                      max_sentences=max_sentences or MAX_SENTENCES)]
        return rows[0] if single else rows

    def evaluate(self, data: str | os.PathLike | None = None, *, split: str | None = None, data_dir: str | None = None,
                 text_column: str | None = None, label_column: str | None = None, encoding: str | None = None) -> dict:
        """Metrics on the run's own test split (default), another split (`split="validation"`), or
        every row of another labelled file / dataset (`data=`), as `verticals eval` computes them
        (a multi-label run: exact-set accuracy, micro/macro F1, per-label scores; `label_column`
        names its labels column)."""
        from core.classify.scoring import evaluate_run  # lazy: loads torch, as above

        columns = {k: v for k, v in (("text_column", text_column), ("label_column", label_column),
                                     ("encoding", encoding)) if v is not None}
        with quieted():
            return evaluate_run(self.model_dir.parent, None if data is None else str(data), data_dir=data_dir,
                                split=split, columns=columns, model=self.model)

    def router(self, routes: str | os.PathLike | None = None, **settings):
        """The intent router over this model (solutions.support.router): calibrated confidence,
        out-of-scope handover, a routing table YAML (`routes`); `settings`: min_confidence,
        min_margin, use_out_of_scope, top_k."""
        table = RoutingTable.from_yaml(Path(routes), self.labels) if routes else None
        return IntentRouter(self.model, table, RouterSettings(**settings), multi_label=self.multi_label)

    def route(self, texts: str | Iterable[str], routes: str | os.PathLike | None = None, **settings):
        items, single = _texts(texts)
        rows = self.router(routes, **settings).route_batch(items) if items else []
        return rows[0] if single else rows

    def app(self, routes: str | os.PathLike | None = None, *, token: str | None = None,
            public: Iterable[str] = (), log: str | os.PathLike | None = None, log_text: bool = False, **settings):
        """The FastAPI app `serve` runs (POST /v1/route, /v1/feedback, GET /v1/drift, /healthz,
        /readyz, /metrics, /docs), to mount in your own server or test with a client. `token`:
        bearer token for every route but health/readiness and `public` ones (docs, metrics).
        `log`: a prediction log (app.state.prediction_log) for feedback and drift reports: an SQLite
        path, or a postgresql:// URL that several replicas share
        (default: none, and no /v1/feedback); `log_text` keeps the texts, not only their hash."""
        from core.serving.app import Access  # lazy: loads fastapi, an optional extra
        from solutions.support.service import create_app  # lazy: loads fastapi, as above

        router = self.router(routes, **settings)
        served = ServedModel(router, model_version(self.model_dir), load_baseline(self.model_dir, router.settings),
                             str(self.path))
        prediction_log = None
        if log is not None:
            prediction_log = open_prediction_log(log, store_text=log_text)
        app = create_app(served, access=Access.from_settings(token, ",".join(public)), prediction_log=prediction_log)
        app.state.prediction_log = prediction_log
        return app

    def serve(self, port: int = 8000, host: str = "127.0.0.1", routes: str | os.PathLike | None = None, *,
              token: str | None = None, public: Iterable[str] = (), log: str | os.PathLike | None = None,
              log_text: bool = False, **settings) -> None:
        """Serve the router over HTTP until interrupted (as `verticals serve RUN`; `log`: see `app`)."""
        from core.serving.server import serve  # lazy: loads fastapi and uvicorn, optional extras

        app = self.app(routes, token=token, public=public, log=log, log_text=log_text, **settings)
        try:
            serve(app, host, port)
        finally:
            if app.state.prediction_log is not None:
                app.state.prediction_log.close()

    def select(self, source: str | os.PathLike, budget: int, *, strategy: str = "margin", seed: int = 0,
               labelled: Iterable[str | os.PathLike] = (), text_column: str = "text", max_candidates: int = 20_000,
               out: str | os.PathLike | None = None, overwrite: bool = False) -> list[dict]:
        """Which queries of `source` (a prediction log from `serve(log=...)`, or a .txt/.csv/.tsv/.jsonl
        file of queries) a human should label next, as `verticals support select` chooses them: `budget`
        sheet rows in pick order (text or its hash, request_id, count, intent and runner-up with their
        confidence, score, reason, an empty label). `strategy`: margin, entropy, badge, coreset or
        random; `labelled`: prediction logs or files of texts already labelled (skipped; coreset's
        covered points); at most `max_candidates` distinct texts are scored (a seeded sample of a larger
        pool). With `out`, the sheet is also written there as CSV."""
        if out is not None:
            check_sheet_path(out, overwrite)  # before the work: the file may hold labels being filled in
        with quieted():
            selection = select_queries(self.model, source, budget, strategy_name=strategy, seed=seed,
                                       labelled=list(labelled), text_column=text_column,
                                       max_candidates=max_candidates, multi_label=self.multi_label)
        if out is not None:
            selection.write_csv(out, overwrite=overwrite)
        return selection.rows

    def export_onnx(self, int8: bool = False) -> Path:
        """Write model/model.onnx (and model.int8.onnx) for `runtime="onnx"` / `"onnx-int8"`."""
        from core.export.onnx import export_run_onnx  # lazy: loads torch and onnx

        with quieted():
            return export_run_onnx(self.model_dir, int8=int8)[-1]

    def export_hf(self, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """A directory `transformers.pipeline("text-classification", model=out, trust_remote_code=True)`
        loads with these labels and predictions, with a model card (core.export.hub)."""
        from core.export.hub import export_hf, write_classifier_run  # lazy: loads torch and transformers

        renderer = CLASSIFICATION_REPORT if self.multi_label is None else MULTILABEL_REPORT  # the run's own card
        with quieted():
            return export_hf(self.model_dir.parent, Path(out), write_model=write_classifier_run,
                             card=renderer.card, overwrite=overwrite)

    def monitor(self, db: str | os.PathLike, **options) -> Monitor:
        """A finance monitor scoring with this model (see `verticals.monitor`)."""
        return Monitor(self.model, db, **options)
