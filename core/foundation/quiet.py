"""Keeping the libraries quiet: Hugging Face warnings and progress bars, tokenizers' fork warning.

`quiet_libraries()` is for a command line (process-wide, once at start: the CLI draws its own
progress). `quieted()` is for library code called from a user's program (the Python API): the
same silence while the call runs, and the user's own logging settings restored afterwards.
Leaves out: our own progress bars (every long call takes `progress=`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

CHATTY_LOGGERS = ("mlflow", "alembic")  # experiment tracking: "Creating initial MLflow database tables" at INFO


def quiet_libraries() -> None:
    """Process-wide: transformers at error level, no HF progress bars, no FutureWarnings."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging  # lazy: transformers costs seconds of start-up

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def quieted(enabled: bool = True) -> Iterator[None]:
    """Within the block: transformers (and huggingface_hub) at error level, their progress bars
    off, their FutureWarnings/UserWarnings hidden; afterwards, what the caller had. `enabled=False`
    changes nothing (a user who asked for the libraries' output)."""
    if not enabled:
        yield
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from huggingface_hub.utils import (  # lazy: only when a hub is used
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )
    from transformers.utils import logging as hf_logging  # lazy: transformers costs seconds of start-up

    verbosity, bars, hub_bars = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled(),
                                 are_progress_bars_disabled())
    levels = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|peft|torch|sklearn)\b")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if not hub_bars:
            enable_progress_bars()
