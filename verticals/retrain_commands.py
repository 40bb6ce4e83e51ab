"""The `verticals retrain` and `verticals registry` commands.

    verticals retrain RUN --feedback DB|postgresql://... [--out DIR] [--registry DIR] [--promote auto|never] [key=value ...]
    verticals registry list DIR [--json]
    verticals registry promote DIR VERSION [--by NAME] [--reason TEXT]
    verticals registry rollback DIR [--by NAME] [--reason TEXT]

RUN may also be a registry directory: its champion is retrained and the registry is that one.
`read_feedback(path) -> list[FeedbackExample]` comes from the app layer (verticals.feedback_sources),
which knows the solutions' databases; this module imports none of them. Imports that load torch stay inside
the commands so `verticals --help` is instant.
Leaves out: retraining and the gate (core.mlops.retrain), the registry itself (core.mlops.registry).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

from core.foundation.errors import UserError
from core.foundation.quiet import quiet_libraries
from core.foundation.settings import parse_overrides
from core.mlops.prediction_logs import shown
from core.mlops.registries import REGISTRY_STATE_HELP, is_registry, open_registry
from core.mlops.registry import REGISTRY_FILE, STATE_MARKER, ModelRegistry, current_user
from core.mlops.retrain_plan import RetrainSettings
from core.runs.rundir import default_out


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def comparison_table(section: dict, names: tuple[str, str] = ("champion", "challenger")) -> str:
    """Champion vs challenger: original test, feedback holdout (in the gate's metric), out-of-scope
    feedback handover, each new label's accuracy (recall for a multi-label run), gate."""
    champion, challenger = section["champion"], section["challenger"]
    metric = section["gate"].get("metric", "accuracy")  # micro_f1 for a multi-label run (core.mlops.retrain_multilabel)
    rows = [(f"original test {metric}", "test", metric), (f"feedback holdout {metric}", "feedback_holdout", metric),
            ("out-of-scope feedback handed over", "feedback_out_of_scope", "out_of_scope_recall")]
    lines = [f"{'':36s}{names[0]:>18s}{names[1]:>20s}"]
    for title, split, key in rows:
        a, b = champion.get(split, {}).get(key), challenger.get(split, {}).get(key)
        n = (challenger.get(split) or champion.get(split) or {}).get("n")
        if a is None and b is None:
            continue
        lines.append(f"{title + (f' (n={n})' if n else ''):36s}{_fmt(a):>18s}{_fmt(b):>20s}")
    for label in section.get("new_labels", []):
        held = challenger.get("feedback_holdout", {})
        acc = (held.get("per_label_accuracy") or held.get("per_label_recall") or {}).get(label)
        lines.append(f"{'  new label ' + label:36s}{'-':>18s}{_fmt(acc):>20s}")
    cost = section.get("cost", {})
    lines.append(f"retrain cost: {cost.get('train_seconds', 0):.1f} s training, {cost.get('cpu_seconds', 0):.1f} s CPU, "
                 f"{cost.get('total_wall_seconds', 0):.1f} s in all")
    gate = section["gate"]
    lines.append(f"gate: {'PROMOTE' if gate['promote'] else 'keep the champion'}: " + "; ".join(gate["reasons"]))
    return "\n".join(lines)


def cmd_retrain(args, *, read_feedback: Callable[[str], list]) -> int:
    from core.mlops.retrain import retrain, retrain_and_register  # lazy: loads torch; `verticals --help` must not

    settings = RetrainSettings.from_overrides(parse_overrides(args.settings))
    run, registry = Path(args.run_dir), args.registry
    if is_registry(run):  # a registry: retrain its champion, register there
        reg = open_registry(run, args.registry_state)
        champion = reg.champion_path()  # one read of the registry's state
        if champion is None:
            raise UserError(f"the registry {run} has no champion to retrain")
        registry, run = registry or reg, champion
    feedback = read_feedback(args.feedback)  # a str: Path() would fold a postgresql:// URL's "//"
    if not feedback:
        raise UserError(f"{shown(args.feedback)} holds no labelled feedback yet (feedback rows with a text); nothing to "
                        f"retrain on")
    out = Path(args.out) if args.out else default_out("retrain")
    quiet_libraries()
    common = dict(out=out, data_dir=args.data_dir, settings=settings, progress=not args.quiet, overwrite=args.overwrite)
    if registry:
        registry = registry if isinstance(registry, ModelRegistry) else open_registry(registry, args.registry_state)
        report = retrain_and_register(run, feedback, registry=registry, promote=args.promote, by=args.by, **common)
    else:
        report = retrain(run, feedback, **common)
    section = report["retrain"]
    print(f"\nchallenger: {out}")
    where = report.get("registry")
    names = ("champion", "challenger") if not where else (f"champion {where['parent']}", f"challenger {where['version']}")
    print(comparison_table(section, names))
    if where:
        print(f"registered {where['version']} as {where['status']} in {where['path']}; champion: {where['champion']}")
    return 0


def cmd_registry(args) -> int:
    if not is_registry(args.registry):
        raise UserError(f"{args.registry} is not a model registry (no {REGISTRY_FILE} or {STATE_MARKER}); "
                        f"`verticals retrain RUN --feedback DB --registry {args.registry}` creates one")
    reg = open_registry(args.registry, args.registry_state)
    if args.action == "promote":
        reg.promote(args.version, by=args.by or current_user(), reason=args.reason or "promoted by hand")
        print(f"{args.version} is the champion of {reg.path}")
    elif args.action == "rollback":
        version = reg.rollback(by=args.by or current_user(), reason=args.reason or "rollback")
        print(f"rolled back: {version} is the champion of {reg.path}")
    elif args.json:
        print(json.dumps({"champion": reg.champion(), "versions": reg.versions()}, indent=2))
    else:
        print(f"registry {reg.path}: champion {reg.champion() or 'none'}")
        print(f"{'version':9s}{'status':11s}{'parent':8s}{'test acc':>9s}{'fb acc':>8s}  {'created':26s}promoted by")
        for v in reg.versions():  # a multi-label version: exact-set accuracy
            test, held = (_accuracy(v["metrics"].get(split, {})) for split in ("test", "feedback_holdout"))
            print(f"{v['version']:9s}{v['status']:11s}{v['parent'] or '-':8s}{_fmt(test):>9s}{_fmt(held):>8s}  "
                  f"{v['created_at']:26s}{v['promoted_by'] or '-'}")
    return 0


def _accuracy(metrics: dict):
    """A split's accuracy, or its exact-set accuracy for a multi-label version (None when neither)."""
    return metrics.get("accuracy", metrics.get("exact_set_accuracy"))


def register(sub, *, read_feedback: Callable[[Path], list] | None) -> None:
    """Add `retrain` (when the app layer gives a feedback reader) and `registry` to the subcommands."""
    if read_feedback is not None:
        p = sub.add_parser("retrain", help="a challenger from a deployed run and the feedback on it; promote it "
                                           "only if it wins on the feedback and holds the original test split")
        p.add_argument("run_dir", help="the deployed run directory, or a registry directory (its champion)")
        p.add_argument("settings", nargs="*", help="key=value: holdout_fraction, replay_ratio, min_examples_new_label, "
                                                   "margin, steps, seed, validation_fraction")
        p.add_argument("--feedback", required=True, metavar="DB",
                       help="a support prediction log (its file, or the postgresql:// URL shared by the service's "
                            "replicas) or a finance monitor database")
        p.add_argument("--out", help="the challenger's run directory (default: runs/retrain-<time>)")
        p.add_argument("--registry", metavar="DIR", help="register the challenger in this model registry "
                                                         "(the deployed run becomes v0001 of an empty one)")
        p.add_argument("--registry-state", metavar="URL",
                       help=REGISTRY_STATE_HELP)
        p.add_argument("--promote", choices=("auto", "never"), default="auto",
                       help="auto: promote iff the gate says so; never: only register it as a candidate")
        p.add_argument("--by", help="who promotes (default: env VERTICALS_USER or the login name)")
        p.add_argument("--data-dir", help="data root of the run's original data (default: env VERTICALS_DATA)")
        p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
        p.add_argument("--quiet", action="store_true", help="no progress")
        p.set_defaults(func=partial(cmd_retrain, read_feedback=read_feedback))

    p = sub.add_parser("registry", help="model registry: list versions, promote one, roll back the champion")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("list", help="every version with its status, parent and metrics")
    a.add_argument("registry")
    a.add_argument("--json", action="store_true")
    a.add_argument("--registry-state", metavar="URL", help=REGISTRY_STATE_HELP)
    for name, what in (("promote", "make VERSION the champion"), ("rollback", "champion -> the previous champion")):
        a = actions.add_parser(name, help=what)
        a.add_argument("registry")
        if name == "promote":
            a.add_argument("version")
        a.add_argument("--by", help="who (default: env VERTICALS_USER or the login name)")
        a.add_argument("--registry-state", metavar="URL", help=REGISTRY_STATE_HELP)
        a.add_argument("--reason", help="why (recorded in the registry)")
    p.set_defaults(func=cmd_registry)
