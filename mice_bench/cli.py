"""The `mice-bench` command line (Typer). Thin: parse options, call the library, print.

Sub-commands live next to the library code they drive and register themselves here:
``variants``/``verify`` (core), ``latency`` (:mod:`mice_bench.latency`), ``effectiveness``
(:mod:`mice_bench.effectiveness`), ``report`` and ``run`` (:mod:`mice_bench.report`,
:mod:`mice_bench.ablations`).
"""

from __future__ import annotations

import importlib
import sys

import typer

from .console import console, err_console, user_errors  # noqa: F401 - re-exported

app = typer.Typer(
    name="mice-bench",
    help="Benchmark and ablation suite for minimal-interaction cross-encoders (MICE).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


# Each module exposes ``register(app)``; every one ships with the package, so a missing one
# is an installation fault and fails loudly.
COMMAND_MODULES = (
    "mice_bench.commands_core",
    "mice_bench.latency.cli",
    "mice_bench.effectiveness.cli",
    "mice_bench.effectiveness.storecli",
    "mice_bench.report.cli",
    "mice_bench.ablations.cli",
    "mice_bench.training.cli",
    "mice_bench.offline_node.cli",
    "mice_bench.export.cli",
)
for _mod in COMMAND_MODULES:
    importlib.import_module(_mod).register(app)


def main() -> None:  # console script entry point
    """Run the command. Under ``torchrun`` a rank that got as far as an exit code (success or
    a clear error) ends with :func:`mice_bench.distributed.end_rank`: streams flushed, then
    ``os._exit``, skipping the C++ teardown that can abort a finished Gloo rank."""
    from .distributed import end_rank, under_torchrun

    if not under_torchrun():
        app()
        return
    try:
        app()
        code: int | str | None = 0
    except SystemExit as e:
        code = e.code
    end_rank(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
