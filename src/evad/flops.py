"""FLOPs in the paper's convention (SPEC section 7): one multiply-add is one FLOP.

Counting uses PyTorch's own `torch.utils.flop_counter`, which counts matrix products and
convolutions (2 per multiply-add; we halve). Attention products are counted whether the explicit
path or a fused kernel computes them: PyTorch has no formula for the CPU flash kernel, so we add
one built on its own `sdpa_flop_count`. `nn.MultiheadAttention` (the localization head's
self-attention among proposals) runs its plain path while counted: its inference fast path is one
fused operator (``_native_multi_head_attention``) that PyTorch has no formula for, so its
projections and attention products went uncounted. Activations, normalisation, interpolation and
RoIAlign's bilinear sampling are not counted. fvcore's defaults (the paper's counter) leave out the
activations too, but count each layer norm at 5 FLOPs an element: 0.25 GFLOPs more for ViT-B at
224 and keep rate 1.0 (0.17 at 0.7), 0.1% of the total.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from evad.layers.attention import scoring_method
from evad.models.detector import check_input_size
from evad.ops.roi_align import pure_pytorch_method


def _cpu_flash_attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_formulas() -> dict:
    formulas = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        formulas[op] = _cpu_flash_attention_flop
    return formulas


#: Whole-detector GFLOPs reported in the paper (SPEC section 7): {(model, img_size): {keep_rate: GFLOPs}}.
PAPER_GFLOPS: dict[tuple[str, int], dict[float, float]] = {
    ("vit-b", 224): {1.0: 223.8, 0.9: 186.3, 0.8: 157.0, 0.7: 134.2, 0.6: 116.3},
    ("vit-b", 256): {1.0: 311.9, 0.7: 182.3},
    ("vit-b", 288): {1.0: 424.5, 0.9: 346.3, 0.8: 287.4, 0.7: 242.8, 0.6: 208.9},
    ("vit-l", 288): {0.7: 737.0},
}

#: The pruning ablations of paper Table 1b (ViT-B, 224 px, rho 0.7): {pruning: GFLOPs}. Its "GAP" row
#: is the default attention pruning (134.2 above).
PAPER_PRUNING_GFLOPS: dict[str, float] = {"random": 158.9, "cls": 134.2}


@dataclass
class FlopReport:
    """Multiply-adds of one forward pass, in GFLOPs (1e9 multiply-adds)."""

    gflops: float
    backbone_gflops: float
    tokens: list[int]
    by_module: dict[str, float]

    def as_dict(self) -> dict:
        return {"gflops": self.gflops, "backbone_gflops": self.backbone_gflops, "tokens": self.tokens}


@torch.no_grad()
def count_flops(model: torch.nn.Module, img_size: int = 224, keep_rate: float | None = None) -> FlopReport:
    """Count one batch-1 forward pass of `model` on a square clip of side `img_size`.

    The clip is made in the model's dtype, so a model cast with ``.half()`` / ``.bfloat16()`` is
    counted as it is (the count does not depend on the dtype). The model is put in eval mode for the
    count and restored afterwards.
    """
    check_input_size(img_size, img_size, model.backbone.patch_size)
    frames = model.backbone.num_frames
    weight = next(model.parameters())  # the clip in the model's device and dtype (model.bfloat16())
    clip = torch.zeros(1, 3, frames, img_size, img_size, device=weight.device, dtype=weight.dtype)
    was_training = model.training
    mha_fastpath = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    try:
        # RoIAlign by gathering: its arithmetic is elementwise and so uncounted, as in fvcore (the
        # matmul method computes the same values with counted matrix products). Pruning layers score
        # by explicit attention rows on every device, so that the count does not depend on it.
        counter = FlopCounterMode(display=False, custom_mapping=_custom_formulas())
        torch.backends.mha.set_fastpath_enabled(False)
        with pure_pytorch_method("gather"), scoring_method("blockwise"), counter:
            out = model(clip, keep_rate=keep_rate)
    finally:
        torch.backends.mha.set_fastpath_enabled(mha_fastpath)
        model.train(was_training)
    counts = counter.get_flop_counts()
    total = sum(counts["Global"].values()) / 2
    per_module = {
        name: sum(v.values()) / 2 / 1e9
        for name, v in counts.items()
        if name.count(".") == 1 and name != "Global"
    }
    backbone = sum(v for name, v in per_module.items() if name.endswith(".backbone")) * 1e9
    return FlopReport(total / 1e9, backbone / 1e9, list(out["num_tokens"]), per_module)
