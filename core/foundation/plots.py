"""A headless pyplot: matplotlib with the Agg backend, imported only when a plot is drawn.

Every plot of the package (loss curves, confusion matrices, reliability diagrams, drift and plan
plots) gets pyplot here, so no command pays for matplotlib until it draws, and no plot needs a
display.
"""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg backend (lazy: matplotlib costs start-up time)."""
    import matplotlib  # lazy: matplotlib only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib only when a plot is drawn

    return plt
