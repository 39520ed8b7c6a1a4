"""The typed result of one evaluated (model, variant, dataset): the writer and the reader.

``mice-bench effectiveness`` builds an :class:`EffectivenessResult` and :meth:`saves
<EffectivenessResult.save>` it; ``mice-bench report`` :meth:`loads
<EffectivenessResult.load>` it with the same class (older schema versions are upgraded by
:mod:`.schema` first). The file layout is documented in ``docs/effectiveness.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..results import ResultFileError, atomic_write_json, envelope, load_result, parse_fields
from ..store.docstore import STORE_FORMATS
from ..store.packing import CONTENTS

KIND = "effectiveness"
#: how far an aggregate may be from the mean of its per-query values (float summation order)
AGGREGATE_TOLERANCE = 1e-9


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_doc_store(ds: Any) -> str | None:
    """The first problem of a ``timing.doc_store`` block (None: valid): the store format and
    content one of the store's, byte and token counts finite and positive (``codec_bytes``
    and ``docs`` may be 0), ``centroids`` a whole number >= 1."""
    if not isinstance(ds, dict):
        return f"timing.doc_store: expected an object, got {type(ds).__name__}"
    if ds.get("store") not in STORE_FORMATS:
        return (f"timing.doc_store.store: unknown store format {ds.get('store')!r}; valid: "
                f"{', '.join(STORE_FORMATS)}")
    if "content" in ds and ds["content"] not in CONTENTS:
        return (f"timing.doc_store.content: {ds['content']!r}; valid: {', '.join(CONTENTS)}")
    for k in ("bytes_per_doc", "tokens_per_doc", "bytes_per_token"):
        v = ds.get(k)
        if v is not None and not (_finite(v) and v > 0):
            return f"timing.doc_store.{k}: {v!r} is not a finite number > 0"
    for k in ("bytes", "docs", "codec_bytes"):
        v = ds.get(k)
        if v is not None and not (_finite(v) and v >= 0):
            return f"timing.doc_store.{k}: {v!r} is not a finite number >= 0"
    c = ds.get("centroids")
    if c is not None and not (isinstance(c, int) and not isinstance(c, bool) and c >= 1):
        return f"timing.doc_store.centroids: {c!r} is not a whole number >= 1"
    return None


@dataclass
class EffectivenessResult:
    config: dict[str, Any]                       # dataset, variant, model, model_label, ...
    dataset: dict[str, Any]                      # name, irds_id, group, num_queries, docs
    aggregates: dict[str, float]                 # measure -> mean over judged queries
    per_query: dict[str, dict[str, float]]       # measure -> qid -> value
    num_candidates: int
    timing: dict[str, Any]
    run_file: str
    model: dict[str, Any] | None = None          # None for the bm25 row
    environment: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    git_commit: str | None = None
    mice_bench_version: str = ""

    # ------------------------------------------------------------------ views
    @property
    def variant(self) -> str:
        return self.config["variant"]

    @property
    def model_label(self) -> str | None:
        return self.config.get("model_label")

    @property
    def dataset_name(self) -> str:
        return self.dataset["name"]

    @property
    def first_stage(self) -> str:
        return self.config["first_stage"]

    # ------------------------------------------------------------------ (de)serialisation
    def payload(self) -> dict[str, Any]:
        return {"model": self.model, "dataset": self.dataset, "aggregates": self.aggregates,
                "per_query": self.per_query, "num_candidates": self.num_candidates,
                "timing": self.timing, "run_file": self.run_file}

    def problem(self) -> str | None:
        """The first way this result breaks the schema (None: valid), as ``field: problem``.
        :meth:`save` refuses to write such a result and :meth:`load` to read one (an edited
        file): every aggregate is finite and the mean of its measure's per-query values
        (which are finite and >= 0, as every ir_measures measure is), ``num_candidates`` is
        >= 0, ``timing.pairs_per_s`` finite and >= 0, ``timing.doc_store`` as
        :func:`check_doc_store` says."""
        for m, a in self.aggregates.items():
            if not math.isfinite(a):
                return f"aggregates.{m}: {a!r} is not a finite number"
            pq = self.per_query.get(m)
            if not pq:
                return f"per_query.{m}: no per-query values for the aggregate {m}"
            for q, x in pq.items():
                if not (math.isfinite(x) and x >= 0):
                    return f"per_query.{m}.{q}: {x!r} is not a finite number >= 0"
            mean = math.fsum(pq.values()) / len(pq)
            if not math.isclose(a, mean, rel_tol=AGGREGATE_TOLERANCE,
                                abs_tol=AGGREGATE_TOLERANCE):
                return (f"aggregates.{m}: {a!r} is not the mean of its {len(pq)} per-query "
                        f"values ({mean!r})")
        if self.num_candidates < 0:
            return f"num_candidates: {self.num_candidates} is negative"
        pps = self.timing.get("pairs_per_s")
        if pps is not None and not (_finite(pps) and pps >= 0):
            return f"timing.pairs_per_s: {pps!r} is not a finite number >= 0"
        if self.timing.get("doc_store") is not None:
            return check_doc_store(self.timing["doc_store"])
        return None

    def save(self, path: str | Path) -> Path:
        """Write the envelope (``created``, ``git_commit`` are set now); a result that breaks
        the schema (:meth:`problem`) is refused before anything is written."""
        bad = self.problem()
        if bad is not None:
            raise ValueError(f"effectiveness result for {path} breaks the schema: {bad}")
        doc = envelope(KIND, self.config, self.environment, **self.payload())
        self.created, self.git_commit = doc["created"], doc["git_commit"]
        self.mice_bench_version = doc["mice_bench_version"]
        return atomic_write_json(path, doc)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "EffectivenessResult":
        for k in ("config", "dataset", "aggregates", "per_query", "num_candidates", "timing",
                  "run_file", "model", "environment"):
            if k not in doc:
                raise KeyError(k)
        if not isinstance(doc["aggregates"], dict) or not doc["aggregates"]:
            raise ValueError("'aggregates' must map measure names to values")
        return cls(config=dict(doc["config"]), dataset=dict(doc["dataset"]),
                   aggregates={str(k): float(v) for k, v in doc["aggregates"].items()},
                   per_query={str(m): {str(q): float(x) for q, x in v.items()}
                              for m, v in doc["per_query"].items()},
                   num_candidates=int(doc["num_candidates"]), timing=dict(doc["timing"]),
                   run_file=str(doc["run_file"]),
                   model=dict(doc["model"]) if doc["model"] is not None else None,
                   environment=dict(doc["environment"]), created=str(doc.get("created", "")),
                   git_commit=doc.get("git_commit"),
                   mice_bench_version=str(doc.get("mice_bench_version", "")))

    @classmethod
    def load(cls, path: str | Path) -> "EffectivenessResult":
        data = load_result(path, KIND)
        if "aggregates" not in data:
            raise ResultFileError(f"{path}: effectiveness results file lacks 'aggregates' "
                                  "(measure -> value)")
        res = parse_fields(path, KIND, lambda: cls.from_doc(data))
        bad = res.problem()
        if bad is not None:
            raise ResultFileError(f"{path}: {bad}")
        return res
