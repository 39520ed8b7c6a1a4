"""Validation during training: the held-out queries' candidates re-ranked by the model."""

from __future__ import annotations

import contextlib

import torch

from .config import TrainConfig
from .data import TrainingData


def validate_model(model, data: TrainingData, cfg: TrainConfig,
                   autocast: torch.dtype | None = None) -> dict[str, float]:
    """nDCG@10 and RR@10 of the held-out queries' candidates re-ranked by ``model``."""
    from ..evaluation.metrics import aggregate, parse_measures, per_query

    ex = model.executor(cfg.executor)
    qs, ds, keys = [], [], []
    for q, cands in data.val_candidates.items():
        for d in cands:
            qs.append(data.val_queries[q])
            ds.append(data.texts[d])
            keys.append((q, d))
    dev = model.backbone.device
    ctx = torch.autocast(dev.type, dtype=autocast) if autocast is not None \
        else contextlib.nullcontext()
    with ctx:
        scores = ex.score_pairs(qs, ds, batch_size=cfg.eval_batch_size).tolist() if qs else []
    run: dict[str, dict[str, float]] = {q: {} for q in data.val_queries}
    for (q, d), s in zip(keys, scores):
        run[q][d] = float(s)
    ms = parse_measures(["nDCG@10", "RR@10"])
    return aggregate(per_query(data.val_qrels, run, ms))


__all__ = ["validate_model"]
