"""VideoMAE checkpoints under evad's names (VideoMAE, Tong et al. NeurIPS 2022; SPEC sections 6 and 8).

EVAD initialises its backbone from VideoMAE, and the blocks of VideoMAE's pre-training decoder
have the layout of EVAD's context-decoder blocks, so they can initialise the first of them. Three
layouts are read:

- VideoMAE pre-training: ``encoder.{patch_embed,blocks,norm}`` -> backbone,
  ``decoder.blocks.{j}`` -> ``classification.blocks.{j}``, ``encoder_to_decoder`` and
  ``mask_token`` -> the classification branch; the pixel head ``decoder.{norm,head}`` is dropped.
  (The official loader renames only ``decoder.*`` and ``encoder_to_decoder.*`` into its head, so
  there the top-level ``mask_token`` finds no match and the decoder's stays at its Xavier start;
  evad loads it. The paper's recipe starts from fine-tuned weights, which have none.)
- VideoMAE fine-tuned: ``patch_embed``, ``blocks``, ``norm`` -> backbone; the video classifier
  (``fc_norm``, ``head``) is dropped. A bare evad backbone state dict has the same names.
- Hugging Face transformers (``[videomae.]embeddings``, ``encoder.layer.{i}``, ``layernorm``, and
  for pre-training ``decoder.decoder_layers.{j}``): separate query / key / value Linears are fused
  into evad's ``qkv`` weight with ``q_bias`` / ``v_bias`` (the key bias must be zero, as VideoMAE
  never learns one).
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from evad.errors import UserError
from evad.weights.reading import Converted, rename_tensors

# evad block parameter names shared by VideoMAE's original code.
_BLOCK_PARTS = (
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.q_bias",
    "attn.v_bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)
_BACKBONE_TOP = ("patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias")
_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_LAYER_SCALE = re.compile(r"(^|\.)gamma_[12]$")


def _check_no_layer_scale(tensors: dict[str, Tensor], source: str) -> None:
    scaled = [k for k in tensors if _LAYER_SCALE.search(k)]
    if scaled:
        raise UserError(
            f"{source}: {scaled[0]} is a layer-scale parameter; evad's blocks have none (VideoMAE "
            "checkpoints trained with init_values > 0 are not supported)"
        )


def _block_or_top(rest: str, prefix: str) -> str | None:
    """evad name of a VideoMAE backbone or decoder parameter `rest`, under `prefix`."""
    match = _BLOCK.fullmatch(rest)
    if match and match.group(2) in _BLOCK_PARTS:
        return f"{prefix}blocks.{match.group(1)}.{match.group(2)}"
    if prefix == "backbone." and rest in _BACKBONE_TOP:
        return prefix + rest
    return None


def _videomae_name(name: str) -> str | None:
    if name in ("encoder_to_decoder.weight", "mask_token"):
        return f"classification.{name}"
    if name.startswith("decoder."):
        return _block_or_top(name.removeprefix("decoder."), "classification.")
    return _block_or_top(name.removeprefix("encoder.").removeprefix("backbone."), "backbone.")


def videomae_to_evad(tensors: dict[str, Tensor], source: str) -> Converted:
    """Rename an original VideoMAE (pre-training or fine-tuned) state dict to evad's names."""
    _check_no_layer_scale(tensors, source)
    return rename_tensors(tensors, _videomae_name)


# Hugging Face VideoMAELayer part -> evad Block part.
_HF_PARTS = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_HF_LAYER = re.compile(r"(encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.+)\.(weight|bias)")
_HF_ATTENTION = re.compile(r"(encoder\.layer|decoder\.decoder_layers)\.(\d+)\.attention\.attention\.(.+)")
_HF_TOP = {
    "embeddings.patch_embeddings.projection.weight": "backbone.patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "backbone.patch_embed.proj.bias",
    "layernorm.weight": "backbone.norm.weight",
    "layernorm.bias": "backbone.norm.bias",
    "encoder_to_decoder.weight": "classification.encoder_to_decoder.weight",
    "mask_token": "classification.mask_token",
}


# evad attention part -> the HF part it is made from (the query for the fused qkv).
_FUSED_FROM = {"attn.qkv.weight": "query.weight", "attn.q_bias": "query.bias", "attn.v_bias": "value.bias"}


def _fuse_attention(parts: dict[str, Tensor], where: str, source: str) -> tuple[dict[str, Tensor], bool]:
    """evad ``qkv.weight`` (3C, C), ``q_bias``, ``v_bias`` from one HF attention's query/key/value.

    Returns the tensors and whether the biases had to be filled with zeros (no ``qv_bias``).
    """
    missing = [p for p in ("query.weight", "key.weight", "value.weight") if p not in parts]
    if missing:
        raise UserError(f"{source}: {where}.attention.attention.{missing[0]} is missing")
    key_bias = parts.get("key.bias")
    if key_bias is not None and torch.count_nonzero(key_bias):
        raise UserError(
            f"{source}: {where}.attention.attention.key.bias is not zero; evad's key bias is fixed at 0"
        )
    q, k, v = parts["query.weight"], parts["key.weight"], parts["value.weight"]
    out = {"attn.qkv.weight": torch.cat([q, k, v], dim=0)}  # 3 x (C, C) -> (3C, C)
    q_bias = parts.get("query.bias", parts.get("q_bias"))
    v_bias = parts.get("value.bias", parts.get("v_bias"))
    filled = q_bias is None and v_bias is None
    zeros = torch.zeros(q.shape[0], dtype=q.dtype)
    out["attn.q_bias"] = zeros if q_bias is None else q_bias
    out["attn.v_bias"] = zeros.clone() if v_bias is None else v_bias
    return out, filled


def hf_to_evad(tensors: dict[str, Tensor], source: str) -> Converted:
    """Rename a Hugging Face transformers VideoMAE state dict (with or without ``videomae.``)."""
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    dropped, notes = [], []
    attention: dict[tuple[str, str], dict[str, Tensor]] = {}
    for full, value in tensors.items():
        name = full.removeprefix("videomae.")
        target = _HF_TOP.get(name)
        attn = _HF_ATTENTION.fullmatch(name)
        layer = _HF_LAYER.fullmatch(name)
        if target is not None:
            out[target], origin[target] = value, full
        elif attn:
            attention.setdefault((attn.group(1), attn.group(2)), {})[attn.group(3)] = value
        elif layer and layer.group(3) in _HF_PARTS:
            module = "backbone" if layer.group(1) == "encoder.layer" else "classification"
            target = f"{module}.blocks.{layer.group(2)}.{_HF_PARTS[layer.group(3)]}.{layer.group(4)}"
            out[target], origin[target] = value, full
        else:
            dropped.append(full)
    filled = False
    for (stack, index), parts in attention.items():
        module = "backbone" if stack == "encoder.layer" else "classification"
        fused, zeros = _fuse_attention(parts, f"{stack}.{index}", source)
        filled |= zeros
        where = f"{stack}.{index}.attention.attention."
        for part, value in fused.items():
            out[f"{module}.blocks.{index}.{part}"] = value
            origin[f"{module}.blocks.{index}.{part}"] = where + _FUSED_FROM[part]
    if filled:
        notes.append(
            "the checkpoint has no query/value biases (qv_bias false): evad's q_bias and v_bias set to 0"
        )
    return Converted(out, origin, dropped, notes)


def hf_backbone_fields(config: dict, source: str) -> dict[str, object]:
    """`ModelConfig` backbone fields from a Hugging Face VideoMAE ``config.json``."""
    if config.get("model_type") != "videomae":
        raise UserError(f"{source}: model_type {config.get('model_type')!r} is not 'videomae'")
    if config.get("num_channels", 3) != 3 or config.get("hidden_act", "gelu") != "gelu":
        raise UserError(f"{source}: evad's backbone takes 3 channels and uses GELU")
    hidden = int(config.get("hidden_size", 768))

    def square(key: str, default: int) -> int:
        value = config.get(key, default)
        if isinstance(value, list | tuple):
            if len(set(value)) != 1:
                raise UserError(f"{source}: {key} {value} is not square; evad's patches are square")
            value = value[0]
        return int(value)

    return {
        "embed_dim": hidden,
        "depth": int(config.get("num_hidden_layers", 12)),
        "num_heads": int(config.get("num_attention_heads", 12)),
        "mlp_ratio": int(config.get("intermediate_size", 4 * hidden)) / hidden,
        "patch_size": square("patch_size", 16),
        "tubelet_size": int(config.get("tubelet_size", 2)),
        "num_frames": int(config.get("num_frames", 16)),
        "pretrain_img_size": square("image_size", 224),
    }


def hf_notes(config: dict) -> list[str]:
    """Remarks on HF settings evad does not reproduce exactly."""
    eps = config.get("layer_norm_eps", 1e-12)
    if eps != 1e-6:
        return [
            f"the checkpoint's layer norms use eps {eps:g}; evad's use 1e-6 (outputs differ very slightly)"
        ]
    return []
