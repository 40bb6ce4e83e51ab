"""Experiment tracking (core.runs.tracking): the demo recipe (tiny backbone, 4 steps, validation every 2)
trained with `tracking=mlflow` into a local SQLite store and with `tracking=tensorboard`, then read
back with MLflow's client and TensorBoard's event reader; a backend that fails mid-run keeps the
run; a missing extra and an unknown backend are refused before anything trains."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from core.classify.config import DataConfig, RecipeConfig, build_recipe
from core.runs.tracking import TrackingConfig
from core.foundation.settings import build_config
from core.foundation.errors import UserError
from core.runs.tracking import MlflowTracker, RunTracking, TensorBoardTracker, final_metrics, flat_params, mlflow_uri, open_tracker
from verticals.cli import main

DEMO = ["train", "support/intent-demo", "backbone=tiny", "max_steps=4", "eval_every=2"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module (creating one runs MLflow's migrations: seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def the_run(uri: str, run_dir: Path):
    """The MLflow run whose report says it logged `run_dir`."""
    return client(uri).get_run(json.loads((run_dir / "report.json").read_text())["tracking"]["run_id"])


@pytest.fixture(scope="module")
def mlflow_run(store, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("tracked") / "demo-mlflow"
    assert main([*DEMO, "tracking=mlflow", f"tracking.uri={store}", "--out", str(run_dir), "--quiet"]) == 0
    return run_dir


# ---------------------------------------------------------------- MLflow, read back with its client

def test_mlflow_run_holds_config_params_tags_and_the_run_name(store, mlflow_run):
    report = json.loads((mlflow_run / "report.json").read_text())
    run = the_run(store, mlflow_run)
    assert run.info.status == "FINISHED" and run.info.run_name == "demo-mlflow"
    assert run.data.params["train.lr"] == str(report["config"]["train"]["lr"])
    assert run.data.params["model.backbone"] == "tiny" and run.data.params["tracking.backend"] == "mlflow"
    assert run.data.tags["verticals.recipe"] == "support/intent-demo"
    assert run.data.tags["verticals.run_dir"] == str(mlflow_run.resolve())
    assert client(store).get_experiment(run.info.experiment_id).name == "support/intent-demo"


def test_mlflow_metrics_are_the_validation_history_live_then_the_final_split_metrics_and_cost(store, mlflow_run):
    report = json.loads((mlflow_run / "report.json").read_text())
    run = the_run(store, mlflow_run)
    history = client(store).get_metric_history(run.info.run_id, "validation_accuracy")
    rows = [json.loads(line) for line in (mlflow_run / "metrics.jsonl").read_text().splitlines()]
    assert [(m.step, m.value) for m in history] == [(r["step"], r["validation_accuracy"]) for r in rows
                                                     if "validation_accuracy" in r]
    assert [m.step for m in history] == [2, 4]
    # logged while training, not copied at the end: the step-2 point predates the report
    assert history[0].timestamp < (mlflow_run / "report.json").stat().st_mtime * 1000
    metrics = run.data.metrics
    assert metrics["test/accuracy"] == pytest.approx(report["metrics"]["test"]["accuracy"])
    assert metrics["validation/macro_f1"] == pytest.approx(report["metrics"]["validation"]["macro_f1"])
    assert metrics["cost/wall_seconds"] == pytest.approx(report["cost"]["wall_seconds"])
    assert metrics["cost/trainable_params"] == report["cost"]["trainable_params"]
    assert metrics["fit/steps"] == 4 and "train_loss" in metrics


def test_mlflow_artifacts_are_the_report_config_and_plots(store, mlflow_run):
    run = the_run(store, mlflow_run)
    names = {a.path for a in client(store).list_artifacts(run.info.run_id)}
    assert {"report.md", "report.json", "config.yaml", "loss_curve.png"} <= names
    local = Path(client(store).download_artifacts(run.info.run_id, "report.md"))
    assert local.read_text() == (mlflow_run / "report.md").read_text()


def test_a_long_param_is_cut_to_mlflows_limit_and_a_resume_continues_the_same_run(store, tmp_path):
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    run_dir = tmp_path / "resumable"
    first = MlflowTracker(store, "resume-test", run_dir)
    first.start("resumable", {"data.source": "x" * (MAX_PARAM_VAL_LENGTH + 50), "device": "cpu"}, {}, resume=False)
    first.log_metrics({"train_loss": 2.0}, step=1)
    first.end("FAILED")  # interrupted
    again = MlflowTracker(store, "resume-test", run_dir)
    again.start("resumable", {"data.source": "y", "device": "cuda"}, {}, resume=True)  # device may differ
    again.log_metrics({"train_loss": 1.0}, step=2)
    again.end()
    assert again.run_id == first.run_id
    run = client(store).get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"data.source": "x" * MAX_PARAM_VAL_LENGTH, "device": "cpu"}
    assert [m.value for m in client(store).get_metric_history(first.run_id, "train_loss")] == [2.0, 1.0]
    fresh = MlflowTracker(store, "resume-test", run_dir)
    fresh.start("resumable", {}, {}, resume=False)  # --overwrite: a new run, never the old one
    assert fresh.run_id != first.run_id


# ---------------------------------------------------------------- TensorBoard, read back with its reader

def events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    reader.Reload()
    return reader


def test_tensorboard_events_hold_the_history_final_metrics_cost_config_report_and_hparams(tmp_path):
    run_dir = tmp_path / "demo-tb"
    assert main([*DEMO, "tracking=tensorboard", "--out", str(run_dir), "--quiet"]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["tracking"] == {"backend": "tensorboard", "log_dir": str(run_dir / "tensorboard")}
    reader = events(run_dir / "tensorboard")
    assert [(s.step, round(s.value, 5)) for s in reader.Scalars("validation_accuracy")] == [
        (r["step"], round(r["validation_accuracy"], 5)) for r in map(json.loads, (run_dir / "metrics.jsonl").open())
        if "validation_accuracy" in r]
    assert reader.Scalars("test/accuracy")[-1].value == pytest.approx(report["metrics"]["test"]["accuracy"])
    assert reader.Scalars("cost/wall_seconds")[-1].value == pytest.approx(report["cost"]["wall_seconds"])
    config = reader.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "train.max_steps: 4" in config and "model.backbone: tiny" in config
    assert "report/text_summary" in reader.Tags()["tensors"]
    assert "plots/loss_curve" in reader.Tags()["images"]
    assert set(reader.PluginTagToContent("hparams")) == {"_hparams_/experiment", "_hparams_/session_start_info",
                                                         "_hparams_/session_end_info"}


def test_tensorboard_under_a_shared_root_keeps_another_run_of_the_same_name(tmp_path):
    first = TensorBoardTracker(tmp_path / "root" / "run", own_dir=False)
    first.start("run", {"lr": 0.1}, {}, resume=False)
    first.log_metrics({"train_loss": 1.0}, step=1)
    first.end()
    second = TensorBoardTracker(tmp_path / "root" / "run", own_dir=False)
    second.start("run", {"lr": 0.2}, {}, resume=False)
    second.end()
    assert second.log_dir != first.log_dir and events(first.log_dir).Scalars("train_loss")[0].value == 1.0
    again = TensorBoardTracker(tmp_path / "own", own_dir=True)  # the run's own folder: a fresh start clears it
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "events.out.tfevents.0.old").write_bytes(b"")
    again.start("own", {}, {}, resume=False)
    again.end()
    assert not (tmp_path / "own" / "events.out.tfevents.0.old").exists()


def test_the_recsys_item_encoder_is_tracked_too(tmp_path, tiny_backbone_dir):
    from solutions.recsys.recipe_config import ItemEncoderRecipe
    from solutions.recsys.recipe import train_item_encoder

    cfg = build_config(ItemEncoderRecipe, {"data": {"source": "demo_catalog"}, "model": {"backbone": "tiny"},
                                           "train": {"steps": 3, "batch_size": 4, "min_support": 1}},
                       {"tracking": "tensorboard"})
    report = train_item_encoder(cfg, tmp_path / "run", progress=False)
    reader = events(tmp_path / "run" / "tensorboard")
    assert [s.step for s in reader.Scalars("train_loss")] == [3]  # the engine's row at the last step
    assert reader.Scalars("fit/samples")[-1].value == report["fit"]["samples"] == 12
    assert "cost/wall_seconds" in reader.Tags()["scalars"] and report["tracking"]["backend"] == "tensorboard"


# ---------------------------------------------------------------- failures never cost the run

def test_a_backend_failing_mid_run_warns_once_and_the_run_completes(store, tmp_path, monkeypatch, capsys):
    calls = []
    log_metrics = MlflowTracker.log_metrics

    def flaky(self, metrics, step):
        calls.append(step)
        if len(calls) > 1:
            raise ConnectionError("tracking server went away")
        log_metrics(self, metrics, step)

    monkeypatch.setattr(MlflowTracker, "log_metrics", flaky)
    run_dir = tmp_path / "demo-flaky"
    assert main([*DEMO, "tracking=mlflow", f"tracking.uri={store}", "--out", str(run_dir), "--quiet"]) == 0
    assert (run_dir / "model").is_dir() and (run_dir / "report.md").is_file()
    err = capsys.readouterr().err
    assert err.count("mlflow tracking failed") == 1 and "tracking server went away" in err
    assert len(calls) == 2  # dropped after the failure: nothing more was tried
    report = json.loads((run_dir / "report.json").read_text())
    assert "ConnectionError" in report["tracking"]["error"]
    run = the_run(store, run_dir)
    assert run.info.status == "FAILED" and "train_loss" in run.data.metrics  # what came before stays


def test_only_the_main_process_tracks(monkeypatch, tmp_path):
    cfg = RecipeConfig(data=DataConfig(source="x.csv"), tracking=TrackingConfig(backend="mlflow"))
    monkeypatch.setenv("RANK", "1")
    assert open_tracker(cfg, tmp_path / "run").describe() == {}
    monkeypatch.setenv("RANK", "0")
    assert open_tracker(cfg, tmp_path / "run").describe()["backend"] == "mlflow"


# ---------------------------------------------------------------- refused before anything trains

@pytest.mark.parametrize("backend", ["mlflow", "tensorboard"])
def test_a_missing_extra_is_a_user_error_naming_the_install(backend, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, backend, None)  # as if the extra were not installed
    with pytest.raises(UserError, match=rf"bad value for 'tracking': '{backend}' needs {backend}, which is not "
                                        rf'installed: pip install "verticals\[{backend}\]"'):
        build_recipe({"data": "x.csv"}, {"tracking": backend})
    cfg = RecipeConfig(data=DataConfig(source="x.csv"), tracking=TrackingConfig(backend=backend))  # no config check
    with pytest.raises(UserError, match=rf'pip install "verticals\[{backend}\]"'):
        open_tracker(cfg, tmp_path / "run")
    assert main([*DEMO, f"tracking={backend}", "--out", str(tmp_path / "cli-run"), "--quiet"]) != 0
    assert f'pip install "verticals[{backend}]"' in capsys.readouterr().err
    assert not (tmp_path / "cli-run").exists()


def test_a_sqlite_store_without_sqlalchemy_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "alembic", None)
    cfg = RecipeConfig(data=DataConfig(source="x.csv"), tracking=TrackingConfig(backend="mlflow", uri=str(tmp_path)))
    with pytest.raises(UserError, match=r"needs alembic, which is not installed: pip install \"verticals\[mlflow\]\""):
        open_tracker(cfg, tmp_path / "run")


def test_an_unknown_backend_is_rejected_by_the_config():
    with pytest.raises(UserError, match=r"bad value for 'tracking': 'wandb'; choose one of none, mlflow, tensorboard"):
        build_recipe({"data": "x.csv"}, {"tracking": "wandb"})
    with pytest.raises(UserError, match=r"bad value for 'tracking.backend': 'wandb'"):
        build_recipe({"data": "x.csv", "tracking": {"backend": "wandb"}})
    cfg = build_recipe({"data": "x.csv", "tracking": "tensorboard"}, {"tracking.uri": "tb", "experiment": "e"})
    assert cfg.tracking == TrackingConfig(backend="tensorboard", uri="tb", experiment="e")


# ---------------------------------------------------------------- the pure parts

def test_params_are_the_dotted_config_keys():
    assert flat_params({"name": "r", "train": {"lr": 1e-4, "ema": {"decay": 0.9}}, "note": None}) == {
        "name": "r", "train.lr": 1e-4, "train.ema.decay": 0.9, "note": ""}


def test_final_metrics_are_the_numbers_of_the_report_sections_by_path():
    report = {"metrics": {"test": {"n": 4, "accuracy": 3 / 4}}, "fit": {"steps": 2, "stopped_early": True},
              "cost": {"wall_seconds": 1.5}, "confidence": {"ood_scorer": "knn", "out_of_scope_oos": {"auroc": 0.9}},
              "data": {"train": 10}}
    assert final_metrics(report) == {"test/n": 4.0, "test/accuracy": 0.75, "fit/steps": 2.0, "cost/wall_seconds": 1.5,
                                     "confidence/out_of_scope_oos/auroc": 0.9}


def test_the_mlflow_store_is_the_setting_then_the_environment_then_sqlite_beside_the_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "runs" / "a"
    assert mlflow_uri("", run) == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert mlflow_uri(str(tmp_path / "store"), run) == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    assert mlflow_uri(str(tmp_path / "t.db"), run) == f"sqlite:///{tmp_path / 't.db'}"
    assert mlflow_uri("http://127.0.0.1:5000", run) == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert mlflow_uri("", run) == "http://127.0.0.1:5001"
    assert mlflow_uri("sqlite:///x.db", run) == "sqlite:///x.db"


def test_without_tracking_the_backend_is_never_called_and_the_report_has_no_section(tmp_path):
    class Exploding:
        def __getattr__(self, name):
            raise AssertionError(f"{name} called without tracking")

    tracking = RunTracking(Exploding())  # the name defaults to "none": tracking=none
    tracking.start(RecipeConfig(data=DataConfig(source="x.csv")), tmp_path)
    tracking.log_row({"step": 1, "train_loss": 1.0})
    tracking.finish({"cost": {"wall_seconds": 1.0}}, tmp_path)
    assert tracking.describe() == {}
