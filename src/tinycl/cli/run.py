"""``tinycl run``: the continual-learning run (being built)."""

import click


@click.command("run")
def run() -> None:
    """Run a continual-learning experiment."""
    raise NotImplementedError
