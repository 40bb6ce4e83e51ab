"""`verticals recsys train|index|recommend|similar|events|evaluate|serve`.

Light imports only at import time (the CLI's --help stays instant): each command imports the
modules that load torch, scipy, FAISS or the web framework when it runs.
DATA is a catalog name (`movielens_latest_small`, `demo_catalog`) or your own interactions CSV
(columns user_id,item_id,timestamp[,rating]) with `--items ITEMS.csv` (item_id + text columns).
`recsys index RUN --out DIR` takes a recipe run directory (config.yaml + model/ or encoder/) in place of DATA:
its config.yaml names the data and the run is the model.
`train` and `index` draw a progress bar on stderr (`--quiet`: none); `recommend` and `similar`
print each item's title (its catalog text, kept in the index directory) beside its id; `events`
writes the interactions a served index took (POST /v1/events) as a CSV for the next retrain.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.data.catalog import list_cards
from core.foundation.errors import UserError
from core.foundation.quiet import quiet_libraries
from core.foundation.settings import build_config
from core.serving.flags import add_serve_flags, serve_flags
from solutions.recsys.data import load_interactions
from solutions.recsys.index_cli import add_cold_args, index_ease, index_set, run_as_data
from solutions.recsys.protocol import evaluate_scores, split_dataset, training_split
from solutions.recsys.recipe_config import ItemEncoderModel, ItemEncoderRecipe, ItemEncoderTrain

MODEL, TRAIN = ItemEncoderModel(), ItemEncoderTrain()  # the recipe's defaults, which `recsys train` shares


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="catalog name (movielens_latest_small, demo_catalog) or interactions CSV")
    p.add_argument("--items", help="items CSV for your own interactions (item_id + text columns)")
    p.add_argument("--text-columns", default="title", help="item text columns of your own items CSV (comma-separated)")
    p.add_argument("--threshold", type=float, help="ratings >= this are positives (default: 3.5 for MovieLens, "
                                                   "all interactions otherwise)")
    p.add_argument("--data-dir", help="data root (default: env VERTICALS_DATA or ~/.cache/verticals/datasets)")


def _load(args):
    if args.data not in list_cards() and not Path(args.data).expanduser().is_file():
        raise UserError(f"unknown dataset '{args.data}': not a catalog name ({', '.join(list_cards())}) "
                        f"and no such file. Give a catalog name or your interactions CSV with --items ITEMS.csv")
    quiet_libraries()
    return load_interactions(args.data, root=args.data_dir, items=args.items,
                             item_text_columns=tuple(args.text_columns.split(",")))


def _filter(pairs: list[str] | None) -> dict | None:
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"bad filter '{pair}': use key=value, e.g. --filter genres=Comedy")
        out[key] = value
    return out


def cmd_train(args) -> int:
    """The item-encoder recipe (solutions.recsys.recipe) with these flags as its settings; the same
    run as `verticals train recsys/item-encoder data=... --out ...`."""
    from solutions.recsys.recipe import train_item_encoder  # lazy: loads torch

    quiet_libraries()
    raw = {"name": "recsys/item-encoder", "task": "recsys-item-encoder",
           "data": {"source": args.data, "items": args.items or "", "text_columns": args.text_columns,
                    "threshold": -1.0 if args.threshold is None else args.threshold},
           "model": {"backbone": args.backbone},
           "train": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "max_seconds": args.max_seconds,
                     "min_support": args.min_support, "seed": args.seed}}
    cfg = build_config(ItemEncoderRecipe, raw)
    report = train_item_encoder(cfg, Path(args.out), data_dir=args.data_dir, overwrite=args.overwrite,
                                progress=not args.quiet)
    fit, out = report["fit"], Path(args.out)
    (out / "train.json").write_text(json.dumps(report, indent=2))
    first, last = (fit["loss_first"] or [float("nan")])[0], (fit["loss_last"] or [float("nan")])[-1]
    print(f"trained {fit['steps']} steps on {fit['pairs']} pairs in {report['cost']['wall_seconds']:.1f} s; "
          f"loss {first:.3f} -> {last:.3f}; encoder: {out / 'encoder'}")
    return 0


def _encoder_path(model: str) -> str:
    run = Path(model)
    return str((run / "encoder").resolve()) if (run / "encoder").is_dir() else model


def cmd_index(args) -> int:
    from solutions.recsys.catalog import build_index  # lazy: loads tqdm and the FAISS index wrapper
    from solutions.recsys.ease_index import is_ease_run  # lazy: loads scipy and the FAISS index wrapper
    from solutions.recsys.factors_index import is_factor_run  # lazy: as above
    from solutions.recsys.set_recommender import is_set_run  # lazy: loads torch (the text index needs it too)

    run_as_data(args, MODEL.backbone)
    data = _load(args)
    out = Path(args.out)
    if args.model in FACTOR_MODELS or is_factor_run(args.model):
        return index_factors(args, data, out)
    if args.cold_items:
        raise UserError("--cold-items maps item text to a factor model's vectors: use it with --model als|bpr")
    if args.model == "ease" or is_ease_run(args.model):
        return index_ease(args, data, out, _encoder_path(args.encoder))
    if is_set_run(args.model):  # after ALS and EASE: this check loads torch
        return index_set(args, data, out)
    if (Path(args.model) / "model").is_dir():
        raise UserError(f"{Path(args.model) / 'model'} holds no model `recsys index` serves (factors.json: ALS or "
                        f"BPR, ease.json: EASE, set_autoencoder.json: the set autoencoder); train it with "
                        f"`verticals train recsys/als`, `recsys/ease` or `recsys/set`")
    index = build_index(data, _encoder_path(args.model), out, data_spec=args.data, factory=args.factory,
                        metadata_columns=tuple(c for c in args.metadata_columns.split(",") if c),
                        half_life=args.half_life, threshold=args.threshold, data_dir=args.data_dir, items=args.items,
                        progress=not args.quiet)
    print(f"indexed {len(index)} items ({index.factory}, dim {index.dim}) into {out}")
    return 0


INDEX_HELP = ("Build a saved item index from DATA, or from a recipe run directory in its place (`recsys index RUN "
              "--out DIR`: the run is the model and its config.yaml names the data).")
EASE_MEMORY = ("its dense item-item matrix takes 4·n² bytes of memory for n items with a training positive "
               "(about 380 MB for 9,742 items, 1.6 GB for 20,000; the fit refuses above 20,000)")
FACTOR_MODELS = ("als", "bpr")  # `recsys index --model als|bpr`: implicit's, served by its own user fold-in


def index_factors(args, data, out: Path) -> int:
    """The servable index of an ALS run (`verticals train recsys/als`), or of ALS / BPR fitted here with
    solutions.recsys.factorization's defaults on every interaction (`--model als|bpr`)."""
    from solutions.recsys.factorization import ALS, BPR  # lazy: loads scipy and implicit
    from solutions.recsys.factors_index import (  # lazy: loads the FAISS wrapper
        build_factor_index,
        factor_cold_items,
        load_factors,
    )

    if args.metadata_columns:
        raise UserError("--metadata-columns filters are not kept in an ALS/BPR index yet; leave them out")
    split = training_split(data, threshold=args.threshold)
    if args.model in FACTOR_MODELS:
        model = (ALS if args.model == "als" else BPR)(seed=args.seed).fit(split)
    else:
        model, _ = load_factors(Path(args.model) / "model")
    cold = factor_cold_items(model, split, data.items, encoder=_encoder_path(args.encoder),
                             max_metric_loss=args.max_metric_loss, max_recall_loss=args.max_recall_loss,
                             seed=args.seed) if args.cold_items else None
    index = build_factor_index(model, data, out, factory=args.factory, threshold=args.threshold, cold=cold)
    kind, warm = type(model).__name__, len(model.active)
    placed = (f"{len(index) - warm} without one placed by their text" if cold is not None and cold.exposure else
              f"{len(data.items) - warm} without one have no {kind} vector")
    print(f"indexed {len(index)} items ({kind} {model.params}, {index.factory}) into {out}: {warm} with a training "
          f"positive, {placed}")
    if cold is not None:
        print(f"cold map: {cold.summary()}" + ("" if cold.exposure else f"; no exposure of new items kept NDCG@10 "
              f"within --max-metric-loss {args.max_metric_loss}: no map saved, items cannot be added by text"))
    return 0


def _recommender(directory: str):
    from solutions.recsys.live import Recommender  # lazy: loads torch

    quiet_libraries()
    return Recommender.load(directory)


TITLE_CHARS = 70


def _print_hits(rows, as_json: bool, titles: dict[str, str]) -> None:
    """Ranked hits with each item's title (its catalog text) beside the id, where the index has one."""
    if as_json:
        print(json.dumps([{"id": i, "score": round(s, 6), **({"title": titles[i]} if i in titles else {})}
                          for i, s in rows]))
        return
    width = max((len(item_id) for item_id, _ in rows), default=0)
    for rank, (item_id, score) in enumerate(rows, 1):
        title = titles.get(item_id, "")
        title = title if len(title) <= TITLE_CHARS else title[:TITLE_CHARS - 1] + "…"
        print(f"{rank:3d}. {item_id:<{width}}  {score:.4f}  {title}".rstrip())


def cmd_recommend(args) -> int:
    from solutions.recsys.catalog import load_titles  # lazy: loads tqdm and the FAISS index wrapper

    if bool(args.user) == bool(args.items):
        raise UserError("give exactly one of --user USER or --items ID,ID,...")
    rec = _recommender(args.index_dir)
    if args.user:
        if args.user not in rec.catalog.histories:
            raise UserError(f"unknown user '{args.user}'; pass --items with recent item ids instead")
        history = rec.catalog.histories[args.user]
    else:
        history = args.items.split(",")
        unknown = [i for i in history if i not in rec.index]
        if unknown:
            raise UserError(f"unknown item id(s): {', '.join(unknown[:5])}")
    _print_hits(rec.recommend(history, args.k, _filter(args.filter), exclude_seen=True), args.json,
                load_titles(args.index_dir))
    return 0


def cmd_similar(args) -> int:
    from solutions.recsys.catalog import load_titles  # lazy: loads tqdm and the FAISS index wrapper

    if bool(args.item) == bool(args.text):
        raise UserError("give exactly one of --item ID or --text TEXT")
    rec = _recommender(args.index_dir)
    where = _filter(args.filter)
    if args.item:
        if args.item not in rec.index:
            raise UserError(f"unknown item id '{args.item}'")
        rows = rec.similar_to_item(args.item, args.k, where)
    else:
        rows = rec.similar_to_text(args.text, args.k, where)
    _print_hits(rows, args.json, load_titles(args.index_dir))
    return 0


def cmd_events(args) -> int:
    """Export the interaction events an index directory took (POST /v1/events) as a CSV."""
    from solutions.recsys.events import logged_events, write_events_csv  # lazy: loads the catalog (tqdm)

    events = logged_events(args.index_dir)
    write_events_csv(events, args.out)
    print(f"wrote {len(events)} events to {args.out} (user_id,item_id,timestamp,rating); add them to your "
          f"interactions file and run `verticals recsys train` / `index` on it to refit")
    return 0


EVALUATE_SYSTEMS = ("popular", "itemknn", "ease", "als", "bpr", "content", "hybrid")


def _tuned(name: str, split, seed: int):
    """EASE, ALS or BPR with its hyper-parameters chosen on the validation cut (never the test windows)."""
    from solutions.recsys.baselines import EASE, choose_on_validation  # lazy: loads scipy
    from solutions.recsys.factorization import ALS, BPR  # lazy: loads scipy

    if name == "ease":
        best, _ = choose_on_validation(EASE, [{"l2": v} for v in EASE.LAMBDAS], split)
        return EASE(**best), best
    cls = {"als": ALS, "bpr": BPR}[name]
    best, _ = choose_on_validation(lambda **p: cls(**p, seed=seed), cls.GRID, split)
    return cls(**best, seed=seed), best


def cmd_evaluate(args) -> int:
    from solutions.recsys.baselines import ItemKNN, MostPopular  # lazy: loads scipy
    from solutions.recsys.content import (  # lazy: loads torch
        ContentRecommender,
        HybridRecommender,
        TextEncoder,
        choose_alpha,
        embed_catalog,
    )

    systems = [s for s in args.systems.split(",") if s]
    unknown = sorted(set(systems) - set(EVALUATE_SYSTEMS))
    if unknown or not systems:
        raise UserError(f"unknown system(s) {', '.join(unknown) or '(none given)'}; choose from "
                        f"{','.join(EVALUATE_SYSTEMS)}")
    data = _load(args)
    split = split_dataset(data, threshold=args.threshold)
    if not split.eval_users():
        raise UserError(f"{args.data}: no user has both a training positive and a later test positive")
    results = {}
    vectors = None
    if {"content", "hybrid"} & set(systems):
        vectors = embed_catalog(TextEncoder.load(_encoder_path(args.model)), split.items, data.items)
    for name in systems:
        chosen = {}
        if name == "hybrid":
            model = HybridRecommender(ItemKNN(), ContentRecommender(vectors, split.items))
            chosen = {"alpha": choose_alpha(model, split)[0]}
        elif name in ("ease", "als", "bpr"):
            model, chosen = _tuned(name, split, args.seed)
        elif name == "content":
            model = ContentRecommender(vectors, split.items)
        else:
            model = {"popular": MostPopular, "itemknn": ItemKNN}[name]()
        model.fit(split)
        results[name] = evaluate_scores(lambda users: model.score([split.history(u) for u in users]), split)
        if chosen:
            results[name]["chosen_on_validation"] = chosen
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{'system':10s} {'users':>5s} {'recall@10':>9s} {'recall@20':>9s} {'ndcg@10':>8s} {'mrr':>7s} "
              f"{'cov@10':>7s}  chosen on validation")
        for name, m in results.items():
            chosen = " ".join(f"{k}={v}" for k, v in m.get("chosen_on_validation", {}).items())
            print(f"{name:10s} {m['users']:5d} {m['recall@10']:9.4f} {m['recall@20']:9.4f} {m['ndcg@10']:8.4f} "
                  f"{m['mrr']:7.4f} {m['coverage@10']:7.4f}  {chosen}")
    return 0


def cmd_serve(args) -> int:
    from core.serving.app import Access  # lazy: loads the web framework (the [serve] extra)
    from core.serving.server import serve  # lazy: as above
    from solutions.recsys.service import create_app  # lazy: as above

    flags = serve_flags(args)
    access = Access.from_flags(flags)
    state = _recommender(args.index_dir)
    print(f"serving {len(state.index)} items from {args.index_dir} on {flags.url} (docs: /docs); "
          f"writes are journaled in the index directory {access.describe()}", flush=True)
    serve(create_app(state, access=access), flags.host, flags.port)
    return 0


def register(subparsers) -> None:
    recsys = subparsers.add_parser("recsys", help="recommendation: train, index, recommend, similar, evaluate, serve")
    sub = recsys.add_subparsers(dest="recsys_command", required=True)

    p = sub.add_parser("train", help="fine-tune the item text encoder on co-consumption pairs")
    _data_args(p)
    p.add_argument("--out", required=True, help="run directory (encoder/ + train.json)")
    p.add_argument("--backbone", default=MODEL.backbone, help="minilm, tiny, or a local directory")
    p.add_argument("--steps", type=int, default=TRAIN.steps)
    p.add_argument("--batch-size", type=int, default=TRAIN.batch_size)
    p.add_argument("--lr", type=float, default=TRAIN.lr)
    p.add_argument("--max-seconds", type=float, default=TRAIN.max_seconds)
    p.add_argument("--min-support", type=int, default=TRAIN.min_support,
                   help="keep only item pairs shared by this many users (1: all)")
    p.add_argument("--seed", type=int, default=TRAIN.seed)
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("index", help="embed the catalog and build a saved item index", description=INDEX_HELP)
    _data_args(p)
    p.add_argument("--model", help="a `recsys train` run directory or a backbone (item text vectors; default "
                   f"{MODEL.backbone}); a `train recsys/als` run directory, or `als` (implicit's ALS fitted here with "
                   "its defaults): served with ALS's own user fold-in; items need a training positive. `ease`: EASE "
                   "fitted here, l2 chosen on the validation cut, or a `train recsys/ease` run directory: scored at "
                   f"request time: {EASE_MEMORY}. A `train recsys/set` run: the set autoencoder's item vectors")
    p.add_argument("--encoder", default=MODEL.backbone, help="the item text encoder of an EASE index (its vectors serve "
                   "similar and new items) and of --cold-items: a backbone (minilm, tiny) or a `recsys train` run")
    p.add_argument("--seed", type=int, default=0, help="the factor model's random initialisation (--model als|bpr)")
    add_cold_args(p)
    p.add_argument("--out", required=True, help="index directory")
    p.add_argument("--factory", default="Flat", help="FAISS factory: Flat, HNSW32, IVF1024,PQ32 (or flat/hnsw/ivfpq)")
    p.add_argument("--metadata-columns", default="", help="item columns to filter on, e.g. genres or category")
    p.add_argument("--half-life", type=float, default=5.0, help="recency half-life of a user's history, in items")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_index)

    for name, helptext in (("recommend", "items for a user, or for a list of recent items"),
                           ("similar", "items similar to an item or a free text")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("index_dir")
        if name == "recommend":
            p.add_argument("--user")
            p.add_argument("--items", help="recent item ids, comma-separated, oldest first")
        else:
            p.add_argument("--item")
            p.add_argument("--text")
        p.add_argument("-k", type=int, default=10)
        p.add_argument("--filter", action="append", help="metadata key=value (repeatable)")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_recommend if name == "recommend" else cmd_similar)

    p = sub.add_parser("events", help="export the interaction events a served index took, as an interactions CSV")
    p.add_argument("index_dir")
    p.add_argument("--out", required=True, help="CSV to write (user_id,item_id,timestamp,rating)")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("evaluate", help="ranking metrics under the temporal protocol")
    _data_args(p)
    p.add_argument("--model", default=MODEL.backbone, help="encoder for content/hybrid: run directory or backbone")
    p.add_argument("--systems", default="popular,itemknn,ease,als,bpr,content,hybrid",
                   help="comma-separated: popular, itemknn, ease, als, bpr, content, hybrid (ease/als/bpr and the "
                        "hybrid's alpha are tuned on a validation cut of the training histories)")
    p.add_argument("--seed", type=int, default=0, help="seed of ALS/BPR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("serve", help="HTTP API over a saved index (/v1/recommend, /v1/similar, /v1/items, /v1/events)",
                       description="Serve an index directory over HTTP. An EASE index (`recsys index --model ease`) "
                                   f"scores each request with B, held in memory: {EASE_MEMORY}.")
    p.add_argument("index_dir")
    add_serve_flags(p, default_port=8000)
    p.set_defaults(func=cmd_serve)
