"""FLOPs in the paper's convention: ViT-B figures of SPEC section 7 within 1%, and the CLI contract."""

import json

import pytest
import torch

from evad.cli import main
from evad.flops import PAPER_GFLOPS, PAPER_PRUNING_GFLOPS, count_flops
from evad.layers.attention import Attention
from evad.models import create_model


def test_fused_attention_is_counted_like_the_explicit_path():
    x = torch.randn(1, 50, 64)
    counts = []
    for fused in (True, False):
        attn = Attention(64, 4, fused=fused)
        with torch.utils.flop_counter.FlopCounterMode(display=False) as plain:
            attn(x, return_attention=not fused)
        counts.append(plain.get_total_flops())
    # Without our formula PyTorch skips the CPU flash kernel entirely.
    assert counts[0] < counts[1]
    from evad.flops import _custom_formulas

    with torch.utils.flop_counter.FlopCounterMode(display=False, custom_mapping=_custom_formulas()) as mode:
        Attention(64, 4, fused=True)(x)
    assert mode.get_total_flops() == counts[1]


def test_the_proposals_self_attention_is_counted_on_the_inference_fast_path():
    # In eval mode without gradients nn.MultiheadAttention runs one fused operator that PyTorch has
    # no FLOP formula for; the count must not depend on whether that fast path is on.
    model = create_model("tiny")
    loc = model.localization
    q, d, stages = loc.num_queries, loc.init_proposal_features.embedding_dim, len(loc.stages)
    # in-projection (q x d x 3d), two attention products (2 q^2 d), out-projection (q x d x d)
    self_attention = stages * (4 * q * d * d + 2 * q * q * d) / 1e9
    counts = []
    for enabled in (True, False):
        previous = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(enabled)
        try:
            counts.append(count_flops(model, 64, 0.7).by_module["EVAD.localization"])
        finally:
            torch.backends.mha.set_fastpath_enabled(previous)
        assert torch.backends.mha.get_fastpath_enabled() is previous
    assert counts[0] == pytest.approx(counts[1])
    assert counts[0] > self_attention


@pytest.mark.parametrize("keep_rate", [1.0, 0.7])
def test_vit_b_224_matches_the_paper(keep_rate):
    report = count_flops(create_model("vit-b"), 224, keep_rate)
    paper = PAPER_GFLOPS[("vit-b", 224)][keep_rate]
    assert report.gflops == pytest.approx(paper, rel=0.01)
    if keep_rate == 1.0:
        assert report.backbone_gflops == pytest.approx(180.0, rel=0.01)  # VideoMAE's ViT-B figure
    else:
        assert report.tokens == [1568, 1098, 769, 539]


def test_random_masking_keeps_the_tokens_of_the_papers_flops():
    # Table 1b: random masking at rho 0.7 costs 158.9 GFLOPs, which a rho of the non-keyframe tokens
    # gives (196 + 961 tokens) and a budget of rho N tokens in all (196 + 902) does not (149.5).
    report = count_flops(create_model("vit-b", pruning="random"), 224, 0.7)
    assert report.tokens == [1568, 196 + 961]
    assert report.gflops == pytest.approx(PAPER_PRUNING_GFLOPS["random"], rel=0.01)


def test_cli_json(capsys):
    assert main(["flops", "--model", "tiny", "--img-size", "64", "--keep-rate", "0.7", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"gflops", "backbone_gflops", "tokens"}
    assert result["tokens"] == [128, 90, 63, 45]
    assert 0 < result["backbone_gflops"] < result["gflops"]


def test_cli_rejects_bad_arguments(capsys):
    assert main(["flops", "--model", "vit-q"]) == 2
    assert "unknown model 'vit-q'" in capsys.readouterr().err
    assert main(["flops", "--model", "tiny", "--img-size", "70"]) == 2
    assert "multiples of the patch size 16" in capsys.readouterr().err
    assert main(["flops", "--table", "--json", "--model", "tiny"]) == 2  # not silently ignored
    assert "drop --model and --json" in capsys.readouterr().err
    for size in ("16", "-32"):  # too small for the pyramid's stride-32 level; negative
        assert main(["flops", "--model", "tiny", "--img-size", size]) == 2
        assert f"at least 32, got {size}x{size}" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_model_cast_to_half_precision_is_counted_like_float32(dtype):
    # The clip is made in the model's dtype: a cast model was refused over a clip the caller never made.
    reference = count_flops(create_model("tiny"), 64, 0.7)
    report = count_flops(create_model("tiny").to(dtype), 64, 0.7)
    assert report.gflops == pytest.approx(reference.gflops)
    assert report.tokens == reference.tokens and report.by_module == pytest.approx(reference.by_module)


def test_cli_table_refuses_num_classes(monkeypatch, capsys):
    # The table counts the paper's 80-class models; a --num-classes beside it was silently ignored.
    monkeypatch.setattr("evad.cli.flops.paper_table", lambda *args: "| the table |")
    assert main(["flops", "--table", "--num-classes", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "drop --num-classes" in err
    assert main(["flops", "--table"]) == 0
    assert capsys.readouterr().out == "| the table |\n"
