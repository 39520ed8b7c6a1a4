"""Colours and markers of the report's figures (names and labels: :mod:`mice_bench.naming`)."""

from __future__ import annotations

from ..spec import variant_key

#: Okabe-Ito colour-blind-safe palette (the low-contrast yellow last)
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000",
             "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
LINESTYLES = ("-", "--", "-.", ":")


class Palette:
    """A stable colour + marker per name (order given once, up front)."""

    def __init__(self, names):
        self.names = sorted(set(names), key=variant_key)

    def color(self, name: str) -> str:
        i = self.names.index(name) if name in self.names else len(self.names)
        return OKABE_ITO[i % len(OKABE_ITO)]

    def marker(self, name: str) -> str:
        i = self.names.index(name) if name in self.names else len(self.names)
        return MARKERS[i % len(MARKERS)]

    def linestyle(self, name: str) -> str:
        i = self.names.index(name) if name in self.names else len(self.names)
        return LINESTYLES[(i // len(OKABE_ITO)) % len(LINESTYLES)]
