"""Official EVAD checkpoints <-> evad's names (SPEC section 8; github MCG-NJU/EVAD).

The official model keeps the backbone at the top level of its state dict (``patch_embed``,
``blocks.{i}``, ``norm``), the feature pyramid as ``fpn_lateral{2..5}`` / ``fpn_output{2..5}``, the
learned proposals as ``init_proposal_{features,boxes}``, and everything else under ``det_head``:
the localization stages ``s0_headseries.{i}``, ``encoder_to_decoder``, ``mask_token`` and the
context decoder ``decoder.blocks.{j}`` (each with ``act_module`` and ``action_logits``). Module
names inside these parts are the same in evad, so converting is a prefix swap either way. The
person-detection loss stores ``criterion.empty_weight`` (the class weights [1, no-object weight]),
which evad computes instead of storing; `evad_to_official` writes it back so that the official
code loads the result strictly. Position tables are fixed sinusoids and not stored.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from evad.errors import UserError
from evad.weights.reading import Converted, rename_tensors

# (official prefix, evad prefix); a name matches the first pair whose official prefix starts it.
PREFIXES = (
    ("det_head.s0_headseries.", "localization.stages."),
    ("det_head.decoder.blocks.", "classification.blocks."),
    ("det_head.encoder_to_decoder.", "classification.encoder_to_decoder."),
    ("det_head.mask_token", "classification.mask_token"),
    ("init_proposal_features.", "localization.init_proposal_features."),
    ("init_proposal_boxes.", "localization.init_proposal_boxes."),
    ("fpn_lateral", "fpn.fpn_lateral"),
    ("fpn_output", "fpn.fpn_output"),
    ("patch_embed.", "backbone.patch_embed."),
    ("blocks.", "backbone.blocks."),
    ("norm.", "backbone.norm."),
)
EMPTY_WEIGHT = "criterion.empty_weight"
_LAYER_SCALE = re.compile(r"(^|\.)gamma_[12]$")


def _swap(name: str, pairs: tuple[tuple[str, str], ...]) -> str | None:
    for old, new in pairs:
        if name.startswith(old):
            return new + name[len(old) :]
    return None


def official_to_evad(tensors: dict[str, Tensor], source: str) -> Converted:
    """Rename an official EVAD state dict to evad's names."""
    scaled = [k for k in tensors if _LAYER_SCALE.search(k)]
    if scaled:
        raise UserError(f"{source}: {scaled[0]} is a layer-scale parameter; evad's blocks have none")
    return rename_tensors(tensors, lambda name: _swap(name, PREFIXES))


def evad_to_official(tensors: dict[str, Tensor], no_object_weight: float = 0.1) -> dict[str, Tensor]:
    """The official layout of an evad detector state dict (the inverse of `official_to_evad`).

    Args:
        tensors: evad parameter names -> tensors of a full `EVAD` model.
        no_object_weight: Written as ``criterion.empty_weight = [1, no_object_weight]``.

    Raises:
        UserError: For a tensor without an official counterpart (e.g. the "cls" pruning token).
    """
    reverse = tuple((new, old) for old, new in PREFIXES)
    out: dict[str, Tensor] = {}
    for name, value in tensors.items():
        target = _swap(name, reverse)
        if target is None:
            raise UserError(f"{name} has no counterpart in the official EVAD layout")
        out[target] = value
    out[EMPTY_WEIGHT] = torch.tensor([1.0, no_object_weight], dtype=torch.float32)
    return out
