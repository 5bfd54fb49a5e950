"""PostProcess: wrong thresholds, prediction dicts and target sizes are named at the call."""

import pytest
import torch

import evad


def _outputs(batch: int = 1) -> dict:
    return {
        "pred_logits": torch.tensor([[[0.0, 3.0], [0.0, 3.0]]] * batch),  # person probability .05
        "pred_boxes": torch.tensor([[[10.0, 10.0, 30.0, 40.0], [0.0, 0.0, 5.0, 5.0]]] * batch),
        "action_logits": torch.zeros(batch, 2, 4),
        "image_sizes": torch.tensor([[64.0, 64.0]] * batch),
    }


@pytest.mark.parametrize("threshold", ["0.5", None, 1.5, float("nan"), True])
def test_a_threshold_that_is_not_a_probability_is_named(threshold):
    with pytest.raises(ValueError, match="person_threshold must be in"):
        evad.PostProcess(person_threshold=threshold)


@pytest.mark.parametrize(
    "target_sizes",
    [[[100, 200, 3]], [100, 200], [[100, 200], [50, 60]], [[-10, 200]], [[0, 200]], [[100.5, 200]]],
)
def test_target_sizes_of_another_shape_or_not_positive_are_named(target_sizes):
    """They ended in an unpacking or index error, gave boxes at negative pixels (negative) or were
    cut to a smaller `image_size` than the boxes were scaled to (fractional)."""
    with pytest.raises(ValueError, match="target_sizes must be"):
        evad.PostProcess()(_outputs(), target_sizes)


@pytest.mark.parametrize("outputs", ["outputs", [{}], {"pred_logits": torch.zeros(1, 2, 2)}])
def test_something_else_than_the_prediction_dict_is_named(outputs):
    with pytest.raises(ValueError, match="outputs must be the detector's prediction dict; missing"):
        evad.PostProcess()(outputs)


def test_no_box_passing_gives_empty_detections_when_asked():
    found = evad.PostProcess(0.7, keep_all_if_none=False)(_outputs(2), [[128, 256], [32, 32]])
    assert [len(d) for d in found] == [0, 0]
    assert found[0].boxes.shape == (0, 4) and found[0].action_scores.shape == (0, 4)
    assert found[1].image_size == (32, 32)
