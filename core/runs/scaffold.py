"""The recipe scaffold: what every task's recipe does around its training, written once.

    run = RecipeRun.open(cfg, run_dir, resume=..., overwrite=..., has_checkpoint=...)
    ... load data, build the model
    run.save_config()
    with run.ledger() as ledger:
        ... train
    if not run.is_main:
        return run.wait_for_main()
    ... save the model, evaluate
    return run.write_report({...task sections...}, cost=ledger.cost, steps=n, renderer=TASK_REPORT)

`open` opens the tracker first (a missing extra fails before --overwrite clears anything), claims
the run directory (core.runs.rundir.claim_run_dir: never silently replaces or resumes with other
settings; only the main process clears it), waits for the other processes, resolves the device,
seeds every generator with `cfg.train.seed` and starts the tracker. `write_report` adds the sections
every run has (config, cost, tracking, environment), writes report.json and, with the task's
renderer (core.runs.tasks.ReportRenderer), report.md / README.md, and ends the tracker.
Classification (core.classify.recipes), the recsys item encoder and safe retraining
(core.mlops.retrain) all run through it.
Leaves out: what a task trains and evaluates, and its report sections.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.foundation.cost import Cost, CostLedger, gpus_held
from core.foundation.device import resolve_device, seed_everything
from core.foundation.distributed import barrier, is_main, rank, world_size
from core.foundation.settings import to_dict
from core.runs.rundir import claim_run_dir, environment, write_config, write_report
from core.runs.tasks import ReportRenderer
from core.runs.tracking import RunTracking, open_tracker


@dataclass
class RecipeRun:
    """One training run's frame: its config, directory, device, tracker and whether it resumes."""

    cfg: object
    run_dir: Path
    device: str
    resuming: bool
    tracker: RunTracking

    @classmethod
    def open(cls, cfg, run_dir: Path, *, resume: bool, overwrite: bool, has_checkpoint: bool,
             seed: int | None = None) -> RecipeRun:
        """Claim `run_dir` for `cfg` (every process checks it alike; only the main one clears it for
        --overwrite), then resolve the device, seed (`seed`, default cfg.train.seed) and start the tracker."""
        run_dir = Path(run_dir)
        tracker = open_tracker(cfg, run_dir)  # before the claim: a missing extra fails before --overwrite clears
        resuming = claim_run_dir(run_dir, to_dict(cfg), resume=resume, overwrite=overwrite,
                                 has_checkpoint=has_checkpoint, clear=is_main())
        barrier()
        device = resolve_device(cfg.device)
        seed_everything(cfg.train.seed if seed is None else seed)
        tracker.start(cfg, run_dir, resume=resuming)
        return cls(cfg, run_dir, device, resuming, tracker)

    @property
    def is_main(self) -> bool:
        return is_main()

    def ledger(self) -> CostLedger:
        """The cost ledger of the training block (GPU-hours count every process's GPU)."""
        return CostLedger(gpus=gpus_held(self.device, world_size()))

    def save_config(self) -> None:
        """config.yaml, written once the data and the model are known to load (main process only)."""
        if is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_config(self.run_dir, to_dict(self.cfg))

    def wait_for_main(self) -> dict:
        """Another process of a distributed run: wait until the main one has written the run, and say
        which process this was (on another machine it may not see the run directory at all)."""
        barrier()
        return {"rank": rank(), "world_size": world_size(), "run_dir": str(self.run_dir), "written_by_rank": 0}

    def write_report(self, sections: dict, *, cost: Cost, steps: int, renderer: ReportRenderer) -> dict:
        """Main process: the report of the run (config, the task's `sections`, cost, tracking,
        environment) into report.json and, as the task's `renderer` writes them, report.md / README.md;
        sent to the tracker; then release the other processes. Returns the report."""
        tracking = self.tracker.describe()
        report = {"config": to_dict(self.cfg), **sections, "cost": cost.to_dict(),
                  **({"tracking": tracking} if tracking else {}),
                  "environment": environment() | {"device": self.device}}
        write_report(self.run_dir, report, renderer)
        self.tracker.finish(report, self.run_dir, step=steps)
        barrier()
        return report
