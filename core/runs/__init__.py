"""Run directories: claiming one, the config and report written into it, the readable report, the
model card, experiment tracking, and the recipe scaffold every task's runner uses.

Owns: `rundir` (claim_run_dir, write_config, write_report, read_report, environment,
default_out), `markdown` (report.md), `card` (README.md model cards), `tracking` (MLflow /
TensorBoard), `scaffold` (claim -> tracker -> ledger -> report, shared by every recipe), `tasks`
(what a task registers so runs render without knowing the task).
May import: core.foundation, core.data, core.confidence, core.models, core.engine, core.evaluation.
"""
