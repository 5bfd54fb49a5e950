"""Tests of `evad.losses.matcher.HungarianMatcher`."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor

from evad.losses import HungarianMatcher
from evad.ops.boxes import generalized_box_iou


def random_boxes(num: int, height: float, width: float, generator: torch.Generator) -> Tensor:
    """(num, 4) valid xyxy boxes inside a height x width image."""
    x1y1 = torch.rand(num, 2, generator=generator) * torch.tensor([width, height]) * 0.7
    wh = (0.05 + torch.rand(num, 2, generator=generator) * 0.25) * torch.tensor([width, height])
    return torch.cat([x1y1, x1y1 + wh], dim=1)


def random_batch(
    sizes: list[int], num_queries: int, image_sizes: list[tuple[float, float]], seed: int = 0
) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
    """Random one-stage predictions and targets for len(sizes) images of the given (h, w)."""
    generator = torch.Generator().manual_seed(seed)
    boxes = torch.stack([random_boxes(num_queries, h, w, generator) for h, w in image_sizes])
    outputs = {
        "pred_logits": torch.randn(len(sizes), num_queries, 2, generator=generator),
        "pred_boxes": boxes,
        "image_sizes": torch.tensor(image_sizes),
    }
    targets = [
        {"boxes": random_boxes(m, h, w, generator)} for m, (h, w) in zip(sizes, image_sizes, strict=True)
    ]
    return outputs, targets


def one_image(
    logits: list[list[float]], boxes: list[list[float]], height: float, width: float
) -> dict[str, Tensor]:
    return {
        "pred_logits": torch.tensor([logits]),
        "pred_boxes": torch.tensor([boxes]),
        "image_sizes": torch.tensor([[height, width]]),
    }


def test_obvious_assignment() -> None:
    outputs = one_image(
        logits=[[0.0, 0.0]] * 3,
        boxes=[[101.0, 21.0, 161.0, 99.0], [0.0, 0.0, 5.0, 5.0], [11.0, 9.0, 51.0, 91.0]],
        height=200,
        width=200,
    )
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 90.0], [100.0, 20.0, 160.0, 100.0]])}]
    [(pred, tgt)] = HungarianMatcher()(outputs, targets)
    assert pred.dtype == tgt.dtype == torch.int64
    assert pred.tolist() == [0, 2]
    assert tgt.tolist() == [1, 0]


def test_l1_cost_is_normalised_by_image_width_and_height() -> None:
    # Image 10 high, 1000 wide. Query 0 is 50 px off in x (0.1 normalised, 100 px), query 1 is 5 px off
    # in y (1.0 normalised, 10 px): only a (w, h, w, h) normalisation prefers query 0.
    outputs = one_image(
        logits=[[0.0, 0.0]] * 2,
        boxes=[[150.0, 2.0, 250.0, 8.0], [100.0, 7.0, 200.0, 13.0]],
        height=10,
        width=1000,
    )
    targets = [{"boxes": torch.tensor([[100.0, 2.0, 200.0, 8.0]])}]
    [(pred, tgt)] = HungarianMatcher(cost_class=0.0, cost_bbox=1.0, cost_giou=0.0)(outputs, targets)
    assert pred.tolist() == [0]
    assert tgt.tolist() == [0]


def test_class_cost_uses_person_probability_at_index_0() -> None:
    box = [10.0, 10.0, 50.0, 50.0]
    outputs = one_image(logits=[[0.0, 3.0], [3.0, 0.0]], boxes=[box, box], height=100, width=100)
    targets = [{"boxes": torch.tensor([box])}]
    [(pred, _)] = HungarianMatcher()(outputs, targets)
    assert pred.tolist() == [1]


def test_assignment_minimises_the_documented_cost() -> None:
    outputs, targets = random_batch([3], num_queries=5, image_sizes=[(120.0, 300.0)], seed=3)
    boxes, tgt_boxes = outputs["pred_boxes"][0], targets[0]["boxes"]
    prob = outputs["pred_logits"][0].softmax(-1)[:, 0]
    scale = torch.tensor([300.0, 120.0, 300.0, 120.0])
    giou = generalized_box_iou(boxes, tgt_boxes)
    cost = torch.empty(5, 3)
    for q, t in itertools.product(range(5), range(3)):
        l1 = (boxes[q] / scale - tgt_boxes[t] / scale).abs().sum()
        cost[q, t] = 5.0 * l1 - 2.0 * prob[q] - 2.0 * giou[q, t]
    best = min(sum(cost[q, t] for t, q in enumerate(perm)) for perm in itertools.permutations(range(5), 3))

    [(pred, tgt)] = HungarianMatcher()(outputs, targets)
    assert cost[pred, tgt].sum() == pytest.approx(float(best), abs=1e-5)


def test_batched_equals_per_image() -> None:
    image_sizes = [(100.0, 200.0), (240.0, 320.0), (50.0, 400.0), (300.0, 300.0)]
    outputs, targets = random_batch([2, 0, 3, 1], num_queries=6, image_sizes=image_sizes, seed=1)
    matcher = HungarianMatcher()
    batched = matcher(outputs, targets)
    assert len(batched) == 4
    for b in range(4):
        single = {key: value[b : b + 1] for key, value in outputs.items()}
        [(pred, tgt)] = matcher(single, [targets[b]])
        assert torch.equal(batched[b][0], pred)
        assert torch.equal(batched[b][1], tgt)
        assert len(pred) == len(targets[b]["boxes"])


def test_no_targets_gives_empty_indices() -> None:
    outputs, targets = random_batch([0, 0], num_queries=4, image_sizes=[(64.0, 64.0)] * 2)
    for pred, tgt in HungarianMatcher()(outputs, targets):
        assert pred.shape == tgt.shape == (0,)
        assert pred.dtype == tgt.dtype == torch.int64


def test_more_targets_than_queries_matches_every_query() -> None:
    outputs, targets = random_batch([5], num_queries=3, image_sizes=[(64.0, 64.0)])
    [(pred, tgt)] = HungarianMatcher()(outputs, targets)
    assert pred.tolist() == [0, 1, 2]
    assert len(set(tgt.tolist())) == 3


def test_rejects_all_zero_costs() -> None:
    with pytest.raises(ValueError, match="costs"):
        HungarianMatcher(cost_class=0.0, cost_bbox=0.0, cost_giou=0.0)


def test_non_finite_predictions_are_matched_last_instead_of_raising() -> None:
    # A diverged model's NaN / infinite outputs: scipy refuses such a cost matrix with a ValueError
    # on one process; they rank last, and the loss that follows is non-finite (the loop stops).
    outputs = one_image(
        logits=[[float("nan"), 0.0], [0.0, 0.0], [0.0, 0.0]],
        boxes=[[10.0, 10.0, 50.0, 90.0], [11.0, 9.0, 51.0, 91.0], [0.0, 0.0, float("inf"), 5.0]],
        height=200,
        width=200,
    )
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 90.0]])}]
    [(pred, tgt)] = HungarianMatcher()(outputs, targets)
    assert pred.tolist() == [1]
    assert tgt.tolist() == [0]
    outputs["pred_logits"].fill_(float("nan"))
    outputs["pred_boxes"].fill_(float("nan"))
    [(pred, tgt)] = HungarianMatcher()(outputs, targets)
    assert len(pred) == len(tgt) == 1


def test_giou_cost_alone_decides_the_match() -> None:
    # Query 0 does not overlap the target (GIoU -0.5), query 1 covers half of it (GIoU 0.5): with
    # only the GIoU term weighted, query 1 must be matched.
    outputs = one_image(
        logits=[[0.0, 0.0]] * 2,
        boxes=[[20.0, 0.0, 30.0, 10.0], [0.0, 0.0, 5.0, 10.0]],
        height=100,
        width=100,
    )
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]])}]
    [(pred, tgt)] = HungarianMatcher(cost_class=0.0, cost_bbox=0.0, cost_giou=1.0)(outputs, targets)
    assert pred.tolist() == [1] and tgt.tolist() == [0]


def test_box_cost_is_the_l1_distance_not_the_euclidean_one() -> None:
    # Target (0, 0, 20, 20) in a 100 x 100 image. Query 0 is 3 px off on every coordinate
    # (L1 0.12, L2 0.06), query 1 is 10 px off on x1 only (L1 0.10, L2 0.10): L1 prefers query 1.
    outputs = one_image(
        logits=[[0.0, 0.0]] * 2,
        boxes=[[3.0, 3.0, 23.0, 23.0], [10.0, 0.0, 20.0, 20.0]],
        height=100,
        width=100,
    )
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0]])}]
    [(pred, _)] = HungarianMatcher(cost_class=0.0, cost_bbox=1.0, cost_giou=0.0)(outputs, targets)
    assert pred.tolist() == [1]
