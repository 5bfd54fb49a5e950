"""The EVAD detector: backbone + localization branch + classification branch (EVAD Fig. 2).

The three parts only meet here. The backbone yields surviving tokens, their global indices and
keyframe maps; the localization branch (FPN + query head) turns the keyframe maps into person boxes;
the classification branch turns tokens and boxes into action logits. Other heads (class queries,
single-stage token matching) can be assembled the same way around the same backbone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from evad.models.fpn import SimpleFPN
from evad.models.heads.localization import QueryLocalizationHead
from evad.models.vit import VideoViT


def check_input_size(height: int, width: int, patch_size: int) -> None:
    """ValueError unless clips of `height` x `width` pixels fit the detector: multiples of the patch
    size, at least two patches each way and at least 32 pixels (the pyramid's stride-32 level)."""
    p = patch_size
    least = max(2 * p, 32)
    if height < least or width < least or height % p or width % p:
        raise ValueError(
            f"clip height and width must be multiples of the patch size {p} and at least {least}, "
            f"got {height}x{width}"
        )


def check_image_sizes(image_sizes: Tensor, height: int, width: int) -> None:
    """ValueError unless every (height, width) row is finite, positive and within the padded clip:
    a size past the clip puts boxes outside it, a NaN ends in an index error inside RoIAlign."""
    inside = torch.isfinite(image_sizes).all(1) & (image_sizes > 0).all(1)
    inside &= (image_sizes[:, 0] <= height) & (image_sizes[:, 1] <= width)
    if not inside.all():
        row = int((~inside).nonzero()[0])
        raise ValueError(
            f"image_sizes[{row}] = {image_sizes[row].tolist()} must be a positive (height, width) "
            f"no larger than the clips' {height}x{width}"
        )


class EVAD(nn.Module):
    """End-to-end video action detector with keyframe-centric token pruning.

    Args:
        backbone: The pruning video ViT, exposed as `model.backbone`.
        fpn: Feature pyramid over the backbone's keyframe maps.
        localization: Query-based person localization head over the FPN levels.
        classification: Action head taking (tokens, indices, grid, boxes, image_sizes) and returning
            a list of logits, one per supervised block (last = final prediction).
    """

    def __init__(
        self,
        backbone: VideoViT,
        fpn: SimpleFPN,
        localization: QueryLocalizationHead,
        classification: nn.Module,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.localization = localization
        self.classification = classification

    def forward(
        self, clips: Tensor, image_sizes: Tensor | None = None, keep_rate: float | None = None
    ) -> dict:
        """Detect actors and their actions on the keyframe of each clip.

        Args:
            clips: (B, 3, T, H, W) normalised clips, possibly zero-padded at the bottom/right.
            image_sizes: (B, 2) unpadded (height, width) of each clip; defaults to (H, W).
            keep_rate: Token keep rate rho for this call; defaults to the backbone's.

        Returns:
            A dict, the same in training and evaluation:
                pred_logits: (B, Q, 2) last-stage person / no-object logits.
                pred_boxes: (B, Q, 4) last-stage boxes, xyxy in input pixels.
                action_logits: (B, Q, K) action logits of the last classification block.
                aux_outputs: earlier stages as dicts with `pred_logits` and `pred_boxes`.
                aux_action_logits: earlier classification blocks' (B, Q, K) logits.
                image_sizes: (B, 2) float unpadded (height, width).
                kept_indices: (B, M) global (t, h, w) flat indices of the surviving tokens.
                grid: token grid (t, h, w).
                num_tokens: token count entering the encoder and after each pruning layer.
        """
        self.backbone.check_input(clips)
        B, _, _, H, W = clips.shape
        check_input_size(H, W, self.backbone.patch_size)
        if image_sizes is None:
            image_sizes = clips.new_tensor([H, W]).expand(B, 2)  # (2,) -> (B, 2)
        try:
            image_sizes = torch.as_tensor(image_sizes, dtype=torch.float32)  # on the device it is on
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"image_sizes must be a (B, 2) tensor or list of (height, width), got {image_sizes!r}"
            ) from None
        if image_sizes.shape != (B, 2):
            raise ValueError(
                f"image_sizes must be (B, 2) = ({B}, 2) (height, width), got {tuple(image_sizes.shape)}"
            )
        # On a GPU the check would wait for the device at every step; a graph (compile, export)
        # cannot branch on values.
        graph = torch.jit.is_tracing() or torch.compiler.is_compiling()
        if image_sizes.device.type == "cpu" and not graph:
            check_image_sizes(image_sizes, H, W)
        image_sizes = image_sizes.to(clips.device)
        enc = self.backbone(clips, keep_rate=keep_rate)
        features = self.fpn(enc.keyframe_maps)
        stages = self.localization(features, image_sizes)
        logits, boxes = stages[-1]
        actions = self.classification(enc.tokens, enc.indices, enc.grid, boxes.detach(), image_sizes)
        return {
            "pred_logits": logits,
            "pred_boxes": boxes,
            "action_logits": actions[-1],
            "aux_outputs": [{"pred_logits": lg, "pred_boxes": bx} for lg, bx in stages[:-1]],
            "aux_action_logits": actions[:-1],
            "image_sizes": image_sizes,
            "kept_indices": enc.indices,
            "grid": enc.grid,
            "num_tokens": enc.num_tokens,
        }
