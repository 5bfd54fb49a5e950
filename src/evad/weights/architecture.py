"""The architecture a checkpoint implies, read from its tensor shapes (SPEC section 2).

Most of a ViT's size is in its shapes: the patch embedding kernel (C, 3, tubelet, patch, patch)
gives the width and the tubelet / patch size, the block indices give the depth, ``mlp.fc1`` the
MLP ratio, and ``encoder_to_decoder`` / the decoder blocks the decoder's width and depth. The head
count is not (``qkv`` is (3C, C) for any head count): it comes from the caller, a config, the
preset of the same width and depth, or C // 64 (every VideoMAE size but ViT-H's decoder).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from torch import Tensor

from evad.errors import UserError
from evad.models.factory import PRESETS, ModelConfig

_BLOCK = re.compile(r"(backbone|classification)\.blocks\.(\d+)\.")


def default_layers(depth: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Pruning and tap layers at the quarters of `depth` (ViT-B: (3, 6, 9), (2, 5, 8, 11))."""
    quarters = [max(1, round(depth * q / 4)) for q in (1, 2, 3, 4)]
    prune = tuple(sorted({min(q, depth - 1) for q in quarters[:3]}))
    tap = tuple(q - 1 for q in quarters)
    return prune, tap


def nearest_preset(embed_dim: int, depth: int) -> str | None:
    """The preset with this width and depth, if any."""
    for name, cfg in PRESETS.items():
        if (cfg.embed_dim, cfg.depth) == (embed_dim, depth):
            return name
    return None


def _depth(tensors: dict[str, Tensor], module: str) -> int:
    indices = [int(m.group(2)) for k in tensors if (m := _BLOCK.match(k)) and m.group(1) == module]
    return max(indices) + 1 if indices else 0


def backbone_fields(tensors: dict[str, Tensor], source: str) -> dict[str, Any]:
    """Backbone `ModelConfig` fields (no head count) from evad-named tensors.

    Raises:
        UserError: If the patch embedding is missing or is not a 3-channel square tubelet kernel.
    """
    proj = tensors.get("backbone.patch_embed.proj.weight")
    if proj is None or proj.ndim != 5:
        raise UserError(
            f"{source}: no video patch embedding (patch_embed.proj.weight, 5-D) in the checkpoint"
        )
    embed_dim, channels, tubelet, ph, pw = proj.shape
    if channels != 3 or ph != pw:
        raise UserError(
            f"{source}: patch embedding kernel {tuple(proj.shape)} is not (C, 3, t, p, p); evad takes RGB "
            "clips and square patches"
        )
    depth = _depth(tensors, "backbone")
    if depth == 0:
        raise UserError(f"{source}: no backbone blocks in the checkpoint")
    fields: dict[str, Any] = {
        "embed_dim": embed_dim,
        "depth": depth,
        "patch_size": ph,
        "tubelet_size": tubelet,
    }
    fc1 = tensors.get("backbone.blocks.0.mlp.fc1.weight")
    if fc1 is not None:
        fields["mlp_ratio"] = fc1.shape[0] / embed_dim
    return fields


def decoder_fields(tensors: dict[str, Tensor]) -> dict[str, Any]:
    """Decoder width, depth (at least that many blocks) and MLP ratio, where the tensors show them."""
    fields: dict[str, Any] = {}
    proj = tensors.get("classification.encoder_to_decoder.weight")
    norm = tensors.get("classification.blocks.0.norm1.weight")
    if proj is not None:
        fields["decoder_dim"] = proj.shape[0]
    elif norm is not None:
        fields["decoder_dim"] = norm.shape[0]
    depth = _depth(tensors, "classification")
    if depth:
        fields["decoder_depth"] = depth
    fc1 = tensors.get("classification.blocks.0.mlp.fc1.weight")
    if fc1 is not None:
        fields["decoder_mlp_ratio"] = fc1.shape[0] / fc1.shape[1]
    return fields


def _heads(dim: int, given: int | None, preset_heads: int, preset_dim: int, source: str, what: str) -> int:
    heads = given if given is not None else preset_heads if dim == preset_dim else max(1, dim // 64)
    if dim % heads:
        raise UserError(f"{source}: {what} width {dim} is not divisible by {heads} heads")
    return heads


def infer_model_config(
    tensors: dict[str, Tensor],
    source: str,
    preset: str | None = None,
    num_classes: int = 80,
    backbone: dict[str, Any] | None = None,
    decoder_heads: int | None = None,
) -> tuple[ModelConfig, str]:
    """A `ModelConfig` whose backbone (and decoder) fit evad-named `tensors`.

    Args:
        tensors: Converted tensors (evad names).
        source: Named in errors.
        preset: The preset giving everything the tensors do not show; default: the preset of the
            same width and depth, else "vit-b".
        num_classes: Action classes.
        backbone: Backbone fields known from elsewhere (a Hugging Face config); they win over shapes.
        decoder_heads: Decoder head count, if known.

    Returns:
        The config and the preset it starts from.
    """
    fields = {**backbone_fields(tensors, source), **(backbone or {})}
    name = preset or nearest_preset(fields["embed_dim"], fields["depth"]) or "vit-b"
    if name not in PRESETS:
        raise UserError(f"--model {name}: unknown preset; accepted: {', '.join(sorted(PRESETS))}")
    base = PRESETS[name]
    fields["num_heads"] = _heads(
        fields["embed_dim"], fields.get("num_heads"), base.num_heads, base.embed_dim, source, "backbone"
    )
    if fields["depth"] != base.depth:
        fields["prune_layers"], fields["tap_layers"] = default_layers(fields["depth"])
    dec = decoder_fields(tensors)
    if "decoder_dim" in dec:
        dec["decoder_heads"] = _heads(
            dec["decoder_dim"], decoder_heads, base.decoder_heads, base.decoder_dim, source, "decoder"
        )
    dec["decoder_depth"] = max(dec.get("decoder_depth", 0), base.decoder_depth)
    return dataclasses.replace(base, num_classes=num_classes, **fields, **dec), name
