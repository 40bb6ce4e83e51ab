import pytest

from tests.conftest import CARD, TRANSFER, write_csv


@pytest.fixture(scope="session")
def support_run(tmp_path_factory):
    """A tiny-backbone intent run (LoRA, calibrated, with a kNN out-of-scope scorer)."""
    from core.config import load_recipe_file
    from core.recipes import run_classification
    from verticals.registry import RECIPES

    folder = tmp_path_factory.mktemp("support-data")
    rows = [(t, "card") for t in CARD] + [(t, "transfer") for t in TRANSFER]
    write_csv(folder / "train.csv", rows * 3)
    write_csv(folder / "validation.csv", rows)
    write_csv(folder / "test.csv", rows)
    cfg = load_recipe_file(RECIPES["support/intent-lora"], {
        "backbone": "tiny", "data": str(folder), "max_steps": "20", "lr": "5e-3", "head_lr": "5e-2",
        "batch_size": "8", "probe_c": "100"})
    run = tmp_path_factory.mktemp("support-run")
    run_classification(cfg, run, progress=False)
    return run
