"""Matplotlib helpers: a readable default style and byte-stable saving (PNG + PDF)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 8,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3,
    "grid.linestyle": "-", "lines.linewidth": 1.6, "lines.markersize": 5,
    "figure.dpi": 100, "savefig.dpi": 150, "svg.hashsalt": "mice-bench",
    "pdf.fonttype": 42, "path.simplify": True,
}

#: metadata that would otherwise carry a date or the library version into the files
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None}


def new_figure(w: float = 6.4, h: float = 4.0, ncols: int = 1, nrows: int = 1):
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(w, h), squeeze=False)
    return fig, axes


def save(fig, out_dir: Path, stem: str) -> list[str]:
    """Write ``stem.png`` and ``stem.pdf`` without timestamps, each atomically (temp file in
    ``out_dir``, fsync, rename: :func:`mice_bench.results.atomic_file`); returns the
    relative names."""
    from ..results import atomic_file

    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with plt.rc_context(STYLE):
            with atomic_file(out_dir / f"{stem}.png", "wb") as f:
                fig.savefig(f, format="png", dpi=150, metadata=PNG_METADATA,
                            bbox_inches="tight", pad_inches=0.1)
            with atomic_file(out_dir / f"{stem}.pdf", "wb") as f:
                fig.savefig(f, format="pdf", metadata=PDF_METADATA, bbox_inches="tight",
                            pad_inches=0.1)
    finally:
        plt.close(fig)
    return [f"{stem}.png", f"{stem}.pdf"]


def plain_log_ticks(ax, axis: str = "y") -> None:
    """Log axis with plain numbers (1, 10, 100, 0.5) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    a = ax.yaxis if axis == "y" else ax.xaxis
    a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    a.set_minor_formatter(FuncFormatter(lambda v, _: ""))
