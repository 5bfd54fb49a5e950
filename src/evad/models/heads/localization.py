"""Query-based actor localization (EVAD Appendix B; Sparse R-CNN, Sun et al. CVPR 2021).

100 learned proposal boxes and features are refined over 6 stages. Each stage pools 7x7 RoI
features from the FPN levels, lets proposals attend to each other, mixes each proposal with its own
RoI through "dynamic instance interaction" (two 1x1 kernels generated from the proposal feature),
and predicts person / no-object logits and box deltas. Boxes are detached between stages and
every stage is supervised. Module and parameter names follow the official code so that released
checkpoints map one-to-one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from evad.ops.boxes import box_cxcywh_to_xyxy
from evad.ops.poolers import multi_scale_roi_align

DEFAULT_SCALE_CLAMP = math.log(100000.0 / 16)


def _tower(dim: int, depth: int) -> nn.ModuleList:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(dim, dim, bias=False), nn.LayerNorm(dim), nn.ReLU(inplace=True)]
    return nn.ModuleList(layers)


class DynamicConv(nn.Module):
    """Dynamic instance interaction: RoI (49, d) @ k1 (d, d_dyn) -> @ k2 (d_dyn, d) -> Linear."""

    def __init__(self, hidden_dim: int = 256, dim_dynamic: int = 64, pooler_resolution: int = 7) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.dim_dynamic = dim_dynamic
        self.num_params = hidden_dim * dim_dynamic
        self.dynamic_layer = nn.Linear(hidden_dim, 2 * self.num_params)
        self.norm1 = nn.LayerNorm(dim_dynamic)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.activation = nn.ReLU(inplace=True)
        self.out_layer = nn.Linear(hidden_dim * pooler_resolution**2, hidden_dim)
        self.norm3 = nn.LayerNorm(hidden_dim)

    def forward(self, pro_features: Tensor, roi_features: Tensor) -> Tensor:
        """Mix proposal features (R, d) with their RoI features (R, S*S, d); returns (R, d)."""
        params = self.dynamic_layer(pro_features)  # (R, 2 * d * d_dyn)
        kernel1 = params[:, : self.num_params].view(-1, self.hidden_dim, self.dim_dynamic)  # (R, d, d_dyn)
        kernel2 = params[:, self.num_params :].view(-1, self.dim_dynamic, self.hidden_dim)  # (R, d_dyn, d)
        x = self.activation(self.norm1(torch.bmm(roi_features, kernel1)))  # (R, S*S, d_dyn)
        x = self.activation(self.norm2(torch.bmm(x, kernel2)))  # (R, S*S, d)
        x = self.out_layer(x.flatten(1))  # (R, S*S, d) -> (R, S*S*d) -> (R, d)
        return self.activation(self.norm3(x))


class RCNNStage(nn.Module):
    """One refinement stage: RoI pooling, proposal self-attention, dynamic interaction, FFN, predictions."""

    def __init__(
        self,
        hidden_dim: int = 256,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        dim_dynamic: int = 64,
        pooler_resolution: int = 7,
        sampling_ratio: int = 2,
        num_cls_layers: int = 1,
        num_reg_layers: int = 3,
        dropout: float = 0.0,
        bbox_weights: tuple[float, float, float, float] = (2.0, 2.0, 1.0, 1.0),
        scale_clamp: float = DEFAULT_SCALE_CLAMP,
        checkpoint_interaction: bool = False,
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.checkpoint_interaction = checkpoint_interaction
        self.pooler_resolution = pooler_resolution
        self.sampling_ratio = sampling_ratio
        self.self_attn = nn.MultiheadAttention(hidden_dim, num_heads, dropout=dropout, batch_first=True)
        self.inst_interact = DynamicConv(hidden_dim, dim_dynamic, pooler_resolution)
        self.linear1 = nn.Linear(hidden_dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, hidden_dim)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.norm3 = nn.LayerNorm(hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.cls_module = _tower(hidden_dim, num_cls_layers)
        self.reg_module = _tower(hidden_dim, num_reg_layers)
        self.class_logits = nn.Linear(hidden_dim, 2)  # person, no-object
        self.bboxes_delta = nn.Linear(hidden_dim, 4)
        self.bbox_weights = bbox_weights
        self.scale_clamp = scale_clamp

    def forward(
        self, features: Sequence[Tensor], boxes: Tensor, pro_features: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Refine boxes (B, Q, 4, xyxy pixels) and proposal features (B, Q, d).

        Returns:
            Person logits (B, Q, 2), new boxes (B, Q, 4) and new proposal features (B, Q, d).
        """
        B, Q, d = pro_features.shape
        rois = multi_scale_roi_align(
            features, list(boxes.unbind(0)), self.pooler_resolution, sampling_ratio=self.sampling_ratio
        )  # (B*Q, d, S, S)
        rois = rois.flatten(2).transpose(1, 2)  # (B*Q, d, S, S) -> (B*Q, S*S, d)

        x = self.norm1(
            pro_features + self.dropout(self.self_attn(pro_features, pro_features, pro_features)[0])
        )
        x = x.reshape(B * Q, d)  # (B, Q, d) -> (B*Q, d)
        if self.checkpoint_interaction and self.training and torch.is_grad_enabled():
            # Recomputed in the backward: only its inputs are kept, not the per-proposal kernels
            # (B*Q x 2*d*d_dyn) and the (B*Q, S*S, d) maps between them. Same values and gradients.
            interaction = checkpoint(self.inst_interact, x, rois, use_reentrant=False)
        else:
            interaction = self.inst_interact(x, rois)
        x = self.norm2(x + self.dropout(interaction))
        x = self.norm3(x + self.dropout(self.linear2(self.dropout(torch.relu(self.linear1(x))))))

        cls_feature, reg_feature = x, x
        for layer in self.cls_module:
            cls_feature = layer(cls_feature)
        for layer in self.reg_module:
            reg_feature = layer(reg_feature)
        logits = self.class_logits(cls_feature).view(B, Q, 2)  # (B*Q, 2) -> (B, Q, 2)
        deltas = self.bboxes_delta(reg_feature)  # (B*Q, 4)
        # boxes (B, Q, 4) -> (B*Q, 4); decoded (B*Q, 4) -> (B, Q, 4)
        new_boxes = self.apply_deltas(deltas, boxes.reshape(B * Q, 4)).view(B, Q, 4)
        return logits, new_boxes, x.view(B, Q, d)  # x (B*Q, d) -> (B, Q, d)

    def apply_deltas(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Decode (dx, dy, dw, dh) against xyxy boxes, Faster R-CNN style with weights (2, 2, 1, 1).

        Always in float32: under bf16 autocast, coordinates past 256 pixels would snap to 2 or 4
        pixels, and fp16 would overflow exp() at the clamp."""
        deltas, boxes = deltas.float(), boxes.float()
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.bbox_weights
        dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
        dw = (deltas[:, 2] / ww).clamp(max=self.scale_clamp)  # keep exp() finite
        dh = (deltas[:, 3] / wh).clamp(max=self.scale_clamp)
        cx, cy = dx * widths + ctr_x, dy * heights + ctr_y
        w, h = dw.exp() * widths, dh.exp() * heights
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


class QueryLocalizationHead(nn.Module):
    """Learned proposals refined by `num_stages` RCNN stages into person boxes and scores.

    Args:
        num_queries: Number of proposals n (100).
        num_stages: Refinement stages (6).
        hidden_dim: Proposal feature width; must equal the FPN width (256).
        **stage_kwargs: Passed to every `RCNNStage`.
    """

    def __init__(
        self, num_queries: int = 100, num_stages: int = 6, hidden_dim: int = 256, **stage_kwargs
    ) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.init_proposal_features = nn.Embedding(num_queries, hidden_dim)
        self.init_proposal_boxes = nn.Embedding(num_queries, 4)
        # Every proposal starts as the whole image (cx, cy, w, h) = (0.5, 0.5, 1, 1).
        nn.init.constant_(self.init_proposal_boxes.weight[:, :2], 0.5)
        nn.init.constant_(self.init_proposal_boxes.weight[:, 2:], 1.0)
        self.stages = nn.ModuleList(RCNNStage(hidden_dim, **stage_kwargs) for _ in range(num_stages))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.stages.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, features: Sequence[Tensor], image_sizes: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Run all stages on FPN levels p2..p5.

        Args:
            features: FPN maps [p2, p3, p4, p5], each (B, d, H_l, W_l).
            image_sizes: (B, 2) unpadded (height, width) of each clip; proposals scale with it.

        Returns:
            Per stage, person logits (B, Q, 2) and boxes (B, Q, 4) in input pixels (xyxy).
        """
        B = image_sizes.shape[0]
        whwh = image_sizes.flip(-1).repeat(1, 2).float()  # (h, w) -> (w, h, w, h); boxes stay float32
        boxes = box_cxcywh_to_xyxy(self.init_proposal_boxes.weight)[None] * whwh[:, None]  # (B, Q, 4)
        pro_features = self.init_proposal_features.weight[None].repeat(B, 1, 1)  # (Q, d) -> (B, Q, d)
        outputs = []
        for stage in self.stages:
            logits, new_boxes, pro_features = stage(features, boxes, pro_features)
            outputs.append((logits, new_boxes))
            boxes = new_boxes.detach()
        return outputs
