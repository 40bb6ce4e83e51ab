"""`verticals export hf` of an item-encoder run: its encoder/ is already a sentence-transformers directory.

`write_encoder(run_dir, report, directory)` copies it into the export directory; core.export.hub
writes the model card beside it and renames the directory into place.
Leaves out: the card (solutions.recsys.report) and the export's guards (core.export.hub).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from core.foundation.errors import UserError


def write_encoder(run_dir: Path, report: dict, directory: Path) -> None:
    """Copy the run's encoder/ into `directory` (the report adds nothing: the encoder/ is complete)."""
    encoder = Path(run_dir) / "encoder"
    if not (encoder / "config.json").is_file():
        raise UserError(f"{run_dir} has no encoder/ (an item-encoder run writes one); train it again with "
                        f"`verticals train recsys/item-encoder --out {run_dir} --overwrite`")
    shutil.copytree(encoder, directory, dirs_exist_ok=True)
