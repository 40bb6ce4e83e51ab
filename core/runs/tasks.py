"""What a task registers so a run directory renders without core knowing the task.

A `ReportRenderer` is a task's two writers for people: report.md (its sections, composed from
core.runs.markdown's generic ones and its own) and the model card README.md (core.runs.card's
front matter and generic sections around its own). The recipe that writes a run knows its task
and passes its renderer (core.runs.scaffold.RecipeRun.write_report); the app layer looks a
finished run's renderer up in its task registry (verticals.registry.TASKS) by the report's
`config.task`, e.g. for `verticals export hf`.
Leaves out: the renderers themselves (core.classify.report, solutions.recsys.report).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ReportRenderer:
    """A task's report.md and model card, each a pure function of the run's report dict."""

    markdown: Callable[[dict], str]  # report -> report.md text
    card: Callable[..., str]  # card(report, *, exported=False) -> README.md text
