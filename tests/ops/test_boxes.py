"""Box conversions, IoU / generalized IoU on hand-computed boxes, clipping and validation."""

import pytest
import torch

from evad.ops import (
    assert_valid_boxes,
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    clip_boxes,
    generalized_box_iou,
    rescale_boxes,
)


def test_conversions_round_trip_and_known_values():
    cxcywh = torch.tensor([[5.0, 4.0, 4.0, 2.0]])
    xyxy = box_cxcywh_to_xyxy(cxcywh)
    assert torch.equal(xyxy, torch.tensor([[3.0, 3.0, 7.0, 5.0]]))
    assert torch.equal(box_xyxy_to_cxcywh(xyxy), cxcywh)

    boxes = torch.rand(2, 3, 4, dtype=torch.float64)  # leading dims are kept
    torch.testing.assert_close(box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(boxes)), boxes)
    torch.testing.assert_close(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(boxes)), boxes)


def test_box_area():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0]])
    assert torch.equal(box_area(boxes), torch.tensor([6.0, 0.0]))


def test_box_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [1.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    iou, union = box_iou(a, b)
    assert iou.shape == (1, 4)
    # identical; 1x1 overlap of two 2x2 boxes = 1 / 7; box inside box = 2 / 4; disjoint
    torch.testing.assert_close(iou, torch.tensor([[1.0, 1 / 7, 0.5, 0.0]]))
    torch.testing.assert_close(union, torch.tensor([[4.0, 7.0, 4.0, 5.0]]))


def test_box_iou_broadcasts_leading_dims():
    boxes1 = torch.rand(2, 3, 4) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    boxes2 = torch.rand(2, 5, 4) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    iou, _ = box_iou(boxes1, boxes2)
    assert iou.shape == (2, 3, 5)
    torch.testing.assert_close(iou[1], box_iou(boxes1[1], boxes2[1])[0])


def test_generalized_box_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [3.0, 0.0, 4.0, 2.0]])
    giou = generalized_box_iou(a, b)
    # enclosing boxes: 2x2 (area 4), 3x3 (9, union 7), 4x2 (8, union 6, disjoint)
    torch.testing.assert_close(giou, torch.tensor([[1.0, 1 / 7 - 2 / 9, -2 / 8]]))
    assert giou[0, 2] < 0


def test_generalized_box_iou_gradient_for_disjoint_boxes():
    # Plain IoU is flat for disjoint boxes; GIoU must still pull them together.
    pred = torch.tensor([[3.0, 0.0, 4.0, 2.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    (1 - generalized_box_iou(pred, target)).sum().backward()
    assert pred.grad[0, 0] > 0  # decreasing x1 (moving left, towards the target) lowers the loss


def test_clip_boxes_numbers_and_per_box_bounds():
    boxes = torch.tensor([[-5.0, -1.0, 50.0, 8.0], [2.0, 3.0, 4.0, 30.0]])
    clipped = clip_boxes(boxes, 10, 20)
    assert torch.equal(clipped, torch.tensor([[0.0, 0.0, 20.0, 8.0], [2.0, 3.0, 4.0, 10.0]]))
    assert torch.equal(boxes[0], torch.tensor([-5.0, -1.0, 50.0, 8.0]))  # input untouched

    per_box = clip_boxes(boxes, torch.tensor([5.0, 40.0]), torch.tensor([30.0, 3.0]))
    assert torch.equal(per_box, torch.tensor([[0.0, 0.0, 30.0, 5.0], [2.0, 3.0, 3.0, 30.0]]))


def test_clip_boxes_gradient_only_through_unclipped_coordinates():
    boxes = torch.tensor([[-5.0, 1.0, 50.0, 8.0]], requires_grad=True)
    clip_boxes(boxes, 10, 20).sum().backward()
    assert torch.equal(boxes.grad, torch.tensor([[0.0, 1.0, 0.0, 1.0]]))


def test_assert_valid_boxes_accepts_valid_and_zero_size():
    assert_valid_boxes(torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]]), "boxes")
    assert_valid_boxes(torch.zeros(0, 4), "boxes")


@pytest.mark.parametrize(
    ("box", "problem"),
    [
        ([2.0, 0.0, 1.0, 1.0], "degenerate"),
        ([0.0, 3.0, 1.0, 1.0], "degenerate"),
        ([0.0, 0.0, float("nan"), 1.0], "non-finite"),
        ([0.0, 0.0, float("inf"), 1.0], "non-finite"),
    ],
)
def test_assert_valid_boxes_names_argument_and_box(box, problem):
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0], box]])
    with pytest.raises(ValueError, match=rf"pred_boxes has 1 {problem}.*index \(0, 1\)"):
        assert_valid_boxes(boxes, "pred_boxes")


def test_assert_valid_boxes_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"target must have shape \(\.\.\., 4\)"):
        assert_valid_boxes(torch.zeros(3, 5), "target")


def test_boxes_with_a_fifth_column_are_refused_not_read_as_other_coordinates():
    scored = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.9], [5.0, 5.0, 15.0, 15.0, 0.8]])  # (N, 5)
    for call in (
        lambda: box_iou(scored, scored),  # used to return a silently wrong (2, 2) IoU
        lambda: box_area(scored),
        lambda: clip_boxes(scored, 8, 8),
        lambda: box_cxcywh_to_xyxy(scored),
        lambda: box_xyxy_to_cxcywh(scored),
        lambda: rescale_boxes(scored[None], torch.ones(1, 2), torch.ones(1, 2)),
    ):
        with pytest.raises(ValueError, match=r"must have shape \(\.\.\., 4\), got \(.*5\)"):
            call()
    with pytest.raises(ValueError, match=r"target_sizes must be \(B, 2\) = \(1, 2\), got \(2,\)"):
        rescale_boxes(scored[None, :, :4], torch.ones(1, 2), torch.ones(2))


def test_rescale_boxes_clips_to_the_input_then_scales_to_the_frame():
    """Post-processing's rule: clip to the input's inclusive pixels, scale, clamp to the frame."""
    boxes = torch.tensor(
        [[[-5.0, 10.0, 70.0, 40.0], [10.0, 20.0, 30.0, 63.5]], [[0.0, 0.0, 200.0, 100.0]] * 2]
    )
    image_sizes = torch.tensor([[64.0, 64.0], [128.0, 192.0]])  # (height, width)
    target_sizes = torch.tensor([[128.0, 256.0], [128.0, 192.0]])
    out = rescale_boxes(boxes, image_sizes, target_sizes)
    assert out[0].tolist() == [[0.0, 20.0, 252.0, 80.0], [40.0, 40.0, 120.0, 126.0]]
    assert out[1].tolist() == [[0.0, 0.0, 191.0, 100.0]] * 2
