"""The options every grid command shares (``tinycl sweep``, ``tinycl sparse-sweep``, later grids)."""

from __future__ import annotations

from collections.abc import Callable

import click

from tinycl.grid.executors import EXECUTORS


def grid_options(command: Callable) -> Callable:
    """--executor, --workers, --ray-address (applied below the command's own options)."""
    options = [
        click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
                     help="where runs go: serial (one at a time, in this process), local (worker processes on "
                          "this machine), ray (Ray tasks; needs the ray extra)"),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="runs at a time  [default: local: usable cores / --threads; ray: the cluster's CPUs / "
                          "--threads]"),
        click.option("--ray-address", type=str, default=None,
                     help="HOST:PORT of an existing Ray cluster's head (`ray start --head` prints it)  "
                          "[default: none: start a Ray instance on 127.0.0.1 for this grid]"),
    ]
    for option in reversed(options):
        command = option(command)
    return command
