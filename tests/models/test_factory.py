"""create_model / get_config: wrong names, class counts and sizes are named before anything is built."""

import pytest

import evad


@pytest.mark.parametrize("num_classes", ["5", 2.5, True, None])
def test_a_class_count_that_is_not_a_whole_number_is_named(num_classes):
    with pytest.raises(ValueError, match="num_classes must be a whole number >= 1, got"):
        evad.create_model("tiny", num_classes=num_classes)


@pytest.mark.parametrize("name", [["tiny"], None, 3])
def test_a_name_that_is_not_a_preset_name_is_named(name):
    with pytest.raises(ValueError, match=r"unknown model .*; accepted: tiny"):
        evad.create_model(name)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"patch_size": 0}, "patch_size must be >= 1, got 0"),
        ({"tubelet_size": 0}, "tubelet_size must be >= 1, got 0"),
        ({"num_heads": 0}, r"divisible by num_heads=0 \(>= 1\)"),
    ],
)
def test_zero_sizes_are_named_not_divided_by(overrides, message):
    with pytest.raises(ValueError, match=message):
        evad.create_model("tiny", num_classes=3, **overrides)


def test_loss_weights_given_in_part_replace_only_those_terms():
    """As in a config file (model.loss_weights.ce=1); a partial dict ended in KeyError: 'bbox' when
    the criterion was built."""
    config = evad.get_config("vit-l", num_classes=3, loss_weights={"ce": 1.0})
    assert config.loss_weights == {"ce": 1.0, "bbox": 5.0, "giou": 2.0, "action": 6.0}  # vit-l's action 6
    assert evad.build_criterion(config).weight_dict["loss_ce"] == 1.0
    with pytest.raises(ValueError, match=r"unknown loss_weights term\(s\) \['actoin'\]; accepted: ce, bbox"):
        evad.get_config("tiny", loss_weights={"actoin": 4.0})
