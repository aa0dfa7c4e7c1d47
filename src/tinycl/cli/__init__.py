"""The ``tinycl`` command line. Nothing imports this package; it imports everything else.

Every user error (bad value, missing path, wrong shape, corrupt file) becomes one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

import click
import typer

from tinycl.errors import TinyclError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="tinycl: on-device continual learning with Quantized Latent Replays.",
)


def _register() -> None:
    # Each command lives in its own module; registering here keeps them independent.
    from tinycl.cli import layers, run

    app.command("run")(run.run)
    app.command("layers")(layers.layers)
    try:
        from tinycl.cli import cost
    except ImportError:  # the cost model is optional in partial checkouts
        return
    app.command("cost")(cost.cost)
    if hasattr(cost, "report"):
        app.command("report")(cost.report)


def fail(message: str) -> None:
    print(f"tinycl: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    _register()
    try:
        code = app(args=argv, prog_name="tinycl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Abort:
        print("tinycl: aborted", file=sys.stderr)
        raise SystemExit(130) from None
    except click.ClickException as exc:
        fail(" ".join(exc.format_message().split()))
    except TinyclError as exc:
        fail(" ".join(str(exc).split()))
    except KeyboardInterrupt:
        print("tinycl: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)
