"""Pre-norm transformer block, split in two halves so token pruning can sit between them."""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from evad.layers.attention import Attention
from evad.layers.mlp import DropPath, Mlp

LayerNorm = partial(nn.LayerNorm, eps=1e-6)


class Block(nn.Module):
    """ViT block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.

    EVAD prunes tokens after the attention residual and before the MLP (SPEC section 2), so the two
    halves are exposed as `attend` and `feed_forward`; `forward` runs both.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        fused_attention: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, fused=fused_attention)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def attend(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        out, attn = self.attn(self.norm1(x), return_attention)
        return x + self.drop_path(out), attn

    def attend_and_score(self, x: Tensor, row_weights: Tensor) -> tuple[Tensor, Tensor]:
        """`attend`, plus the (B, N) token scores of `Attention.forward_with_scores`."""
        out, scores = self.attn.forward_with_scores(self.norm1(x), row_weights)
        return x + self.drop_path(out), scores

    def feed_forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.feed_forward(self.attend(x)[0])
