"""VideoMAE-style plain video ViT with keyframe-centric token pruning (EVAD Sec. 3.2, SPEC section 2).

A clip (B, 3, T, H, W) is cut into 2x16x16 tubelets, giving t = T/2 temporal slices of h x w tokens.
The keyframe slice is t // 2 (input frames 8 and 9 of 16). Tokens are reordered so the keyframe
slice comes first; at the pruning layers the least important non-keyframe tokens are dropped, and
the global (t, h, w) index of every surviving token is carried along so the classification branch
can put them back in place. Keyframe feature maps are tapped at fixed layers for localization.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evad.layers.block import Block, LayerNorm
from evad.layers.mlp import drop_path_rates
from evad.layers.pos_embed import ResizedTables, sinusoid_table
from evad.layers.token_pruning import (
    PRUNING_STRATEGIES,
    check_keep_rate,
    gather_tokens,
    importance_row_weights,
    num_kept_non_keyframe,
    select_tokens,
)


@dataclass
class BackboneOutput:
    """What the backbone hands to the heads.

    Attributes:
        tokens: Surviving tokens after the final norm, (B, M, C), ordered
            ``[keyframe tokens, kept non-keyframe tokens]`` (for the "unified" ablation: any order).
        indices: Global flat index t*h*w + y*w + x of every surviving token, (B, M).
        keyframe_maps: Keyframe feature maps (B, C, h, w) at the end of each tap layer, before the
            final norm.
        grid: Token grid (t, h, w) of the clip.
        num_tokens: Token count entering the first block and after each pruning layer.
    """

    tokens: Tensor
    indices: Tensor
    keyframe_maps: list[Tensor]
    grid: tuple[int, int, int]
    num_tokens: list[int] = field(default_factory=list)

    @property
    def num_keyframe(self) -> int:
        return self.grid[1] * self.grid[2]


class VideoViT(nn.Module):
    """Plain video ViT with keyframe-centric token pruning.

    Args:
        embed_dim: Token width C.
        depth: Number of blocks.
        num_heads: Attention heads per block.
        mlp_ratio: MLP hidden width as a multiple of C.
        patch_size: Spatial tubelet size (16).
        tubelet_size: Temporal tubelet size (2).
        num_frames: Input frames T the model takes (16).
        pretrain_img_size: Square size the position table is laid out for (224 -> 14 x 14).
        drop_path_rate: Stochastic depth at the last block, rising linearly from 0.
        prune_layers: 0-based blocks that prune tokens after their attention.
        tap_layers: 0-based blocks whose output keyframe map feeds the localization branch.
        keep_rate: Default token keep rate rho (overridable per call).
        keyframe_weight: w_kf, weight of keyframe queries in the importance score (Eq. 1).
        pruning: "attention" (Eq. 1, default), "random" (a random rho of the non-keyframe tokens
            kept before the encoder: paper Table 1b's 158.9 GFLOPs at rho 0.7, where a budget of
            rho N tokens in all would give 149.5), "cls" (a learnable CLS token's attention ranks
            tokens), or "unified" (keyframe tokens are pruned like any other).
        fused_attention: Use the fused attention kernel in blocks that do not prune.
        official_pos_resize: Reproduce the official code's skip of the position-table resize
            whenever the grid has as many cells as the table's (e.g. 7 x 28 for a 14 x 14
            table), for released checkpoints (SPEC section 8b); otherwise such grids are resized.
    """

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        patch_size: int = 16,
        tubelet_size: int = 2,
        num_frames: int = 16,
        pretrain_img_size: int = 224,
        drop_path_rate: float = 0.1,
        prune_layers: Sequence[int] = (3, 6, 9),
        tap_layers: Sequence[int] = (2, 5, 8, 11),
        keep_rate: float = 1.0,
        keyframe_weight: float = 1.0,
        pruning: str = "attention",
        fused_attention: bool = True,
        official_pos_resize: bool = False,
    ) -> None:
        super().__init__()
        self.official_pos_resize = official_pos_resize
        if pruning not in PRUNING_STRATEGIES:
            raise ValueError(f"pruning must be one of {PRUNING_STRATEGIES}, got {pruning!r}")
        for name, size in (
            ("patch_size", patch_size),
            ("tubelet_size", tubelet_size),
            ("num_frames", num_frames),
        ):
            if size < 1:  # each divides the input
                raise ValueError(f"{name} must be >= 1, got {size}")
        if num_frames % tubelet_size:
            raise ValueError(f"num_frames={num_frames} must be a multiple of tubelet_size={tubelet_size}")
        for name, layers in (("prune_layers", prune_layers), ("tap_layers", tap_layers)):
            if any(not 0 <= i < depth for i in layers):
                raise ValueError(f"{name} must lie in [0, {depth}), got {list(layers)}")
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.num_frames = num_frames
        self.prune_layers = tuple(sorted(prune_layers))
        self.tap_layers = tuple(tap_layers)
        self.keep_rate = check_keep_rate(keep_rate)
        self.keyframe_weight = float(keyframe_weight)
        self.pruning = pruning

        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(
            3,
            embed_dim,
            kernel_size=(tubelet_size, patch_size, patch_size),
            stride=(tubelet_size, patch_size, patch_size),
        )
        grid = pretrain_img_size // patch_size
        self.table_grid = (num_frames // tubelet_size, grid, grid)
        table = sinusoid_table(self.table_grid[0] * grid * grid, embed_dim)
        self.register_buffer("pos_table", table, persistent=False)
        self._resized_tables = ResizedTables()
        if pruning == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            nn.init.trunc_normal_(self.cls_token, std=0.02)

        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=r, fused_attention=fused_attention
            )
            for r in rates
        )
        self.norm = LayerNorm(embed_dim)
        self.apply(_init_weights)

    def check_input(self, clips: Tensor) -> None:
        """Raise ValueError unless `clips` is a floating (B >= 1, 3, num_frames, H, W) tensor in the
        weights' dtype (or under autocast) with H, W multiples of the patch size."""
        if not isinstance(clips, Tensor):
            raise TypeError(
                f"clips must be a torch.Tensor of shape (B, 3, T, H, W), got {type(clips).__name__}"
            )
        if clips.ndim != 5 or clips.shape[1] != 3:
            raise ValueError(f"clips must have shape (B, 3, T, H, W), got {tuple(clips.shape)}")
        if clips.shape[0] == 0:
            raise ValueError("clips is an empty batch (B = 0); pass at least one clip")
        weight = self.patch_embed.proj.weight
        if not clips.is_floating_point() or (
            clips.dtype != weight.dtype and not torch.is_autocast_enabled(clips.device.type)
        ):
            raise ValueError(
                f"clips must be normalised floats in the model's dtype {weight.dtype}, got {clips.dtype}"
            )
        T, H, W = clips.shape[2:]
        if T != self.num_frames:
            raise ValueError(f"clips must have T={self.num_frames} frames for this model, got T={T}")
        p = self.patch_size
        if H % p or W % p or H == 0 or W == 0:
            raise ValueError(f"clip height and width must be positive multiples of {p}, got H={H}, W={W}")

    def embed_patches(self, clips: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        """(B, 3, T, H, W) -> (B, t*h*w, C) tokens and the (t, h, w) grid.

        The Conv3d's kernel equals its stride, so it is one matmul over non-overlapping patches;
        on CPU that is several times faster than the convolution, forward and backward.
        """
        proj = self.patch_embed.proj
        B, c, T, H, W = clips.shape
        pt, p = self.tubelet_size, self.patch_size
        t, h, w = T // pt, H // p, W // p
        patches = clips.reshape(B, c, t, pt, h, p, w, p)  # (B, 3, T, H, W) -> (B, 3, t, pt, h, p, w, p)
        patches = patches.permute(0, 2, 4, 6, 1, 3, 5, 7)  # -> (B, t, h, w, 3, pt, p, p)
        patches = patches.reshape(B, t * h * w, c * pt * p * p)  # -> (B, N, 3*pt*p*p)
        x = F.linear(patches, proj.weight.reshape(proj.out_channels, -1), proj.bias)  # (B, N, C)
        return x, (t, h, w)

    def position_table(self, h: int, w: int) -> Tensor:
        """The (t*h*w, C) position table for an h x w token grid (bicubic resize in space)."""
        _, gh, gw = self.table_grid
        if self.official_pos_resize and h * w == gh * gw:
            return self.pos_table  # the official quirk: same token count, table used as laid out
        return self._resized_tables.get(self.pos_table, self.table_grid, (h, w))

    def forward(self, clips: Tensor, keep_rate: float | None = None) -> BackboneOutput:
        """Encode clips (B, 3, T, H, W), pruning tokens at `keep_rate` (default: the model's)."""
        self.check_input(clips)
        rho = self.keep_rate if keep_rate is None else check_keep_rate(keep_rate)
        B = clips.shape[0]
        x, (t, h, w) = self.embed_patches(clips)  # (B, t*h*w, C)
        x = x + self.position_table(h, w).to(x.dtype)

        ns = h * w
        key = t // 2
        # Keyframe slice first, then the other slices in temporal order (official layout).
        order = torch.cat(
            [
                torch.arange(key * ns, (key + 1) * ns),
                torch.arange(0, key * ns),
                torch.arange((key + 1) * ns, t * ns),
            ]
        ).to(x.device)
        x = x[:, order]
        indices = order.expand(B, -1)  # (N,) -> (B, N)
        num_tokens = [x.shape[1]]

        if self.pruning == "random" and rho < 1:
            keep = math.ceil(rho * (x.shape[1] - ns))  # rho of the non-keyframe tokens
            scores = torch.rand(B, x.shape[1] - ns, device=x.device)
            positions = select_tokens(scores, keep, offset=ns, prefix=ns)
            x, indices = gather_tokens(x, positions), gather_tokens(indices, positions)
            num_tokens.append(x.shape[1])

        prefix = 0
        if self.pruning == "cls":
            x = torch.cat([self.cls_token.expand(B, -1, -1).to(x.dtype), x], dim=1)  # (B, 1 + N, C)
            prefix = 1

        keyframe_maps = []
        for i, block in enumerate(self.blocks):
            prune = rho < 1 and i in self.prune_layers and self.pruning != "random"
            if prune:
                x, scores = block.attend_and_score(x, self._row_weights(x.shape[1], ns, x.device))
                positions = self._positions_to_keep(scores, ns, rho, prefix)
                x = gather_tokens(x, positions)
                indices = gather_tokens(indices, positions[:, prefix:] - prefix)
                num_tokens.append(indices.shape[1])
            else:
                x = block.attend(x)[0]
            x = block.feed_forward(x)
            if i in self.tap_layers:
                keyframe_maps.append(self._keyframe_map(x[:, prefix:], indices, (t, h, w)))

        x = self.norm(x)[:, prefix:]
        return BackboneOutput(x, indices, keyframe_maps, (t, h, w), num_tokens)

    def _row_weights(self, n: int, ns: int, device: torch.device) -> Tensor:
        """(n,) weights of the query rows whose weighted attention scores the tokens (the CLS
        ablation's one row is the CLS token, at position 0)."""
        if self.pruning == "cls":
            return torch.zeros(n, device=device).index_fill_(0, torch.tensor([0], device=device), 1.0)
        if self.pruning == "unified":
            return torch.full((n,), 1.0 / n, device=device)  # plain mean over all queries
        return importance_row_weights(n, ns, self.keyframe_weight, device)  # Eq. 1

    def _positions_to_keep(self, scores: Tensor, ns: int, rho: float, prefix: int) -> Tensor:
        """Sequence positions surviving one pruning step, given token scores (B, N)."""
        n = scores.shape[-1] - prefix
        if self.pruning == "unified":
            return select_tokens(scores, max(1, math.ceil(rho * n)))  # every token is a candidate
        keep = num_kept_non_keyframe(n, ns, rho)
        # The CLS query row (cls) or Eq. 1 (attention) scores the non-keyframe tokens.
        return select_tokens(scores[:, prefix + ns :], keep, offset=prefix + ns, prefix=prefix + ns)

    def _keyframe_map(self, x: Tensor, indices: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """(B, C, h, w) keyframe map from tokens (B, M, C) with global indices (B, M)."""
        t, h, w = grid
        B, _, C = x.shape
        ns = h * w
        if self.pruning != "unified":
            return x[:, :ns].transpose(1, 2).reshape(B, C, h, w)  # (B, h*w, C) -> (B, C, h, w)
        # Unified pruning may have dropped keyframe tokens: scatter the survivors, zeros elsewhere.
        local = indices - (t // 2) * ns
        local = torch.where((local >= 0) & (local < ns), local, ns)  # others go to a spill row
        out = x.new_zeros(B, ns + 1, C).scatter(1, local.unsqueeze(-1).expand(-1, -1, C), x)  # (B, ns + 1, C)
        return out[:, :ns].transpose(1, 2).reshape(B, C, h, w)  # (B, h*w, C) -> (B, C, h, w)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
