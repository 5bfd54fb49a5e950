"""Tests of `evad.losses.criterion.SetCriterion`."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed
from torch import Tensor

from evad.losses import HungarianMatcher, SetCriterion

NUM_CLASSES = 3
FAR_BOX = [150.0, 150.0, 190.0, 195.0]  # far from every target below, in a 200 x 200 image


def make_criterion(**kwargs: float) -> SetCriterion:
    return SetCriterion(HungarianMatcher(), num_classes=NUM_CLASSES, **kwargs)


def stage(person_queries: list[list[int]], boxes: Tensor) -> dict[str, Tensor]:
    """Stage dict whose listed queries (per image) are confidently person, the others no-object."""
    logits = torch.tensor([-4.0, 4.0]).repeat(*boxes.shape[:2], 1)  # (B, Q, 2)
    for b, queries in enumerate(person_queries):
        logits[b, queries] = torch.tensor([4.0, -4.0])
    return {"pred_logits": logits, "pred_boxes": boxes}


def place(targets: list[dict[str, Tensor]], queries: list[list[int]], num_queries: int) -> Tensor:
    """(B, Q, 4) boxes: target k of image b at query queries[b][k], FAR_BOX elsewhere."""
    boxes = torch.tensor(FAR_BOX).repeat(len(targets), num_queries, 1)
    for b, (target, image_queries) in enumerate(zip(targets, queries, strict=True)):
        boxes[b, image_queries] = target["boxes"]
    return boxes


def two_image_targets() -> list[dict[str, Tensor]]:
    return [
        {
            "boxes": torch.tensor([[10.0, 10.0, 50.0, 90.0], [60.0, 20.0, 120.0, 100.0]]),
            "labels": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
        },
        {"boxes": torch.tensor([[30.0, 40.0, 70.0, 80.0]]), "labels": torch.tensor([[0.0, 0.0, 1.0]])},
    ]


def full_outputs(
    targets: list[dict[str, Tensor]],
    num_queries: int = 6,
    num_aux: int = 5,
    num_aux_action: int = 5,
    seed: int = 0,
) -> dict[str, object]:
    """Perfect last stage at queries (3, 0) / (5,); aux stage i perfect at rolled positions."""
    generator = torch.Generator().manual_seed(seed)
    batch = len(targets)
    last_queries = [[3, 0], [5]][:batch]
    outputs: dict[str, object] = {
        **stage(last_queries, place(targets, last_queries, num_queries)),
        "action_logits": torch.randn(batch, num_queries, NUM_CLASSES, generator=generator),
        "image_sizes": torch.tensor([[200.0, 200.0]] * batch),
        "aux_outputs": [],
        "aux_action_logits": [
            torch.randn(batch, num_queries, NUM_CLASSES, generator=generator) for _ in range(num_aux_action)
        ],
    }
    for i in range(num_aux):
        queries = [[(q + i + 1) % num_queries for q in image_queries] for image_queries in last_queries]
        outputs["aux_outputs"].append(stage(queries, place(targets, queries, num_queries)))
    return outputs


def mean_bce(logits: Tensor, labels: Tensor) -> float:
    """Mean over all entries of the stable BCE-with-logits, computed with scalars."""
    terms = [
        max(x, 0.0) - x * y + math.log1p(math.exp(-abs(x)))
        for x, y in zip(logits.flatten().tolist(), labels.flatten().tolist(), strict=True)
    ]
    return sum(terms) / len(terms)


def test_perfect_boxes_give_zero_box_loss_in_every_separately_matched_stage() -> None:
    losses = make_criterion()(full_outputs(two_image_targets()), two_image_targets())
    for suffix in ["", *(f"_{i}" for i in range(5))]:
        assert losses[f"loss_bbox{suffix}"].item() == pytest.approx(0.0, abs=1e-6)
        assert losses[f"loss_giou{suffix}"].item() == pytest.approx(0.0, abs=1e-6)
        assert losses[f"loss_ce{suffix}"].item() < 1e-3


def test_l1_is_image_normalised_and_giou_summed_over_num_boxes() -> None:
    targets = [
        {"boxes": torch.tensor([[20.0, 20.0, 60.0, 60.0]]), "labels": torch.zeros(1, NUM_CLASSES)},
        {"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]]), "labels": torch.zeros(1, NUM_CLASSES)},
    ]
    boxes = torch.tensor([FAR_BOX, FAR_BOX]).repeat(2, 1, 1)  # (2, 2, 4)
    boxes[0, 0] = torch.tensor([30.0, 20.0, 60.0, 60.0])  # x1 off by 10 px of width 200; IoU = GIoU = 0.75
    boxes[1, 0] = torch.tensor([10.0, 10.0, 30.0, 35.0])  # y2 off by 5 px of height 50; IoU = GIoU = 0.8
    outputs = {
        **stage([[0], [0]], boxes),
        "action_logits": torch.zeros(2, 2, NUM_CLASSES),
        "image_sizes": torch.tensor([[100.0, 200.0], [50.0, 50.0]]),
    }
    losses = make_criterion()(outputs, targets)
    assert losses["loss_bbox"].item() == pytest.approx((10 / 200 + 5 / 50) / 2)
    assert losses["loss_giou"].item() == pytest.approx((0.25 + 0.2) / 2)


def test_ce_value_with_no_object_weight() -> None:
    box = [10.0, 10.0, 50.0, 50.0]
    targets = [{"boxes": torch.tensor([box]), "labels": torch.zeros(1, NUM_CLASSES)}]
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [0.5, 0.0]]])
    outputs = {
        "pred_logits": logits,
        "pred_boxes": torch.tensor([[box, FAR_BOX, FAR_BOX]]),
        "action_logits": torch.zeros(1, 3, NUM_CLASSES),
        "image_sizes": torch.tensor([[200.0, 200.0]]),
    }

    def nll(pair: list[float], cls: int) -> float:
        return -pair[cls] + math.log(math.exp(pair[0]) + math.exp(pair[1]))

    # Query 0 is matched (person, weight 1); queries 1 and 2 are no-object (weight 0.1).
    terms = [(1.0, nll([2.0, 0.0], 0)), (0.1, nll([0.0, 1.0], 1)), (0.1, nll([0.5, 0.0], 1))]
    expected = sum(w * v for w, v in terms) / sum(w for w, _ in terms)
    assert make_criterion()(outputs, targets)["loss_ce"].item() == pytest.approx(expected, rel=1e-6)
    unweighted = sum(v for _, v in terms) / 3
    loss = make_criterion(no_object_weight=1.0)(outputs, targets)["loss_ce"].item()
    assert loss == pytest.approx(unweighted, rel=1e-6)


def test_action_loss_only_on_proposals_matched_by_the_last_stage() -> None:
    targets = two_image_targets()
    outputs = full_outputs(targets)
    matched = {
        (0, 3): targets[0]["labels"][0],
        (0, 0): targets[0]["labels"][1],
        (1, 5): targets[1]["labels"][0],
    }
    action = torch.full((2, 6, NUM_CLASSES), 1e4)  # unmatched proposals: a huge loss if ever counted
    values = torch.tensor([[-1.0, 0.5, 2.0], [0.3, -0.7, 1.5], [-2.0, 0.0, 0.25]])
    for (b, q), row in zip(matched, values, strict=True):
        action[b, q] = row
    action.requires_grad_(True)
    outputs["action_logits"] = action
    outputs["aux_action_logits"] = [action * 1.0, action * 2.0]

    losses = make_criterion()(outputs, targets)
    labels = torch.stack(list(matched.values()))
    assert losses["loss_action"].item() == pytest.approx(mean_bce(values, labels), rel=1e-6)
    assert losses["loss_action_0"].item() == pytest.approx(mean_bce(values, labels), rel=1e-6)
    assert losses["loss_action_1"].item() == pytest.approx(mean_bce(2 * values, labels), rel=1e-6)

    losses["loss_action"].backward()
    unmatched = torch.ones(2, 6, dtype=torch.bool)
    for b, q in matched:
        unmatched[b, q] = False
    assert (action.grad[unmatched] == 0).all()
    assert (action.grad[~unmatched] != 0).all()


@pytest.mark.parametrize(
    ("num_aux", "num_aux_action", "drop_aux", "expected_count"),
    [(5, 5, False, 24), (5, 0, False, 19), (2, 3, False, 13), (0, 0, True, 4)],
)
def test_loss_names_and_counts(
    num_aux: int, num_aux_action: int, drop_aux: bool, expected_count: int
) -> None:
    targets = two_image_targets()
    outputs = full_outputs(targets, num_aux=num_aux, num_aux_action=num_aux_action)
    if drop_aux:
        del outputs["aux_outputs"], outputs["aux_action_logits"]
    losses = make_criterion()(outputs, targets)
    expected = {"loss_ce", "loss_bbox", "loss_giou", "loss_action"}
    expected |= {f"{name}_{i}" for name in ("loss_ce", "loss_bbox", "loss_giou") for i in range(num_aux)}
    expected |= {f"loss_action_{j}" for j in range(num_aux_action)}
    assert set(losses) == expected
    assert len(losses) == expected_count
    assert all(value.ndim == 0 and torch.isfinite(value) for value in losses.values())


def test_gradient_reaches_every_input_tensor() -> None:
    targets = two_image_targets()
    outputs = full_outputs(targets, num_aux=2, num_aux_action=2)
    generator = torch.Generator().manual_seed(1)
    leaves = []

    def leaf(tensor: Tensor) -> Tensor:
        # Perturb so no loss term sits exactly at a zero-gradient optimum.
        tensor = (tensor + torch.rand(tensor.shape, generator=generator)).requires_grad_(True)
        leaves.append(tensor)
        return tensor

    for stage_dict in [outputs, *outputs["aux_outputs"]]:
        stage_dict["pred_logits"] = leaf(stage_dict["pred_logits"])
        stage_dict["pred_boxes"] = leaf(stage_dict["pred_boxes"])
    outputs["action_logits"] = leaf(outputs["action_logits"])
    outputs["aux_action_logits"] = [leaf(block) for block in outputs["aux_action_logits"]]

    criterion = make_criterion()
    criterion.weighted_total(criterion(outputs, targets)).backward()
    assert len(leaves) == 2 * 3 + 3
    for tensor in leaves:
        assert tensor.grad is not None
        assert torch.isfinite(tensor.grad).all()
        assert tensor.grad.abs().sum() > 0


def test_no_targets_gives_finite_losses_and_zero_box_and_action_terms() -> None:
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, NUM_CLASSES)} for _ in range(2)]
    outputs = full_outputs(two_image_targets(), num_aux=1, num_aux_action=1)
    logits = outputs["pred_logits"].clone().requires_grad_(True)
    outputs["pred_logits"] = logits
    criterion = make_criterion()
    losses = criterion(outputs, targets)
    for name in ("loss_bbox", "loss_giou", "loss_action", "loss_bbox_0", "loss_giou_0", "loss_action_0"):
        assert losses[name].item() == 0.0
    expected_ce = torch.nn.functional.cross_entropy(
        logits.detach().flatten(0, 1), torch.ones(12, dtype=torch.int64)
    )
    assert losses["loss_ce"].item() == pytest.approx(expected_ce.item(), rel=1e-6)
    criterion.weighted_total(losses).backward()
    assert torch.isfinite(logits.grad).all()


def test_num_boxes_is_averaged_over_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    def all_reduce(tensor: Tensor) -> None:
        tensor += 3.0  # the other process holds 3 targets

    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    targets = [{"boxes": torch.tensor([[20.0, 20.0, 60.0, 60.0]]), "labels": torch.zeros(1, NUM_CLASSES)}]
    boxes = torch.tensor([[[30.0, 20.0, 60.0, 60.0], FAR_BOX]])
    outputs = {
        **stage([[0]], boxes),
        "action_logits": torch.zeros(1, 2, NUM_CLASSES),
        "image_sizes": torch.tensor([[100.0, 200.0]]),
    }
    losses = make_criterion()(outputs, targets)
    assert losses["loss_bbox"].item() == pytest.approx((10 / 200) / 2.0)  # (1 + 3) / 2 processes


def test_weighted_total_is_weighted_sum_over_number_of_terms() -> None:
    criterion = make_criterion(weight_dict={"loss_action": 6.0})  # ViT-L's
    losses = {
        "loss_ce": torch.tensor(1.0),
        "loss_bbox_3": torch.tensor(2.0),
        "loss_giou": torch.tensor(0.5),
        "loss_action_0": torch.tensor(3.0),
        "loss_action": torch.tensor(4.0),
    }
    expected = (2 * 1.0 + 5 * 2.0 + 2 * 0.5 + 6 * 3.0 + 6 * 4.0) / 5
    assert criterion.weighted_total(losses).item() == pytest.approx(expected)
    overridden = make_criterion(weight_dict={"loss_giou": 1.0, "loss_action": 12.0})
    expected = (2 * 1.0 + 5 * 2.0 + 1 * 0.5 + 12 * 3.0 + 12 * 4.0) / 5
    assert overridden.weighted_total(losses).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="loss_mask"):
        criterion.weighted_total({"loss_mask": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="weight_dict"):
        make_criterion(weight_dict={"loss_bce": 1.0})


def test_default_weights_follow_spec() -> None:
    assert make_criterion().weight_dict == {
        "loss_ce": 2.0,
        "loss_bbox": 5.0,
        "loss_giou": 2.0,
        "loss_action": 12.0,
    }


@pytest.mark.parametrize(
    ("image", "key", "value", "match"),
    [
        (
            0,
            "boxes",
            [[10.0, 10.0, 5.0, 90.0], [60.0, 20.0, 120.0, 100.0]],
            r"targets\[0\]\['boxes'\].*degenerate",
        ),
        (1, "boxes", [[30.0, 80.0, 70.0, 40.0]], r"targets\[1\]\['boxes'\].*degenerate"),
        (1, "boxes", [[30.0, float("nan"), 70.0, 80.0]], r"targets\[1\]\['boxes'\].*non-finite"),
        (1, "boxes", [[30.0, 40.0, float("inf"), 80.0]], r"targets\[1\]\['boxes'\].*non-finite"),
        (1, "boxes", [[30.0, 40.0, 70.0]], r"targets\[1\]\['boxes'\].*\(M, 4\)"),
        (1, "labels", [[0.0, 1.0]], r"targets\[1\]\['labels'\].*num_classes=3"),
        (0, "labels", [[1.0, 0.0, 1.0]], r"targets\[0\]\['labels'\].*\(2, 3\)"),
        (0, "labels", [[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]], r"targets\[0\]\['labels'\].*\[0, 1\]"),
    ],
)
def test_invalid_targets_raise(image: int, key: str, value: list[list[float]], match: str) -> None:
    targets = two_image_targets()
    outputs = full_outputs(targets)
    targets[image][key] = torch.tensor(value)
    with pytest.raises(ValueError, match=match):
        make_criterion()(outputs, targets)


def test_wrong_number_of_targets_or_action_classes_raise() -> None:
    targets = two_image_targets()
    outputs = full_outputs(targets)
    with pytest.raises(ValueError, match="one dict per clip"):
        make_criterion()(outputs, targets[:1])
    outputs["action_logits"] = torch.zeros(2, 6, NUM_CLASSES + 1)
    with pytest.raises(ValueError, match=r"outputs\['action_logits'\]"):
        make_criterion()(outputs, targets)
