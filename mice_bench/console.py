"""Console helpers shared by the sub-commands: the Rich consoles and the user-error wrapper.

Kept out of :mod:`mice_bench.cli` so that nothing imports the top-level command line module
(it imports every sub-command).
"""

from __future__ import annotations

import sqlite3
from functools import wraps
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

from .errors import USER_ERRORS, disk_error

console = Console()
err_console = Console(stderr=True)


def user_errors(fn: Callable) -> Callable:
    """Decorator: turn user errors into a red message on stderr and exit code 2, and a write
    the file system refused (a full disk, a read-only folder) into one line and exit code 1."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(code=2) from None
        except (OSError, sqlite3.OperationalError) as e:
            msg = disk_error(e)
            if msg is None:
                raise
            err_console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper
