"""The `verticals` console entry (`verticals ...` or `python -m verticals.cli ...`).

Builds the generic command line (verticals.commands) over the registry (recipes, the demo, tasks, the solutions'
subcommands) and runs the chosen command. `verticals train RECIPE ... --nproc N` re-executes the
same train command under torchrun (N processes on this machine) after validating the config
once here; under a launcher that already set WORLD_SIZE, `--nproc` is ignored.
Leaves out: the commands (verticals.commands, solutions/*/cli.py) and what each process does when
distributed (the engine, through accelerate).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from core.foundation.errors import UserError
from core.runs.rundir import default_out
from verticals.commands import build_parser, run_command, train_config
from verticals.feedback_sources import read_feedback
from verticals.registry import DEMO_RECIPE, RECIPES, SOLUTION_CLIS, TASKS, install

ENTRY_MODULE = "verticals.cli"


def parser():
    return build_parser(recipes=RECIPES, demo_recipe=DEMO_RECIPE, tasks=TASKS, solution_clis=SOLUTION_CLIS,
                        read_feedback=read_feedback)


def _is_nproc_option(token: str) -> bool:
    """`--nproc`, `--nproc=2` or an abbreviation argparse accepts (`--npr 2`)."""
    name = token.partition("=")[0]
    return len(name) > 2 and "--nproc".startswith(name)


def torchrun_command(argv: list[str], nproc: int, out: Path | str | None = None) -> list[str]:
    """The command that runs `argv` (a `train ...` command line) on `nproc` local processes:
    `python -m torch.distributed.run --standalone --nproc_per_node N -m verticals.cli <argv
    without --nproc>`, plus `--out` when `argv` has none (every process must share one run dir,
    not each stamp its own time)."""
    rest, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif _is_nproc_option(token):
            skip = "=" not in token  # `--nproc N`: drop N too
        else:
            rest.append(token)
    if out is not None and not any(t == "--out" or t.startswith("--out=") for t in rest):
        rest += ["--out", str(out)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", ENTRY_MODULE, *rest]


def launch(args, argv: list[str]) -> int:
    """Validate the config here (errors once, not once per process), then run the N processes,
    their output streaming to ours; returns torchrun's exit code."""
    cfg, _ = train_config(args, RECIPES, TASKS)
    if args.resume and not args.out:
        raise UserError("--resume needs --out RUN_DIR: the directory of the interrupted run to continue")
    command = torchrun_command(argv, args.nproc, args.out or default_out(cfg.name))
    print(f"launching {args.nproc} processes: {shlex.join(command)}", file=sys.stderr, flush=True)
    process = subprocess.Popen(command)
    try:
        return process.wait()
    except KeyboardInterrupt:  # torchrun got the same Ctrl-C and stops its workers: let it finish
        process.wait()
        raise


def main(argv: list[str] | None = None) -> int:
    install()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.command == "train":
        if "WORLD_SIZE" in os.environ:
            args.nproc = 1  # started by a launcher: this process is one of its workers
        elif args.nproc > 1:
            return run_command(lambda: launch(args, argv))
    return run_command(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
