"""Greedy non-maximum suppression in plain PyTorch, with torchvision's kernel as the fast path.

EVAD's own inference keeps every person box above the score threshold without NMS (SPEC section 3),
and the UCF101-24 / JHMDB scoring uses its own +1-pixel score-decay NMS (section 11), so no evad
command calls this: it is the standard hard NMS for users' own post-processing (the README's
NMS-at-0.5 experiment, person-detector boxes). Semantics are
torchvision's: boxes are xyxy, scores are sorted descending with ties kept in input order, and a box
is dropped when its IoU with an already kept box is strictly greater than the threshold.

The pure-PyTorch path computes the IoU matrix once on the boxes' device (O(N^2) memory) and does
the inherently sequential greedy pass over its thresholded rows on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from evad.ops.boxes import box_iou
from evad.ops.fastpath import resolve_torchvision


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, use_torchvision: bool | None = None) -> Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``(N, 4)`` xyxy boxes.
        scores: ``(N,)`` scores.
        iou_threshold: A box is suppressed by a higher-scoring kept box when their IoU is
            greater than this.
        use_torchvision: True forces torchvision's kernel, False the pure-PyTorch path, None uses
            torchvision when its compiled ops are available.

    Returns:
        ``(K,)`` long indices into ``boxes`` of the kept boxes, by decreasing score.
    """
    return _suppress(boxes, scores, None, iou_threshold, use_torchvision)


def batched_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    iou_threshold: float,
    use_torchvision: bool | None = None,
) -> Tensor:
    """Non-maximum suppression within each category: boxes of different ``idxs`` never suppress.

    Args:
        boxes: ``(N, 4)`` xyxy boxes.
        scores: ``(N,)`` scores.
        idxs: ``(N,)`` integer category (or image) of each box.
        iou_threshold: See `nms`.
        use_torchvision: See `nms`.

    Returns:
        ``(K,)`` long indices into ``boxes`` of the kept boxes, by decreasing score.
    """
    return _suppress(boxes, scores, idxs, iou_threshold, use_torchvision)


def _suppress(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor | None,
    iou_threshold: float,
    use_torchvision: bool | None,
) -> Tensor:
    """Shared body of `nms` (``idxs`` None) and `batched_nms`."""
    if boxes.dim() != 2 or boxes.shape[1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(
            f"nms expects boxes (N, 4) and scores (N,), got {tuple(boxes.shape)} and {tuple(scores.shape)}"
        )
    if idxs is not None and idxs.shape != scores.shape:
        raise ValueError(f"batched_nms expects idxs (N,) = {tuple(scores.shape)}, got {tuple(idxs.shape)}")
    # One dtype for both (the compiled kernel requires it), at least float32: box areas overflow
    # float16 beyond 256 x 256 pixels.
    dtype = torch.promote_types(torch.promote_types(boxes.dtype, scores.dtype), torch.float32)
    boxes, scores = boxes.detach().to(dtype), scores.detach().to(dtype)
    tv_ops = resolve_torchvision(use_torchvision)
    if tv_ops is not None:
        if idxs is None:
            return tv_ops.nms(boxes, scores, iou_threshold)
        return tv_ops.batched_nms(boxes, scores, idxs, iou_threshold)

    if len(boxes) == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = scores.argsort(descending=True, stable=True)
    sorted_boxes = boxes[order]
    suppresses = box_iou(sorted_boxes, sorted_boxes)[0] > iou_threshold  # (N, N)
    if idxs is not None:
        # Masking the IoU matrix by category is exact, unlike offsetting boxes per category, which
        # loses float precision for large coordinates times many categories.
        sorted_idxs = idxs[order]
        suppresses &= sorted_idxs[:, None] == sorted_idxs[None, :]
    suppresses = suppresses.cpu().numpy()
    removed = np.zeros(len(order), dtype=bool)
    kept = []
    for i in range(len(order)):
        if not removed[i]:
            kept.append(i)
            removed |= suppresses[i]
    return order[torch.as_tensor(kept, dtype=torch.long, device=order.device)]
