"""The storage figure: nDCG@10 against bytes per token, one point per variant x store."""

from __future__ import annotations

from pathlib import Path

from .figures import new_figure, save

STEM = "storage-ndcg10-bytes"


def storage_figure(results_dir: Path, fig_dir: Path) -> tuple[str, str] | str:
    """Draw the figure from the effectiveness results that recorded their store (data:
    :func:`mice_bench.effectiveness.storage.tradeoff_series`); a skip message when none."""
    from ..effectiveness.storage import storage_rows, tradeoff_series

    folder = Path(results_dir) / "effectiveness"
    series = tradeoff_series(storage_rows(folder)) if folder.is_dir() else {}
    if not series:
        return "storage figure: no effectiveness result recorded its document store"
    fig, axes = new_figure(7.2, 4.6)
    ax = axes[0][0]
    for label, pts in series.items():
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, marker="o", label=label)
        for x, y, store in pts:
            ax.annotate(store, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("bytes per original token (shards and codec on disk, log scale)")
    ax.set_ylabel("nDCG@10")
    ax.legend(loc="best", fontsize=6)
    save(fig, fig_dir, STEM)
    return STEM, ("nDCG@10 of re-ranking from each document store against its bytes per "
                  "original token (shards and the codec file's share; a pooled store keeps "
                  "fewer tokens than the document has). One line per model, variant, stored "
                  "content and dataset; points labelled by store format and pool factor.")
