"""Geometric ops: box arithmetic, RoIAlign and the FPN pooler, non-maximum suppression.

Everything runs in plain PyTorch on any device; where torchvision's compiled kernels load, RoIAlign
and NMS dispatch to them (``use_torchvision=None``), and tests check that both paths agree.
"""

from evad.ops.boxes import (
    assert_valid_boxes,
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    clip_boxes,
    generalized_box_iou,
    rescale_boxes,
)
from evad.ops.fastpath import torchvision_available
from evad.ops.nms import batched_nms, nms
from evad.ops.poolers import assign_fpn_levels, multi_scale_roi_align
from evad.ops.roi_align import roi_align

__all__ = [
    "assert_valid_boxes",
    "assign_fpn_levels",
    "batched_nms",
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xyxy_to_cxcywh",
    "clip_boxes",
    "generalized_box_iou",
    "multi_scale_roi_align",
    "nms",
    "rescale_boxes",
    "roi_align",
    "torchvision_available",
]
