"""UserError messages stay one line, also when a DataLoader worker raised the error."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from evad.errors import UserError


class _BadFrames(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        raise UserError(f"frames/v/v_{index:06d}.jpg: not a readable JPEG")


def test_an_error_raised_in_a_dataloader_worker_keeps_its_one_line_message():
    with pytest.raises(UserError) as info:
        next(iter(DataLoader(_BadFrames(), num_workers=1)))
    assert "Traceback" in info.value.args[0]  # what PyTorch hands over: the worker's traceback
    assert str(info.value) == "frames/v/v_000000.jpg: not a readable JPEG"


def test_other_messages_are_unchanged():
    assert str(UserError("a.csv:3: box (1, 2) is outside [0, 1]")) == "a.csv:3: box (1, 2) is outside [0, 1]"
    assert str(UserError("Caught nothing, no Traceback here")) == "Caught nothing, no Traceback here"
