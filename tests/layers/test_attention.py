"""Pruning layers' attention: the fused and block-wise roads equal the explicit reference."""

import importlib

import pytest
import torch

from evad.layers.attention import (
    Attention,
    cpu_attention_with_lse,
    scoring_method,
    transposed_attention_scores,
)
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
def test_blockwise_inference_scores_and_output_equal_the_explicit_map(monkeypatch, block):
    monkeypatch.setattr(importlib.import_module("evad.layers.attention"), "_SCORE_BLOCK", block)
    fused, explicit = _pair()
    x = torch.randn(1, 20, 32)
    weights = importance_row_weights(20, 6, keyframe_weight=4.0)
    with torch.no_grad(), scoring_method("blockwise"):
        out, scores = fused.forward_with_scores(x, weights)
        ref_out, attn = explicit(x, return_attention=True)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores, column_scores(attn, weights), rtol=1e-5, atol=1e-7)
    _, explicit_scores = explicit.forward_with_scores(x, weights)
    torch.testing.assert_close(explicit_scores, column_scores(attn, weights))


def test_blockwise_training_road_gives_the_explicit_gradients():
    fused, explicit = _pair(1)
    fused, explicit = fused.double(), explicit.double()
    x = torch.randn(2, 15, 32, dtype=torch.float64, requires_grad=True)
    weights = importance_row_weights(15, 5)
    with scoring_method("blockwise"):
        out, scores = fused.forward_with_scores(x, weights)
    assert not scores.requires_grad  # token selection takes no gradient
    (grad_fused,) = torch.autograd.grad(out.square().sum(), x)
    ref_out, attn = explicit(x, return_attention=True)
    (grad_ref,) = torch.autograd.grad(ref_out.square().sum(), x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grad_fused, grad_ref)
    torch.testing.assert_close(scores, column_scores(attn.detach(), weights))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("spread", [1.0, 6.0, 20.0])  # logits up to about 5, 150 and 1800
def test_transposed_fused_scores_equal_the_explicit_map(dtype, spread):
    """The CUDA road's scoring, checked with the CPU's fused kernel: exact even where exp(-L_i)
    would underflow float32 and where some query rows are nearly flat."""
    torch.manual_seed(0)
    B, H, N, D = 2, 3, 50, 16
    q, k = torch.randn(B, H, N, D) * spread, torch.randn(B, H, N, D) * spread
    q[:, :, :5] *= 0.01
    q, k = q.to(dtype), k.to(dtype)
    weights = importance_row_weights(N, 10, keyframe_weight=4.0)
    attn = (q.double() * D**-0.5 @ k.double().transpose(-2, -1)).softmax(dim=-1)
    expected = column_scores(attn, weights.double()).float()
    scores = transposed_attention_scores(q, k, weights, cpu_attention_with_lse)
    assert scores.dtype == torch.float32 and scores.shape == (B, N)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4 * expected.max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_transposed_scores_take_rows_of_weight_zero(dtype):
    """One-hot weights (the CLS-token ablation) and keyframe_weight=0 leave rows out; they must
    not turn every score into NaN."""
    torch.manual_seed(0)
    B, H, N, D = 2, 3, 30, 16
    q, k = torch.randn(B, H, N, D).to(dtype), torch.randn(B, H, N, D).to(dtype)
    attn = (q.double() * D**-0.5 @ k.double().transpose(-2, -1)).softmax(dim=-1)
    for weights in (torch.eye(N)[0], importance_row_weights(N, 10, keyframe_weight=0.0)):
        assert (weights == 0).any()
        expected = column_scores(attn, weights.double()).float()
        scores = transposed_attention_scores(q, k, weights, cpu_attention_with_lse)
        torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4 * expected.max().item())


@pytest.mark.parametrize("grad", [False, True])
def test_transposed_road_equals_the_explicit_map(grad):
    """`forward_with_scores` as it runs on the CPU by default (CUDA's road, with the CPU's kernel)."""
    fused, explicit = _pair(2)
    fused, explicit = fused.double(), explicit.double()
    x = torch.randn(2, 40, 32, dtype=torch.float64, requires_grad=grad)
    weights = importance_row_weights(40, 8, keyframe_weight=4.0)
    with scoring_method("transposed"):
        out, scores = fused.forward_with_scores(x, weights)
    ref_out, attn = explicit(x, return_attention=True)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(scores, column_scores(attn.detach(), weights).float())
    assert not scores.requires_grad
    if grad:
        (grad_fused,) = torch.autograd.grad(out.square().sum(), x)
        (grad_ref,) = torch.autograd.grad(ref_out.square().sum(), x)
        torch.testing.assert_close(grad_fused, grad_ref)


def test_transposed_scores_ignore_attention_dropout():
    """With attention dropout in training the output takes its own kernel; the scores stay exact."""
    fused, explicit = _pair(3)
    fused.attn_drop.p = 0.5
    x = torch.randn(2, 24, 32, requires_grad=True)
    weights = importance_row_weights(24, 6, keyframe_weight=4.0)
    with scoring_method("transposed"):
        out, scores = fused.train().forward_with_scores(x, weights)
    _, attn = explicit.eval()(x, return_attention=True)
    torch.testing.assert_close(scores, column_scores(attn.detach(), weights), rtol=1e-5, atol=1e-7)
    ref_out, _ = fused.eval().forward_with_scores(x, weights)
    assert not torch.allclose(out, ref_out)  # the dropout did act on the output


def test_scoring_method_rejects_unknown_names():
    with pytest.raises(ValueError, match="blockwise"), scoring_method("exact"):
        pass


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_cuda_scores_and_output_equal_the_blockwise_road(amp, grad):
    fused, _ = _pair(2)
    fused = fused.cuda()
    x = torch.randn(2, 40, 32, device="cuda", requires_grad=grad)
    weights = importance_row_weights(40, 8, keyframe_weight=4.0, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        out, scores = fused.forward_with_scores(x, weights)  # transposed on CUDA
        plain_out, _ = fused(x)  # the fused kernel of layers that do not prune
        with scoring_method("blockwise"):
            _, ref_scores = fused.forward_with_scores(x, weights)
    # bf16: both roads round q, k, v to bf16 (logits near 8 here), so outputs agree to a few 1e-2
    tolerance = {"rtol": 2e-2, "atol": 5e-2} if amp else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(out.float(), plain_out.float(), **tolerance)
    torch.testing.assert_close(scores, ref_scores.float(), **tolerance)
    assert not scores.requires_grad


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_a_trace_takes_the_blockwise_road_on_any_device():
    """Export traces must not record the private fused kernels the CUDA road calls."""
    attention = importlib.import_module("evad.layers.attention")
    seen = []

    def double(x):
        seen.append(attention._transposed_scoring(torch.device("cuda")))
        return 2 * x

    torch.jit.trace(double, torch.ones(1), check_trace=False)  # one call, traced
    assert seen == [False]
    assert attention._transposed_scoring(torch.device("cuda"))
    assert attention._transposed_scoring(torch.device("cpu"))
    assert not attention._transposed_scoring(torch.device("mps"))  # no fused kernel with log-sum-exp
