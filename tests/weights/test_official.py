"""Official EVAD checkpoints: key layout both ways (bit for bit) and official YAML configs -> ModelConfig."""

import dataclasses

import pytest
import torch
import yaml

import evad
from evad.cli import main
from evad.errors import UserError
from evad.models.factory import PRESETS
from evad.weights import evad_to_official, official_to_evad, parse_official_config, read_checkpoint

# A made-up official config for the tiny preset; unlisted keys take the official defaults.
TINY_OFFICIAL = """
DATA:
  NUM_FRAMES: 16
  INPUT_CHANNEL_NUM: [3]
AVA:
  MIN_SIZE_TEST: 64
ViT:
  EMBED_DIM: 64
  DEPTH: 4
  PRETRAIN_IMG_SIZE: 64
  NUM_HEADS: 2
  FPN_INDICES: [0, 1, 2, 3]
MODEL:
  NUM_CLASSES: 3
  ROI_BOX_HEAD:
    POOLER_RESOLUTION: 7
    POOLER_SAMPLING_RATIO: 2
  SparseRCNN:
    HIDDEN_DIM: 32
    NUM_PROPOSALS: 10
    NUM_HEADS: 2
    NHEADS: 2
    DIM_FEEDFORWARD: 64
    DIM_DYNAMIC: 8
    ACT_FC_DIM: 64
  KTP:
    KEEP_RATES: [1, 0.7, 0.7, 0.7]
  CRD:
    ROI_EXTENSION: (0.4, 0.2)
    EMBED_DIM: 32
    DEPTH: 2
    NUM_HEADS: 2
TRAIN:
  BATCH_SIZE: 16
"""


def official_checkpoint():
    """An official-layout state dict of a randomly initialised tiny detector, and that detector's."""
    torch.manual_seed(0)
    ours = evad.create_model("tiny", num_classes=3).state_dict()
    return evad_to_official(ours, no_object_weight=0.1), ours


def test_official_names():
    official, _ = official_checkpoint()
    for name in (
        "patch_embed.proj.weight",
        "blocks.3.attn.q_bias",
        "norm.bias",
        "fpn_lateral2.weight",
        "fpn_output5.bias",
        "init_proposal_features.weight",
        "init_proposal_boxes.weight",
        "det_head.s0_headseries.1.inst_interact.dynamic_layer.weight",
        "det_head.s0_headseries.0.self_attn.in_proj_weight",
        "det_head.s0_headseries.0.reg_module.3.weight",
        "det_head.encoder_to_decoder.weight",
        "det_head.mask_token",
        "det_head.decoder.blocks.1.act_module.1.bias",
        "det_head.decoder.blocks.1.action_logits.weight",
        "criterion.empty_weight",
    ):
        assert name in official, name
    assert not [k for k in official if k.startswith(("backbone.", "localization.", "classification."))]


def test_round_trip_is_bit_exact(tmp_path, capsys):
    official, ours = official_checkpoint()
    back = official_to_evad(official, "x")
    assert back.dropped == ["criterion.empty_weight"]
    assert back.tensors.keys() == ours.keys()
    assert all(torch.equal(back.tensors[k], v) for k, v in ours.items())

    # Through `evad convert` and the safetensors files it writes, and back to the official layout.
    (tmp_path / "tiny.yaml").write_text(TINY_OFFICIAL)
    torch.save({"model_state": official, "epoch": 12}, tmp_path / "official.pth")
    args = ["convert", str(tmp_path / "official.pth"), str(tmp_path / "out")]
    assert main([*args, "--official-config", str(tmp_path / "tiny.yaml")]) == 0
    assert "ignored 1 tensor not used by evad: criterion.empty_weight" in capsys.readouterr().out
    stored = read_checkpoint(tmp_path / "out")
    again = evad_to_official(stored.tensors, stored.evad_info["model"]["no_object_weight"])
    assert again.keys() == official.keys()
    for name, value in official.items():
        assert again[name].dtype == value.dtype and torch.equal(again[name], value), name

    model = evad.create_model("tiny", num_classes=3, official_token_order=True, pretrained=tmp_path / "out")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ours.items())


def test_config_stored_in_the_checkpoint_is_used(tmp_path):
    official, _ = official_checkpoint()
    torch.save({"model_state": official, "cfg": TINY_OFFICIAL}, tmp_path / "official.pth")
    assert main(["convert", str(tmp_path / "official.pth"), str(tmp_path / "out")]) == 0
    info = read_checkpoint(tmp_path / "out").evad_info
    assert info["model"]["keep_rate"] == 0.7 and info["model"]["official_token_order"] is True
    assert info["test_short_side"] == 64


def test_made_up_config():
    cfg = parse_official_config(TINY_OFFICIAL, "tiny.yaml")
    expected = dataclasses.replace(
        PRESETS["tiny"],
        num_classes=3,
        keep_rate=0.7,
        official_token_order=True,
        official_pos_resize=True,
        drop_path_rate=0.0,
        decoder_drop_path=0.0,
        fpn_dim=32,
        num_queries=10,
        num_stages=2,
        loc_heads=2,
        loc_feedforward=64,
        dim_dynamic=8,
        act_dim=64,
    )
    assert cfg.model == expected
    assert cfg.test_short_side == 64


def official_yaml(depth, width, heads, taps, rates, weight, decoder, extension, action_weight, drop_path):
    """The model lines of an official config file (projects/evad/configs), written as its YAML."""
    model = {
        "NUM_CLASSES": 80,
        "ROI_BOX_HEAD": {"POOLER_TYPE": "ROIAlignV2", "POOLER_RESOLUTION": 7, "POOLER_SAMPLING_RATIO": 2},
        "CRD": dict(zip(("EMBED_DIM", "DEPTH", "NUM_HEADS"), decoder, strict=True), DROP_PATH_RATE=0.1),
    }
    if rates is not None:
        model["KTP"] = {"KEEP_RATES": rates, "ENHANCED_WEIGHT": weight}
    if extension is not None:
        model["CRD"]["ROI_EXTENSION"] = extension
    if action_weight is not None:
        model["SparseRCNN"] = {"ACTION_WEIGHT": action_weight}
    vit = {
        "EMBED_DIM": width,
        "DEPTH": depth,
        "NUM_HEADS": heads,
        "DROP_PATH_RATE": drop_path,
        "FPN_INDICES": taps,
    }
    data = {"NUM_FRAMES": 16, "SAMPLING_RATE": 4, "INPUT_CHANNEL_NUM": [3]}
    text = {"DATA": data, "AVA": {"MIN_SIZE_TEST": 288}, "ViT": vit, "MODEL": model}
    return yaml.safe_dump(text)


def pruned(depth, layers, rate):
    return [rate if i in layers else 1 for i in range(depth)]


B_TAPS, L_TAPS = [2, 5, 8, 11], [5, 11, 17, 23]
B_DECODER, L_DECODER = (384, 6, 6), (512, 12, 8)


REAL_CONFIGS = [
    (
        "ViT_B_16x4",
        official_yaml(12, 768, 12, B_TAPS, None, 1, B_DECODER, None, None, 0.1),
        "vit-b",
        {"keep_rate": 1.0, "roi_extend": (0.0, 0.0)},
    ),
    (
        "ViT_B_16x4_KTP",
        official_yaml(12, 768, 12, B_TAPS, pruned(12, (3, 6, 9), 0.7), 1, B_DECODER, "(0.4, 0.2)", None, 0.1),
        "vit-b",
        {"keep_rate": 0.7},
    ),
    (
        "ViT_B_16x4_KTP_EW",
        official_yaml(12, 768, 12, B_TAPS, pruned(12, (3, 6, 9), 0.6), 4, B_DECODER, "(0.4, 0.2)", None, 0.1),
        "vit-b",
        {"keep_rate": 0.6, "keyframe_weight": 4.0},
    ),
    (
        "ViT_L_16x4_KTP",
        official_yaml(
            24, 1024, 16, L_TAPS, pruned(24, (6, 12, 18), 0.7), 1, L_DECODER, "(0.4, 0.2)", 6.0, 0.2
        ),
        "vit-l",
        {"keep_rate": 0.7},
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "preset", "changes"), REAL_CONFIGS, ids=[c[0] for c in REAL_CONFIGS]
)
def test_real_official_configs_match_the_presets(name, text, preset, changes):
    cfg = parse_official_config(text, name)
    assert cfg.model == dataclasses.replace(
        PRESETS[preset], official_token_order=True, official_pos_resize=True, **changes
    )
    assert cfg.test_short_side == 288


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("MODEL:\n  KTP:\n    KEEP_RATES: [1, 0.7, 0.6, 1]\n", "different rates"),
        ("MODEL:\n  KTP:\n    KEEP_RATES: [1, 0.7]\n", "MODEL.KTP.KEEP_RATES must be 4 keep rates"),
        (
            "MODEL:\n  SparseRCNN:\n    USE_FOCAL: True\n",
            "MODEL.SparseRCNN.USE_FOCAL = True is not supported",
        ),
        ("MODEL:\n  CRD:\n    DEPTHS: 3\n", "unknown key MODEL.CRD.DEPTHS"),
        ("ViT:\n  INIT_VALUES: 0.1\n", "layer scale"),
        ("ViT:\n  DEPTH: four\n", "ViT.DEPTH must be an integer"),
    ],
    ids=["mixed-rates", "rates-per-block", "focal", "unknown-key", "layer-scale", "type"],
)
def test_unsupported_or_wrong_settings_are_refused(edit, message):
    base = yaml.safe_load(TINY_OFFICIAL)
    for section, values in yaml.safe_load(edit).items():
        for key, value in values.items():
            if isinstance(value, dict):
                base[section].setdefault(key, {}).update(value)
            else:
                base[section][key] = value
    with pytest.raises(UserError, match=message) as err:
        parse_official_config(yaml.safe_dump(base), "cfg.yaml")
    assert str(err.value).startswith("cfg.yaml: ")
