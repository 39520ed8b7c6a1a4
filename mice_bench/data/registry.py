"""The one dataset registry: short names, ir_datasets ids, groups, the paper's abbreviations.

Pure data (no ir_datasets import), used by ``mice-bench effectiveness`` (which datasets to
load), ``mice-bench report`` (column order, abbreviations, ID/OOD groups) and the study files
(``ablations/*.toml``). Names follow the seed paper (MICE, arXiv 2602.16299, Table 1):
in-domain (``id``) MS MARCO dev small and TREC DL 2019/2020 (judged queries), out-of-domain
(``ood``, group name ``beir``) the 13 BEIR test sets. ``irds:<id>`` reaches any other
ir_datasets id (group ``other``, not averaged; checked against ir_datasets' own registry,
imported only then).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import UsageError

#: the variable that names the offline data folder (collections, candidate runs, staging)
SHARED_DATA_ENV = "MICE_BENCH_SHARED_DATA"


def shared_data_path() -> str:
    """The offline data folder as study files spell it: ``$MICE_BENCH_SHARED_DATA``, else
    ``../shared/data`` (kept relative, so the commands a study records stay portable)."""
    return os.environ.get(SHARED_DATA_ENV, "../shared/data").rstrip("/")


def shared_data_dir() -> Path | None:
    """The offline data folder on this machine: ``$MICE_BENCH_SHARED_DATA``, else
    ``shared/data`` beside the repository, else :func:`shared_data_path` from the current
    directory; the first that holds ``stage-ir-datasets.sh`` (None: none does)."""
    env = os.environ.get(SHARED_DATA_ENV)
    cands = [Path(env)] if env else []
    cands.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    cands.append(Path(shared_data_path()).resolve())
    for c in cands:
        if (c / "stage-ir-datasets.sh").exists():
            return c
    return None

__all__ = ["DatasetInfo", "DATASETS", "GROUPS", "ABBREV", "PAPER_ORDER", "resolve_datasets",
           "irds_info", "dataset_group", "dataset_order", "valid_names", "shared_data_dir",
           "shared_data_path", "SHARED_DATA_ENV"]


@dataclass(frozen=True)
class DatasetInfo:
    """One evaluation set: short name, ir_datasets id, group (``id``/``ood``/``other``)."""

    name: str
    irds_id: str
    group: str
    #: BEIR convention: a document whose id equals the query id is never a candidate
    #: (ArguAna, Quora list the query itself in the corpus).
    ignore_identical_ids: bool = False
    #: where the document texts come from when ir_datasets cannot provide them offline
    docs_hint: str | None = None


_DL_HINT = ("the MS MARCO passage collection is not available offline: re-rank a first-stage "
            "run with --first-stage run:PATH and give the passage texts with --docs PATH "
            "(e.g. shared/data/trec-dl-candidates/bm25/trec_results_{dataset}.txt and "
            "shared/data/trec-dl-candidates/{dataset}.docs.jsonl)")

_ID: tuple[DatasetInfo, ...] = (
    DatasetInfo("msmarco-dev", "msmarco-passage/dev/small", "id", docs_hint=_DL_HINT),
    DatasetInfo("dl19", "msmarco-passage/trec-dl-2019/judged", "id", docs_hint=_DL_HINT),
    DatasetInfo("dl20", "msmarco-passage/trec-dl-2020/judged", "id", docs_hint=_DL_HINT),
)
_BEIR_IDS = {
    "arguana": "beir/arguana",
    "climate-fever": "beir/climate-fever",
    "dbpedia-entity": "beir/dbpedia-entity/test",
    "fever": "beir/fever/test",
    "fiqa": "beir/fiqa/test",
    "hotpotqa": "beir/hotpotqa/test",
    "nfcorpus": "beir/nfcorpus/test",
    "nq": "beir/nq",
    "quora": "beir/quora/test",
    "scidocs": "beir/scidocs",
    "scifact": "beir/scifact/test",
    "trec-covid": "beir/trec-covid",
    "webis-touche2020": "beir/webis-touche2020/v2",
}
_OOD: tuple[DatasetInfo, ...] = tuple(
    DatasetInfo(n, i, "ood", ignore_identical_ids=True) for n, i in _BEIR_IDS.items()
)

#: name -> info, in table order (in-domain first)
DATASETS: dict[str, DatasetInfo] = {d.name: d for d in _ID + _OOD}
#: group name -> member names
GROUPS: dict[str, tuple[str, ...]] = {
    "id": tuple(d.name for d in _ID),
    "beir": tuple(d.name for d in _OOD),
    "all": tuple(d.name for d in _ID + _OOD),
}
#: aliases users may type
_ALIASES = {"touche2020": "webis-touche2020", "webis-touche2020/v2": "webis-touche2020",
            "trec-dl-2019": "dl19", "trec-dl-2020": "dl20", "msmarco": "msmarco-dev",
            "ood": "beir"}


def valid_names() -> str:
    return ("valid: " + ", ".join(DATASETS) + "; groups: " + ", ".join(GROUPS)
            + "; or irds:<ir_datasets id>")


def irds_info(irds_id: str) -> DatasetInfo:
    """The dataset ``irds:<irds_id>``: any id of ir_datasets' registry (group ``other``)."""
    import ir_datasets

    if irds_id not in ir_datasets.registry:
        raise UsageError(f"unknown ir_datasets id {irds_id!r} (see https://ir-datasets.com)")
    return DatasetInfo(irds_id.replace("/", "_"), irds_id, "other",
                       ignore_identical_ids=irds_id.startswith("beir/"))


def resolve_datasets(names: str | Sequence[str]) -> list[DatasetInfo]:
    """Expand names / groups / ``irds:<id>`` (a list, or the command line's comma-separated
    text) into datasets (order kept, no duplicates).

    >>> [d.irds_id for d in resolve_datasets(["dl19", "scifact"])]
    ['msmarco-passage/trec-dl-2019/judged', 'beir/scifact/test']
    >>> [d.name for d in resolve_datasets("id")]
    ['msmarco-dev', 'dl19', 'dl20']
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[DatasetInfo] = []
    for raw in (x.strip() for x in items):
        if not raw:
            continue
        if raw.startswith("irds:"):
            infos = [irds_info(raw[5:])]
        else:
            key = _ALIASES.get(raw.lower(), raw.lower())
            if key in GROUPS:
                infos = [DATASETS[n] for n in GROUPS[key]]
            elif key in DATASETS:
                infos = [DATASETS[key]]
            else:
                raise UsageError(f"unknown dataset {raw!r}; {valid_names()}")
        for info in infos:
            if info not in out:
                out.append(info)
    if not out:
        raise UsageError(f"no dataset given; {valid_names()}")
    return out



#: the seed paper's column abbreviations (Table 1), in its column order
ABBREV: dict[str, str] = {
    "msmarco-dev": "MSM", "dl19": "DL19", "dl20": "DL20",
    "arguana": "Ar", "climate-fever": "CF", "dbpedia-entity": "DB", "fever": "FE",
    "fiqa": "Fi", "hotpotqa": "HPQ", "nfcorpus": "NFC", "nq": "NQ", "quora": "Q",
    "scidocs": "SD", "scifact": "SF", "webis-touche2020": "T-v2", "trec-covid": "T-C",
}
#: the order of dataset columns in report tables (the paper's)
PAPER_ORDER: tuple[str, ...] = tuple(ABBREV)
assert set(PAPER_ORDER) == set(DATASETS)


def dataset_order(name: str) -> tuple:
    """Sort key: the paper's column order, then unknown names alphabetically."""
    return (PAPER_ORDER.index(name), name) if name in PAPER_ORDER else (len(PAPER_ORDER), name)


def dataset_group(name: str) -> str:
    """``id`` (in-domain), ``ood`` (BEIR) or ``other``."""
    return DATASETS[name].group if name in DATASETS else "other"
