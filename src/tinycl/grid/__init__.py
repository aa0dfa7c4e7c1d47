"""Grids of runs: one runner, three executors (serial, a local process pool, Ray).

``run_grid`` takes (run directory, config) pairs and a ``GridSettings``; workers run cells in
memory (``tinycl.grid.cell``) and the driver writes every run directory. Importing this package
loads neither torch nor Ray (``tinycl --help`` stays fast).
"""

from tinycl.grid.runner import GridReport, GridSettings, RunOutcome, run_grid

__all__ = ["GridReport", "GridSettings", "RunOutcome", "run_grid"]
