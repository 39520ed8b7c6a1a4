"""The `mice-bench` command line (Typer). Thin: parse options, call the library, print.

Sub-commands live next to the library code they drive and register themselves here:
``variants``/``verify`` (core), ``latency`` (:mod:`mice_bench.latency`), ``effectiveness``
(:mod:`mice_bench.effectiveness`), ``report`` and ``run`` (:mod:`mice_bench.report`,
:mod:`mice_bench.ablations`).
"""

from __future__ import annotations

import importlib
import sys
from functools import wraps
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

from .errors import USER_ERRORS

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="mice-bench",
    help="Benchmark and ablation suite for minimal-interaction cross-encoders (MICE).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def user_errors(fn: Callable) -> Callable:
    """Decorator: turn user errors into a red message on stderr and exit code 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


# Each module exposes ``register(app)``; a module that is missing is simply skipped.
_COMMAND_MODULES = (
    "mice_bench.commands_core",
    "mice_bench.latency.cli",
    "mice_bench.effectiveness.cli",
    "mice_bench.report.cli",
    "mice_bench.ablations.cli",
)
for _mod in _COMMAND_MODULES:
    try:
        _m = importlib.import_module(_mod)
    except ModuleNotFoundError as _e:  # not built yet
        if _e.name and _mod.startswith(_e.name):
            continue
        raise
    _m.register(app)


def main() -> None:  # console script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
