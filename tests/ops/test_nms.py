"""Greedy NMS on hand-built cases, against a plain-loop reference, and against torchvision."""

import pytest
import torch

from evad.ops import batched_nms, box_iou, nms, torchvision_available


def reference_nms(boxes, scores, iou_threshold):
    """Textbook greedy NMS: visit boxes by score, keep one unless a kept box overlaps it too much."""
    order = sorted(range(len(boxes)), key=lambda i: -float(scores[i]))  # sorted() is stable
    iou = box_iou(boxes, boxes)[0].tolist()
    kept = []
    for i in order:
        if all(iou[i][j] <= iou_threshold for j in kept):
            kept.append(i)
    return kept


def random_boxes(generator, num, size=100.0):
    corners = torch.rand(num, 2, 2, generator=generator) * size
    corners[:, 1] = corners[:, 0] + torch.rand(num, 2, generator=generator) * size / 3
    return corners.flatten(1)  # (num, x1, y1, x2, y2)


@pytest.mark.parametrize("use_torchvision", [False, None])
def test_overlap_above_threshold_is_suppressed_and_order_is_by_score(use_torchvision):
    boxes = torch.tensor(
        [
            [5.0, 0.0, 15.0, 10.0],  # IoU 1/3 with the best box
            [0.0, 0.0, 10.0, 10.0],  # best
            [1.0, 0.0, 11.0, 10.0],  # IoU 0.82 with the best box
        ]
    )
    keep = nms(boxes, torch.tensor([0.7, 0.9, 0.8]), 0.5, use_torchvision=use_torchvision)
    assert keep.dtype == torch.long
    assert keep.tolist() == [1, 0]


def test_iou_equal_to_threshold_is_kept():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 1.0], [0.0, 0.0, 2.0, 1.0]])  # IoU exactly 0.5
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.5, use_torchvision=False).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49, use_torchvision=False).tolist() == [0]


def test_suppressed_box_does_not_suppress_others():
    # b overlaps a and c (IoU 0.43 each), a and c barely overlap: greedy keeps a and c.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0], [8.0, 0.0, 18.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.4, use_torchvision=False).tolist() == [0, 2]


def test_equal_scores_keep_input_order():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 1.0, 1.0], [9, 9, 10, 10]])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5])
    assert nms(boxes, scores, 0.5, use_torchvision=False).tolist() == [0, 1, 3]


def test_empty_input():
    boxes, scores, classes = torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)
    for keep in (
        nms(boxes, scores, 0.5, use_torchvision=False),
        batched_nms(boxes, scores, classes, 0.5, use_torchvision=False),
    ):
        assert keep.dtype == torch.long
        assert keep.shape == (0,)


def test_half_precision_large_boxes():
    # Areas of boxes over 256 x 256 pixels overflow float16; the IoU must still be right.
    boxes = torch.tensor([[0.0, 0.0, 400.0, 400.0], [0.0, 0.0, 400.0, 380.0]], dtype=torch.float16)
    scores = torch.tensor([0.9, 0.8], dtype=torch.float16)
    assert nms(boxes, scores, 0.5, use_torchvision=False).tolist() == [0]


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="boxes"):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5, use_torchvision=False)


def test_batched_nms_rejects_categories_of_another_length():
    with pytest.raises(ValueError, match=r"idxs \(N,\) = \(3,\), got \(2,\)"):
        batched_nms(
            torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, dtype=torch.long), 0.5, use_torchvision=False
        )


def test_matches_reference_on_random_boxes():
    generator = torch.Generator().manual_seed(0)
    boxes = random_boxes(generator, 200)
    scores = torch.rand(200, generator=generator)
    for threshold in (0.1, 0.3, 0.7):
        assert nms(boxes, scores, threshold, use_torchvision=False).tolist() == reference_nms(
            boxes, scores, threshold
        )


def test_batched_nms_keeps_overlapping_boxes_of_different_classes():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [0.0, 1.0, 10.0, 11.0]])
    scores = torch.tensor([0.8, 0.9, 0.7])
    classes = torch.tensor([0, 1, 0])
    # Class 1's box survives next to class 0's; within class 0 the lower-scored box goes.
    assert batched_nms(boxes, scores, classes, 0.5, use_torchvision=False).tolist() == [1, 0]
    assert nms(boxes, scores, 0.5, use_torchvision=False).tolist() == [1]


def test_batched_nms_equals_per_class_nms():
    generator = torch.Generator().manual_seed(1)
    boxes = random_boxes(generator, 150)
    scores = torch.rand(150, generator=generator)
    classes = torch.randint(4, (150,), generator=generator)
    keep = batched_nms(boxes, scores, classes, 0.3, use_torchvision=False)
    per_class = []
    for c in range(4):
        members = (classes == c).nonzero().squeeze(1)
        per_class.append(members[nms(boxes[members], scores[members], 0.3, use_torchvision=False)])
    expected = torch.cat(per_class)
    expected = expected[scores[expected].argsort(descending=True, stable=True)]
    assert keep.tolist() == expected.tolist()


@pytest.mark.skipif(not torchvision_available(), reason="torchvision's compiled ops cannot be used here")
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_matches_torchvision(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    generator = torch.Generator().manual_seed(2)
    boxes = random_boxes(generator, 300).to(device)
    scores = torch.rand(300, generator=generator).to(device)
    classes = torch.randint(5, (300,), generator=generator).to(device)
    for threshold in (0.2, 0.5):
        assert torch.equal(
            nms(boxes, scores, threshold, use_torchvision=False),
            nms(boxes, scores, threshold, use_torchvision=True),
        )
        assert torch.equal(
            batched_nms(boxes, scores, classes, threshold, use_torchvision=False),
            batched_nms(boxes, scores, classes, threshold, use_torchvision=True),
        )
