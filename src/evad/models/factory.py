"""Named model presets and the builders that turn a `ModelConfig` into modules.

Configuration stops here: every module below takes plain arguments. `create_model("vit-b")` gives
the paper's ViT-B EVAD; `tiny` is a few-hundred-kilobyte variant for CPU tests and the demo.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from evad.losses import HungarianMatcher, SetCriterion
from evad.models.detector import EVAD
from evad.models.fpn import SimpleFPN
from evad.models.heads.classification import ContextRefinementHead, LinearActionHead
from evad.models.heads.localization import QueryLocalizationHead
from evad.models.postprocess import PostProcess
from evad.models.vit import VideoViT

ACTION_HEADS = ("decoder", "linear")

logger = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """Everything that defines an EVAD model (defaults: ViT-B 16x4, SPEC sections 2-5)."""

    num_classes: int = 80
    # Backbone (SPEC section 2).
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    tubelet_size: int = 2
    num_frames: int = 16
    pretrain_img_size: int = 224
    drop_path_rate: float = 0.1
    prune_layers: tuple[int, ...] = (3, 6, 9)
    tap_layers: tuple[int, ...] = (2, 5, 8, 11)
    keep_rate: float = 0.7
    keyframe_weight: float = 1.0
    pruning: str = "attention"
    fused_attention: bool = True
    # Localization branch (SPEC section 3).
    fpn_dim: int = 256
    num_queries: int = 100
    num_stages: int = 6
    loc_heads: int = 8
    loc_feedforward: int = 2048
    dim_dynamic: int = 64
    pooler_resolution: int = 7  # RoIAlign output of the stages (official ROI_BOX_HEAD.POOLER_RESOLUTION)
    sampling_ratio: int = 2  # of every RoIAlign, <= 0: adaptive (official POOLER_SAMPLING_RATIO)
    cls_layers: int = 1  # Linear-LN-ReLU layers of the person classifier tower
    reg_layers: int = 3  # ... of the box regression tower
    loc_dropout: float = 0.0
    # Recompute each stage's dynamic interaction in the backward instead of keeping its activations:
    # same values, about 2% more training compute, 150 MiB less per clip at ViT-B 224 (the largest
    # activation memory that does not shrink with the keep rate). Not in the official code.
    checkpoint_interaction: bool = True
    person_threshold: float = 0.7
    # Classification branch (SPEC section 4).
    action_head: str = "decoder"
    decoder_dim: int = 384
    decoder_depth: int = 6
    decoder_heads: int = 6
    decoder_drop_path: float = 0.1
    decoder_mlp_ratio: float = 4.0
    act_dim: int = 2048
    act_layers: int = 1  # hidden layers of each decoder block's action classifier
    actor_pooler_resolution: int = 7  # 3-D RoIAlign output per slice (official ROI_XFORM_RESOLUTION)
    roi_extend: tuple[float, float] = (0.4, 0.2)
    # Quirks of the official code, reproduced only for its released checkpoints (`evad convert`
    # sets them): its token scatter order and its skip of the position-table resize.
    official_token_order: bool = False
    official_pos_resize: bool = False
    # Loss weights (SPEC section 5).
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"ce": 2.0, "bbox": 5.0, "giou": 2.0, "action": 12.0}
    )
    no_object_weight: float = 0.1


_LARGE = {"ce": 2.0, "bbox": 5.0, "giou": 2.0, "action": 6.0}

PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        embed_dim=64,
        depth=4,
        num_heads=2,
        pretrain_img_size=64,
        drop_path_rate=0.0,
        prune_layers=(1, 2, 3),
        tap_layers=(0, 1, 2, 3),
        fpn_dim=32,
        num_queries=10,
        num_stages=2,
        loc_heads=2,
        loc_feedforward=64,
        dim_dynamic=8,
        decoder_dim=32,
        decoder_depth=2,
        decoder_heads=2,
        decoder_drop_path=0.0,
        act_dim=64,
    ),
    "vit-s": ModelConfig(embed_dim=384, depth=12, num_heads=6),
    "vit-b": ModelConfig(),
    "vit-l": ModelConfig(
        embed_dim=1024,
        depth=24,
        num_heads=16,
        drop_path_rate=0.2,
        prune_layers=(6, 12, 18),
        tap_layers=(5, 11, 17, 23),
        decoder_dim=512,
        decoder_depth=12,
        decoder_heads=8,
        loss_weights=_LARGE,
    ),
    "vit-h": ModelConfig(
        embed_dim=1280,
        depth=32,
        num_heads=16,
        drop_path_rate=0.2,
        prune_layers=(8, 16, 24),
        tap_layers=(7, 15, 23, 31),
        decoder_dim=512,
        decoder_depth=12,
        decoder_heads=8,
        loss_weights=_LARGE,
    ),
}


def list_models() -> list[str]:
    """Names accepted by `create_model`."""
    return sorted(PRESETS)


def get_config(name: str, num_classes: int = 80, **overrides) -> ModelConfig:
    """The preset `name` with `num_classes` and any `ModelConfig` field overridden."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; accepted: {', '.join(list_models())}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown}; accepted: {', '.join(sorted(fields))}")
    if "loss_weights" in overrides:  # the terms given replace the preset's, as in a config file
        preset_weights = PRESETS[name].loss_weights
        given = dict(overrides["loss_weights"])
        if set(given) - set(preset_weights):
            raise ValueError(
                f"unknown loss_weights term(s) {sorted(set(given) - set(preset_weights))}; "
                f"accepted: {', '.join(preset_weights)}"
            )
        overrides["loss_weights"] = {**preset_weights, **given}
    return dataclasses.replace(PRESETS[name], num_classes=num_classes, **overrides)


def build_backbone(cfg: ModelConfig) -> VideoViT:
    return VideoViT(
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        patch_size=cfg.patch_size,
        tubelet_size=cfg.tubelet_size,
        num_frames=cfg.num_frames,
        pretrain_img_size=cfg.pretrain_img_size,
        drop_path_rate=cfg.drop_path_rate,
        prune_layers=cfg.prune_layers,
        tap_layers=cfg.tap_layers,
        keep_rate=cfg.keep_rate,
        keyframe_weight=cfg.keyframe_weight,
        pruning=cfg.pruning,
        fused_attention=cfg.fused_attention,
        official_pos_resize=cfg.official_pos_resize,
    )


def build_action_head(cfg: ModelConfig) -> nn.Module:
    if cfg.action_head == "linear":
        return LinearActionHead(
            cfg.embed_dim,
            cfg.num_classes,
            cfg.roi_extend,
            pooler_resolution=cfg.actor_pooler_resolution,
            sampling_ratio=cfg.sampling_ratio,
            patch_size=cfg.patch_size,
        )
    if cfg.action_head != "decoder":
        raise ValueError(f"action_head must be one of {ACTION_HEADS}, got {cfg.action_head!r}")
    grid = cfg.pretrain_img_size // cfg.patch_size
    return ContextRefinementHead(
        cfg.embed_dim,
        cfg.num_classes,
        decoder_dim=cfg.decoder_dim,
        depth=cfg.decoder_depth,
        num_heads=cfg.decoder_heads,
        mlp_ratio=cfg.decoder_mlp_ratio,
        drop_path_rate=cfg.decoder_drop_path,
        act_dim=cfg.act_dim,
        act_layers=cfg.act_layers,
        roi_extend=cfg.roi_extend,
        pooler_resolution=cfg.actor_pooler_resolution,
        sampling_ratio=cfg.sampling_ratio,
        patch_size=cfg.patch_size,
        table_grid=(cfg.num_frames // cfg.tubelet_size, grid, grid),
        official_token_order=cfg.official_token_order,
        official_pos_resize=cfg.official_pos_resize,
        fused_attention=cfg.fused_attention,
    )


def build_model(cfg: ModelConfig) -> EVAD:
    """Assemble the detector described by `cfg`."""
    if isinstance(cfg.num_classes, bool) or not isinstance(cfg.num_classes, numbers.Integral):
        raise ValueError(f"num_classes must be a whole number >= 1, got {cfg.num_classes!r}")
    if cfg.num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {cfg.num_classes}")
    if len(cfg.tap_layers) != 4:
        raise ValueError(f"tap_layers must name 4 blocks, one per pyramid level, got {list(cfg.tap_layers)}")
    localization = QueryLocalizationHead(
        num_queries=cfg.num_queries,
        num_stages=cfg.num_stages,
        hidden_dim=cfg.fpn_dim,
        num_heads=cfg.loc_heads,
        dim_feedforward=cfg.loc_feedforward,
        dim_dynamic=cfg.dim_dynamic,
        pooler_resolution=cfg.pooler_resolution,
        sampling_ratio=cfg.sampling_ratio,
        num_cls_layers=cfg.cls_layers,
        num_reg_layers=cfg.reg_layers,
        dropout=cfg.loc_dropout,
        checkpoint_interaction=cfg.checkpoint_interaction,
    )
    return EVAD(
        build_backbone(cfg),
        SimpleFPN(cfg.embed_dim, cfg.fpn_dim, cfg.patch_size),
        localization,
        build_action_head(cfg),
    )


def build_criterion(cfg: ModelConfig) -> SetCriterion:
    """Matcher and losses with the config's weights (the matcher's costs equal the loss weights)."""
    w = cfg.loss_weights
    matcher = HungarianMatcher(cost_class=w["ce"], cost_bbox=w["bbox"], cost_giou=w["giou"])
    weights = {"loss_ce": w["ce"], "loss_bbox": w["bbox"], "loss_giou": w["giou"], "loss_action": w["action"]}
    return SetCriterion(matcher, cfg.num_classes, weights, no_object_weight=cfg.no_object_weight)


def build_postprocess(cfg: ModelConfig, person_threshold: float | None = None) -> PostProcess:
    """Post-processing at `person_threshold`, or the model's own (0.7) when None."""
    threshold = cfg.person_threshold if person_threshold is None else person_threshold
    return PostProcess(person_threshold=threshold)


def create_model(name: str, num_classes: int = 80, pretrained: str | Path | None = None, **overrides) -> EVAD:
    """Build the named detector, e.g. ``create_model("vit-b", num_classes=80, keep_rate=0.7)``.

    Args:
        name: Preset name (`list_models()`).
        num_classes: Action classes.
        pretrained: Optional weights loaded into the built model: evad weights (`evad convert`
            output, `best.pt`), a VideoMAE checkpoint (pre-trained, fine-tuned, or a Hugging Face
            directory) or an official EVAD checkpoint; what was missing or unused is logged (see
            `evad.weights.load_pretrained`), and a warning names the settings that differ from the
            ones evad weights store (`evad.inference.load_detector` builds the stored model).
        **overrides: Any `ModelConfig` field.

    Raises:
        ValueError: for an unknown name or option, naming the accepted values.
        UserError: for pretrained weights that cannot be read or whose shapes do not fit.
    """
    config = get_config(name, num_classes, **overrides)
    model = build_model(config)
    if pretrained is not None:
        from evad.weights import load_pretrained  # evad.weights builds on this module

        report = load_pretrained(model, pretrained, config=config)
        logger.info("%s", report.summary())
    return model
