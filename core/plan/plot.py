"""The plan's plot: each system's predicted accuracy (with its range) against its training dollars.

Leaves out: the predictions themselves (core.plan.planner).
"""

from __future__ import annotations

from pathlib import Path


def plot_plan(result: dict, path: Path) -> Path:
    import matplotlib  # lazy: matplotlib only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib only when a plot is drawn

    preds = result["predictions"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for p in preds:
        x = max(p["train_usd"], 1e-7)
        ax.errorbar([x], [100 * p["accuracy"]], yerr=[[100 * (p["accuracy"] - p["accuracy_low"])],
                                                       [100 * (p["accuracy_high"] - p["accuracy"])]],
                    fmt={"measured": "o", "trial": "^"}.get(p["how"], "s"), capsize=3,
                    color="tab:green" if p["system"] == result["recommendation"] else "tab:blue")
        ax.annotate(p["system"], (x, 100 * p["accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axhline(100 * result["config"]["target"], color="tab:red", ls="--", lw=1, label="target")
    ax.set_xscale("log")
    ax.set_xlabel("predicted training cost, $ (log)")
    ax.set_ylabel("predicted accuracy, % (o measured, ^ trial, square prior)")
    ax.set_title(f"verticals plan: {Path(result['config']['data']).name}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
