"""Loading any supported checkpoint into an evad model, with a plain-words report (EVAD issue 6).

`load_pretrained` reads a file or folder (`evad.weights.reading`), recognises its layout, renames
its tensors to evad's names (`videomae`, `official`), and loads those that fit. What the model
has that the checkpoint lacks stays at its initial value and what the checkpoint has that the
model does not use is ignored; both are listed in the `LoadReport`. A tensor whose shape differs
is an error naming the tensor and both shapes, except the action classifier when only the class
count differs (fine-tuning on another dataset), which is left at initialisation and reported.

`load_backbone` builds the `VideoViT` a checkpoint describes (Hugging Face ``config.json``, evad or
official config, or the tensor shapes) and loads it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from evad.engine.checkpoint import check_finite, unwrap
from evad.errors import UserError
from evad.models.factory import ModelConfig, build_backbone
from evad.models.vit import VideoViT
from evad.weights.architecture import infer_model_config
from evad.weights.evad_format import holds_detector, model_config_from_info
from evad.weights.official import official_to_evad
from evad.weights.official_config import parse_official_config
from evad.weights.reading import CONFIG_FILE, Checkpoint, Converted, read_checkpoint
from evad.weights.videomae import hf_backbone_fields, hf_notes, hf_to_evad, videomae_to_evad

logger = logging.getLogger(__name__)

LAYOUTS = ("videomae", "videomae-hf", "evad-official", "evad")
LAYOUT_NAMES = {
    "videomae": "VideoMAE",
    "videomae-hf": "Hugging Face VideoMAE",
    "evad-official": "official EVAD",
    "evad": "evad",
}
_EVAD_MODULES = ("backbone.", "fpn.", "localization.", "classification.")
_CLASSIFIER = re.compile(r"classification\.(blocks\.\d+\.)?action_logits\.(weight|bias)")
_SHOWN = 6


def _tensors(n: int) -> str:
    return f"{n} tensor{'s' if n != 1 else ''}"


def describe(names: list[str]) -> str:
    """A short list of tensor names: all of them when few, else counts per top-level module."""
    if len(names) <= _SHOWN:
        return ", ".join(names)
    counts = Counter(n.split(".")[0] for n in names)
    return ", ".join(f"{module}.* ({n})" for module, n in counts.items())


@dataclass
class LoadReport:
    """What happened to each tensor when a checkpoint was loaded.

    Attributes:
        source: The file or folder read.
        layout: One of `LAYOUTS`.
        loaded: evad names loaded.
        missing: evad names the model has and the checkpoint lacks (left at initialisation).
        ignored: Checkpoint names evad does not use.
        skipped: Action-classifier tensors of another class count (left at initialisation).
        notes: Other remarks.
    """

    source: str
    layout: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines in plain words."""
        lines = [f"{self.source}: loaded {_tensors(len(self.loaded))} ({LAYOUT_NAMES[self.layout]} layout)"]
        if self.ignored:
            lines.append(f"ignored {_tensors(len(self.ignored))} not used by evad: {describe(self.ignored)}")
        if self.skipped:
            lines.append(
                f"action classifier of another class count, left at initialisation: {describe(self.skipped)}"
            )
        if self.missing:
            lines.append(f"not in the checkpoint, left at initialisation: {describe(self.missing)}")
        return "\n".join(lines + self.notes)


def detect_layout(ckpt: Checkpoint) -> str | None:
    """The layout of a read checkpoint, or None when it is none of `LAYOUTS`."""
    if ckpt.evad_info is not None:
        return "evad"
    if ckpt.hf_config is not None:
        return "videomae-hf"
    names = list(ckpt.tensors)
    if any(n.startswith(("det_head.", "fpn_lateral", "init_proposal_")) for n in names):
        return "evad-official"
    if all(n.startswith(_EVAD_MODULES) for n in names) and any(
        n.startswith("backbone.blocks.") for n in names
    ):
        return "evad"
    bare = [n.removeprefix("videomae.") for n in names]
    if any(n.startswith(("embeddings.patch_embeddings.", "encoder.layer.")) for n in bare):
        return "videomae-hf"
    bare = [n.removeprefix("encoder.").removeprefix("backbone.") for n in names]
    if any(n.startswith(("patch_embed.proj.", "blocks.0.attn.qkv.")) for n in bare):
        return "videomae"
    return None


def resolve_layout(ckpt: Checkpoint, requested: str = "auto") -> str:
    """`requested` checked against the detected layout ("auto": the detected one).

    Raises:
        UserError: If the layout is not recognised or differs from the requested one.
    """
    if requested != "auto" and requested not in LAYOUTS:
        raise UserError(f"unknown checkpoint layout {requested!r}; accepted: auto, {', '.join(LAYOUTS)}")
    found = detect_layout(ckpt)
    if found is None:
        first = ", ".join(list(ckpt.tensors)[:3])
        raise UserError(
            f"{ckpt.path}: not a VideoMAE, Hugging Face VideoMAE, official EVAD or evad checkpoint "
            f"(its tensors start with {first})"
        )
    if requested not in ("auto", found):
        raise UserError(
            f"{ckpt.path}: looks like {LAYOUT_NAMES[found]} weights, not {LAYOUT_NAMES[requested]}"
        )
    return found


def to_evad(ckpt: Checkpoint, layout: str) -> Converted:
    """The checkpoint's tensors under evad's names."""
    source = str(ckpt.path)
    if layout == "videomae":
        return videomae_to_evad(ckpt.tensors, source)
    if layout == "videomae-hf":
        converted = hf_to_evad(ckpt.tensors, source)
        converted.notes += hf_notes(ckpt.hf_config or {})
        return converted
    if layout == "evad-official":
        return official_to_evad(ckpt.tensors, source)
    return Converted(dict(ckpt.tensors), {k: k for k in ckpt.tensors}, [], [])


class ShapeMismatch(UserError):
    """A checkpoint tensor whose shape does not fit the model it is loaded into.

    Attributes:
        detail: "tensor NAME has shape (...) in the checkpoint but (...) in the model".
    """

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"{source}: {detail} (a checkpoint of another architecture?)")
        self.detail = detail


def match_tensors(
    own: dict[str, Tensor], converted: Converted, source: str, layout: str
) -> tuple[dict[str, Tensor], LoadReport]:
    """The converted tensors that fit a model with state dict `own`, and the report.

    Raises:
        UserError: For a shape mismatch (other than the classifier's class count), or when no
            tensor fits at all.
    """
    report = LoadReport(source, layout, ignored=list(converted.dropped), notes=list(converted.notes))
    fitting: dict[str, Tensor] = {}
    for name, value in converted.tensors.items():
        if name not in own:
            report.ignored.append(converted.origin.get(name, name))
            continue
        want = tuple(own[name].shape)
        if tuple(value.shape) != want:
            if _CLASSIFIER.fullmatch(name) and tuple(value.shape[1:]) == want[1:]:
                report.skipped.append(name)
                continue
            where = converted.origin.get(name, name)
            label = where if where == name else f"{where} (evad: {name})"
            raise ShapeMismatch(
                source,
                f"tensor {label} has shape {tuple(value.shape)} in the checkpoint but {want} in the model",
            )
        fitting[name] = value
    if not fitting:
        raise UserError(f"{source}: no tensor of the checkpoint fits the model")
    report.loaded = list(fitting)
    report.missing = [n for n in own if n not in fitting and n not in report.skipped]
    return fitting, report


def _backbone_only(converted: Converted) -> Converted:
    """Keep the backbone's tensors, renamed as in a bare `VideoViT`."""
    kept = [k for k in converted.tensors if k.startswith("backbone.")]
    tensors = {k.removeprefix("backbone."): converted.tensors[k] for k in kept}
    origin = {k.removeprefix("backbone."): converted.origin.get(k, k) for k in kept}
    others = [converted.origin.get(k, k) for k in converted.tensors if not k.startswith("backbone.")]
    return Converted(tensors, origin, converted.dropped + others, converted.notes)


def load_converted(model: nn.Module, converted: Converted, source: str, layout: str) -> LoadReport:
    """Load converted tensors into an `EVAD` model or a bare `VideoViT` (see `load_pretrained`)."""
    model = unwrap(model)
    if isinstance(model, VideoViT):
        converted = _backbone_only(converted)
    fitting, report = match_tensors(model.state_dict(), converted, source, layout)
    check_finite({converted.origin.get(k, k): v for k, v in fitting.items()}, source)  # the file's names
    model.load_state_dict(fitting, strict=False)
    classification = getattr(model, "classification", None)
    if layout == "evad-official" and getattr(classification, "official_token_order", True) is False:
        report.notes.append(
            "official checkpoints were trained with the official token order: build the model with "
            "official_token_order=True to reproduce them"
        )
    return report


# ModelConfig fields that change how a model computes (or how fast), not what.
_HOW_NOT_WHAT = ("fused_attention", "checkpoint_interaction")


def differing_settings(stored: ModelConfig, used: ModelConfig) -> list[str]:
    """The settings of `used` that differ from `stored` and change what the model computes, each as
    "name stored -> used"."""
    return [
        f"{f.name} {getattr(stored, f.name)!r} -> {getattr(used, f.name)!r}"
        for f in dataclasses.fields(ModelConfig)
        if f.name not in _HOW_NOT_WHAT and getattr(stored, f.name) != getattr(used, f.name)
    ]


def _stored_model_hint(ckpt: Checkpoint) -> str:
    """What to do with evad weights whose model differs from the one they are loaded into."""
    if not holds_detector(ckpt.tensors):
        stored = model_config_from_info(ckpt.evad_info or {}, str(ckpt.path))
        return (
            f"it holds only a backbone of embed_dim {stored.embed_dim}, depth {stored.depth}, num_heads "
            f"{stored.num_heads} (its {CONFIG_FILE} lists every setting): train a model with that backbone"
        )
    return (
        "it stores its own model settings: pass it as --checkpoint to evad eval / evad detect (in Python: "
        f"evad.inference.load_detector({str(ckpt.path)!r})), which build the model it fits"
    )


def load_pretrained(
    model: nn.Module, path: str | Path, layout: str = "auto", config: ModelConfig | None = None
) -> LoadReport:
    """Load weights from any supported checkpoint into `model` (an `EVAD` or a `VideoViT`).

    Args:
        model: The model, built with the checkpoint's architecture.
        path: A VideoMAE file, a Hugging Face VideoMAE folder, an official EVAD file, evad weights
            (`evad convert` output) or an `evad train` checkpoint.
        layout: "auto" or one of `LAYOUTS` (then the file must be of that layout).
        config: The settings `model` was built with; for weights that store their own (evad
            weights, `evad train` checkpoints) a warning names the ones that differ, such as a keep
            rate, which no tensor shape would reveal.

    Returns:
        What was loaded, left at initialisation and ignored.

    Raises:
        UserError: For an unreadable or unrecognised file, or a tensor whose shape does not fit.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be the nn.Module to load into, got {type(model).__name__}")
    ckpt = read_checkpoint(path)
    layout = resolve_layout(ckpt, layout)
    try:
        report = load_converted(model, to_evad(ckpt, layout), str(ckpt.path), layout)
    except ShapeMismatch as err:
        if ckpt.evad_info is None:
            raise
        raise UserError(f"{err}; {_stored_model_hint(ckpt)}") from None
    if config is not None and ckpt.evad_info is not None:
        differing = differing_settings(model_config_from_info(ckpt.evad_info, str(ckpt.path)), config)
        if differing:
            logger.warning(
                "%s: the model is built with other settings than the ones stored with these weights (%s)%s",
                ckpt.path,
                ", ".join(differing),
                f"; {_stored_model_hint(ckpt)}" if holds_detector(ckpt.tensors) else "",
            )
    return report


def checkpoint_model_config(
    ckpt: Checkpoint, converted: Converted, num_heads: int | None = None
) -> ModelConfig:
    """The `ModelConfig` stored with or implied by a checkpoint (heads: `num_heads` if given)."""
    source = str(ckpt.path)
    if ckpt.evad_info is not None:
        cfg = model_config_from_info(ckpt.evad_info, source)
    elif ckpt.official_cfg is not None:
        cfg = parse_official_config(ckpt.official_cfg, f"{source} (stored cfg)").model
    else:
        hf = hf_backbone_fields(ckpt.hf_config, source) if ckpt.hf_config is not None else None
        heads = (ckpt.hf_config or {}).get("decoder_num_attention_heads")
        cfg = infer_model_config(converted.tensors, source, backbone=hf, decoder_heads=heads)[0]
    if num_heads is not None:
        cfg = dataclasses.replace(cfg, num_heads=num_heads)
    return cfg


def load_backbone(path: str | Path, num_heads: int | None = None, **overrides: Any) -> nn.Module:
    """The `VideoViT` backbone of a checkpoint, with its weights, in eval mode.

    The architecture comes from the checkpoint: its Hugging Face ``config.json``, evad config or
    official ``cfg``, else the tensor shapes (width, depth, MLP ratio, tubelet and patch size from
    the patch embedding kernel). The head count cannot be read from shapes: pass `num_heads`
    (default there: the preset of the same width and depth, else embed_dim // 64).

    Args:
        path: Any file or folder `load_pretrained` reads.
        num_heads: Attention heads per block.
        **overrides: Other `ModelConfig` backbone fields; by default the keep rate is 1.0 (no
            pruning) and stochastic depth is off.

    Example:
        >>> vit = evad.load_backbone("videomae-base-finetuned-kinetics/")  # doctest: +SKIP
        >>> out = vit(torch.randn(1, 3, 16, 224, 224))  # out.tokens: (1, 1568, 768)  # doctest: +SKIP
    """
    ckpt = read_checkpoint(path)
    layout = resolve_layout(ckpt)
    converted = to_evad(ckpt, layout)
    cfg = checkpoint_model_config(ckpt, converted, num_heads)
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)})
    if unknown:
        raise ValueError(f"unknown backbone option(s) {unknown}")
    cfg = dataclasses.replace(cfg, **{"keep_rate": 1.0, "drop_path_rate": 0.0, **overrides})
    try:
        vit = build_backbone(cfg)
    except ValueError as err:
        raise UserError(f"{ckpt.path}: {err}") from None
    report = load_converted(vit, converted, str(ckpt.path), layout)
    logger.info("%s", report.summary())
    return vit.eval()
