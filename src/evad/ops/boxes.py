"""Box geometry on tensors: format conversion, area, IoU, generalized IoU, clipping, validation.

Boxes are absolute or normalized ``(x1, y1, x2, y2)`` (``xyxy``) unless a name says ``cxcywh``.
Coordinates are continuous: a box's width is ``x2 - x1`` (no ``+ 1`` pixel rule; callers that need
the legacy inclusive-pixel convention of SPEC section 8b apply it themselves). Every function is
differentiable and accepts any number of leading dimensions where that makes sense.

The generalized IoU is the one of Rezatofighi et al. (CVPR 2019) that the set-prediction loss uses
(SPEC section 5).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_boxes(boxes: Tensor, name: str = "boxes") -> None:
    """ValueError unless `boxes` ends in 4 coordinates: an (N, 5) array (a score or an index in
    front) would otherwise be read as other coordinates without an error."""
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"{name} must have shape (..., 4), got {tuple(boxes.shape)}")


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Converts ``(cx, cy, w, h)`` boxes to ``(x1, y1, x2, y2)``.

    Args:
        boxes: ``(..., 4)`` boxes as centre and size.

    Returns:
        ``(..., 4)`` boxes as corners, in the same units.
    """
    _check_boxes(boxes)
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """Converts ``(x1, y1, x2, y2)`` boxes to ``(cx, cy, w, h)``.

    Args:
        boxes: ``(..., 4)`` boxes as corners.

    Returns:
        ``(..., 4)`` boxes as centre and size, in the same units.
    """
    _check_boxes(boxes)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area ``(x2 - x1) * (y2 - y1)`` of ``(..., 4)`` xyxy boxes, shape ``(...)``.

    Degenerate boxes give a zero or negative area; nothing is clamped here.
    """
    _check_boxes(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise intersection over union of two sets of xyxy boxes.

    Args:
        boxes1: ``(..., N, 4)`` boxes.
        boxes2: ``(..., M, 4)`` boxes; leading dimensions broadcast against ``boxes1``'s.

    Returns:
        ``(iou, union)``, both ``(..., N, M)``. The union is returned because the generalized IoU
        needs it. Two zero-area boxes have union 0 and IoU NaN, as in torchvision.
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    # (..., N, 1, 2) against (..., 1, M, 2) -> (..., N, M, 2)
    top_left = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    bottom_right = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter / union, union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU, ``IoU - (C - union) / C`` with ``C`` the smallest enclosing box.

    The value lies in ``[-1, 1]``; it is negative for disjoint boxes, which is what gives the GIoU
    loss a gradient where plain IoU has none. Boxes must be valid (``x2 >= x1``, ``y2 >= y1``);
    check with `assert_valid_boxes` where the input is not trusted, since degenerate boxes give
    meaningless values instead of an error.

    Args:
        boxes1: ``(..., N, 4)`` xyxy boxes.
        boxes2: ``(..., M, 4)`` xyxy boxes; leading dimensions broadcast against ``boxes1``'s.

    Returns:
        ``(..., N, M)`` generalized IoU.
    """
    iou, union = box_iou(boxes1, boxes2)
    # (..., N, 1, 2) against (..., 1, M, 2) -> (..., N, M, 2)
    top_left = torch.minimum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    bottom_right = torch.maximum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing


def clip_boxes(boxes: Tensor, height: float | Tensor, width: float | Tensor) -> Tensor:
    """Clips xyxy boxes to ``[0, width] x [0, height]`` and returns a new tensor.

    Pass ``width - 1`` and ``height - 1`` for the legacy inclusive-pixel clipping of the official
    decoder RoIs (SPEC section 8b). Gradients pass through coordinates that were not clipped.

    Args:
        boxes: ``(..., 4)`` xyxy boxes.
        height: Upper bound for ``y``: a number, or a tensor broadcastable to ``boxes.shape[:-1]``
            (one bound per box, e.g. each clip's unpadded size).
        width: Upper bound for ``x``, like ``height``.

    Returns:
        ``(..., 4)`` clipped boxes.
    """
    _check_boxes(boxes)
    height = torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device)
    width = torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device)
    zero = boxes.new_zeros(())
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(
        (
            x1.clamp(min=zero, max=width),
            y1.clamp(min=zero, max=height),
            x2.clamp(min=zero, max=width),
            y2.clamp(min=zero, max=height),
        ),
        dim=-1,
    )


def assert_valid_boxes(boxes: Tensor, name: str) -> None:
    """Raises ``ValueError`` unless ``boxes`` is a ``(..., 4)`` tensor of finite, non-degenerate boxes.

    A box is degenerate when ``x2 < x1`` or ``y2 < y1``; zero-size boxes are allowed. The message
    names the argument and shows the first offending box, so that a bad annotation or a diverging
    box head is found at its source rather than as a NaN loss later.

    Args:
        boxes: ``(..., 4)`` xyxy boxes.
        name: The argument's name, used in the message.
    """
    _check_boxes(boxes, name)
    flat = boxes.detach().reshape(-1, 4)  # (..., 4) -> (B, 4)
    finite = torch.isfinite(flat).all(dim=1)
    ordered = (flat[:, 2] >= flat[:, 0]) & (flat[:, 3] >= flat[:, 1])
    for ok, problem in ((finite, "non-finite"), (ordered, "degenerate (x2 < x1 or y2 < y1)")):
        bad = (~ok).nonzero()
        if len(bad):
            first = int(bad[0])
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(first), boxes.shape[:-1]))
            raise ValueError(
                f"{name} has {len(bad)} {problem} box(es); the first, at index {index}, is "
                f"{flat[first].tolist()}"
            )


def rescale_boxes(boxes: Tensor, image_sizes: Tensor, target_sizes: Tensor) -> Tensor:
    """Boxes predicted on a resized input, in the pixels of the original frames (post-processing).

    Clipped to the input's inclusive pixels ``[0, W-1] x [0, H-1]`` as the official code does,
    scaled by target / input size, then clamped to ``[0, W_t] x [0, H_t]``.

    Args:
        boxes: ``(B, Q, 4)`` xyxy boxes in input pixels.
        image_sizes: ``(B, 2)`` unpadded input (height, width).
        target_sizes: ``(B, 2)`` (height, width) of the frames to scale the boxes to.

    Returns:
        ``(B, Q, 4)`` xyxy boxes in target pixels.
    """
    _check_boxes(boxes)
    for name, sizes in (("image_sizes", image_sizes), ("target_sizes", target_sizes)):
        if sizes.shape != (boxes.shape[0], 2):
            raise ValueError(f"{name} must be (B, 2) = ({boxes.shape[0]}, 2), got {tuple(sizes.shape)}")
    h, w = image_sizes[:, 0, None], image_sizes[:, 1, None]  # (B, 1): one bound for each clip's Q boxes
    th, tw = target_sizes[:, 0, None], target_sizes[:, 1, None]
    scale = torch.stack([tw / w, th / h, tw / w, th / h], dim=-1)  # (B, 1, 4)
    return clip_boxes(clip_boxes(boxes, h - 1, w - 1) * scale, th, tw)
