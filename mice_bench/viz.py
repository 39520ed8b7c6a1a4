"""Interaction-matrix rendering: text for the terminal, heatmaps for figures."""

from __future__ import annotations

from pathlib import Path

from .layerspec import SEGMENTS, LayerSpec
from .spec import InteractionSpec

LABELS = ("[CLS]", "query", "[SEP]q", "doc", "[SEP]d")


def layer_groups(spec: InteractionSpec, num_layers: int) -> list[tuple[list[int], LayerSpec]]:
    """Consecutive-or-not layers sharing one pattern: ``[(layer ids, LayerSpec), ...]``."""
    groups: dict[LayerSpec, list[int]] = {}
    for i, ls in enumerate(spec.layers(num_layers)):
        groups.setdefault(ls, []).append(i)
    return [(ids, ls) for ls, ids in groups.items()]


def layer_range_text(ids: list[int]) -> str:
    runs, start, prev = [], ids[0], ids[0]
    for i in ids[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        runs.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(runs)


def matrix_text(spec: InteractionSpec, num_layers: int) -> str:
    """Per-layer-group matrices as text (rows attend from, columns to)."""
    lines = [f"{spec}  ({spec.layout} layout, head {spec.head}, {num_layers} layers)",
             f"  {spec.description()}"]
    for ids, ls in layer_groups(spec, num_layers):
        head = f"layers {layer_range_text(ids)}"
        if ls.dropped:
            lines.append(f"\n{head}: dropped")
            continue
        notes = []
        if ls.frozen:
            notes.append("frozen: " + ", ".join(s for s in SEGMENTS if s in ls.frozen))
        if ls.cross_keys:
            notes.append("via a cross-attention sub-layer, "
                         + ("before" if ls.cross_first else "after") + " self-attention: "
                         + ", ".join(s for s in SEGMENTS if s in ls.cross_keys))
        if ls.cross_uniform:
            notes.append("uniform average of the cross keys: "
                         + ", ".join(s for s in SEGMENTS if s in ls.cross_uniform))
        lines.append(f"\n{head}" + (f" ({'; '.join(notes)})" if notes else "") + ":")
        lines.append("  from \\ to " + " ".join(f"{c:>7}" for c in LABELS))
        for r, row in zip(LABELS, ls.allow):
            seg = SEGMENTS[LABELS.index(r)]
            if seg in ls.frozen:
                lines.append(f"  {r:>9} " + " ".join(f"{'-':>7}" for _ in row) + "   frozen")
            else:
                lines.append(f"  {r:>9} " + " ".join(f"{('1' if x else '.'):>7}" for x in row))
    return "\n".join(lines)


def figure_formats() -> list[str]:
    """The file extensions matplotlib's Agg backend writes (``png``, ``pdf``, ``svg``, ...)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return sorted(FigureCanvasAgg(Figure()).get_supported_filetypes())


def check_figure_path(path: str | Path, option: str = "--png") -> Path:
    """Prove a figure can be written at ``path`` before any work: an extension matplotlib
    writes (none: ``.png`` is added) and a writable folder (UsageError naming the path)."""
    from .errors import UsageError
    from .results import check_output

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if not fmt:
        path = path.with_name(path.name + ".png")
    elif fmt not in figure_formats():
        raise UsageError(f"{option} {path}: matplotlib cannot write '.{fmt}' figures; valid "
                         f"extensions: {', '.join(figure_formats())}")
    check_output(path, option)
    return path


def plot_matrices(spec: InteractionSpec, num_layers: int, path: str | Path | None = None,
                  ax_size: float = 2.6):
    """Heatmap figure, one panel per distinct layer pattern. Returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap

    groups = layer_groups(spec, num_layers)
    fig, axes = plt.subplots(1, len(groups), figsize=(ax_size * len(groups) + 0.6, ax_size + 0.9),
                             squeeze=False)
    # colour-blind-safe: blue = attends, light grey = masked, orange hatch = frozen row
    cmap = ListedColormap(["#f0f0f0", "#0072B2", "#E69F00"])
    for ax, (ids, ls) in zip(axes[0], groups):
        data = np.array(ls.allow, dtype=float)
        for r, seg in enumerate(SEGMENTS):
            if seg in ls.frozen:
                data[r, :] = 2
        if ls.dropped:
            data[:] = 0
        ax.imshow(data, cmap=cmap, vmin=0, vmax=2)
        ax.set_xticks(range(5), LABELS, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(5), LABELS, fontsize=7)
        ax.set_xlabel("attends to (key)", fontsize=7)
        ax.set_ylabel("attends from", fontsize=7)
        title = f"layers {layer_range_text(ids)}"
        if ls.dropped:
            title += "\n(dropped)"
            ax.text(2, 2, "dropped", ha="center", va="center", fontsize=10, color="#555555")
        elif ls.frozen:
            title += "\n(orange rows frozen)"
        elif ls.cross_keys:
            title += "\n(doc via cross-attn)"
        ax.set_title(title, fontsize=8)
        ax.set_xticks(np.arange(-.5, 5, 1), minor=True)
        ax.set_yticks(np.arange(-.5, 5, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="minor", length=0)
    fig.suptitle(f"{spec} — {spec.layout} layout, {num_layers} layers "
                 "(blue: may attend, grey: masked)", fontsize=9)
    fig.tight_layout()
    if path is not None:
        from .results import atomic_file

        path = check_figure_path(path)
        fmt = path.suffix.lstrip(".").lower()
        with atomic_file(path, "wb") as f:       # temp file, fsync, rename
            fig.savefig(f, format=fmt, dpi=150)
    return fig
