"""VideoMAE weights: exact outputs against transformers, and every layout landing in the right place.

Small randomly initialised transformers models (every parameter randomised, so a misplaced bias or
norm shows) are saved the way the Hub stores them and read back by evad without transformers.
"""

import json

import pytest
import torch

import evad
from evad.cli import main
from evad.errors import UserError
from evad.weights import load_backbone, load_pretrained
from evad.weights.videomae import hf_to_evad

transformers = pytest.importorskip("transformers")

WIDTH, DEPTH, HEADS = 32, 4, 2  # the tiny preset at half its width


def hf_config(**kwargs):
    settings = dict(
        image_size=32,
        patch_size=16,
        num_frames=4,
        tubelet_size=2,
        hidden_size=WIDTH,
        num_hidden_layers=DEPTH,
        num_attention_heads=HEADS,
        intermediate_size=4 * WIDTH,
        layer_norm_eps=1e-6,  # VideoMAE's own value (evad's); the Hub configs say 1e-12
        use_mean_pooling=False,  # keeps the final `layernorm` that evad's `norm` is
        decoder_hidden_size=16,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
        attn_implementation="eager",
    )
    return transformers.VideoMAEConfig(**{**settings, **kwargs})


def randomised(model):
    """Every parameter random, except a key bias: VideoMAE has none, and some transformers releases
    (5.17) give the key Linear a bias parameter that real checkpoints leave at zero."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.zeros_like(p) if name.endswith("key.bias") else torch.randn_like(p) * 0.2)
    return model.eval()


def in_grid_order(out):
    """Backbone tokens (B, M, C) put back in (t, h, w) order with their indices (no pruning: M = N)."""
    index = out.indices.unsqueeze(-1).expand_as(out.tokens)
    return torch.empty_like(out.tokens).scatter(1, index, out.tokens)


def test_backbone_equals_transformers_last_hidden_state(tmp_path):
    hf = randomised(transformers.VideoMAEModel(hf_config()))
    hf.save_pretrained(tmp_path / "hf")  # base-model names, no `videomae.` prefix
    video = torch.randn(2, 4, 3, 32, 32)  # (B, T, C, H, W) as transformers takes it
    vit = load_backbone(tmp_path / "hf")
    with torch.no_grad():
        expected = hf(pixel_values=video).last_hidden_state
        out = vit(video.transpose(1, 2))  # (B, 3, T, H, W)
    assert vit.keep_rate == 1.0 and out.tokens.shape == expected.shape
    assert out.indices[0, :4].tolist() == [4, 5, 6, 7]  # the keyframe slice leads
    torch.testing.assert_close(in_grid_order(out), expected, rtol=1e-5, atol=1e-5)


def test_classifier_layout_with_prefix_and_legacy_biases(tmp_path):
    hf = randomised(transformers.VideoMAEForVideoClassification(hf_config(num_labels=5)))
    hf.save_pretrained(tmp_path / "new")
    # Older Hub files store q_bias / v_bias instead of query.bias / value.bias, as a .bin.
    state = {
        k.replace("attention.query.bias", "attention.q_bias").replace(
            "attention.value.bias", "attention.v_bias"
        ): v
        for k, v in hf.state_dict().items()
    }
    (tmp_path / "old").mkdir()
    torch.save(state, tmp_path / "old" / "pytorch_model.bin")
    (tmp_path / "old" / "config.json").write_text((tmp_path / "new" / "config.json").read_text())
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        expected = hf.videomae(pixel_values=video.transpose(1, 2)).last_hidden_state
        for folder in ("new", "old"):
            out = load_backbone(tmp_path / folder)(video)
            torch.testing.assert_close(in_grid_order(out), expected, rtol=1e-5, atol=1e-5)

    model = evad.create_model("tiny", num_classes=3, embed_dim=WIDTH)
    report = load_pretrained(model, tmp_path / "new")
    assert sorted(report.ignored) == ["classifier.bias", "classifier.weight"]
    assert all(not n.startswith("backbone.") for n in report.missing)
    assert "ignored 2 tensors not used by evad: classifier.bias, classifier.weight" in report.summary()


def test_pretraining_decoder_blocks_become_the_first_decoder_blocks(tmp_path):
    hf = randomised(transformers.VideoMAEForPreTraining(hf_config()))
    hf.save_pretrained(tmp_path / "pre")
    model = evad.create_model("tiny", num_classes=3, embed_dim=WIDTH, decoder_dim=16, decoder_depth=3)
    report = load_pretrained(model, tmp_path / "pre")
    head = model.classification
    assert torch.equal(head.encoder_to_decoder.weight, hf.encoder_to_decoder.weight)
    assert torch.equal(head.mask_token, hf.mask_token)
    assert {"decoder.norm.weight", "decoder.head.weight"} <= set(report.ignored)
    assert "classification.blocks.2.norm1.weight" in report.missing  # a third block has no counterpart
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        for ours, theirs in zip(head.blocks[:2], hf.decoder.decoder_layers, strict=True):
            torch.testing.assert_close(ours.eval()(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_nonzero_key_bias_is_refused():
    state = {
        "encoder.layer.0.attention.attention.query.weight": torch.ones(4, 4),
        "encoder.layer.0.attention.attention.key.weight": torch.ones(4, 4),
        "encoder.layer.0.attention.attention.value.weight": torch.ones(4, 4),
        "encoder.layer.0.attention.attention.key.bias": torch.ones(4),
    }
    with pytest.raises(UserError, match=r"key\.bias is not zero"):
        hf_to_evad(state, "x")


def original_videomae(pretraining: bool):
    """A tiny VideoMAE state dict in the original code's layout, from random evad modules."""
    torch.manual_seed(1)
    source = evad.create_model("tiny", num_classes=3)
    backbone = {k: torch.randn_like(v) for k, v in source.backbone.state_dict().items()}
    if not pretraining:
        return {"module": {**backbone, "fc_norm.weight": torch.ones(64), "head.weight": torch.ones(7, 64)}}
    decoder = {k: torch.randn_like(v) for k, v in source.classification.blocks[0].state_dict().items()}
    decoder = {
        f"decoder.blocks.0.{k}": v for k, v in decoder.items() if not k.startswith(("act_", "action_"))
    }
    state = {f"encoder.{k}": v for k, v in backbone.items()}
    state.update(
        decoder, **{"decoder.norm.weight": torch.ones(32), "decoder.head.weight": torch.ones(1536, 32)}
    )
    state["encoder_to_decoder.weight"] = torch.randn(32, 64)
    state["mask_token"] = torch.randn(1, 1, 32)
    return {"model": state}


@pytest.mark.parametrize("pretraining", [True, False], ids=["pretraining", "finetuned"])
def test_original_layouts_load_into_create_model(tmp_path, pretraining):
    checkpoint = original_videomae(pretraining)
    path = tmp_path / "videomae.pth"
    torch.save(checkpoint, path)
    model = evad.create_model("tiny", num_classes=3, pretrained=path)
    state = next(iter(checkpoint.values()))
    prefix = "encoder." if pretraining else ""
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[prefix + name]), name
    report = load_pretrained(evad.create_model("tiny", num_classes=3), path)
    if pretraining:
        block = model.classification.blocks[0]
        assert torch.equal(block.attn.qkv.weight, state["decoder.blocks.0.attn.qkv.weight"])
        assert torch.equal(model.classification.mask_token, state["mask_token"])
        assert sorted(report.ignored) == ["decoder.head.weight", "decoder.norm.weight"]
    else:
        assert sorted(report.ignored) == ["fc_norm.weight", "head.weight"]
        assert "classification.mask_token" in report.missing

    vit = load_backbone(path)  # tiny's width and depth: the tiny preset's 2 heads
    assert vit.blocks[0].attn.num_heads == 2 and len(vit.blocks) == 4
    assert torch.equal(vit.norm.weight, state[prefix + "norm.weight"])


def test_backbone_from_shapes_with_given_heads(tmp_path):
    state = original_videomae(False)["module"]
    state = {k: v for k, v in state.items() if not k.startswith(("blocks.2", "blocks.3"))}
    torch.save(state, tmp_path / "two_blocks.pt")
    vit = load_backbone(tmp_path / "two_blocks.pt", num_heads=4)
    assert len(vit.blocks) == 2 and vit.blocks[0].attn.num_heads == 4
    assert vit.patch_embed.proj.kernel_size == (2, 16, 16)
    vit = load_backbone(tmp_path / "two_blocks.pt")  # no preset of width 64, depth 2: 64 // 64 heads
    assert vit.blocks[0].attn.num_heads == 1


def test_hf_folder_config_drives_convert(tmp_path, capsys):
    hf = randomised(transformers.VideoMAEModel(hf_config()))
    hf.save_pretrained(tmp_path / "hf")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "out"), "--model", "tiny"]) == 0
    info = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (info["model"]["embed_dim"], info["model"]["depth"], info["model"]["num_frames"]) == (
        WIDTH,
        DEPTH,
        4,
    )
    assert "Hugging Face VideoMAE layout" in capsys.readouterr().out
