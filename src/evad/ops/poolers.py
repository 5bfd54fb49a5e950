"""The RoIAlign poolers the heads call: per image, and from the FPN level a box's size selects.

`roi_align_per_image` pools the same number of boxes from every image (the classification head's
actor boxes); the localization branch pools 7x7 features per proposal from the FPN level chosen by
the box size (SPEC section 3), with ``roi_align(aligned=True)`` and sampling ratio 2 (section 8b):
`assign_fpn_levels` is the level rule, `multi_scale_roi_align` detectron2's ``ROIPooler``. Both
pool with `evad.ops.roi_align.roi_align`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from evad.ops.fastpath import capturing_graph
from evad.ops.roi_align import roi_align


def roi_align_per_image(
    input: Tensor,
    boxes: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 2,
    aligned: bool = True,
    use_torchvision: bool | None = None,
) -> Tensor:
    """`roi_align` for the same number of boxes on every image, returned per image.

    Args:
        input: ``(B, C, H, W)`` feature maps.
        boxes: ``(B, Q, 4)`` xyxy boxes, box ``q`` of image ``b`` pooled from ``input[b]``.
        output_size: As in `roi_align`.
        spatial_scale: As in `roi_align`.
        sampling_ratio: As in `roi_align`.
        aligned: As in `roi_align`.
        use_torchvision: As in `roi_align`.

    Returns:
        ``(B, Q, C, out_h, out_w)`` pooled features.
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    B, C = input.shape[:2]
    Q = boxes.shape[1]
    index = torch.arange(B, device=boxes.device, dtype=boxes.dtype)[:, None, None].expand(B, Q, 1)
    rois = torch.cat((index, boxes), dim=2).reshape(B * Q, 5)  # (B, Q, 5) -> (B*Q, 5)
    pooled = roi_align(input, rois, (out_h, out_w), spatial_scale, sampling_ratio, aligned, use_torchvision)
    return pooled.view(B, Q, C, out_h, out_w)  # (B*Q, C, S, S) -> (B, Q, C, S, S)


def assign_fpn_levels(
    boxes: Tensor,
    min_level: int = 2,
    max_level: int = 5,
    canonical_box_size: int = 224,
    canonical_level: int = 4,
) -> Tensor:
    """FPN level per box: ``floor(canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8))``.

    The rule of Lin et al. (FPN, eq. 1) as detectron2 writes it, clamped to
    ``[min_level, max_level]``. It is applied to the boxes as given, not clipped to the image
    (SPEC section 8b).

    Args:
        boxes: ``(K, 4)`` xyxy boxes in input-image pixels.
        min_level: Finest level (stride ``2 ** min_level``).
        max_level: Coarsest level.
        canonical_box_size: Box side that maps to ``canonical_level``.
        canonical_level: Level of a ``canonical_box_size`` square box.

    Returns:
        ``(K,)`` long levels.
    """
    size = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    levels = torch.floor(canonical_level + torch.log2(size / canonical_box_size + 1e-8))
    return levels.clamp(min=min_level, max=max_level).long()


def multi_scale_roi_align(
    features: Sequence[Tensor],
    boxes: Sequence[Tensor],
    output_size: int | tuple[int, int],
    sampling_ratio: int = 2,
    aligned: bool = True,
    min_level: int = 2,
    canonical_box_size: int = 224,
    canonical_level: int = 4,
    use_torchvision: bool | None = None,
    sync_free: bool | None = None,
) -> Tensor:
    """Pools every box from the FPN level its size selects (detectron2's ``ROIPooler``).

    Args:
        features: One ``(B, C, H_l, W_l)`` map per level, finest first; ``features[i]`` is level
            ``min_level + i`` with stride ``2 ** (min_level + i)`` input pixels.
        boxes: One ``(K_i, 4)`` tensor of xyxy input-pixel boxes per image (``len(boxes) == B``).
        output_size: ``out_h`` and ``out_w``, or one int for both.
        sampling_ratio: Samples per bin along each axis (see `roi_align`).
        aligned: Half-pixel alignment (see `roi_align`).
        min_level: Level of ``features[0]``; the coarsest is ``min_level + len(features) - 1``.
        canonical_box_size: See `assign_fpn_levels`.
        canonical_level: See `assign_fpn_levels`.
        use_torchvision: See `roi_align`.
        sync_free: Pool every box on every level and keep the one its level selects: no step
            depends on how many boxes fall on a level, so a GPU never waits for the host and a
            traced or compiled graph fits any boxes; 4x the RoIAlign work. None: on CUDA, when
            tracing (export) and inside torch.compile. Otherwise each level pools only its own boxes.

    Returns:
        ``(sum K_i, C, out_h, out_w)`` pooled features, image by image and box by box within an
        image (the same values either way).
    """
    if len(boxes) != features[0].shape[0]:
        raise ValueError(f"got boxes for {len(boxes)} images but features for {features[0].shape[0]}")
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    all_boxes = torch.cat(list(boxes))  # (sum K_i, 4)
    batch_index = torch.cat(
        [all_boxes.new_full((len(image_boxes),), i) for i, image_boxes in enumerate(boxes)]
    )
    rois = torch.cat((batch_index[:, None], all_boxes), dim=1)  # (sum K_i, 5)
    max_level = min_level + len(features) - 1
    levels = assign_fpn_levels(all_boxes, min_level, max_level, canonical_box_size, canonical_level)

    reference = features[0]
    pooled = reference.new_zeros(len(rois), reference.shape[1], out_h, out_w)
    if sync_free is None:
        sync_free = reference.is_cuda or capturing_graph()
    if sync_free:
        for i, feature in enumerate(features):
            level_pooled = roi_align(
                feature,
                rois,
                (out_h, out_w),
                spatial_scale=1.0 / 2 ** (min_level + i),
                sampling_ratio=sampling_ratio,
                aligned=aligned,
                use_torchvision=use_torchvision,
            )
            pooled = torch.where((levels == min_level + i)[:, None, None, None], level_pooled, pooled)
        return pooled
    for i, feature in enumerate(features):
        level = min_level + i
        # Levels without boxes still go through roi_align, so that the output stays in the graph.
        members = (levels == level).nonzero().squeeze(1)
        level_pooled = roi_align(
            feature,
            rois[members],
            (out_h, out_w),
            spatial_scale=1.0 / 2**level,
            sampling_ratio=sampling_ratio,
            aligned=aligned,
            use_torchvision=use_torchvision,
        )
        pooled = pooled.index_put((members,), level_pooled)
    return pooled
