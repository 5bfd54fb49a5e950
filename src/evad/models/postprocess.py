"""Prediction dict -> per-keyframe `Detections` (SPEC sections 3 and 8b)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from evad.ops.boxes import rescale_boxes
from evad.structures.detections import Detections

_KEYS = ("pred_logits", "pred_boxes", "action_logits", "image_sizes")


class PostProcess:
    """Turns the detector's prediction dict into detections on each keyframe.

    Person probability is the softmax of the last localization stage; proposals with probability
    >= `person_threshold` are kept (all of them if none passes); no NMS is applied, as in the
    official model. Action scores are the sigmoid of the last decoder block, not multiplied by the
    person score. Boxes are clipped to [0, W-1] x [0, H-1] of the unpadded input, rescaled to the
    target (original) frame size and clamped to it.

    Args:
        person_threshold: Minimum person probability (0.7).
        keep_all_if_none: Keep every proposal of a keyframe where none passes the threshold.
    """

    def __init__(self, person_threshold: float = 0.7, keep_all_if_none: bool = True) -> None:
        try:  # a bool is a number to Python, but True is no threshold a user means
            inside = not isinstance(person_threshold, bool) and 0.0 <= person_threshold <= 1.0
        except TypeError:  # a string from a config or command line
            inside = False
        if not inside:
            raise ValueError(f"person_threshold must be in [0, 1], got {person_threshold!r}")
        self.person_threshold = person_threshold
        self.keep_all_if_none = keep_all_if_none

    @torch.no_grad()
    def __call__(
        self, outputs: dict, target_sizes: Tensor | Sequence[Sequence[int]] | None = None
    ) -> list[Detections]:
        """Post-process a batch.

        Args:
            outputs: The detector's prediction dict (`pred_logits`, `pred_boxes`, `action_logits`,
                `image_sizes`).
            target_sizes: (B, 2) original (height, width) per clip; defaults to the input size.
        """
        missing = [k for k in _KEYS if not isinstance(outputs, Mapping) or k not in outputs]
        if missing:
            raise ValueError(f"outputs must be the detector's prediction dict; missing {', '.join(missing)}")
        person = outputs["pred_logits"].softmax(-1)[..., 0]  # (B, Q)
        actions = outputs["action_logits"].sigmoid()  # (B, Q, K)
        in_sizes = outputs["image_sizes"].to(outputs["pred_boxes"].dtype)
        if target_sizes is None:
            target_sizes = in_sizes
        target_sizes = torch.as_tensor(target_sizes, dtype=in_sizes.dtype, device=in_sizes.device)
        if target_sizes.shape != in_sizes.shape:
            raise ValueError(
                f"target_sizes must be (B, 2) = {tuple(in_sizes.shape)} (height, width) per clip, "
                f"got {tuple(target_sizes.shape)}"
            )
        whole = torch.isfinite(target_sizes) & (target_sizes > 0) & (target_sizes == target_sizes.round())
        if not whole.all():  # a fractional size would be cut to whole pixels in `image_size`
            raise ValueError(
                f"target_sizes must be positive whole (height, width) rows, got {target_sizes.tolist()}"
            )
        boxes = rescale_boxes(outputs["pred_boxes"], in_sizes, target_sizes)  # (B, Q, 4)
        results = []
        for b in range(boxes.shape[0]):
            keep = person[b] >= self.person_threshold
            if not keep.any() and self.keep_all_if_none:
                keep = torch.ones_like(keep)
            idx = keep.nonzero().squeeze(1)  # (K, 1) -> (K,)
            th, tw = (int(v) for v in target_sizes[b].tolist())
            results.append(Detections(boxes[b, idx], person[b, idx], actions[b, idx], idx, (th, tw)))
        return results
