"""Multi-head self-attention with a fused path and an explicit path that can return scores.

The fused path (`F.scaled_dot_product_attention`) is used whenever the attention map is not needed.
Token pruning (EVAD Sec. 3.2) needs only a weighted sum of the post-softmax map over query rows
(`forward_with_scores`), never the map itself: training takes the fused path for the output and
computes the scores without gradient, a block of query rows at a time; inference computes output
and scores together, a block of rows at a time. Neither holds a (B, heads, N, N) map, so pruning
layers cost no more memory than the others. The explicit path (``fused=False``, or
``return_attention``) is the reference and what attention pictures use.
Parameter layout follows VideoMAE: one `qkv` projection without bias plus separate `q_bias` and
`v_bias` (the key bias is fixed at zero), so released checkpoints load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evad.layers.token_pruning import column_scores

# Elements of the attention rows computed at once when scoring (64 MiB in float32).
_SCORE_BLOCK = 2**24


class Attention(nn.Module):
    """Multi-head self-attention over a token sequence.

    Args:
        dim: Token width.
        num_heads: Number of heads; `dim` must be divisible by it.
        qkv_bias: Learn `q_bias` and `v_bias` (VideoMAE style; the key bias stays zero).
        attn_drop: Dropout on the attention probabilities.
        proj_drop: Dropout after the output projection.
        fused: Use `F.scaled_dot_product_attention` when scores are not requested.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused = fused
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.register_parameter("q_bias", None)
            self.register_parameter("v_bias", None)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, N, _ = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        # (B, N, 3C) -> (3, B, heads, N, head_dim)
        qkv = qkv.reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """Attend over `x` of shape (B, N, C).

        Returns:
            The attended tokens (B, N, C) and, when `return_attention` is set, the post-softmax
            attention probabilities (B, heads, N, N) before dropout; otherwise None.
        """
        B, N, C = x.shape
        q, k, v = self._qkv(x)
        attn = None
        if self.fused and not return_attention:
            drop = self.attn_drop.p if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
            attn = attn.softmax(dim=-1)
            x = self.attn_drop(attn) @ v
        x = x.transpose(1, 2).reshape(B, N, C)  # (B, heads, N, head_dim) -> (B, N, C)
        return self.proj_drop(self.proj(x)), attn

    def forward_with_scores(self, x: Tensor, row_weights: Tensor) -> tuple[Tensor, Tensor]:
        """Attend over `x` (B, N, C) and score every key token (for token pruning).

        Args:
            x: Tokens (B, N, C).
            row_weights: (N,) weight of each query row.

        Returns:
            The attended tokens (B, N, C) and the scores (B, N) of `column_scores`:
            1/H sum_h sum_i row_weights[i] * A[h, i, j], without gradient.
        """
        if not self.fused:
            out, attn = self.forward(x, return_attention=True)
            return out, column_scores(attn.detach(), row_weights)
        B, N, C = x.shape
        q, k, v = self._qkv(x)
        if torch.is_grad_enabled() and x.requires_grad:
            drop = self.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
            with torch.no_grad():
                _, scores = self._blockwise(q, k, v, row_weights, with_output=False)
        else:
            out, scores = self._blockwise(q, k, v, row_weights, with_output=True)
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, heads, N, head_dim) -> (B, N, C)
        return self.proj_drop(self.proj(out)), scores

    def _blockwise(
        self, q: Tensor, k: Tensor, v: Tensor, row_weights: Tensor, with_output: bool
    ) -> tuple[Tensor | None, Tensor]:
        """Attention a block of query rows at a time: output (optional) and column scores."""
        B, H, N, _ = q.shape
        rows = max(1, _SCORE_BLOCK // (B * H * N))
        dtype = torch.promote_types(q.dtype, torch.float32)
        # q, k, v are strided views into the qkv projection: lay them out once, not once per block.
        q = (q * self.scale).contiguous()
        key_t = k.transpose(-2, -1).contiguous()  # (B, H, head_dim, N)
        v = v.contiguous() if with_output else v
        scores = q.new_zeros(B, H, N, dtype=dtype)
        outputs = []
        for start in range(0, N, rows):
            stop = min(start + rows, N)
            attn = (q[:, :, start:stop] @ key_t).softmax(dim=-1)  # (B, H, r, N)
            # (r,) @ (B, H, r, N) -> (B, H, N): the rows weighted and summed (a matmul; einsum is 30x slower)
            scores += row_weights[start:stop].to(dtype) @ attn.to(dtype)
            if with_output:
                outputs.append(attn @ v)  # (B, H, r, head_dim)
        out = torch.cat(outputs, dim=2) if with_output else None  # (B, H, N, head_dim)
        return out, scores.mean(dim=1)
