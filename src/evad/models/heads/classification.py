"""Action classification branch: context refinement decoder (EVAD Sec. 3.3, SPEC section 4).

The surviving encoder tokens are projected to the decoder width and put back at their (t, h, w)
positions in a dense map whose dropped positions hold a learned mask token; a fixed sinusoid
position table is added. Actor features come from a 3-D RoIAlign of that map with the extended
last-stage boxes (per temporal slice, spatial max, temporal mean). The decoder then refines the
actor features together with the kept tokens, and a classifier after every block predicts the
actions. `LinearActionHead` is the paper's Table 1a baseline without a decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from evad.layers.block import Block
from evad.layers.mlp import drop_path_rates
from evad.layers.pos_embed import ResizedTables, sinusoid_table
from evad.layers.token_pruning import official_token_order
from evad.ops.boxes import clip_boxes
from evad.ops.poolers import roi_align_per_image


def extend_boxes(boxes: Tensor, roi_extend: Sequence[float], image_sizes: Tensor) -> Tensor:
    """Grow boxes (B, Q, 4) by roi_extend = (x, y) of their size, centred, and clip to the image.

    Follows the official rule: widths/heights use the legacy +1 convention (w = x2 - x1 + 1), each
    side moves by extend * size / 2, and boxes are clipped to [0, W-1] x [0, H-1] of each clip's
    unpadded size `image_sizes` (B, 2) = (height, width).
    """
    ex, ey = roi_extend
    pad_w = ex * (boxes[..., 2] - boxes[..., 0] + 1) / 2
    pad_h = ey * (boxes[..., 3] - boxes[..., 1] + 1) / 2
    out = torch.stack(
        [boxes[..., 0] - pad_w, boxes[..., 1] - pad_h, boxes[..., 2] + pad_w, boxes[..., 3] + pad_h], dim=-1
    )
    return clip_boxes(out, image_sizes[:, 0, None] - 1, image_sizes[:, 1, None] - 1)  # bounds (B, 1)


def scatter_tokens(
    tokens: Tensor, indices: Tensor, grid: tuple[int, int, int], fill: Tensor | None = None
) -> Tensor:
    """Put tokens (B, M, C) back at their global indices (B, M) in a dense (B, C, t, h, w) map.

    Positions no token maps to hold `fill` (a (C,)-broadcastable tensor, e.g. the mask token) or
    zeros.
    """
    t, h, w = grid
    B, _, C = tokens.shape
    if fill is None:
        dense = tokens.new_zeros(B, t * h * w, C)
    else:
        dense = fill.to(tokens.dtype).reshape(1, 1, C).expand(B, t * h * w, C)  # (C,) -> (B, t*h*w, C)
    dense = dense.scatter(1, indices.unsqueeze(-1).expand(-1, -1, C), tokens)  # (B, t*h*w, C)
    return dense.transpose(1, 2).reshape(B, C, t, h, w)  # (B, t*h*w, C) -> (B, C, t, h, w)


def roi_pool_3d(
    dense: Tensor, boxes: Tensor, output_size: int = 7, spatial_scale: float = 1 / 16, sampling_ratio: int = 2
) -> Tensor:
    """Actor features from a dense map (B, C, t, h, w) and boxes (B, Q, 4) in input pixels.

    RoIAlign (aligned) on every temporal slice, max over space, mean over time: returns (B, Q, C).
    A box covers the same cells on every slice, so the slices are pooled together as channels.
    """
    B, C, t, h, w = dense.shape
    Q = boxes.shape[1]
    maps = dense.reshape(B, C * t, h, w)  # (B, C, t, h, w) -> (B, C*t, h, w); channel c*t + s
    features = []
    for b in range(B):  # one clip at a time: only one clip's (Q, C*t, S, S) grid is ever alive
        pooled = roi_align_per_image(
            maps[b : b + 1], boxes[b : b + 1], output_size, spatial_scale, sampling_ratio, aligned=True
        )  # (1, Q, C*t, S, S)
        # max(dim) keeps only the argmax for the backward; amax would keep the whole pooled grid
        # (Q x C*t x S x S floats) alive until the backward and rebuild masks of that size there.
        features.append(pooled.flatten(-2).max(dim=-1).values)  # -> (1, Q, C*t, S*S) -> (1, Q, C*t)
    pooled = torch.cat(features)  # (B, Q, C*t)
    return pooled.view(B, Q, C, t).mean(dim=-1)  # (B, Q, C*t) -> (B, Q, C, t) -> (B, Q, C)


class ActorPooler(nn.Module):
    """Extended, clipped boxes -> 3-D RoIAlign on a dense map -> one feature per actor (no parameters)."""

    def __init__(
        self,
        roi_extend: Sequence[float] = (0.4, 0.2),
        pooler_resolution: int = 7,
        sampling_ratio: int = 2,
        patch_size: int = 16,
    ) -> None:
        super().__init__()
        self.roi_extend = tuple(roi_extend)
        self.pooler_resolution = pooler_resolution
        self.sampling_ratio = sampling_ratio
        self.spatial_scale = 1.0 / patch_size

    def forward(self, dense: Tensor, boxes: Tensor, image_sizes: Tensor) -> Tensor:
        """Pool (B, Q, C) actor features from `dense` (B, C, t, h, w) for boxes (B, Q, 4) in pixels."""
        boxes = extend_boxes(boxes, self.roi_extend, image_sizes)  # (0, 0) still clips
        return roi_pool_3d(dense, boxes, self.pooler_resolution, self.spatial_scale, self.sampling_ratio)


class DecoderBlock(Block):
    """Decoder block with its own action classifier on the trailing actor tokens.

    The classifier is `act_layers` x (Linear without bias, LayerNorm, ReLU) then a Linear to the classes.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_classes: int,
        act_dim: int = 2048,
        act_layers: int = 1,
        **block_kwargs,
    ) -> None:
        super().__init__(dim, num_heads, **block_kwargs)
        layers: list[nn.Module] = []
        for i in range(act_layers):
            layers += [nn.Linear(act_dim if i else dim, act_dim, bias=False), nn.LayerNorm(act_dim)]
            layers.append(nn.ReLU(inplace=True))
        self.act_module = nn.ModuleList(layers)
        self.action_logits = nn.Linear(act_dim if act_layers else dim, num_classes)

    def classify(self, actors: Tensor) -> Tensor:
        for layer in self.act_module:
            actors = layer(actors)
        return self.action_logits(actors)


class ContextRefinementHead(nn.Module):
    """Dense-map RoI features refined by a transformer decoder over the kept tokens.

    Args:
        encoder_dim: Encoder token width C.
        num_classes: Action classes.
        decoder_dim: Decoder width Cd (ViT-B 384, ViT-L 512).
        depth: Decoder blocks (ViT-B 6, ViT-L 12).
        num_heads: Decoder heads.
        mlp_ratio: Decoder MLP ratio.
        drop_path_rate: Stochastic depth at the last decoder block.
        act_dim: Hidden width of each block's classifier (2048).
        act_layers: Hidden layers of each block's classifier (1).
        roi_extend: (x, y) box extension before RoIAlign; (0, 0) only clips to the image.
        pooler_resolution: RoIAlign output size (7).
        sampling_ratio: RoIAlign sampling ratio (2).
        patch_size: Encoder patch size; the dense map has stride `patch_size`.
        table_grid: (t, h, w) the decoder position table is laid out for.
        official_token_order: Reproduce the official scatter quirk (see
            `evad.layers.token_pruning.official_token_order`); only for released KTP checkpoints.
        official_pos_resize: Reproduce the official skip of the position-table resize for grids
            with as many cells as the table's, as `VideoViT` does; only for released checkpoints.
        fused_attention: Fused attention in the decoder blocks.
    """

    def __init__(
        self,
        encoder_dim: int,
        num_classes: int,
        decoder_dim: int = 384,
        depth: int = 6,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        act_dim: int = 2048,
        act_layers: int = 1,
        roi_extend: Sequence[float] = (0.4, 0.2),
        pooler_resolution: int = 7,
        sampling_ratio: int = 2,
        patch_size: int = 16,
        table_grid: tuple[int, int, int] = (8, 14, 14),
        official_token_order: bool = False,
        official_pos_resize: bool = False,
        fused_attention: bool = True,
    ) -> None:
        super().__init__()
        self.pooler = ActorPooler(roi_extend, pooler_resolution, sampling_ratio, patch_size)
        self.table_grid = table_grid
        self.official_token_order = official_token_order
        self.official_pos_resize = official_pos_resize
        self.encoder_to_decoder = nn.Linear(encoder_dim, decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        # Xavier, as the official head re-initialises every parameter of more than one dimension,
        # the mask token included (U(+-0.088) at Cd=384).
        nn.init.xavier_uniform_(self.mask_token)
        t, h, w = table_grid
        self.register_buffer("pos_table", sinusoid_table(t * h * w, decoder_dim), persistent=False)
        self._resized_tables = ResizedTables()
        self.blocks = nn.ModuleList(
            DecoderBlock(
                decoder_dim,
                num_heads,
                num_classes,
                act_dim,
                act_layers,
                mlp_ratio=mlp_ratio,
                drop_path=r,
                fused_attention=fused_attention,
            )
            for r in drop_path_rates(drop_path_rate, depth)
        )
        self.apply(_init_decoder_weights)

    def forward(
        self,
        tokens: Tensor,
        indices: Tensor,
        grid: tuple[int, int, int],
        boxes: Tensor,
        image_sizes: Tensor,
    ) -> list[Tensor]:
        """Classify the actors in `boxes`.

        Args:
            tokens: Surviving encoder tokens (B, M, C) after the final norm.
            indices: Their global (t, h, w) flat indices (B, M).
            grid: Token grid (t, h, w).
            boxes: Last-stage boxes (B, Q, 4), xyxy in input pixels (detached by the caller).
            image_sizes: (B, 2) unpadded (height, width) per clip.

        Returns:
            Action logits (B, Q, num_classes) after every decoder block, last block last.
        """
        x, _ = self.decoder_input(tokens, indices, grid, boxes, image_sizes)
        M = tokens.shape[1]
        logits = []
        for block in self.blocks:
            x = block(x)
            logits.append(block.classify(x[:, M:]))
        return logits

    def decoder_input(
        self, tokens: Tensor, indices: Tensor, grid: tuple[int, int, int], boxes: Tensor, image_sizes: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The decoder's input sequence and where its video tokens sit (same arguments as `forward`).

        Returns:
            The sequence (B, M + Q, Cd): M video tokens, then Q actor features; and the global
            (t, h, w) flat indices (B, M) the video tokens are placed at (their own indices, or the
            official order's where `official_token_order` is set).
        """
        t, h, w = grid
        if self.official_token_order:
            indices = official_token_order(indices, h * w)
        x = self.encoder_to_decoder(tokens)  # (B, M, Cd)
        Cd = x.shape[-1]
        pos = self.position_table(h, w).to(x.dtype)  # (t*h*w, Cd)
        dense = scatter_tokens(x, indices, grid, fill=self.mask_token)
        dense = dense + pos.t().reshape(1, Cd, t, h, w)  # (t*h*w, Cd) -> (1, Cd, t, h, w)

        actors = self.pooler(dense, boxes, image_sizes)  # (B, Q, Cd)
        return torch.cat([x + pos[indices], actors], dim=1), indices  # actors get no position

    def position_table(self, h: int, w: int) -> Tensor:
        """The (t*h*w, Cd) decoder position table for an h x w token grid."""
        _, gh, gw = self.table_grid
        if self.official_pos_resize and h * w == gh * gw:
            return self.pos_table  # the official quirk: same token count, table used as laid out
        return self._resized_tables.get(self.pos_table, self.table_grid, (h, w))

    def decoder_attention(
        self,
        tokens: Tensor,
        indices: Tensor,
        grid: tuple[int, int, int],
        boxes: Tensor,
        image_sizes: Tensor,
        block: int = -1,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Re-run the decoder up to `block` and return that block's attention (for pictures).

        `forward` never computes attention maps (its blocks use the fused path); this runs the same
        blocks with the explicit path on the chosen one, so the outputs agree with `forward` up to
        floating-point rounding.

        Args:
            tokens: As in `forward`.
            indices: As in `forward`.
            grid: As in `forward`.
            boxes: As in `forward`.
            image_sizes: As in `forward`.
            block: Decoder block whose attention is returned (negative counts from the last).

        Returns:
            ``(attention, indices, logits)``: post-softmax attention (B, heads, M + Q, M + Q) of
            `block` over ``[M video tokens, Q actors]``, the global (t, h, w) flat indices (B, M)
            of the video tokens (see `decoder_input`), and the action logits (B, Q, num_classes)
            of that block.
        """
        depth = len(self.blocks)
        if not -depth <= block < depth:
            raise ValueError(
                f"block must be in [{-depth}, {depth - 1}] for a {depth}-block decoder, got {block}"
            )
        block %= depth
        x, indices = self.decoder_input(tokens, indices, grid, boxes, image_sizes)
        M = tokens.shape[1]
        for layer in self.blocks[:block]:
            x = layer(x)
        layer = self.blocks[block]
        x, attention = layer.attend(x, return_attention=True)
        x = layer.feed_forward(x)
        return attention, indices, layer.classify(x[:, M:])


class LinearActionHead(nn.Module):
    """Table 1a baseline: a linear classifier on RoI features of the encoder's own dense map."""

    def __init__(
        self,
        encoder_dim: int,
        num_classes: int,
        roi_extend: Sequence[float] = (0.0, 0.0),
        pooler_resolution: int = 7,
        sampling_ratio: int = 2,
        patch_size: int = 16,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.pooler = ActorPooler(roi_extend, pooler_resolution, sampling_ratio, patch_size)
        self.dropout = nn.Dropout(dropout)
        self.action_logits = nn.Linear(encoder_dim, num_classes)
        nn.init.normal_(self.action_logits.weight, std=0.01)
        nn.init.zeros_(self.action_logits.bias)

    def forward(
        self, tokens: Tensor, indices: Tensor, grid: tuple[int, int, int], boxes: Tensor, image_sizes: Tensor
    ) -> list[Tensor]:
        """Same inputs as `ContextRefinementHead.forward`; returns a one-element list of logits."""
        actors = self.pooler(scatter_tokens(tokens, indices, grid), boxes, image_sizes)  # (B, Q, C)
        return [self.action_logits(self.dropout(actors))]


def _init_decoder_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
