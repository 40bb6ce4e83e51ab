import pytest

from tests.conftest import CARD, TRANSFER, write_toy_splits


@pytest.fixture(scope="session")
def support_run(tmp_path_factory):
    """A tiny-backbone intent run (LoRA, calibrated, with a kNN out-of-scope scorer)."""
    from core.classify.config import load_recipe_file
    from core.classify.recipes import run_recipe
    from verticals.registry import RECIPES

    folder = tmp_path_factory.mktemp("support-data")
    write_toy_splits(folder)
    cfg = load_recipe_file(RECIPES["support/intent-lora"], {
        "backbone": "tiny", "data": str(folder), "max_steps": "20", "lr": "5e-3", "head_lr": "5e-2",
        "batch_size": "8", "probe_c": "100"})
    run = tmp_path_factory.mktemp("support-run")
    run_recipe(cfg, run, progress=False)
    return run


# In-distribution texts for a drift baseline big enough for the embedding measures (>= 20 rows).
BASELINE_TEXTS = [f"{t} {suffix}" for t in CARD + TRANSFER for suffix in ("", "please", "today", "again", "now")]


@pytest.fixture(scope="session")
def served_run(support_run, tmp_path_factory):
    """A copy of `support_run` with a drift baseline of BASELINE_TEXTS (made here when the recipe
    saved none, so these tests do not depend on the training-time baseline's size)."""
    import shutil

    from core.evaluation.drift_baseline import load_drift_baseline, save_drift_baseline
    from core.models.predictor import load_run

    run = tmp_path_factory.mktemp("served") / "run"
    shutil.copytree(support_run, run)
    baseline = load_drift_baseline(run)
    if baseline is None or len(baseline.confidence) < len(BASELINE_TEXTS):
        model = load_run(run)
        logits, embeddings = model.predict_all(BASELINE_TEXTS)
        save_drift_baseline(model, logits, embeddings, run / "model", model_version="test")
    return run
