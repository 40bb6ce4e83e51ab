"""The generic `verticals` commands: train, demo, eval, predict, export, plan, recipes, datasets.

The app layer (verticals.cli) builds the parser with its lists (recipes, the demo recipe, tasks,
solution subcommands) and is the console entry; this module imports nothing from the solutions.
Imports that load torch stay inside the commands so `verticals --help` is instant.
Leaves out: the console entry and its `--nproc` relaunch (verticals.cli), the recipes' code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

from core.classify.config import parse_file_options
from core.data.catalog import data_root, dataset_dir, list_cards, load_card, verified_file
from core.data.multilabel import is_multilabel_card
from core.foundation.distributed import is_distributed, is_main
from core.foundation.errors import UserError
from core.foundation.quiet import quiet_libraries as _quiet_libraries
from core.foundation.settings import parse_overrides, read_recipe
from core.foundation.text import texts_from_args, texts_from_jsonl
from core.models.multilabel import load_multilabel_head
from core.models.predictor import RUNTIMES, load_run, model_dir
from core.runs.rundir import default_out
from verticals.recipe_files import resolve_recipe
from verticals.retrain_commands import register as register_retrain
from verticals.tasks import Task, run_task

if __name__ == "__main__":
    sys.exit("verticals.commands is not an entry point: run `verticals ...` or `python -m verticals.cli ...`")


def cmd_recipes(args, *, recipes: Mapping[str, Path]) -> int:
    for name, path in sorted(recipes.items()):
        desc = read_recipe(path).get("description", "") if Path(path).is_file() else f"(file missing: {path})"
        print(f"{name:28s} {desc}")
    return 0


def cmd_datasets(args) -> int:
    root = data_root(args.data_dir)
    print(f"data root: {root}")
    for name in list_cards():
        card = load_card(name)
        try:
            for f in card.get("files", []):
                verified_file(card, f["name"], root)
            status = "ok"
        except UserError as exc:
            status = f"missing or corrupt: {exc}"
        kind = card["task"] + (" (multi-label)" if is_multilabel_card(card) else "")  # rows with a labels list
        print(f"{name:24s} {kind:34s} {dataset_dir(card, root)}  [{status}]")
    return 0


def _print_summary(report: dict, run_dir: Path) -> None:
    """What a run reached, per split; classification metrics in their own line format."""
    print(f"\nrun: {run_dir}")
    for split, vals in (report.get("metrics") or {}).items():
        if {"n", "accuracy", "macro_f1"} <= set(vals):
            print(f"  {split:14s} n={vals['n']:<5d} accuracy={vals['accuracy']:.4f}  macro_f1={vals['macro_f1']:.4f}")
        else:
            print(f"  {split:14s} " + "  ".join(f"{k}={v:.4f}" for k, v in vals.items() if isinstance(v, float)))
    cost = report.get("cost") or {}
    if {"wall_seconds", "trainable_params", "total_params", "tokens_seen"} <= set(cost):
        print(f"  cost: {cost['wall_seconds']:.1f} s wall, {cost['cpu_seconds']:.1f} s CPU, peak RSS "
              f"{cost['peak_rss_mb']:.0f} MB, {cost['trainable_params']:,} of {cost['total_params']:,} params "
              f"trained ({100 * cost['trainable_fraction']:.2f}%), {cost['train_samples_per_second']:.1f} samples/s, "
              f"{cost['tokens_seen']:,} tokens")
    if "usd" in cost:
        prices = cost.get("usd_prices") or {}
        print(f"  money: {cost['core_hours']:.4f} core-hours, {cost['gpu_hours']:.4f} GPU-hours = ${cost['usd']:.4f} at "
              f"${prices.get('usd_per_core_hour')}/core-hour, ${prices.get('usd_per_gpu_hour')}/GPU-hour (assumed prices)")
    conf = report.get("confidence", {})
    if conf:
        print(f"  calibration: temperature {conf['temperature']:.2f}, test ECE {conf['test_ece_before']:.4f} -> "
              f"{conf['test_ece_after']:.4f}{'  (' + conf['temperature_note'] + ')' if conf.get('temperature_note') else ''}")
    for key, value in conf.items():
        if key.startswith("out_of_scope_"):
            print(f"  out-of-scope '{key[len('out_of_scope_'):]}' set: AUROC {value['auroc']:.3f}, "
                  f"{100 * value['out_of_scope_recall']:.0f}% of out-of-scope queries handed over at "
                  f"{100 * value['in_scope_recall']:.0f}% in-scope recall")
    if (run_dir / "report.md").is_file():
        print(f"  report: {run_dir / 'report.md'}")


def train_config(args, recipes: Mapping[str, Path], tasks: Mapping[str, Task]):
    """The validated config of `args.recipe` + `args.overrides` and the runner of its task."""
    return resolve_recipe(args.recipe, parse_overrides(args.overrides), recipes, tasks)


def cmd_train(args, *, recipes: Mapping[str, Path], tasks: Mapping[str, Task]) -> int:
    cfg, runner = train_config(args, recipes, tasks)
    if args.resume and not args.out:
        raise UserError("--resume needs --out RUN_DIR: the directory of the interrupted run to continue")
    if getattr(args, "nproc", 1) > 1 and "WORLD_SIZE" not in os.environ:
        raise UserError("--nproc is started by the `verticals` command (python -m verticals.cli train ... --nproc N)")
    if is_distributed() and not args.out:
        raise UserError("under a launcher (WORLD_SIZE is set) pass --out RUN_DIR, so that every process "
                        "works on the same run directory")
    _quiet_libraries()
    out = Path(args.out) if args.out else default_out(cfg.name)
    report = runner(cfg, out, data_dir=args.data_dir, resume=args.resume, overwrite=args.overwrite,
                    progress=not args.quiet)
    if is_main() and report:
        _print_summary(report, out)
    return 0


def cmd_demo(args, *, recipes: Mapping[str, Path], tasks: Mapping[str, Task], demo_recipe: str) -> int:
    """Train the app's demo recipe (`demo_recipe`) into --out (default runs/demo-<time>)."""
    args.recipe, args.resume = demo_recipe, False
    args.out = str(Path(args.out) if args.out else default_out("demo"))
    print(f"verticals demo: {demo_recipe}: {read_recipe(recipes[demo_recipe]).get('description', '')}")
    return cmd_train(args, recipes=recipes, tasks=tasks)


def cmd_eval(args) -> int:
    columns = parse_file_options(args.options)
    _quiet_libraries()
    from core.classify.scoring import evaluate_run  # lazy: loads torch; `verticals --help` must not

    result = evaluate_run(Path(args.run_dir), args.data, data_dir=args.data_dir, split=args.split, columns=columns,
                          runtime=args.runtime)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"evaluated: {result['evaluated']}")
    if result.get("multi_label"):
        _print_multilabel_eval(result)
        return 0
    print(f"n={result['n']} accuracy={result['accuracy']:.4f} macro_f1={result['macro_f1']:.4f}")
    for name, oos in result.get("out_of_scope", {}).items():
        print(f"out-of-scope '{name}': n={oos['n_out_of_scope']} auroc={oos['auroc']:.4f} "
              f"out_of_scope_recall={oos['out_of_scope_recall']:.4f} in_scope_recall={oos['in_scope_recall']:.4f}")
    if "out_of_scope_skipped" in result:
        print(f"out-of-scope: not measured, {result['out_of_scope_skipped']}")
    return 0


def _print_multilabel_eval(result: dict) -> None:
    print(f"n={result['n']} exact_set_accuracy={result['exact_set_accuracy']:.4f} micro_f1={result['micro_f1']:.4f} "
          f"macro_f1={result['macro_f1']:.4f} out_of_scope_rate={result['out_of_scope_rate']:.4f}")
    for label, row in result["per_label"].items():
        print(f"  {label:24s} precision={row['precision']:.4f} recall={row['recall']:.4f} f1={row['f1']:.4f} "
              f"support={row['support']}")
    for name, oos in result.get("out_of_scope", {}).items():
        print(f"out-of-scope '{name}': n={oos['n_out_of_scope']} out_of_scope_recall={oos['out_of_scope_recall']:.4f}")


def cmd_predict(args) -> int:
    texts = texts_from_args(args.texts) or texts_from_jsonl(sys.stdin, "stdin")
    if not texts:
        raise UserError("no texts to predict: pass them as arguments or as JSONL on stdin")
    _quiet_libraries()
    from core.classify.scoring import predict_texts  # lazy: loads torch, as above

    model = load_run(args.run_dir, args.runtime)
    head = load_multilabel_head(model_dir(args.run_dir))  # None: a single-label run
    for row in predict_texts(model, texts, top_k=args.top_k, multi_label=head):
        print(json.dumps(row))
    return 0


def cmd_export(args, *, tasks: Mapping[str, Task]) -> int:
    """`export onnx RUN [--int8]` (beside the model, for --runtime onnx) or `export hf RUN OUT` (a
    directory plain transformers or sentence-transformers loads, as the run's task writes it,
    optionally pushed to a hub repo)."""
    _quiet_libraries()
    if args.format == "hf":
        from core.export.hub import MODELING_FILE, export_hf, push_to_hub  # lazy: loads torch, as above

        task = run_task(Path(args.run_dir), tasks)
        out = export_hf(Path(args.run_dir), Path(args.out), write_model=task.export_model, card=task.report.card,
                        overwrite=args.overwrite)
        how = (f"transformers.pipeline(\"text-classification\", model=\"{out}\", trust_remote_code=True)"
               if (out / MODELING_FILE).is_file() else f"sentence_transformers.SentenceTransformer(\"{out}\")")
        print(f"wrote {out} (model card: {out / 'README.md'}); load it with {how}")
        if args.push:
            print(f"pushed to {push_to_hub(out, args.push)}")
        return 0
    from core.export.onnx import export_run_onnx, onnx_size  # lazy: loads torch and onnx

    for path, runtime in zip(export_run_onnx(Path(args.run_dir), int8=args.int8), ("onnx", "onnx-int8")):
        # the size of graph + external weights (model.onnx.data): the graph file alone is a fraction of it
        print(f"wrote {path} ({onnx_size(path) / 2**20:.1f} MB with its weights); serve it with --runtime {runtime}")
    return 0


def cmd_plan(args) -> int:
    """`plan data=FILE target=0.9 [budget=30m] [latency=5ms] [--run]`: predict every recipe's
    accuracy, time and cost here and recommend the cheapest that meets the target (core.plan.planner)."""
    _quiet_libraries()
    from core.plan.planner import make_plan, plan_config, run_recommended  # lazy: loads torch, as above
    from core.plan.plot import plot_plan  # lazy: loads matplotlib, as above
    from core.plan.report import format_outcome, format_plan  # lazy: with the planner, as above

    cfg = plan_config(parse_overrides(args.settings))
    out = Path(args.out) if args.out else default_out("plan")
    result = make_plan(cfg, data_dir=args.data_dir, progress=not args.quiet)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(result, indent=2))
    print("\n" + format_plan(result))
    print(f"\nplan: {out / 'plan.json'}  plot: {plot_plan(result, out / 'plan.png')}")
    if args.run:
        report, run_dir = run_recommended(result, cfg, out, data_dir=args.data_dir, progress=not args.quiet)
        _print_summary(report, run_dir)
        print("\n" + format_outcome(result["outcome"]) + f"\n(stored in {out / 'plan.json'} under `outcome`)")
    return 0


class Parser(argparse.ArgumentParser):
    """Positional arguments may come after options (`predict RUN --top-k 1 "hello"`, `train R --out D
    epochs=2`): a command without subcommands parses intermixed. Plain argparse binds an empty
    `texts*` together with `run_dir` and then rejects the later texts. Subcommand parsers inherit
    this class (argparse's default parser_class is the parent's type)."""

    _intermixing = False

    def _can_intermix(self) -> bool:
        """argparse's own limits: no subcommands or REMAINDER positionals, no exclusive positionals."""
        positionals = self._get_positional_actions()
        return (not any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in positionals)
                and not any(a in positionals for g in self._mutually_exclusive_groups for a in g._group_actions))

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing or not self._can_intermix():  # intermixed parsing calls back in here
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def nproc_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes (1 or more)")
    return n


def runtime_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=RUNTIMES, default="torch",
                   help="how to run the model: torch, or ONNX Runtime fp32 / int8 (after `verticals export onnx RUN [--int8]`)")


def _add_catalog_commands(sub, recipes: Mapping[str, Path]) -> None:
    """`recipes` and `datasets`: what can be trained, on what."""
    p = sub.add_parser("recipes", help="list the recipes")
    p.set_defaults(func=partial(cmd_recipes, recipes=recipes))
    p = sub.add_parser("datasets", help="list the data catalog and check files in the data root")
    p.add_argument("--data-dir", help="data root (default: env VERTICALS_DATA or ~/.cache/verticals/datasets)")
    p.set_defaults(func=cmd_datasets)


def _train_args(p: argparse.ArgumentParser, with_recipe: bool = True) -> None:
    """The arguments `train` and `demo` share."""
    if with_recipe:
        p.add_argument("recipe", help="a recipe name, e.g. support/intent-lora (see `verticals recipes`), or a "
                                      "YAML file: your own recipe, or a run's config.yaml to run it again")
    p.add_argument("overrides", nargs="*",
                   help="key=value by dotted path or by a name unique across sections, e.g. train.lr=1e-4 "
                        "epochs=2 backbone=tiny data=my.csv")
    p.add_argument("--data-dir", help="data root (default: env VERTICALS_DATA or ~/.cache/verticals/datasets)")
    p.add_argument("--out", help="run directory (default: runs/<recipe>-<time>); an existing run there "
                                 "is refused unless --overwrite (or --resume)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_train_commands(sub, recipes: Mapping[str, Path], tasks: Mapping[str, Task], demo_recipe: str) -> None:
    """`train` a recipe, and `demo` (the app's demo recipe)."""
    p = sub.add_parser("train", help="train a recipe into a run directory")
    _train_args(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its checkpoint (same recipe and overrides)")
    p.add_argument("--nproc", type=nproc_count, default=1,
                   help="train on N processes of this machine (torchrun: one per GPU, or CPU processes); "
                        "ignored under a launcher that set WORLD_SIZE")
    p.set_defaults(func=partial(cmd_train, recipes=recipes, tasks=tasks))
    p = sub.add_parser("demo", help=f"train + evaluate the demo recipe, {demo_recipe} (see `verticals recipes`)")
    _train_args(p, with_recipe=False)
    p.set_defaults(func=partial(cmd_demo, recipes=recipes, tasks=tasks, demo_recipe=demo_recipe))


def _add_run_commands(sub) -> None:
    """`eval` and `predict` on a trained classifier run."""
    p = sub.add_parser("eval", help="evaluate a run: its own test split, another split, or a labelled CSV/JSONL file")
    p.add_argument("run_dir")
    p.add_argument("options", nargs="*",
                   help="how to read --data files: text_column=, label_column=, encoding= (default: the run's; "
                        "for a multi-label run label_column= names its labels column)")
    p.add_argument("--data", help="dataset name, folder or file (default: the run's own data). A file the run "
                                  "was not trained on is evaluated whole, unless --split is given")
    p.add_argument("--split",
                   help="train | validation | test (or a dataset's extra set): default test, rebuilt exactly "
                        "as the run split its data")
    p.add_argument("--data-dir")
    p.add_argument("--json", action="store_true", help="print the full metrics as JSON")
    runtime_arg(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="classify texts (arguments, or JSONL {\"text\": ...} on stdin)")
    p.add_argument("run_dir")
    p.add_argument("texts", nargs="*")
    p.add_argument("--top-k", type=int, default=3)
    runtime_arg(p)
    p.set_defaults(func=cmd_predict)


def _add_export_command(sub, tasks: Mapping[str, Task]) -> None:
    """`export onnx` and `export hf`."""
    export = partial(cmd_export, tasks=tasks)
    p = sub.add_parser("export", help="export a run: ONNX for faster CPU inference, or a transformers directory")
    export_sub = p.add_subparsers(dest="format", required=True)
    p = export_sub.add_parser("onnx", help="model.onnx (+ model.onnx.data) beside the run's model, for --runtime onnx")
    p.add_argument("run_dir")
    p.add_argument("--int8", action="store_true", help="also write a dynamically int8-quantised model (faster on CPU)")
    p.set_defaults(func=export)
    p = export_sub.add_parser("hf", help="a directory transformers.pipeline(..., trust_remote_code=True) loads, "
                                         "with a model card")
    p.add_argument("run_dir")
    p.add_argument("out", help="the directory to write (new or empty; --overwrite replaces a previous export)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous `verticals export hf` in OUT")
    p.add_argument("--push", metavar="REPO_ID", help="also upload OUT to this hub model repo (created if missing; "
                                                    "needs network access and a token)")
    p.set_defaults(func=export)


def _add_plan_command(sub) -> None:
    p = sub.add_parser("plan", help="predict each recipe's accuracy, time and cost on your data here; recommend "
                                    "the cheapest that meets a target")
    p.add_argument("settings", nargs="*", help="data=FILE target=0.90 [budget=30m] [latency=5ms] [backbone=minilm] "
                                               "[text_column= label_column= epochs= systems=tfidf,probe,lora,...]")
    p.add_argument("--data-dir", help="data root for catalog names (default: env VERTICALS_DATA)")
    p.add_argument("--out", help="where plan.json, plan.png (and the --run run) go (default: runs/plan-<time>)")
    p.add_argument("--run", action="store_true", help="then train the recommended recipe")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_plan)


def build_parser(*, recipes: Mapping[str, Path], demo_recipe: str, tasks: Mapping[str, Task],
                 solution_clis: Sequence = (), read_feedback: Callable | None = None) -> argparse.ArgumentParser:
    """The generic commands over the app layer's lists: `recipes` (name -> YAML), `demo_recipe` (the
    one of them `verticals demo` trains), `tasks` (a task name -> verticals.tasks.Task); each of
    `solution_clis` adds its subcommands via `register(sub)`; `read_feedback` (path -> feedback
    examples) enables `retrain` (verticals.retrain_commands)."""
    parser = Parser(prog="verticals", description="Domain NLP solutions on one fine-tuning core.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_catalog_commands(sub, recipes)
    _add_train_commands(sub, recipes, tasks, demo_recipe)
    _add_run_commands(sub)
    _add_export_command(sub, tasks)
    _add_plan_command(sub)
    register_retrain(sub, read_feedback=read_feedback)
    for module in solution_clis:
        module.register(sub)
    return parser


def run_command(command: Callable[[], int]) -> int:
    """Run a parsed command: a UserError is printed without a traceback (exit 2)."""
    try:
        return command()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; continue a training run with the same `verticals train RECIPE [overrides] "
              "--out RUN_DIR` plus --resume", file=sys.stderr)
        return 130
