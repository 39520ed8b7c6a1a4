"""``--compile``: ``torch.compile`` the executors' compute entry points, falling back to
eager per entry point when compilation fails (said once, recorded in the row's notes)."""

from __future__ import annotations

from typing import Any, Callable

import torch


def is_oom(e: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError",
                                                              None)
    if oom is not None and isinstance(e, oom):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def compile_executor(ex, log: Callable[[str], None]) -> dict[str, Any]:
    """Wrap the executor's compute entry points with ``torch.compile``.

    If compilation fails at the first call, that entry point falls back to eager (said once,
    recorded in the returned state: ``failed`` lists the entry points running eager).
    """
    state: dict[str, Any] = {"compiled": [], "failed": []}
    if not hasattr(torch, "compile"):
        log("torch.compile is not available; running eager")
        state["failed"].append("all")
        return state
    import logging

    # graph breaks (data-dependent mask checks in the layer code) are expected; keep quiet
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    logging.getLogger("torch._inductor").setLevel(logging.ERROR)
    for n in ("forward_pairs", "_encode_part", "score_states"):
        if not hasattr(ex, n):
            continue
        eager = getattr(ex, n)
        setattr(ex, n, _guarded(n, torch.compile(eager), eager, log, state))
        state["compiled"].append(n)
    return state


def _guarded(name: str, compiled: Callable, eager: Callable, log: Callable[[str], None],
             state: dict[str, Any]) -> Callable:
    def call(*args, **kwargs):
        if name in state["failed"]:
            return eager(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - backend failures are many
            if is_oom(e):
                raise
            state["failed"].append(name)
            log(f"torch.compile failed for {name} ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); running it eager")
            return eager(*args, **kwargs)

    return call
