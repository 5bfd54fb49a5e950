"""Multi-head self-attention with a fused path and an explicit path that can return scores.

The fused path (`F.scaled_dot_product_attention`) is used whenever the attention map is not needed.
Token pruning (EVAD Sec. 3.2) needs only a weighted sum of the post-softmax map over query rows
(`forward_with_scores`), never the map itself. On CUDA and the CPU the scores come from fused
attention calls (`transposed_attention_scores`), never forming the map: two per pruning layer (the
output's call also gives the log-sum-exp the scores need), three in training on CUDA, where
`F.scaled_dot_product_attention` keeps choosing the output's kernel and backward. Elsewhere, and in
traces (export), the scores come from explicit attention a block of query rows at a time ("blockwise":
training takes the fused path for the output and scores without gradient; inference computes both
together). No road holds a (B, heads, N, N) map, so pruning layers cost no more memory than the
others. The explicit blocks are slower: about nine fused layers on an H100 (ViT-B, batch 8,
N = 1568, bf16: 3.3 ms against 0.37 ms for a whole fused attention layer); on a 2-core CPU they
take 1.23x the transposed road's time in a ViT-B pruning layer (batch 8, N = 1568) and make the
demo's training step 1.07x slower (`benchmarks/scoring_roads.py`). The explicit path
(``fused=False``, or ``return_attention``) is the reference and what attention pictures use.
Parameter layout follows VideoMAE: one `qkv` projection without bias plus separate `q_bias` and
`v_bias` (the key bias is fixed at zero), so released checkpoints load without renaming.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evad.layers.token_pruning import column_scores
from evad.switches import MethodSwitch

# Elements of the attention rows computed at once when scoring (64 MiB in float32).
_SCORE_BLOCK = 2**24
_SCORING = MethodSwitch("attention_scoring", ("blockwise", "transposed"))


def scoring_method(method: str) -> contextlib.AbstractContextManager[None]:
    """Make pruning layers score tokens by "blockwise" explicit attention rows or by "transposed"
    fused attention (`transposed_attention_scores`) inside the block, whatever the device (default:
    transposed on CUDA and the CPU, blockwise elsewhere). Both give the same scores to float
    rounding; FLOP counting pins "blockwise" so that the count does not depend on the device, and
    tests use both."""
    return _SCORING.force(method)


def _transposed_scoring(device: torch.device) -> bool:
    """Whether pruning layers on `device` take the fused road: on CUDA and the CPU (the devices with
    a fused kernel that returns the log-sum-exp) unless forced otherwise, and never in a trace
    (export), whose graph must not hold PyTorch's private attention kernels."""
    forced = _SCORING.get()
    if forced is not None:
        return forced == "transposed"
    return device.type in ("cuda", "cpu") and not torch.jit.is_tracing()


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
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads} (>= 1)")
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
        training = torch.is_grad_enabled() and x.requires_grad
        drop = self.attn_drop.p if self.training else 0.0
        if _transposed_scoring(x.device):
            # Fused kernels: the output and the log-sum-exp the scores need from one call (it is
            # differentiable), the scores from a second one with queries and keys swapped.
            attend = _cuda_attention_with_lse if x.is_cuda else cpu_attention_with_lse
            logsumexp = None
            if training and (x.is_cuda or drop > 0):
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
            else:
                out, logsumexp = attend(q, k, v, self.scale)
            with torch.no_grad():
                scores = transposed_attention_scores(q, k, row_weights, attend, logsumexp)
        elif training:
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


AttentionWithLSE = Callable[[Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor]]


def transposed_attention_scores(
    q: Tensor, k: Tensor, row_weights: Tensor, attend: AttentionWithLSE, logsumexp: Tensor | None = None
) -> Tensor:
    """`column_scores` of softmax(q k^T / sqrt(d)) from fused attention kernels, never forming the map.

    With s_ij the scaled logits and L_i the log-sum-exp of query row i, the score of key j is
    ``sum_i w_i exp(s_ij - L_i) = exp(L'_j)``, where L'_j is the log-sum-exp of row j of an
    attention whose queries are the keys, whose keys are the queries, and whose logits carry the
    extra term ``b_i = log w_i - L_i``. That term enters through appended head channels: the
    swapped queries get channels of 1, the swapped keys ``b_i / scale`` split into three parts of
    their dtype (hi + mid + lo, so bf16 keeps float32 precision). The kernel subtracts each row's
    maximum before exponentiating, so nothing can overflow or underflow, and no value is needed.

    Args:
        q: (B, heads, N, head_dim) queries (unscaled).
        k: (B, heads, N, head_dim) keys (unscaled).
        row_weights: (N,) non-negative weight of each query row.
        attend: ``(q, k, v, scale) -> (output, log-sum-exp (B, heads, >= N))``, a fused attention
            kernel that takes any head size that is a multiple of 8.
        logsumexp: The log-sum-exp of the rows of q k^T * scale, if already known.

    Returns:
        (B, N) float32 scores, averaged over heads.
    """
    B, H, N, D = q.shape
    scale = D**-0.5
    if logsumexp is None:
        _, logsumexp = attend(q, k, torch.zeros_like(q), scale)
    bias = (row_weights.float().log() - logsumexp[..., :N].float()) / scale  # (B, H, N)
    # A row of weight 0 (the CLS-token ablation, keyframe_weight=0) has bias -inf: it goes whole
    # into the first part, as -inf - -inf would make the other two NaN.
    counted = torch.isfinite(bias)
    bias = bias.where(counted, 0.0)
    parts = []
    for _ in range(3):
        parts.append(bias.to(q.dtype))
        bias = bias - parts[-1].float()
    parts[0] = parts[0].masked_fill(~counted, float("-inf"))
    pad = q.new_zeros(B, H, N, 5)  # 3 + 5 extra channels: the head size stays a multiple of 8
    keys = torch.cat([q, torch.stack(parts, dim=-1), pad], dim=-1)  # (B, H, N, D + 8)
    queries = torch.cat([k, torch.ones_like(pad[..., :3]), pad], dim=-1)  # (B, H, N, D + 8)
    _, key_logsumexp = attend(queries, keys, torch.zeros_like(keys), scale)  # (B, H, >= N)
    return key_logsumexp[..., :N].float().exp().mean(dim=1)  # (B, H, N) -> (B, N)


def _cuda_attention_with_lse(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Fused attention on CUDA and the log-sum-exp of every query row: FlashAttention for bf16 / fp16
    where the GPU has it, the memory-efficient kernel otherwise (its log-sum-exp is padded to a
    multiple of 32 rows)."""
    if q.dtype in (torch.float16, torch.bfloat16):
        try:
            return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, scale=scale)[:2]
        except RuntimeError:  # a GPU without FlashAttention (before Ampere)
            pass
    return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, scale=scale)[:2]


def cpu_attention_with_lse(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """The CPU's fused attention with its log-sum-exp (tests check `transposed_attention_scores` with it)."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, scale=scale)
