"""Set-prediction and action losses of EVAD (paper Sec. 3.4, supplementary "Losses", SPEC section 5).

Every localization stage is matched to the ground truth on its own and supervised with a two-way
(person / no-object) cross-entropy, an L1 loss on image-normalised xyxy boxes and a GIoU loss. Every
context-decoder block is supervised with a binary cross-entropy on the proposals matched by the LAST
localization stage. `SetCriterion.forward` returns the unweighted terms by name;
`SetCriterion.weighted_total` combines them.

Official behaviour followed (MCG-NJU/EVAD at commit 0efdb7e; `loss.py`, `head_helper.py` and
`e2e_detector.py` are under `projects/evad/models/`):
- `loss.py` lines 80-81: the CE is `F.cross_entropy` with class weights (1, no_object_weight) and
  the default "mean" reduction, i.e. a weighted mean over all B*Q proposals (sum of w_i * nll_i
  divided by the sum of w_i), NOT divided by num_boxes.
- `loss.py` lines 109-117: L1 on xyxy boxes divided by their image's (w, h, w, h) and 1 - GIoU on
  pixel boxes, each summed over matched pairs and divided by num_boxes.
- `loss.py` lines 155-159: num_boxes = number of targets in the batch, summed over processes and
  divided by the world size when torch.distributed is initialised, clamped to at least 1.
- `loss.py` lines 148-180: the last stage is matched with the outputs without `aux_outputs`; aux
  stage i (0 = first stage) is matched separately and its terms get the suffix `_{i}`.
- `head_helper.py` lines 296-297 and 316-337: the action loss of every decoder block uses the last
  stage's matching; with the released configs (`LOSS_FUNC: bce`, `SOFTMAX_POSE` False) it is
  `F.binary_cross_entropy_with_logits` with the default "mean" reduction, i.e. the mean over
  matched proposals x classes (not divided by num_boxes). Aux block j is suffixed `_{j}`, the last
  block has none. The official name is `loss_bce`; evad calls it `loss_action`.
- `e2e_detector.py` lines 66-74 and 190-193: one weight per kind of term (ce 2, bbox 5, giou 2,
  bce 12; `configs/ViT_L_16x4_KTP.yaml` sets bce 6) applied to every stage/block;
  `projects/evad/train_net.py` line 71: the total is the sum of the weighted terms divided by the
  number of terms (24 for the default head: 6 stages x 3 + 6 blocks). This agrees with SPEC
  section 5.

Deviations: when the batch has no matched proposal the official action loss is the mean of an
empty tensor (NaN); here it is an exact zero that stays in the graph. `empty_weight` is a
non-persistent buffer, so checkpoints do not carry it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, distributed, nn

from evad.losses.matcher import HungarianMatcher
from evad.ops.boxes import assert_valid_boxes, generalized_box_iou

#: Weight of each kind of term; a stage/block suffix `_{i}` shares its kind's weight.
DEFAULT_WEIGHTS: dict[str, float] = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_action": 12.0}

_TERM_NAME = re.compile(r"(loss_ce|loss_bbox|loss_giou|loss_action)(?:_\d+)?")

Indices = list[tuple[Tensor, Tensor]]
Targets = Sequence[Mapping[str, Tensor]]


def validate_targets(targets: Targets, num_classes: int, batch_size: int) -> None:
    """Check the ground truth before matching.

    Args:
        targets: One dict per clip with `boxes` (M, 4) xyxy pixels and `labels` (M, num_classes)
            multi-hot actions; M may be 0.
        num_classes: Number of action classes.
        batch_size: Number of clips in the predictions.

    Raises:
        ValueError: Naming the offending `targets[i][key]` and what is accepted.
    """
    if len(targets) != batch_size:
        raise ValueError(f"targets: expected one dict per clip ({batch_size}), got {len(targets)}")
    for i, target in enumerate(targets):
        missing = {"boxes", "labels"} - set(target)
        if missing:
            raise ValueError(f"targets[{i}]: missing {sorted(missing)}; required keys are 'boxes', 'labels'")
        boxes, labels = target["boxes"], target["labels"]
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
            raise ValueError(
                f"targets[{i}]['boxes']: expected a float tensor of shape (M, 4) xyxy, "
                f"got {boxes.dtype} {tuple(boxes.shape)}"
            )
        assert_valid_boxes(boxes, f"targets[{i}]['boxes']")
        if labels.shape != (len(boxes), num_classes):
            raise ValueError(
                f"targets[{i}]['labels']: expected shape ({len(boxes)}, {num_classes}) "
                f"(one multi-hot row of num_classes={num_classes} per box), got {tuple(labels.shape)}"
            )
        labels = labels.float()
        if not ((labels >= 0) & (labels <= 1)).all():
            raise ValueError(f"targets[{i}]['labels']: accepted values are in [0, 1] (multi-hot)")


def _check_outputs(outputs: Mapping[str, Any], num_classes: int) -> None:
    """Check the prediction dict against the contract documented in `SetCriterion.forward`."""
    for key in ("pred_logits", "pred_boxes", "action_logits", "image_sizes"):
        if key not in outputs:
            raise ValueError(f"outputs: missing '{key}'")
    logits = outputs["pred_logits"]
    batch_size, num_queries = logits.shape[:2]
    expected = {
        "pred_logits": (batch_size, num_queries, 2),
        "pred_boxes": (batch_size, num_queries, 4),
        "action_logits": (batch_size, num_queries, num_classes),
        "image_sizes": (batch_size, 2),
    }
    for key, shape in expected.items():
        if tuple(outputs[key].shape) != shape:
            raise ValueError(f"outputs['{key}']: expected shape {shape}, got {tuple(outputs[key].shape)}")
    if not (torch.isfinite(outputs["image_sizes"]) & (outputs["image_sizes"] > 0)).all():
        raise ValueError("outputs['image_sizes']: accepted are finite, positive (height, width) rows")
    for i, stage in enumerate(outputs.get("aux_outputs", [])):
        for key in ("pred_logits", "pred_boxes"):
            if key not in stage or tuple(stage[key].shape) != expected[key]:
                raise ValueError(f"outputs['aux_outputs'][{i}]['{key}']: expected shape {expected[key]}")
    for j, block in enumerate(outputs.get("aux_action_logits", [])):
        if tuple(block.shape) != expected["action_logits"]:
            raise ValueError(
                f"outputs['aux_action_logits'][{j}]: expected shape {expected['action_logits']}, "
                f"got {tuple(block.shape)}"
            )


def _src_permutation(indices: Indices, device: torch.device) -> tuple[Tensor, Tensor]:
    """Flatten per-image matches into (batch index, proposal index) for advanced indexing."""
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    src_idx = torch.cat([src for src, _ in indices])
    return batch_idx.to(device), src_idx.to(device)


def _matched_rows(targets: Targets, indices: Indices, key: str) -> Tensor:
    """Concatenate `targets[b][key]` rows in match order, aligned with `_src_permutation`."""
    pairs = zip(targets, indices, strict=True)
    return torch.cat([target[key][tgt.to(target[key].device)] for target, (_, tgt) in pairs])


class SetCriterion(nn.Module):
    """DETR-style losses of the localization stages and the context-decoder blocks.

    Args:
        matcher: Assigns proposals to targets; called once per localization stage.
        num_classes: Number of action classes (columns of the targets' `labels`).
        weight_dict: Per-kind weights overriding `DEFAULT_WEIGHTS` (ViT-B's); accepted keys are
            `loss_ce`, `loss_bbox`, `loss_giou` and `loss_action` (6 for ViT-L). Each weight applies
            to every stage/block.
        no_object_weight: CE weight of the no-object class (the person class has weight 1).
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        num_classes: int,
        weight_dict: Mapping[str, float] | None = None,
        no_object_weight: float = 0.1,
    ) -> None:
        super().__init__()
        weights = dict(DEFAULT_WEIGHTS)
        unknown = set(weight_dict or {}) - set(weights)
        if unknown:
            raise ValueError(f"weight_dict: unknown keys {sorted(unknown)}; accepted are {sorted(weights)}")
        weights.update(weight_dict or {})
        self.matcher = matcher
        self.num_classes = num_classes
        self.weight_dict = weights
        self.register_buffer("empty_weight", torch.tensor([1.0, no_object_weight]), persistent=False)

    def forward(
        self, outputs: Mapping[str, Any], targets: Targets, num_boxes: float | None = None
    ) -> dict[str, Tensor]:
        """Compute every unweighted loss term.

        Args:
            outputs: The model's prediction dict: `pred_logits` (B, Q, 2), `pred_boxes` (B, Q, 4)
                xyxy pixels, `action_logits` (B, Q, num_classes) pre-sigmoid, `image_sizes` (B, 2)
                unpadded (height, width), and optionally `aux_outputs` (list of dicts with
                `pred_logits`, `pred_boxes`, earliest stage first) and `aux_action_logits` (list of
                (B, Q, num_classes), earliest block first).
            targets: B dicts with `boxes` (M, 4) xyxy pixels and `labels` (M, num_classes) multi-hot.
            num_boxes: Divisor of the summed box losses; None: the targets' box count averaged over
                processes (at least 1). Gradient accumulation passes its group's count
                (`evad.engine.epoch.group_box_normalizer`).

        Returns:
            `loss_ce`, `loss_bbox`, `loss_giou` for the last stage and `loss_ce_{i}`,
            `loss_bbox_{i}`, `loss_giou_{i}` for aux stage i; `loss_action` for the last decoder
            block and `loss_action_{j}` for aux block j.

        Raises:
            ValueError: If the predictions or targets break the contract above.
        """
        _check_outputs(outputs, self.num_classes)
        validate_targets(targets, self.num_classes, batch_size=outputs["pred_logits"].shape[0])
        if num_boxes is None:
            num_boxes = self._num_boxes(targets, outputs["pred_logits"].device)
        image_sizes = outputs["image_sizes"]

        last_stage = {key: outputs[key] for key in ("pred_logits", "pred_boxes", "image_sizes")}
        last_indices = self.matcher(last_stage, targets)
        losses = self._stage_losses(last_stage, targets, last_indices, num_boxes, suffix="")
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            aux_stage = {**aux, "image_sizes": image_sizes}
            indices = self.matcher(aux_stage, targets)
            losses.update(self._stage_losses(aux_stage, targets, indices, num_boxes, suffix=f"_{i}"))

        losses["loss_action"] = self.loss_action(outputs["action_logits"], targets, last_indices)
        for j, block_logits in enumerate(outputs.get("aux_action_logits", [])):
            losses[f"loss_action_{j}"] = self.loss_action(block_logits, targets, last_indices)
        return losses

    def weighted_total(self, losses: Mapping[str, Tensor]) -> Tensor:
        """Combine named terms as the official training loop does: weighted sum / number of terms.

        Args:
            losses: Output of `forward` (any subset of its names).

        Returns:
            Scalar total loss.

        Raises:
            ValueError: If `losses` is empty or holds a name that is not a loss term.
        """
        if not losses:
            raise ValueError("losses: expected at least one term")
        total = sum(self.weight_of(name) * value for name, value in losses.items())
        return total / len(losses)

    def weight_of(self, name: str) -> float:
        """Weight of a term such as `loss_giou_3`: that of its kind (`loss_giou`)."""
        match = _TERM_NAME.fullmatch(name)
        if match is None:
            raise ValueError(
                f"losses: unknown term {name!r}; accepted are {sorted(DEFAULT_WEIGHTS)}, optionally + '_<i>'"
            )
        return self.weight_dict[match.group(1)]

    def loss_labels(self, logits: Tensor, indices: Indices) -> Tensor:
        """Weighted-mean person / no-object CE over all B*Q proposals.

        Args:
            logits: (B, Q, 2) person / no-object logits of one stage.
            indices: Matches of that stage.

        Returns:
            Scalar loss.
        """
        batch_idx, src_idx = _src_permutation(indices, logits.device)
        target_classes = torch.ones(logits.shape[:2], dtype=torch.int64, device=logits.device)  # no-object
        target_classes[batch_idx, src_idx] = 0  # person
        weight = self.empty_weight.to(logits.dtype)
        return F.cross_entropy(logits.transpose(1, 2), target_classes, weight)  # (B, Q, 2) -> (B, 2, Q)

    def loss_boxes(
        self,
        boxes: Tensor,
        image_sizes: Tensor,
        targets: Targets,
        indices: Indices,
        num_boxes: float,
    ) -> dict[str, Tensor]:
        """L1 on image-normalised xyxy and 1 - GIoU, each summed over matches and divided by num_boxes.

        Args:
            boxes: (B, Q, 4) xyxy pixel boxes of one stage.
            image_sizes: (B, 2) unpadded (height, width).
            targets: Ground truth, see `forward`.
            indices: Matches of that stage.
            num_boxes: Normaliser, see `_num_boxes`.

        Returns:
            `loss_bbox` and `loss_giou`.
        """
        batch_idx, src_idx = _src_permutation(indices, boxes.device)
        if len(src_idx) == 0:
            zero = boxes.sum() * 0.0  # keeps the stage in the graph (DDP expects every output used)
            return {"loss_bbox": zero, "loss_giou": zero}
        src_boxes = boxes[batch_idx, src_idx]  # (K, 4)
        tgt_boxes = _matched_rows(targets, indices, "boxes").to(src_boxes)  # (K, 4)
        scale = image_sizes.to(src_boxes).flip(-1).repeat(1, 2)[batch_idx]  # (B, 2) -> (K, 4) (w, h, w, h)
        loss_bbox = F.l1_loss(src_boxes / scale, tgt_boxes / scale, reduction="sum") / num_boxes
        loss_giou = (1 - torch.diag(generalized_box_iou(src_boxes, tgt_boxes))).sum() / num_boxes
        return {"loss_bbox": loss_bbox, "loss_giou": loss_giou}

    def loss_action(self, action_logits: Tensor, targets: Targets, indices: Indices) -> Tensor:
        """Mean BCE-with-logits over matched proposals x classes; unmatched proposals are ignored.

        Args:
            action_logits: (B, Q, num_classes) pre-sigmoid logits of one decoder block.
            targets: Ground truth, see `forward`.
            indices: Matches of the LAST localization stage.

        Returns:
            Scalar loss; exactly zero (still in the graph) when nothing is matched.
        """
        batch_idx, src_idx = _src_permutation(indices, action_logits.device)
        if len(src_idx) == 0:
            return action_logits.sum() * 0.0
        logits = action_logits[batch_idx, src_idx]  # (K, num_classes)
        labels = _matched_rows(targets, indices, "labels").to(logits)  # (K, num_classes)
        return F.binary_cross_entropy_with_logits(logits, labels)

    def _stage_losses(
        self,
        stage: Mapping[str, Tensor],
        targets: Targets,
        indices: Indices,
        num_boxes: float,
        suffix: str,
    ) -> dict[str, Tensor]:
        losses = {"loss_ce": self.loss_labels(stage["pred_logits"], indices)}
        losses.update(self.loss_boxes(stage["pred_boxes"], stage["image_sizes"], targets, indices, num_boxes))
        return {name + suffix: value for name, value in losses.items()}

    @staticmethod
    def _num_boxes(targets: Targets, device: torch.device) -> float:
        """Targets per process, averaged over processes when distributed, at least 1."""
        count = torch.tensor([float(sum(len(t["boxes"]) for t in targets))], device=device)
        if distributed.is_available() and distributed.is_initialized():
            distributed.all_reduce(count)
            count = count / distributed.get_world_size()
        return max(count.item(), 1.0)
