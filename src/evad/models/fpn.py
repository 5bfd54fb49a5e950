"""Simple feature pyramid over the keyframe maps of a plain ViT (EVAD Sec. 3.3, SPEC section 3).

The four tapped keyframe maps (stride 16, the patch size) are resized with nearest interpolation by
x4, x2, x1 and x0.5 to strides 4, 8, 16 and 32, then fused top-down as in FPN (Lin et al.): 1x1
laterals, nearest x2 upsampling and sum, 3x3 output convolutions, no normalisation. Layer names
follow detectron2 / the official code (`fpn_lateral{2..5}`, `fpn_output{2..5}`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

LEVEL_STRIDES = (4, 8, 16, 32)  # p2..p5, the strides the localization head's RoIAlign pools them at


class SimpleFPN(nn.Module):
    """Builds p2..p5 (B, out_channels, H/2^l, W/2^l) from four keyframe maps of stride `patch_size`.

    Another patch size than 16 resizes by other factors (8: x2, x1, x0.5, x0.25), so that the levels
    keep strides 4 to 32.
    """

    def __init__(self, in_channels: int, out_channels: int = 256, patch_size: int = 16) -> None:
        super().__init__()
        if patch_size < 1 or 32 % patch_size:
            raise ValueError(f"the feature pyramid needs a patch size that divides 32, got {patch_size}")
        self.out_channels = out_channels
        self.scales = tuple(patch_size / stride for stride in LEVEL_STRIDES)  # 16: 4, 2, 1, 0.5

        def lateral() -> nn.Conv2d:
            return nn.Conv2d(in_channels, out_channels, 1)

        def output() -> nn.Conv2d:
            return nn.Conv2d(out_channels, out_channels, 3, padding=1)

        # Named one by one, as the official checkpoints name them (levels 2..5 = strides 4..32).
        self.fpn_lateral2, self.fpn_output2 = lateral(), output()
        self.fpn_lateral3, self.fpn_output3 = lateral(), output()
        self.fpn_lateral4, self.fpn_output4 = lateral(), output()
        self.fpn_lateral5, self.fpn_output5 = lateral(), output()
        for module in self.children():
            nn.init.kaiming_uniform_(module.weight, a=1)  # detectron2's c2_xavier_fill
            nn.init.zeros_(module.bias)

    def forward(self, keyframe_maps: Sequence[Tensor]) -> list[Tensor]:
        if len(keyframe_maps) != 4:
            raise ValueError(f"SimpleFPN takes 4 keyframe maps, got {len(keyframe_maps)}")
        inputs = [
            x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="nearest")
            for x, s in zip(keyframe_maps, self.scales, strict=True)
        ]
        lateral_convs = (self.fpn_lateral2, self.fpn_lateral3, self.fpn_lateral4, self.fpn_lateral5)
        output_convs = (self.fpn_output2, self.fpn_output3, self.fpn_output4, self.fpn_output5)
        laterals = [conv(x) for conv, x in zip(lateral_convs, inputs, strict=True)]
        top = laterals[-1]
        outputs = [output_convs[-1](top)]
        for level in (2, 1, 0):  # p4, p3, p2: each finer level adds the coarser one, upsampled
            # Nearest x2; `size=` keeps odd grids (H/16 odd) aligned with the finer level.
            top = laterals[level] + F.interpolate(top, size=laterals[level].shape[-2:], mode="nearest")
            outputs.insert(0, output_convs[level](top))
        return outputs  # [p2, p3, p4, p5]
