"""The pruning video ViT: token counts, kept indices, keyframe protection, fused vs explicit attention."""

import pytest
import torch

from evad.layers.attention import scoring_method
from evad.models import create_model
from evad.models.heads.classification import scatter_tokens
from evad.models.vit import VideoViT


def narrow_vit(**kwargs) -> VideoViT:
    """ViT-B geometry (12 blocks, pruning at 3/6/9, taps 2/5/8/11) at a width cheap enough for CPU."""
    defaults = dict(embed_dim=32, depth=12, num_heads=2, drop_path_rate=0.0)
    return VideoViT(**{**defaults, **kwargs}).eval()


@pytest.mark.parametrize(
    ("size", "rho", "expected"),
    [
        (224, 0.7, [1568, 1098, 769, 539]),
        (288, 0.7, [2592, 1815, 1271, 890]),
        (224, 0.6, [1568, 941, 565, 339]),
        (224, 1.0, [1568]),
    ],
)
def test_token_counts_per_pruning_layer(size, rho, expected):
    torch.manual_seed(0)
    with torch.no_grad():
        out = narrow_vit()(torch.randn(1, 3, 16, size, size), keep_rate=rho)
    assert out.num_tokens == expected
    assert out.tokens.shape == (1, expected[-1], 32)
    assert out.indices.shape == (1, expected[-1])


def test_keyframe_tokens_always_kept_and_indices_unique():
    torch.manual_seed(0)
    vit = narrow_vit(depth=4, prune_layers=(1, 2, 3), tap_layers=(0, 1, 2, 3))
    with torch.no_grad():
        out = vit(torch.randn(3, 3, 16, 64, 96), keep_rate=0.3)
    t, h, w = out.grid
    ns = h * w
    keyframe = torch.arange((t // 2) * ns, (t // 2 + 1) * ns)
    for b in range(3):
        assert out.indices[b, :ns].tolist() == keyframe.tolist()
        assert out.indices[b].unique().numel() == out.indices.shape[1]
    assert [m.shape for m in out.keyframe_maps] == [(3, 32, h, w)] * 4


def test_kept_indices_point_at_the_tokens_they_carry():
    # With every residual branch zeroed, a block is the identity, so each surviving token must equal
    # the embedded token at its global index; pruning still ranks tokens by real attention scores.
    torch.manual_seed(0)
    vit = narrow_vit(depth=4, prune_layers=(1, 2, 3), tap_layers=(0, 1, 2, 3))
    for block in vit.blocks:
        torch.nn.init.zeros_(block.attn.proj.weight)
        torch.nn.init.zeros_(block.attn.proj.bias)
        torch.nn.init.zeros_(block.mlp.fc2.weight)
        torch.nn.init.zeros_(block.mlp.fc2.bias)
    clips = torch.randn(2, 3, 16, 64, 64)
    with torch.no_grad():
        pruned = vit(clips, keep_rate=0.5)
        full = vit(clips, keep_rate=1.0)
    assert pruned.num_tokens[-1] < full.num_tokens[0]
    # Unpruned output in (t, h, w) order, then looked up at the kept indices.
    dense_full = scatter_tokens(full.tokens, full.indices, full.grid).flatten(2).transpose(1, 2)
    expected = dense_full.gather(1, pruned.indices[..., None].expand(-1, -1, 32))
    torch.testing.assert_close(pruned.tokens, expected)


def test_scatter_puts_every_token_at_its_position():
    t, h, w = 4, 3, 5
    idx = torch.randperm(t * h * w)[:20][None]  # (1, 20)
    tokens = idx[..., None].float().expand(1, 20, 3)  # each token carries its own index
    dense = scatter_tokens(tokens, idx, (t, h, w), fill=torch.full((3,), -1.0))
    flat = dense[0, 0].flatten()
    assert flat[idx[0]].tolist() == idx[0].float().tolist()
    mask = torch.ones(t * h * w, dtype=torch.bool)
    mask[idx[0]] = False
    assert (flat[mask] == -1).all()


def test_keep_rate_one_equals_model_without_pruning():
    torch.manual_seed(0)
    vit = narrow_vit(depth=4, prune_layers=(1, 2, 3), tap_layers=(0, 1, 2, 3))
    plain = narrow_vit(depth=4, prune_layers=(), tap_layers=(0, 1, 2, 3))
    plain.load_state_dict(vit.state_dict())
    clips = torch.randn(1, 3, 16, 64, 64)
    with torch.no_grad():
        a, b = vit(clips, keep_rate=1.0), plain(clips, keep_rate=0.5)
    torch.testing.assert_close(a.tokens, b.tokens)
    assert torch.equal(a.indices, b.indices)


def test_fused_and_explicit_attention_agree():
    torch.manual_seed(0)
    fused = narrow_vit(depth=4, prune_layers=(1, 2, 3), tap_layers=(0, 1, 2, 3))
    explicit = narrow_vit(depth=4, prune_layers=(1, 2, 3), tap_layers=(0, 1, 2, 3), fused_attention=False)
    explicit.load_state_dict(fused.state_dict())
    clips = torch.randn(2, 3, 16, 64, 64)
    with torch.no_grad():
        for rho in (1.0, 0.7):
            a, b = fused(clips, keep_rate=rho), explicit(clips, keep_rate=rho)
            torch.testing.assert_close(a.tokens, b.tokens, atol=1e-5, rtol=1e-4)
            assert torch.equal(a.indices, b.indices)


def test_position_table_resized_only_in_space():
    vit = narrow_vit()
    assert torch.equal(vit.position_table(14, 14), vit.pos_table)
    table = vit.position_table(18, 12).reshape(8, 18, 12, 32)
    assert table.shape == (8, 18, 12, 32)
    # Slices keep their own temporal content: different slices stay different after resizing.
    assert not torch.allclose(table[0], table[1])


@pytest.mark.parametrize("pruning", ["random", "cls", "unified"])
def test_ablation_strategies(pruning):
    torch.manual_seed(0)
    vit = narrow_vit(depth=4, prune_layers=(1, 2, 3), tap_layers=(0, 1, 2, 3), pruning=pruning)
    with torch.no_grad():
        out = vit(torch.randn(2, 3, 16, 64, 64), keep_rate=0.5)
    ns = 16
    if pruning == "unified":
        assert out.num_tokens == [128, 64, 32, 16]
    elif pruning == "random":
        assert out.num_tokens == [128, 16 + 56]  # one random draw of half the 112 non-keyframe tokens
    else:
        assert out.num_tokens == [128, 64, 32, 16]
    if pruning != "unified":
        assert (out.indices[:, :ns] == torch.arange(64, 80)).all()
    assert out.tokens.shape[1] == out.num_tokens[-1]
    assert all(m.shape == (2, 32, 4, 4) for m in out.keyframe_maps)


@pytest.mark.parametrize("settings", [{"pruning": "cls"}, {"keyframe_weight": 0.0}])
def test_rows_of_weight_zero_keep_the_same_tokens_on_both_scoring_roads(settings):
    """The CLS ablation weights one row, keyframe_weight=0 none of the keyframe's: the default fused
    road must keep the tokens the explicit attention map picks."""
    torch.manual_seed(0)
    vit = narrow_vit(depth=4, prune_layers=(1, 2, 3), tap_layers=(0, 1, 2, 3), **settings)
    clips = torch.randn(2, 3, 16, 64, 64)
    with torch.no_grad():
        with scoring_method("transposed"):
            fused = vit(clips, keep_rate=0.5)
        with scoring_method("blockwise"):
            explicit = vit(clips, keep_rate=0.5)
    assert torch.equal(fused.indices, explicit.indices)
    torch.testing.assert_close(fused.tokens, explicit.tokens)


def test_unified_pruning_can_drop_keyframe_tokens():
    torch.manual_seed(0)
    vit = narrow_vit(depth=4, prune_layers=(1, 2, 3), tap_layers=(0, 1, 2, 3), pruning="unified")
    with torch.no_grad():
        out = vit(torch.randn(2, 3, 16, 64, 64), keep_rate=0.3)
    in_keyframe = ((out.indices >= 64) & (out.indices < 80)).sum(1)
    assert (in_keyframe < 16).all()
    # Dropped keyframe positions are zero in the last keyframe map.
    assert (out.keyframe_maps[-1].abs().sum(1) == 0).any()


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((1, 3, 16, 60, 64), "multiples of 16"),
        ((1, 3, 8, 64, 64), "T=16"),
        ((1, 1, 16, 64, 64), r"\(B, 3, T, H, W\)"),
    ],
)
def test_bad_clip_shapes_raise(shape, match):
    with pytest.raises(ValueError, match=match):
        narrow_vit(depth=4, prune_layers=(1,), tap_layers=(0, 1, 2, 3))(torch.zeros(shape))


def test_bad_model_arguments_raise():
    with pytest.raises(ValueError, match="accepted: tiny, vit-b, vit-h, vit-l, vit-s"):
        create_model("vit-xl")
    with pytest.raises(ValueError, match="unknown model option"):
        create_model("tiny", keep_ratio=0.7)
    with pytest.raises(ValueError, match="pruning must be one of"):
        create_model("tiny", pruning="magic")
    with pytest.raises(ValueError, match="keep_rate"):
        create_model("tiny", keep_rate=0.0)
    with pytest.raises(ValueError, match="keep_rate"):
        create_model("tiny")(torch.zeros(1, 3, 16, 64, 64), keep_rate=2.0)


def test_patch_embedding_equals_the_convolution():
    # The matmul path must give exactly what the checkpoint's Conv3d would.
    torch.manual_seed(0)
    model = narrow_vit(depth=4, prune_layers=(1, 2, 3), tap_layers=(0, 1, 2, 3))
    clips = torch.randn(2, 3, 16, 32, 48)
    tokens, grid = model.embed_patches(clips)
    reference = model.patch_embed.proj(clips).flatten(2).transpose(1, 2)  # (B, C, t, h, w) -> (B, N, C)
    assert grid == (8, 2, 3)
    torch.testing.assert_close(tokens, reference, rtol=1e-5, atol=1e-5)


def test_official_pos_resize_quirk_skips_the_resize_at_the_same_token_count():
    # A 7 x 28 grid has the 14 x 14 table's 196 cells: the official code uses the table unresized.
    official = narrow_vit(official_pos_resize=True)
    plain = narrow_vit()
    assert torch.equal(official.position_table(7, 28), official.pos_table)
    assert not torch.equal(plain.position_table(7, 28), plain.pos_table)
    assert torch.equal(official.position_table(10, 12), plain.position_table(10, 12))
