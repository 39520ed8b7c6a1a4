"""``--compile``: ``torch.compile`` the executors' compute entry points, falling back to
eager per entry point when compilation fails (said once, recorded in the row's notes)."""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch


def is_oom(e: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError",
                                                              None)
    if oom is not None and isinstance(e, oom):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def compile_executor(ex, log: Callable[[str], None]):
    """A copy of executor ``ex`` whose compute entry points (``ex.compile_targets``) run under
    ``torch.compile``; ``ex`` itself is left as it was. The copy's ``compiled`` says what it
    compiled (``compiled``) and which entry points run eager (``failed``): one that fails to
    compile at its first call falls back to eager (said once)."""
    out = copy.copy(ex)
    state: dict[str, Any] = {"compiled": [], "failed": []}
    out.compiled = state
    if not hasattr(torch, "compile"):
        log("torch.compile is not available; running eager")
        state["failed"].append("all")
        return out
    import logging

    # graph breaks (data-dependent mask checks in the layer code) are expected; keep quiet
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    logging.getLogger("torch._inductor").setLevel(logging.ERROR)
    for n in ex.compile_targets:
        eager = getattr(out, n)          # bound to the copy: its own calls go through it
        setattr(out, n, _guarded(n, torch.compile(eager), eager, log, state))
        state["compiled"].append(n)
    return out


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
