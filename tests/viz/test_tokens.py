"""The kept-token figure (EVAD Fig. 4): stages traced from the backbone, one row per stage."""

from __future__ import annotations

from itertools import pairwise

import cv2
import numpy as np
import pytest
import torch

import evad
from evad.viz.tokens import render_kept_tokens, trace_kept_tokens


@pytest.fixture(scope="module")
def traced():
    torch.manual_seed(0)
    model = evad.create_model("tiny", num_classes=3)
    clip = torch.randn(3, 16, 64, 96) * 0.5
    return model, clip, trace_kept_tokens(model, clip, keep_rate=0.7)


def test_stages_are_nested_and_end_with_the_models_survivors(traced):
    model, clip, trace = traced
    out = model.eval()(clip[None], keep_rate=0.7)
    t, h, w = trace["grid"]
    stages = [set(s.tolist()) for s in trace["stage_indices"]]
    assert (t, h, w) == (8, 4, 6) and trace["num_tokens"] == out["num_tokens"]
    assert [len(s) for s in stages] == out["num_tokens"] == [192, 135, 95, 67]
    assert all(later <= earlier for earlier, later in pairwise(stages))
    assert stages[-1] == set(out["kept_indices"][0].tolist())
    keyframe = set(range(4 * h * w, 5 * h * w))  # slice t // 2 is never pruned
    assert all(keyframe <= s for s in stages)
    assert model.backbone.prune_layers == (1, 2, 3)  # restored


def test_figure_has_one_row_per_stage_and_dims_dropped_tokens(traced, tmp_path):
    _, clip, trace = traced
    path = tmp_path / "tokens.png"
    figure = render_kept_tokens(clip, trace, path)
    assert figure.row_labels == ["input", "after pruning 1", "after pruning 2", "after pruning 3"]
    assert figure.num_columns == 8
    ch, cw = figure.cell
    bottom, right = figure.origin(3, 7)
    assert figure.image.shape == (bottom + ch + 4, right + cw + 4, 3)
    assert cv2.imread(str(path)).shape == figure.image.shape

    # Per token: the input row shows it in colour; the last row greys it iff it was dropped.
    t, h, w = trace["grid"]
    kept = np.zeros(t * h * w, bool)
    kept[trace["stage_indices"][-1].numpy()] = True
    patch = ch // h
    for index in range(t * h * w):
        s, y, x = np.unravel_index(index, (t, h, w))
        y0, x0 = figure.origin(0, s)
        y3, x3 = figure.origin(3, s)
        sl = (slice(y * patch + 3, (y + 1) * patch - 3), slice(x * patch + 3, (x + 1) * patch - 3))
        first = figure.image[y0:, x0:][sl].astype(int)
        last = figure.image[y3:, x3:][sl].astype(int)
        assert np.array_equal(first, last) == kept[index]
        if not kept[index]:
            assert np.ptp(last, axis=-1).max() <= 1  # grey


def test_detector_outputs_alone_give_input_and_final_rows(traced):
    model, clip, _ = traced
    out = model.eval()(torch.stack([clip, clip]), keep_rate=0.7)
    figure = render_kept_tokens(clip, out, None, batch_index=1)
    assert figure.row_labels == ["input", "after pruning 1"]


def test_zero_padding_is_drawn_white_not_as_dropped_tokens(traced):
    _, clip, trace = traced
    H, W = clip.shape[-2:]
    figure = render_kept_tokens(clip, trace, None, image_size=(H - 16, W - 32))
    ch, cw = figure.cell
    for row in range(len(figure.row_labels)):
        y, x = figure.origin(row, 0)
        tile = figure.image[y : y + ch, x : x + cw]
        scale = ch // H
        assert (tile[(H - 16) * scale :] == 255).all() and (tile[:, (W - 32) * scale :] == 255).all()
        assert not (tile[: (H - 16) * scale, : (W - 32) * scale] == 255).all()  # the image itself
