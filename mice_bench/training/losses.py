"""Training losses: pure functions of score tensors, computed in fp32.

Scores come in groups: ``scores [B, G]`` holds, for each of ``B`` queries, the score of its
positive document in column 0 and of ``G - 1`` negatives in columns ``1..G-1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def margin_mse(scores: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MarginMSE (Hofstätter et al., 2020): the mean over queries and negatives of
    ``((s_pos - s_neg) - (t_pos - t_neg))²``.

    scores, teacher: ``[B, G]`` (positive first) -> scalar (fp32).
    """
    s = scores.float()
    t = teacher.to(s.device, torch.float32)
    if s.shape != t.shape or s.dim() != 2 or s.shape[1] < 2:
        raise ValueError(f"margin_mse needs [B, G>=2] scores and teacher scores of the same "
                         f"shape, got {tuple(s.shape)} and {tuple(t.shape)}")
    return F.mse_loss(s[:, :1] - s[:, 1:], t[:, :1] - t[:, 1:])


def listwise_ce(scores: torch.Tensor) -> torch.Tensor:
    """Listwise softmax cross-entropy (LCE): ``-log softmax(scores)[:, 0]``, mean over queries.

    scores: ``[B, G]`` (positive first) -> scalar (fp32).
    """
    s = scores.float()
    if s.dim() != 2 or s.shape[1] < 2:
        raise ValueError(f"listwise_ce needs [B, G>=2] scores, got {tuple(s.shape)}")
    return F.cross_entropy(s, torch.zeros(s.shape[0], dtype=torch.long, device=s.device))


def bce(scores: torch.Tensor) -> torch.Tensor:
    """Pointwise binary cross-entropy on logits: label 1 for column 0, 0 for the others;
    the mean over all ``B * G`` pairs.

    scores: ``[B, G]`` (positive first) -> scalar (fp32).
    """
    s = scores.float()
    if s.dim() != 2 or s.shape[1] < 2:
        raise ValueError(f"bce needs [B, G>=2] scores, got {tuple(s.shape)}")
    labels = torch.zeros_like(s)
    labels[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(s, labels)


def compute_loss(name: str, scores: torch.Tensor, teacher: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Dispatch on the loss name (``marginmse`` needs ``teacher [B, G]``)."""
    if name == "marginmse":
        if teacher is None:
            raise ValueError("marginmse needs teacher scores")
        return margin_mse(scores, teacher)
    if name == "lce":
        return listwise_ce(scores)
    if name == "bce":
        return bce(scores)
    raise ValueError(f"unknown loss {name!r}")


__all__ = ["margin_mse", "listwise_ce", "bce", "compute_loss"]
