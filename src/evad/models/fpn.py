"""Simple feature pyramid over the keyframe maps of a plain ViT (EVAD Sec. 3.3, SPEC section 3).

The four tapped keyframe maps (stride 16) are resized with nearest interpolation by x4, x2, x1 and
x0.5 to strides 4, 8, 16 and 32, then fused top-down as in FPN (Lin et al.): 1x1 laterals, nearest
x2 upsampling and sum, 3x3 output convolutions, no normalisation. Layer names follow detectron2 /
the official code (`fpn_lateral{2..5}`, `fpn_output{2..5}`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

LEVEL_SCALES = (4.0, 2.0, 1.0, 0.5)  # stride 16 -> strides 4, 8, 16, 32


class SimpleFPN(nn.Module):
    """Builds p2..p5 (B, out_channels, H/2^l, W/2^l) from four stride-16 keyframe maps."""

    def __init__(self, in_channels: int, out_channels: int = 256) -> None:
        super().__init__()
        self.out_channels = out_channels
        for level in range(2, 6):
            self.add_module(f"fpn_lateral{level}", nn.Conv2d(in_channels, out_channels, 1))
            self.add_module(f"fpn_output{level}", nn.Conv2d(out_channels, out_channels, 3, padding=1))
        for module in self.children():
            nn.init.kaiming_uniform_(module.weight, a=1)  # detectron2's c2_xavier_fill
            nn.init.zeros_(module.bias)

    def forward(self, keyframe_maps: Sequence[Tensor]) -> list[Tensor]:
        if len(keyframe_maps) != 4:
            raise ValueError(f"SimpleFPN takes 4 keyframe maps, got {len(keyframe_maps)}")
        inputs = [
            x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="nearest")
            for x, s in zip(keyframe_maps, LEVEL_SCALES, strict=True)
        ]
        laterals = [getattr(self, f"fpn_lateral{lvl}")(x) for lvl, x in zip(range(2, 6), inputs, strict=True)]
        outputs = [self.fpn_output5(laterals[-1])]
        top = laterals[-1]
        for lvl in (4, 3, 2):
            lateral = laterals[lvl - 2]
            # Nearest x2; `size=` keeps odd grids (H/16 odd) aligned with the finer level.
            top = lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")
            outputs.insert(0, getattr(self, f"fpn_output{lvl}")(top))
        return outputs  # [p2, p3, p4, p5]
