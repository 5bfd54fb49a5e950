"""Hungarian matching of proposals to ground-truth persons (paper Sec. 3.4, SPEC section 5).

EVAD trains its localization branch as a set predictor, following Sparse R-CNN / WOO: each stage's
100 proposals are assigned one-to-one to the ground-truth persons of the keyframe by minimising

    cost = cost_bbox * L1(xyxy / (w, h, w, h)) + cost_class * (-p_person) + cost_giou * (-GIoU)

with `scipy.optimize.linear_sum_assignment`. This module only builds that cost matrix; the losses
live in `evad.losses.criterion`.

Official behaviour followed (MCG-NJU/EVAD, `projects/evad/models/loss.py`, `HungarianMatcher`,
lines 185-283):
- the class cost is minus the softmax probability of the person class (index 0); the constant 1 of
  "1 - p" is dropped (line 257);
- the L1 cost is `torch.cdist(p=1)` between xyxy boxes divided by their own image's (w, h, w, h)
  (lines 260-266); the GIoU cost is computed on pixel xyxy boxes (line 270), which gives the same
  value since GIoU is scale invariant;
- one cost matrix is built for the whole batch and split per image by target count, as in DETR
  (lines 232-282); entries pairing a proposal with another image's target are never used;
- the default weights are the loss weights (2, 5, 2), as `e2e_detector.py` lines 61-65 pass them.

Deviation: non-finite costs (NaN or infinite predictions of a diverged model), which make the
official matcher fail inside scipy, rank after every finite one, so that training stops on the
non-finite loss instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from evad.ops.boxes import generalized_box_iou


class HungarianMatcher(nn.Module):
    """One-to-one assignment between proposals and ground-truth persons.

    Args:
        cost_class: Weight of the person-probability cost.
        cost_bbox: Weight of the L1 cost on image-normalised xyxy boxes.
        cost_giou: Weight of the negative generalized-IoU cost.

    Raises:
        ValueError: If every weight is zero or one is negative.
    """

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0) -> None:
        super().__init__()
        costs = {"cost_class": cost_class, "cost_bbox": cost_bbox, "cost_giou": cost_giou}
        if any(value < 0 for value in costs.values()) or all(value == 0 for value in costs.values()):
            raise ValueError(f"HungarianMatcher: costs must be >= 0 and not all zero, got {costs}")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    @torch.no_grad()
    def forward(
        self, outputs: Mapping[str, Tensor], targets: Sequence[Mapping[str, Tensor]]
    ) -> list[tuple[Tensor, Tensor]]:
        """Match the proposals of one stage to the targets, image by image.

        Args:
            outputs: Predictions of one localization stage: `pred_logits` (B, Q, 2) with person at
                index 0 and no-object at index 1, `pred_boxes` (B, Q, 4) xyxy in input pixels and
                `image_sizes` (B, 2) unpadded (height, width) per clip.
            targets: B dicts whose `boxes` (M, 4) are xyxy pixels in the same frame; M may be 0.

        Returns:
            For each image, `(pred_indices, target_indices)`: int64 CPU tensors of equal length
            min(Q, M); pred_indices is sorted ascending.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        batch_size, num_queries = logits.shape[:2]
        sizes = [len(target["boxes"]) for target in targets]
        if sum(sizes) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in range(batch_size)]

        whwh = outputs["image_sizes"].to(boxes).flip(-1).repeat(1, 2)  # (B, 2) (h, w) -> (B, 4) (w, h, w, h)
        out_prob = logits.flatten(0, 1).softmax(-1)[:, 0]  # (B, Q, 2) -> (B*Q,)
        out_boxes = boxes.flatten(0, 1)  # (B, Q, 4) -> (B*Q, 4)
        out_scale = whwh.repeat_interleave(num_queries, dim=0)  # (B*Q, 4)
        tgt_boxes = torch.cat([target["boxes"] for target in targets]).to(boxes)  # (T, 4)
        tgt_scale = whwh.repeat_interleave(torch.as_tensor(sizes, device=whwh.device), dim=0)  # (T, 4)

        cost_bbox = torch.cdist(out_boxes / out_scale, tgt_boxes / tgt_scale, p=1)  # (B*Q, T)
        cost_class = -out_prob[:, None].expand(-1, len(tgt_boxes))  # (B*Q, T)
        cost_giou = -generalized_box_iou(out_boxes, tgt_boxes)  # (B*Q, T)
        cost = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        cost = cost.view(batch_size, num_queries, -1).float().cpu()  # (B*Q, T) -> (B, Q, T)
        # A diverged model's NaN or infinite predictions give non-finite costs, which
        # linear_sum_assignment refuses with a ValueError on this process alone. They rank last
        # instead: the loss of such predictions is itself non-finite, so the training loop stops
        # every process alike, with its message.
        finite = torch.isfinite(cost)
        if not finite.all():
            worst = cost[finite].max() + 1.0 if finite.any() else torch.tensor(0.0)
            cost = torch.where(finite, cost, worst)

        indices = []
        for image, block in enumerate(cost.split(sizes, dim=-1)):
            pred_idx, tgt_idx = linear_sum_assignment(block[image].numpy())
            indices.append(
                (torch.as_tensor(pred_idx, dtype=torch.int64), torch.as_tensor(tgt_idx, dtype=torch.int64))
            )
        return indices
