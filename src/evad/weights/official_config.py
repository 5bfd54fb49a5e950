"""Official EVAD YAML configs -> `ModelConfig` (github MCG-NJU/EVAD, projects/evad/configs/*.yaml).

An official checkpoint is only meaningful with the config it was trained with: the keep rate and
pruning layers, w_kf, the RoI extension and the head sizes are not in the tensors. The official
code reads yacs YAML files over defaults defined in Python; this module knows those defaults for
every key that shapes the model (listed in `DEFAULTS`, from slowfast/config/defaults.py and
projects/evad/models/config.py of the official repository), reads a file or the ``cfg`` text
an official checkpoint stores with `yaml.safe_load`, and builds the matching `ModelConfig` for any
size. Values written as Python literals in the YAML (``ROI_EXTENSION: (0.4, 0.2)``) are read with
`ast.literal_eval`, as yacs does. Settings evad cannot reproduce are refused, naming the key.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evad.errors import UserError
from evad.models.factory import ModelConfig
from evad.weights.architecture import default_layers

# Official defaults for the keys that define the model. The four sections in `STRICT` are listed in
# full, so a misspelt key there is reported like the official code would.
DEFAULTS: dict[str, Any] = {
    "DATA": {"NUM_FRAMES": 8, "INPUT_CHANNEL_NUM": [3, 3]},
    "DETECTION": {"ENABLE": False, "ALIGNED": True, "SPATIAL_SCALE_FACTOR": 16, "ROI_XFORM_RESOLUTION": 7},
    "AVA": {"MIN_SIZE_TEST": 800},
    "ViT": {
        "TUBELET_SIZE": 2,
        "PATCH_SIZE": 16,
        "EMBED_DIM": 768,
        "PRETRAIN_IMG_SIZE": 224,
        "USE_LEARNABLE_POS_EMB": False,
        "DROP_RATE": 0.0,
        "ATTN_DROP_RATE": 0.0,
        "DROP_PATH_RATE": 0.0,
        "LAYER_DECAY": 1.0,
        "DEPTH": 12,
        "NUM_HEADS": 12,
        "MLP_RATIO": 4,
        "QKV_BIAS": True,
        "QK_SCALE": None,
        "INIT_VALUES": 0.0,
        "FPN_INDICES": [2, 5, 8, 11],
        "USE_CHECKPOINT": True,
    },
    "MODEL": {
        "NUM_CLASSES": 400,
        "ROI_BOX_HEAD": {"POOLER_RESOLUTION": 14, "POOLER_SAMPLING_RATIO": 0, "POOLER_TYPE": "ROIAlignV2"},
        "SparseRCNN": {
            "NUM_CLASSES": 1,
            "NUM_PROPOSALS": 100,
            "NHEADS": 8,
            "DROPOUT": 0.0,
            "DIM_FEEDFORWARD": 2048,
            "ACTIVATION": "relu",
            "HIDDEN_DIM": 256,
            "NUM_CLS": 1,
            "NUM_ACT": 1,
            "NUM_REG": 3,
            "NUM_HEADS": 6,  # the number of refinement stages
            "NUM_DYNAMIC": 2,
            "DIM_DYNAMIC": 64,
            "CLASS_WEIGHT": 2.0,
            "GIOU_WEIGHT": 2.0,
            "L1_WEIGHT": 5.0,
            "ACTION_WEIGHT": 12.0,
            "NO_OBJECT_WEIGHT": 0.1,
            "DEEP_SUPERVISION": True,
            "USE_FOCAL": False,
            "ALPHA": 0.25,
            "GAMMA": 2.0,
            "PRIOR_PROB": 0.01,
            "PERSON_THRESHOLD": 0.7,
            "JITTER_BOX": False,
            "SOFTMAX_POSE": False,
            "GT_BOXES_PROB": 0.0,
            "KEYWAY": False,
            "USE_FPN": True,
            "ACT_FC_DIM": 2048,
            "PONY": False,
            "WORKAROUND": False,
            "NUM_EVAL_ACT_CLASSES": 0,
        },
        "KTP": {"KEEP_RATES": [1] * 12, "ENHANCED_WEIGHT": 1},
        "CRD": {
            "ROI_EXTENSION": [0.0, 0.0],
            "EMBED_DIM": 384,
            "DEPTH": 6,
            "NUM_HEADS": 6,
            "USE_LEARNABLE_POS_EMB": False,
            "DROP_RATE": 0.0,
            "ATTN_DROP_RATE": 0.0,
            "DROP_PATH_RATE": 0.0,
            "MLP_RATIO": 4,
        },
    },
}
STRICT = ("ViT", "MODEL.KTP", "MODEL.CRD", "MODEL.SparseRCNN")

# (key, value evad needs, why): anything else is refused.
_REQUIRED = (
    ("ViT.USE_LEARNABLE_POS_EMB", False, "evad adds the fixed sinusoid position table"),
    ("MODEL.CRD.USE_LEARNABLE_POS_EMB", False, "evad adds the fixed sinusoid position table"),
    ("ViT.QKV_BIAS", True, "evad's attention always learns query and value biases"),
    ("ViT.QK_SCALE", None, "evad scales attention by head_dim ** -0.5"),
    ("MODEL.SparseRCNN.USE_FOCAL", False, "evad's person classifier is a 2-way softmax"),
    ("MODEL.SparseRCNN.NUM_CLASSES", 1, "evad detects one class, person"),
    ("MODEL.SparseRCNN.NUM_DYNAMIC", 2, "evad's dynamic interaction generates two kernels"),
    ("MODEL.SparseRCNN.USE_FPN", True, "evad's localization branch pools from the FPN"),
    ("MODEL.SparseRCNN.ACTIVATION", "relu", "evad's localization stages use ReLU"),
    ("MODEL.SparseRCNN.JITTER_BOX", False, "evad classifies the refined boxes"),
    ("MODEL.SparseRCNN.SOFTMAX_POSE", False, "evad scores every action with a sigmoid"),
    ("MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlignV2", "evad's RoIAlign is the aligned one"),
)


@dataclass
class OfficialConfig:
    """What an official config says about the model.

    Attributes:
        model: The matching evad `ModelConfig` (with ``official_token_order`` and ``official_pos_resize``).
        test_short_side: ``AVA.MIN_SIZE_TEST``, the short side the model was evaluated at.
        notes: Settings that were read but do not matter for evad (training-only dropout).
    """

    model: ModelConfig
    test_short_side: int
    notes: list[str] = field(default_factory=list)


def _decode(value: Any) -> Any:
    """yacs reads strings that are Python literals as those literals."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _merge(defaults: dict[str, Any], given: dict[str, Any], prefix: str, source: str) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in given.items():
        dotted = f"{prefix}{key}"
        if isinstance(defaults.get(key), dict):
            if not isinstance(value, dict):
                raise UserError(f"{source}: {dotted} must be a section, got {value!r}")
            merged[key] = _merge(defaults[key], value, f"{dotted}.", source)
        elif key in defaults or prefix.rstrip(".") not in STRICT:
            merged[key] = _decode(value)
        else:
            raise UserError(f"{source}: unknown key {dotted} (not in the official EVAD config)")
    return merged


class _Reader:
    """Typed access to dotted keys of the merged config, with errors naming the key."""

    def __init__(self, cfg: dict[str, Any], source: str) -> None:
        self.cfg = cfg
        self.source = source

    def get(self, dotted: str) -> Any:
        node: Any = self.cfg
        for part in dotted.split("."):
            node = node[part]
        return node

    def _bad(self, dotted: str, what: str) -> UserError:
        return UserError(f"{self.source}: {dotted} must be {what}, got {self.get(dotted)!r}")

    def int(self, dotted: str, minimum: int = 1) -> int:
        value = self.get(dotted)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._bad(dotted, f"an integer >= {minimum}")
        return value

    def float(self, dotted: str) -> float:
        value = self.get(dotted)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(dotted, "a number")
        return float(value)

    def numbers(self, dotted: str) -> list[float]:
        value = self.get(dotted)
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            raise self._bad(dotted, "a list of numbers")
        return list(value)


def _keep_rates(r: _Reader, depth: int) -> tuple[tuple[int, ...], float]:
    rates = r.numbers("MODEL.KTP.KEEP_RATES")
    if len(rates) != depth or not all(0 < v <= 1 for v in rates):
        raise r._bad("MODEL.KTP.KEEP_RATES", f"{depth} keep rates in (0, 1] (one per block)")
    pruned = tuple(i for i, v in enumerate(rates) if v < 1)
    distinct = {rates[i] for i in pruned}
    if len(distinct) > 1:
        raise UserError(
            f"{r.source}: MODEL.KTP.KEEP_RATES has different rates {sorted(distinct)}; evad uses one "
            "keep rate at every pruning layer"
        )
    if not pruned:  # no pruning: any layers will do for running it at another rate later
        return default_layers(depth)[0], 1.0
    return pruned, float(distinct.pop())


def model_config_from_official(cfg: dict[str, Any], source: str) -> OfficialConfig:
    """The evad model an official (merged) config describes; see `parse_official_config`."""
    r = _Reader(_merge(DEFAULTS, cfg, "", source), source)
    for dotted, needed, why in _REQUIRED:
        if r.get(dotted) != needed:
            raise UserError(f"{source}: {dotted} = {r.get(dotted)!r} is not supported ({why})")
    if r.float("ViT.INIT_VALUES") != 0:
        raise UserError(
            f"{source}: ViT.INIT_VALUES > 0 (layer scale) is not supported; evad's blocks have none"
        )
    channels = r.get("DATA.INPUT_CHANNEL_NUM")
    if not isinstance(channels, list | tuple) or not channels or channels[0] != 3:
        raise r._bad("DATA.INPUT_CHANNEL_NUM", "[3] (RGB clips)")
    patch = r.int("ViT.PATCH_SIZE")
    if r.get("DETECTION.SPATIAL_SCALE_FACTOR") != patch:
        raise r._bad("DETECTION.SPATIAL_SCALE_FACTOR", f"the patch size {patch}")
    depth = r.int("ViT.DEPTH")
    taps = r.numbers("ViT.FPN_INDICES")
    if len(taps) != 4 or not all(isinstance(i, int) and 0 <= i < depth for i in taps):
        raise r._bad("ViT.FPN_INDICES", f"4 block indices in [0, {depth})")
    prune_layers, keep_rate = _keep_rates(r, depth)
    extension = r.numbers("MODEL.CRD.ROI_EXTENSION")
    if len(extension) not in (1, 2):
        raise r._bad("MODEL.CRD.ROI_EXTENSION", "one or two numbers (x, y)")
    sparse = "MODEL.SparseRCNN."
    model = ModelConfig(
        num_classes=r.int("MODEL.NUM_CLASSES"),
        embed_dim=r.int("ViT.EMBED_DIM"),
        depth=depth,
        num_heads=r.int("ViT.NUM_HEADS"),
        mlp_ratio=r.float("ViT.MLP_RATIO"),
        patch_size=patch,
        tubelet_size=r.int("ViT.TUBELET_SIZE"),
        num_frames=r.int("DATA.NUM_FRAMES"),
        pretrain_img_size=r.int("ViT.PRETRAIN_IMG_SIZE"),
        drop_path_rate=r.float("ViT.DROP_PATH_RATE"),
        prune_layers=prune_layers,
        tap_layers=tuple(int(i) for i in taps),
        keep_rate=keep_rate,
        keyframe_weight=r.float("MODEL.KTP.ENHANCED_WEIGHT"),
        fpn_dim=r.int(sparse + "HIDDEN_DIM"),
        num_queries=r.int(sparse + "NUM_PROPOSALS"),
        num_stages=r.int(sparse + "NUM_HEADS"),
        loc_heads=r.int(sparse + "NHEADS"),
        loc_feedforward=r.int(sparse + "DIM_FEEDFORWARD"),
        dim_dynamic=r.int(sparse + "DIM_DYNAMIC"),
        pooler_resolution=r.int("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION"),
        sampling_ratio=r.int("MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", minimum=0),
        cls_layers=r.int(sparse + "NUM_CLS", minimum=0),
        reg_layers=r.int(sparse + "NUM_REG", minimum=0),
        loc_dropout=r.float(sparse + "DROPOUT"),
        person_threshold=r.float(sparse + "PERSON_THRESHOLD"),
        action_head="decoder",
        decoder_dim=r.int("MODEL.CRD.EMBED_DIM"),
        decoder_depth=r.int("MODEL.CRD.DEPTH"),
        decoder_heads=r.int("MODEL.CRD.NUM_HEADS"),
        decoder_drop_path=r.float("MODEL.CRD.DROP_PATH_RATE"),
        decoder_mlp_ratio=r.float("MODEL.CRD.MLP_RATIO"),
        act_dim=r.int(sparse + "ACT_FC_DIM"),
        act_layers=r.int(sparse + "NUM_ACT"),
        actor_pooler_resolution=r.int("DETECTION.ROI_XFORM_RESOLUTION"),
        roi_extend=(float(extension[0]), float(extension[-1])),
        official_token_order=True,
        official_pos_resize=True,
        loss_weights={
            "ce": r.float(sparse + "CLASS_WEIGHT"),
            "bbox": r.float(sparse + "L1_WEIGHT"),
            "giou": r.float(sparse + "GIOU_WEIGHT"),
            "action": r.float(sparse + "ACTION_WEIGHT"),
        },
        no_object_weight=r.float(sparse + "NO_OBJECT_WEIGHT"),
    )
    for name, value in (("embed_dim", model.num_heads), ("decoder_dim", model.decoder_heads)):
        if getattr(model, name) % value:
            raise UserError(f"{source}: {name} {getattr(model, name)} is not divisible by its {value} heads")
    dropouts = ("ViT.DROP_RATE", "ViT.ATTN_DROP_RATE", "MODEL.CRD.DROP_RATE", "MODEL.CRD.ATTN_DROP_RATE")
    notes = [f"{key} = {r.get(key)} (training-only dropout) is ignored" for key in dropouts if r.float(key)]
    return OfficialConfig(model, r.int("AVA.MIN_SIZE_TEST"), notes)


def parse_official_config(text: str, source: str) -> OfficialConfig:
    """Read official YAML text (a file's or a checkpoint's ``cfg``) into an `OfficialConfig`.

    Raises:
        UserError: For text that is not a YAML mapping, an unknown key in the ViT, KTP, CRD or
            SparseRCNN sections, a value of the wrong type, or a setting evad cannot reproduce.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"{source}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"{source}: an official config must be a YAML mapping")
    return model_config_from_official(data, source)


def read_official_config(path: str | Path) -> OfficialConfig:
    """`parse_official_config` on a file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text (YAML) file") from None
    return parse_official_config(text, str(path))
