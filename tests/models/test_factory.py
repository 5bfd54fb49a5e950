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
