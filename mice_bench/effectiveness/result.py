"""The typed result of one evaluated (model, variant, dataset): the writer and the reader.

``mice-bench effectiveness`` builds an :class:`EffectivenessResult` and :meth:`saves
<EffectivenessResult.save>` it; ``mice-bench report`` :meth:`loads
<EffectivenessResult.load>` it with the same class (older schema versions are upgraded by
:mod:`.schema` first). The file layout is documented in ``docs/effectiveness.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..results import ResultFileError, atomic_write_json, envelope, load_result, parse_fields

KIND = "effectiveness"


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

    def save(self, path: str | Path) -> Path:
        """Write the envelope (``created``, ``git_commit`` are set now)."""
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
        return parse_fields(path, KIND, lambda: cls.from_doc(data))
