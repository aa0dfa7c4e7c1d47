"""The one in-process runner of the tinycl command line the test folders share."""

from __future__ import annotations

import contextlib
import io


def cli(*args) -> tuple[int, str, str]:
    """Run ``tinycl ARGS`` in this process; (exit code, stdout, stderr)."""
    from tinycl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()
