"""A task, as the app layer knows it: what differs per task, and finding the task of a recipe or a run.

`Task` is what the registry (verticals.registry.TASKS) lists per task name, the name a recipe YAML
gives as `task:` and a run's report records under `config.task` (default classification): the
config schema its YAML builds, the runner that trains it, the renderer of its report.md and model
card (core.runs.tasks.ReportRenderer; the recipe passes the same one when it writes the run), what
`verticals export hf` writes of its model, and what `verticals.load` opens its run as. Core never
sees this: the app passes the parts down (a runner, a renderer, an export writer).
Leaves out: the list itself (verticals.registry) and the tasks' code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from core.foundation.errors import UserError
from core.runs.rundir import read_report
from core.runs.tasks import ReportRenderer

DEFAULT_TASK = "classification"  # a recipe or report without `task:`


@dataclass(frozen=True)
class Task:
    """What differs per task (see the module docstring)."""

    schema: type  # the recipe config dataclass its YAML builds
    runner: Callable[..., dict]  # runner(cfg, run_dir, *, data_dir, resume, overwrite, progress) -> report
    report: ReportRenderer  # its report.md and model card
    export_model: Callable[[Path, dict, Path], None]  # (run_dir, report, directory): what `export hf` writes
    open_run: Callable[..., object]  # open_run(path, *, runtime, threads): what `verticals.load` returns


def task_named(name: str, tasks: Mapping[str, Task], where: str) -> Task:
    """The task called `name` (in `where`: a recipe file, a run directory), or a UserError listing the known ones."""
    if name not in tasks:
        raise UserError(f"unknown task '{name}' in {where}; known tasks: {', '.join(sorted(tasks))}")
    return tasks[name]


def report_task(report: dict) -> str:
    """The task name a run's report records."""
    return str((report.get("config") or {}).get("task") or DEFAULT_TASK)


def run_task(run_dir: Path, tasks: Mapping[str, Task]) -> Task:
    """The task of the finished run in `run_dir` (a UserError when it is not one)."""
    return task_named(report_task(read_report(run_dir)), tasks, str(run_dir))
