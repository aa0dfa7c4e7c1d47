"""``tinycl run``: the continual-learning run (being built)."""


def run() -> None:
    """Run a continual-learning experiment."""
    raise NotImplementedError
