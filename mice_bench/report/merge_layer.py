"""The merge-layer figure: effectiveness against the layer where query and document start to
interact (m of ``mice-l{m}+{n}``, k of ``mask3-l{k}`` and ``prettr-l{k}``), drawn from plain
points by one function, :func:`merge_layer_figure`.

The report's sections only turn their results into :class:`Panel` objects, each an ordered
list of what to draw:

* :class:`Curve`: a line through (merge layer, value) points (one per family or series);
* :class:`Level`: a horizontal line, for a system without a merge layer (``ce``, a teacher);
* :class:`Star`: a lone point (e.g. a student initialised from the teacher).

Values are drawn as given (the sections scale them, e.g. nDCG@10 × 100).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from .figures import new_figure, save


@dataclass(frozen=True)
class Curve:
    """A line through ``points`` (merge layer, value), in the order given."""

    label: str
    points: tuple[tuple[int, float], ...]
    color: str
    linestyle: str = "-"
    marker: str = "o"


@dataclass(frozen=True)
class Level:
    """A horizontal line at ``value``: a system that has no merge layer."""

    label: str
    value: float
    color: str
    linestyle: str = "-"
    linewidth: float = 1.1
    alpha: float | None = None


@dataclass(frozen=True)
class Star:
    """A lone point at merge layer ``x``."""

    label: str
    x: int
    y: float


Item = Union[Curve, Level, Star]


@dataclass
class Panel:
    """One axes of the figure: its title (``None``: the figure has this one panel, titled by
    the figure's title) and what it draws, in drawing order (which is also the legend's)."""

    title: str | None = None
    items: list[Item] = field(default_factory=list)


def merge_layer_figure(panels: list[Panel], layers: list[int], out: Path, stem: str, *,
                       title: str, ylabel: str, xlabel: str, size: tuple[float, float],
                       legend_below: bool = False) -> list[str]:
    """Draw ``panels`` side by side with ``layers`` as the x ticks and save
    ``out/stem.png|pdf``; returns the file names. One untitled panel carries ``title`` itself
    and a legend inside; titled panels share ``title`` above them. ``legend_below``: one
    legend under the panels (the union of their entries) instead of one inside each."""
    fig, axes = new_figure(*size, ncols=len(panels))
    for ax, panel in zip(axes[0], panels):
        for it in panel.items:
            if isinstance(it, Curve):
                ax.plot([p[0] for p in it.points], [p[1] for p in it.points], color=it.color,
                        linestyle=it.linestyle, marker=it.marker, label=it.label)
            elif isinstance(it, Star):
                ax.scatter([it.x], [it.y], marker="*", s=120, color="#D55E00",
                           edgecolors="black", linewidths=0.5, zorder=4, label=it.label)
            else:
                ax.axhline(it.value, color=it.color, linestyle=it.linestyle,
                           linewidth=it.linewidth, alpha=it.alpha, label=it.label)
        ax.set_xticks(layers, [str(x) for x in layers])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if panel.title is None:
            ax.set_title(title, fontsize=10)
        else:
            ax.set_title(panel.title, fontsize=9)
        if not legend_below:
            ax.legend(loc="best", frameon=True)
    if any(p.title is not None for p in panels):
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if legend_below:
        handles, labels = [], []
        for ax in axes[0]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4,
                   frameon=True, fontsize=8)
    return save(fig, out, stem)
