"""`verticals recsys index` beyond the text index: a recipe run directory given in place of DATA
(`run_as_data`), and EASE served by scoring (`index_ease`).

`recsys index RUN --out DIR`: when the positional is a run directory of a recsys recipe
(config.yaml + model/, or encoder/ for the item encoder), the run is the model and its saved
config names the data (data.source, data.items, data.text_columns, data.threshold; --data-dir
still says where the catalogs live), so the index is built from the data the run was trained on.
What the run's model/ holds decides how it is served (solutions.recsys.cli.cmd_index: factors.json
for ALS/BPR, ease.json for EASE, set_autoencoder.json for the set autoencoder: `index_set`). `recsys index DATA --model X` works as before.
Split from solutions.recsys.cli to keep that module under the size limit; light imports at module
level for the same reason (`verticals --help` loads this module): scipy, FAISS and torch load
inside `index_ease`.
Leaves out: the text and factor indexes (solutions.recsys.cli, catalog, factors_index) and the
EASE index itself (ease_index).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from core.foundation.errors import UserError
from solutions.recsys.ease_report import memory_text
from solutions.recsys.protocol import training_split


def add_cold_args(p) -> None:
    """`recsys index`'s cold-item flags (solutions.recsys.cold, cold_slots)."""
    p.add_argument("--cold-items", action="store_true",
                   help="--model als|bpr: fit a map from item text (--encoder's vectors) to the factors, so items "
                        "without a training positive, and items added later by text (POST /v1/items), get a vector "
                        "and can be recommended; their exposure is chosen on the validation cut within "
                        "--max-metric-loss. Off by default: it embeds the whole catalog, refits the model on the "
                        "validation cut, and makes serving load the text encoder (torch)")
    p.add_argument("--max-metric-loss", type=float, default=0.02,
                   help="--cold-items: the share of validation NDCG@10 new items may cost (default 0.02: 2%%)")
    p.add_argument("--max-recall-loss", type=float, default=None,
                   help="--cold-items: also cap the share of validation Recall@20 (all items) new items may cost; "
                        "unset, reserved positions past 10 (free for NDCG@10) may take up to half of a top 20")


def is_recipe_run(path: str | Path) -> bool:
    """A finished or written run of a recsys recipe: config.yaml beside model/ (or encoder/)."""
    run = Path(path).expanduser()
    return (run / "config.yaml").is_file() and ((run / "model").is_dir() or (run / "encoder").is_dir())


def run_as_data(args, default_model: str) -> None:
    """In place: a run directory in `args.data` becomes `args.model`, and its config.yaml's data settings
    fill args.data / items / text_columns / threshold; otherwise `args.model` defaults to `default_model`."""
    if not is_recipe_run(args.data):
        args.model = args.model or default_model
        return
    run = Path(args.data).expanduser()
    if args.model:
        raise UserError(f"{run} is a run directory, which is the model to serve: drop --model {args.model}, or "
                        f"give the data first (`verticals recsys index DATA --model {run} --out DIR`)")
    data = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("data") or {}
    if not isinstance(data, dict) or not data.get("source"):
        raise UserError(f"{run / 'config.yaml'} names no data.source; give the data: `verticals recsys index DATA "
                        f"--model {run} --out DIR`")
    args.data, args.model = str(data["source"]), str(run)
    args.items = args.items or data.get("items") or None
    args.text_columns = data.get("text_columns") or args.text_columns
    if args.threshold is None and float(data.get("threshold", -1.0)) >= 0:
        args.threshold = float(data["threshold"])


def index_ease(args, data, out: Path, encoder: str) -> int:
    """The index of an EASE run (`verticals train recsys/ease`), or of EASE fitted here on every interaction with
    l2 chosen on the validation cut (`--model ease`), with `encoder`'s text vectors beside it for `similar` and
    new items: scored at request time (solutions.recsys.ease_index)."""
    from solutions.recsys.ease_index import build_ease_index, bytes_of_b, fit_ease, load_ease  # lazy: loads scipy

    if args.model == "ease":
        model, _ = fit_ease(training_split(data, threshold=args.threshold))
    else:
        model, _ = load_ease(Path(args.model) / "model")
    index = build_ease_index(model, data, out, encoder=encoder, data_spec=args.data, factory=args.factory,
                             metadata_columns=tuple(c for c in args.metadata_columns.split(",") if c),
                             half_life=args.half_life, threshold=args.threshold, data_dir=args.data_dir,
                             items=args.items, progress=not args.quiet)
    n = len(model.active)
    print(f"indexed {len(index)} items into {out}: EASE (l2 {model.l2:g}) scores the {n:,} with a training positive "
          f"(B: {memory_text(bytes_of_b(n))} in memory when served), the other {len(index) - n:,} rank after "
          f"them; {args.encoder} text vectors serve `similar` and new items")
    return 0


def index_set(args, data, out: Path) -> int:
    """The index of a set-autoencoder run (`verticals train recsys/set`): its item vectors in the one index,
    the user vector computed from the history at request time (solutions.recsys.set_recommender)."""
    from solutions.recsys.set_recommender import SetRecommender, build_set_index  # lazy: loads torch

    if args.metadata_columns:
        raise UserError("--metadata-columns filters are not kept in a set-autoencoder index yet; leave them out")
    model = SetRecommender.load(Path(args.model) / "model")
    unknown = sorted(set(data.items) - set(model.item_index))
    if unknown:
        raise UserError(f"{len(unknown)} item(s) of {args.data} are not in the run's catalog (e.g. {unknown[0]}): "
                        f"index the data the run was trained on, or retrain it on this data")
    index = build_set_index(model, data, out, factory=args.factory, threshold=args.threshold)
    print(f"indexed {len(index)} items into {out}: set autoencoder (dim {model.cfg.dim}); the user vector is "
          f"computed from the history at request time")
    return 0
