"""Keyframe-centric token pruning (EVAD Sec. 3.2, Eq. 1) and its ablation variants.

Token sequences are kept in the order ``[keyframe tokens, non-keyframe tokens]``: the first
``num_keyframe`` tokens always belong to the keyframe's temporal slice and are never dropped
(except by the "unified" ablation). Every function here works on the current sequence and returns
positions into it; the caller carries the global (t, h, w) index of each token alongside.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

PRUNING_STRATEGIES = ("attention", "random", "cls", "unified")


def check_keep_rate(keep_rate: float) -> float:
    """Return `keep_rate` as float, or raise ValueError if it is outside (0, 1]."""
    # numbers.Real also takes NumPy scalars (np.float32(0.7) from a config array or a sweep); a
    # 0-d tensor (an element of torch.linspace) is taken as its number
    if isinstance(keep_rate, Tensor) and keep_rate.ndim == 0 and keep_rate.dtype != torch.bool:
        keep_rate = keep_rate.item()
    if isinstance(keep_rate, bool) or not isinstance(keep_rate, numbers.Real):
        raise ValueError(f"keep_rate must be a number in (0, 1], got {keep_rate!r}")
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    return float(keep_rate)


def num_kept_non_keyframe(num_tokens: int, num_keyframe: int, keep_rate: float) -> int:
    """Non-keyframe tokens that survive one pruning step: ceil(rho * N) - Ns, at least 0.

    Keyframe tokens count against the budget, exactly as in the official implementation, e.g. ViT-B
    at 224 px and rho = 0.7: 1568 -> 1098 -> 769 -> 539 tokens in total.
    """
    return max(math.ceil(keep_rate * num_tokens) - num_keyframe, 0)


def importance_row_weights(
    num_tokens: int, num_keyframe: int, keyframe_weight: float = 1.0, device: torch.device | None = None
) -> Tensor:
    """Weights w_i / N of the query rows in Eq. 1 of the paper.

    s_j = 1/H sum_h 1/N sum_i w_i * A[h, i, j], with w_i = keyframe_weight for keyframe queries
    (i < num_keyframe) and 1 otherwise; "mean over all N query rows" as in the official code. So
    s = `column_scores(A, importance_row_weights(N, Ns, w_kf))`, read at the non-keyframe columns.

    Returns:
        (N,) float32 row weights.
    """
    weights = torch.full((num_tokens,), 1.0 / num_tokens, device=device)
    weights[:num_keyframe] *= keyframe_weight
    return weights


def column_scores(attn: Tensor, row_weights: Tensor) -> Tensor:
    """Score of every key token from post-softmax attention: 1/H sum_h sum_i w_i * A[h, i, j].

    Args:
        attn: (B, heads, N, N) attention probabilities (query rows, key columns).
        row_weights: (N,) weight of each query row.

    Returns:
        (B, N) scores, in float32 or higher.
    """
    dtype = torch.promote_types(attn.dtype, torch.float32)
    per_head = row_weights.to(dtype) @ attn.to(dtype)  # (N,) @ (B, heads, N, N) -> (B, heads, N)
    return per_head.mean(dim=1)


def select_tokens(scores: Tensor, num_keep: int, offset: int = 0, prefix: int = 0) -> Tensor:
    """Positions to keep: the first `prefix` tokens, then the top-`num_keep` scored tokens.

    Args:
        scores: (B, M) scores of the candidate tokens, which start at sequence position `offset`.
        num_keep: How many candidates survive (top-k, in descending score order like the
            official code; the caller keeps their global indices in the same order).
        offset: Sequence position of the first candidate.
        prefix: Leading positions always kept (a CLS token and/or the keyframe tokens).

    Returns:
        (B, prefix + num_keep) positions into the current sequence.
    """
    B = scores.shape[0]
    top = scores.topk(num_keep, dim=1, largest=True, sorted=True).indices + offset  # (B, K)
    head = torch.arange(prefix, device=scores.device).expand(B, prefix)  # (B, prefix)
    return torch.cat([head, top], dim=1)


def gather_tokens(x: Tensor, positions: Tensor) -> Tensor:
    """Gather tokens (B, N, C) or indices (B, N) at positions (B, K) along dim 1."""
    if x.ndim == 2:
        return x.gather(1, positions)
    return x.gather(1, positions.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, K) -> (B, K, C) rows


def official_token_order(indices: Tensor, num_keyframe: int) -> Tensor:
    """Reproduce the official scatter quirk for loading released KTP checkpoints.

    The official code keeps non-keyframe tokens in top-k score order but writes them back into the
    dense map (and takes their decoder position embeddings) in ascending index order, so each
    kept feature lands at the position of the k-th smallest kept index rather than its own. This
    returns the indices that make our (otherwise correct) scatter do the same.

    Args:
        indices: (B, M) global indices in sequence order ``[keyframe, non-keyframe]``.
        num_keyframe: Number of leading keyframe tokens, which the quirk leaves alone.
    """
    keyframe, others = indices[:, :num_keyframe], indices[:, num_keyframe:]
    return torch.cat([keyframe, others.sort(dim=1).values], dim=1)
