"""Per-keyframe detections: the typed result of post-processing."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Detections:
    """Actors detected on one keyframe.

    Attributes:
        boxes: (K, 4) xyxy boxes in pixels of the target frame size.
        person_scores: (K,) person probabilities.
        action_scores: (K, num_classes) independent action probabilities (sigmoid).
        query_indices: (K,) which of the model's proposals each detection came from.
        image_size: (height, width) the boxes refer to.
    """

    boxes: Tensor
    person_scores: Tensor
    action_scores: Tensor
    query_indices: Tensor
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def normalized_boxes(self) -> Tensor:
        """Boxes divided by (width, height, width, height), as AVA CSV files store them."""
        h, w = self.image_size
        return self.boxes / self.boxes.new_tensor([w, h, w, h])
