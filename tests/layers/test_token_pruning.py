"""Eq. 1 importance, keep counts and token selection on hand-built inputs."""

import pytest
import torch

from evad.layers.token_pruning import (
    check_keep_rate,
    column_scores,
    importance_row_weights,
    num_kept_non_keyframe,
    official_token_order,
    select_tokens,
)


def keyframe_importance(attn, num_keyframe, keyframe_weight):
    """Eq. 1 scores of the non-keyframe tokens, as the backbone computes them."""
    weights = importance_row_weights(attn.shape[-1], num_keyframe, keyframe_weight).double()
    return column_scores(attn, weights)[:, num_keyframe:]


def _eq1_by_hand(attn, ns, w_kf):
    """Direct transcription of Eq. 1: I_j = 1/N sum_i w_i attn(i, j), averaged over heads."""
    B, H, N, _ = attn.shape
    out = torch.zeros(B, N - ns, dtype=torch.float64)
    for b in range(B):
        for j in range(ns, N):
            total = 0.0
            for h in range(H):
                total += sum((w_kf if i < ns else 1.0) * attn[b, h, i, j].item() for i in range(N)) / N
            out[b, j - ns] = total / H
    return out


@pytest.mark.parametrize("w_kf", [1.0, 4.0])
def test_importance_matches_eq1(w_kf):
    torch.manual_seed(0)
    attn = torch.rand(2, 3, 7, 7, dtype=torch.float64).softmax(-1)
    got = keyframe_importance(attn, num_keyframe=2, keyframe_weight=w_kf)
    assert torch.allclose(got, _eq1_by_hand(attn, 2, w_kf))


def test_keyframe_weight_changes_which_tokens_survive():
    # N = 4 tokens, Ns = 1 keyframe token. The keyframe query attends to token 3, the two
    # non-keyframe queries attend to token 2. Plain averaging keeps token 2; w_kf = 4 keeps token 3.
    attn = torch.zeros(1, 1, 4, 4)
    attn[0, 0, 0] = torch.tensor([0.1, 0.0, 0.0, 0.9])
    attn[0, 0, 1] = torch.tensor([0.0, 0.1, 0.9, 0.0])
    attn[0, 0, 2] = torch.tensor([0.0, 0.1, 0.9, 0.0])
    attn[0, 0, 3] = torch.tensor([0.0, 0.5, 0.0, 0.5])
    # token 2: (0 + .9 + .9 + 0)/4 = .45 ; token 3: (.9 + 0 + 0 + .5)/4 = .35 ; token 1: .175
    plain = keyframe_importance(attn, 1, 1.0)
    assert torch.allclose(plain, torch.tensor([[0.175, 0.45, 0.35]]))
    assert select_tokens(plain, 1, offset=1, prefix=1).tolist() == [[0, 2]]
    weighted = keyframe_importance(attn, 1, 4.0)  # token 3: (3.6 + .5)/4 = 1.025
    assert select_tokens(weighted, 1, offset=1, prefix=1).tolist() == [[0, 3]]


@pytest.mark.parametrize(
    ("n", "ns", "rho", "expected"),
    [
        (1568, 196, 0.7, [1098, 769, 539]),  # ViT-B 224
        (2592, 324, 0.7, [1815, 1271, 890]),  # ViT-B 288
        (1568, 196, 0.6, [941, 565, 339]),
    ],
)
def test_keep_counts_follow_ceil_rule(n, ns, rho, expected):
    counts = []
    for _ in range(3):
        n = ns + num_kept_non_keyframe(n, ns, rho)
        counts.append(n)
    assert counts == expected


def test_keep_count_never_negative():
    assert num_kept_non_keyframe(100, 90, 0.1) == 0


def test_select_tokens_keeps_prefix_and_topk_in_score_order():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.9]])
    assert select_tokens(scores, 2, offset=3, prefix=3).tolist() == [[0, 1, 2, 6, 4]]


def test_official_order_sorts_only_non_keyframe_indices():
    idx = torch.tensor([[40, 41, 90, 3, 57]])
    assert official_token_order(idx, 2).tolist() == [[40, 41, 3, 57, 90]]


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.01, float("nan"), "0.5", True])
def test_keep_rate_outside_range_is_rejected(bad):
    with pytest.raises(ValueError, match="keep_rate"):
        check_keep_rate(bad)


def test_keep_rate_takes_numpy_scalars():
    """np.float32(0.7) (from a NumPy sweep or array) was refused as 'not a number'."""
    import numpy as np

    assert check_keep_rate(np.float32(0.5)) == 0.5 and isinstance(check_keep_rate(np.float32(0.5)), float)
    assert check_keep_rate(np.int64(1)) == 1.0
    with pytest.raises(ValueError, match="keep_rate must be in"):
        check_keep_rate(np.float32(1.5))


def test_keep_rate_takes_0d_tensors():
    """An element of torch.linspace(0.5, 1.0, 6) was refused as 'not a number'."""
    assert (
        check_keep_rate(torch.linspace(0.5, 1.0, 6)[2]) == pytest.approx(0.7)
        and check_keep_rate(torch.tensor(1)) == 1.0
    )
    for bad in (torch.tensor(1.5), torch.tensor(True), torch.tensor([0.7])):
        with pytest.raises(ValueError, match="keep_rate"):
            check_keep_rate(bad)
