"""The one error type a user can cause; the CLI turns it into one line and exit code 2."""


class TinyclError(ValueError):
    """Bad user input: a value out of range, a missing path, a wrong shape, a corrupt file."""
