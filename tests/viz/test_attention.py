"""Decoder attention of detected actors (supplementary Fig. 4): capture, maps and picture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import evad
from evad.viz.attention import render_decoder_attention, trace_decoder_attention

KEEP_RATE = 0.7


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return evad.create_model("tiny", num_classes=3)


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(1)
    return torch.randn(3, 16, 64, 96) * 0.5


def _outputs(model, clip):
    with torch.no_grad():
        return model.eval()(clip[None], keep_rate=KEEP_RATE)


def test_capture_leaves_the_model_and_its_outputs_unchanged(model, clip):
    before = _outputs(model, clip)
    model.train()
    traced = trace_decoder_attention(model, clip, keep_rate=KEEP_RATE, person_threshold=0.0)
    assert model.training and not model.classification._forward_hooks  # restored, hook removed
    after = _outputs(model, clip)
    for key in ("pred_logits", "pred_boxes", "action_logits", "kept_indices"):
        assert torch.equal(before[key], after[key]), key
    # The re-run with the explicit attention path gives the forward's logits of every block.
    head, enc = model.classification, model.backbone(clip[None], keep_rate=KEEP_RATE)
    args = (enc.tokens, enc.indices, enc.grid, before["pred_boxes"], before["image_sizes"])
    logits = [*before["aux_action_logits"], before["action_logits"]]
    for block in range(len(head.blocks)):
        attention, indices, block_logits = head.decoder_attention(*args, block=block)
        torch.testing.assert_close(block_logits, logits[block], atol=1e-5, rtol=1e-4)
        M, Q = indices.shape[1], before["pred_boxes"].shape[1]
        assert attention.shape == (1, 2, M + Q, M + Q)
        torch.testing.assert_close(attention.sum(-1), torch.ones(1, 2, M + Q))
    assert traced.block == len(head.blocks) - 1
    with pytest.raises(ValueError, match="block must be in"):
        head.decoder_attention(*args, block=len(head.blocks))


def test_maps_hold_each_actors_attention_and_zero_for_pruned_tokens(model, clip):
    traced = trace_decoder_attention(model, clip, keep_rate=KEEP_RATE, person_threshold=0.0, max_actors=3)
    out = _outputs(model, clip)
    person = out["pred_logits"][0].softmax(-1)[:, 0]
    assert traced.maps.shape == (3, 8, 4, 6)  # (A, t, h, w) for a 64 x 96 clip
    assert torch.equal(traced.query_indices, person.argsort(descending=True)[:3])
    assert torch.equal(traced.person_scores, person[traced.query_indices])
    assert traced.top_person_score == pytest.approx(float(person.max()))

    kept = torch.zeros(8 * 4 * 6, dtype=torch.bool)
    kept[out["kept_indices"][0]] = True
    flat = traced.maps.flatten(1)  # (A, t*h*w)
    assert int(kept.sum()) == out["num_tokens"][-1] < kept.numel()
    assert (flat[:, ~kept] == 0).all() and (flat[:, kept] > 0).all()
    # Each map is part of one softmax row: the share of attention given to video tokens.
    assert ((traced.video_share > 0) & (traced.video_share < 1)).all()
    x1, y1, x2, y2 = traced.boxes.unbind(-1)
    assert ((0 <= x1) & (x1 <= x2) & (x2 <= 95) & (0 <= y1) & (y1 <= y2) & (y2 <= 63)).all()


def test_threshold_and_actor_limit(model, clip):
    assert len(trace_decoder_attention(model, clip, person_threshold=1.0).maps) == 0
    traced = trace_decoder_attention(model, clip, person_threshold=0.0, max_actors=2, block=0)
    assert len(traced.maps) == 2 and traced.block == 0
    unpruned = trace_decoder_attention(model, clip, keep_rate=1.0, person_threshold=0.0, max_actors=1)
    assert (unpruned.maps > 0).all()


def test_linear_head_has_no_decoder_attention(clip):
    linear = evad.create_model("tiny", num_classes=3, action_head="linear")
    with pytest.raises(ValueError, match="no context decoder"):
        trace_decoder_attention(linear, clip)


def test_official_token_order_maps_follow_where_the_decoder_put_the_tokens(clip):
    from evad.layers.token_pruning import official_token_order

    torch.manual_seed(0)
    model = evad.create_model("tiny", num_classes=3, official_token_order=True)
    traced = trace_decoder_attention(model, clip, keep_rate=KEEP_RATE, person_threshold=0.0, max_actors=1)
    kept = _outputs(model, clip)["kept_indices"]
    assert torch.equal(traced.kept_indices, official_token_order(kept, 4 * 6)[0])


def test_picture_has_a_frame_row_and_one_row_per_actor(model, clip, tmp_path):
    traced = trace_decoder_attention(model, clip, keep_rate=KEEP_RATE, person_threshold=0.0, max_actors=3)
    path = tmp_path / "attention.png"
    figure = render_decoder_attention(clip, traced, path, class_names=["stand", "sit", "walk"])
    assert figure.row_labels == ["input", "actor 1", "actor 2", "actor 3"] and figure.num_columns == 8
    ch, cw = figure.cell
    assert (ch, cw) == (128, 192)  # 64 x 96 enlarged by 2
    bottom, right = figure.origin(3, 7)
    assert figure.image.shape == (bottom + ch + 4, right + cw + 4, 3)
    assert cv2.imread(str(path)).shape == figure.image.shape

    # Row 0 is the frames themselves; actor rows are tinted by the heat map.
    y0, x0 = figure.origin(0, 0)
    first = figure.image[y0 : y0 + ch : 2, x0 : x0 + cw : 2].astype(int)
    frame = ((clip[:, 0].permute(1, 2, 0) * 0.225 + 0.45).clamp(0, 1) * 255).round().numpy()
    assert np.abs(first - frame).max() <= 1
    y1, x1 = figure.origin(1, 0)
    assert (
        np.abs(
            figure.image[y1 : y1 + ch, x1 : x1 + cw].astype(int) - figure.image[y0 : y0 + ch, x0 : x0 + cw]
        ).mean()
        > 10
    )
