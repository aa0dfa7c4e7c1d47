"""The ``tinycl`` command line. Nothing imports this package; it imports everything else.

Every user error (bad value, missing path, wrong shape, corrupt file) becomes one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

import click

from tinycl.errors import TinyclError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def app() -> None:
    """tinycl: on-device continual learning with Quantized Latent Replays."""


def _register() -> None:
    # Each command lives in a module of its own; registering here keeps them independent.
    from tinycl.cli import export, layers, run, sparse_sweep, sweep

    app.add_command(run.run)
    app.add_command(export.export)
    app.add_command(layers.layers)
    app.add_command(sweep.sweep)
    app.add_command(sparse_sweep.sparse_sweep)
    try:
        from tinycl.cli import cost
    except ImportError:  # the cost model arrives in its own change
        return
    for command in cost.COMMANDS:
        app.add_command(command)


def fail(message: str) -> None:
    # File names that are not valid UTF-8 reach here as surrogates: shown escaped, never a crash.
    text = " ".join(message.split()).encode("utf-8", "backslashreplace").decode("utf-8")
    print(f"tinycl: error: {text}", file=sys.stderr)
    raise SystemExit(2)


def os_error_text(exc: OSError) -> str:
    """One line naming the path(s) and the cause, e.g. 'cannot write /a/b: No space left on device'."""
    import errno

    cause = exc.strerror or type(exc).__name__
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    verb = {errno.ENOSPC: "write", errno.EROFS: "write", errno.EDQUOT: "write"}.get(exc.errno or 0, "access")
    return f"cannot {verb} {paths}: {cause}" if paths else f"I/O error: {cause}"


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"tinycl: warning: {' '.join(str(message).split())}\n"


def main(argv: list[str] | None = None) -> None:
    import warnings

    warnings.formatwarning = _one_line_warning  # warnings are for users here: one line each
    _register()
    try:
        code = app.main(args=argv, prog_name="tinycl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Abort:
        print("tinycl: aborted", file=sys.stderr)
        raise SystemExit(130) from None
    except click.ClickException as exc:
        fail(exc.format_message())
    except TinyclError as exc:
        fail(str(exc))
    except OSError as exc:  # disk full, read-only folder, a file where a folder should be, ...
        fail(os_error_text(exc))
    except KeyboardInterrupt:
        print("tinycl: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)
