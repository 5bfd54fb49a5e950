"""convert_checkpoint and load_pretrained: wrong argument kinds are named before any file is read."""

import pytest
import torch

import evad
from evad.errors import UserError
from evad.weights import convert_checkpoint, load_pretrained


@pytest.mark.parametrize("num_classes", [0, -3, "3", 2.5])
def test_a_class_count_that_is_not_a_whole_number_from_1_is_named(tmp_path, num_classes):
    """0 silently wrote an 80-class detector; '3' ended in a TypeError from '<'."""
    torch.save({"model": evad.create_model("tiny", num_classes=3).state_dict()}, tmp_path / "raw.pt")
    with pytest.raises(UserError, match="num_classes must be a whole number >= 1, got"):
        convert_checkpoint(tmp_path / "raw.pt", tmp_path / "out", model="tiny", num_classes=num_classes)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("model", ["tiny", None])
def test_a_model_that_is_not_a_module_is_named(tmp_path, model):
    with pytest.raises(TypeError, match=r"model must be the nn\.Module to load into, got"):
        load_pretrained(model, tmp_path / "weights")
