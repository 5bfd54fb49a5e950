"""Pruning layers' attention: the fused and block-wise roads equal the explicit reference."""

import importlib

import pytest
import torch

from evad.layers.attention import Attention
from evad.layers.token_pruning import column_scores, importance_row_weights


def _pair(seed=0):
    torch.manual_seed(seed)
    fused = Attention(32, 4, fused=True)
    for p in fused.parameters():  # non-zero q/v biases, so the bias layout is exercised too
        torch.nn.init.normal_(p, std=0.3)
    explicit = Attention(32, 4, fused=False)
    explicit.load_state_dict(fused.state_dict())
    return fused, explicit


@pytest.mark.parametrize("block", [2**24, 40])  # one block of rows, or several (8 rows each)
def test_inference_scores_and_output_equal_the_explicit_map(monkeypatch, block):
    monkeypatch.setattr(importlib.import_module("evad.layers.attention"), "_SCORE_BLOCK", block)
    fused, explicit = _pair()
    x = torch.randn(1, 20, 32)
    weights = importance_row_weights(20, 6, keyframe_weight=4.0)
    with torch.no_grad():
        out, scores = fused.forward_with_scores(x, weights)
        ref_out, attn = explicit(x, return_attention=True)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores, column_scores(attn, weights), rtol=1e-5, atol=1e-7)
    _, explicit_scores = explicit.forward_with_scores(x, weights)
    torch.testing.assert_close(explicit_scores, column_scores(attn, weights))


def test_training_road_gives_the_explicit_gradients():
    fused, explicit = _pair(1)
    fused, explicit = fused.double(), explicit.double()
    x = torch.randn(2, 15, 32, dtype=torch.float64, requires_grad=True)
    weights = importance_row_weights(15, 5)
    out, scores = fused.forward_with_scores(x, weights)
    assert not scores.requires_grad  # token selection takes no gradient
    (grad_fused,) = torch.autograd.grad(out.square().sum(), x)
    ref_out, attn = explicit(x, return_attention=True)
    (grad_ref,) = torch.autograd.grad(ref_out.square().sum(), x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grad_fused, grad_ref)
    torch.testing.assert_close(scores, column_scores(attn.detach(), weights))
