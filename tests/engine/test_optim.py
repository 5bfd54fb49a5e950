"""Parameter groups (weight decay, head learning rate) and the warm-up + step schedule."""

import pytest
import torch

from evad.engine.optim import (
    build_optimizer,
    build_scheduler,
    is_head_parameter,
    lr_factor,
    param_groups,
    steps_per_epoch,
    uses_weight_decay,
)
from evad.models.factory import create_model


@pytest.fixture(scope="module")
def model():
    return create_model("tiny", num_classes=3)


def test_groups_cover_every_parameter_once(model):
    groups = param_groups(model, weight_decay=1e-4, base_lr=1e-5, head_lr_mult=8)
    names = [n for g in groups for n in g["names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert len(names) == len(set(names))
    assert [g["name"] for g in groups] == ["base_decay", "base_no_decay", "head_decay", "head_no_decay"]


def test_no_weight_decay_on_norms_biases_and_tokens(model):
    groups = {g["name"]: g for g in param_groups(model, 1e-4, 1e-5, 8)}
    no_decay = set(groups["base_no_decay"]["names"]) | set(groups["head_no_decay"]["names"])
    decay = set(groups["base_decay"]["names"]) | set(groups["head_decay"]["names"])
    params = dict(model.named_parameters())
    assert all(params[n].ndim <= 1 or n.endswith(".bias") or "mask_token" in n for n in no_decay)
    for name in (
        "backbone.blocks.0.norm1.weight",
        "backbone.blocks.0.attn.q_bias",
        "backbone.patch_embed.proj.bias",
        "localization.stages.0.norm1.weight",
        "classification.mask_token",  # 3-D, exempt by name
    ):
        assert name in no_decay
    for name in (
        "backbone.blocks.0.attn.qkv.weight",
        "fpn.fpn_lateral2.weight",
        "localization.init_proposal_features.weight",  # 2-D and decayed, as officially
        "classification.encoder_to_decoder.weight",
    ):
        assert name in decay
    assert groups["base_decay"]["weight_decay"] == 1e-4 and groups["head_no_decay"]["weight_decay"] == 0.0


def test_head_learning_rate_multiplier(model):
    head = {n for g in param_groups(model, 1e-4, 1e-5, 8) if g["name"].startswith("head") for n in g["names"]}
    for name, _ in model.named_parameters():
        expected = name.startswith(("localization.stages.", "classification."))
        assert (name in head) == expected == is_head_parameter(name), name
    # Backbone, FPN and the initial proposals keep the base rate (official: outside det_head).
    assert not is_head_parameter("localization.init_proposal_boxes.weight")
    assert not is_head_parameter("fpn.fpn_output5.weight")
    optimizer = build_optimizer(model, base_lr=1e-5, weight_decay=1e-4, head_lr_mult=8)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {"base_decay": 1e-5, "base_no_decay": 1e-5, "head_decay": 8e-5, "head_no_decay": 8e-5}
    assert isinstance(optimizer, torch.optim.AdamW)


def test_uses_weight_decay_rule():
    assert not uses_weight_decay("x.pos_embed", torch.zeros(1, 4, 8))
    assert not uses_weight_decay("x.bias", torch.zeros(2, 2))
    assert uses_weight_decay("x.weight", torch.zeros(2, 2))


def test_cls_token_of_the_cls_pruning_ablation_is_not_decayed():
    # The official optimizer skips the models' no_weight_decay() names, cls_token among them; the
    # learnable CLS token of pruning="cls" (1, 1, C) was in the decayed group.
    model = create_model("tiny", num_classes=3, pruning="cls")
    groups = {g["name"]: g["names"] for g in param_groups(model, 1e-4, 1.0, 8.0)}
    assert "backbone.cls_token" in groups["base_no_decay"]
    assert "backbone.cls_token" not in groups["base_decay"]


@pytest.mark.parametrize("epochs", [12, 6])
def test_schedule_shape_is_a_function_of_progress(epochs):
    per_epoch = 10
    total = epochs * per_epoch
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2.5e-5)
    scheduler = build_scheduler(optimizer, total)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    warmup_end = round(total * 2 / 12)
    first_decay, second_decay = round(total * 5 / 12), round(total * 8 / 12)
    assert lrs[0] == pytest.approx(2.5e-6)  # warm-up start: 0.1 x base
    assert lrs[warmup_end // 2] == pytest.approx(2.5e-6 + 0.5 * (2.5e-5 - 2.5e-6))
    assert lrs[warmup_end - 1] < 2.5e-5
    assert lrs[warmup_end] == pytest.approx(2.5e-5)  # warm-up end
    assert lrs[first_decay - 1] == pytest.approx(2.5e-5)
    assert lrs[first_decay] == pytest.approx(2.5e-6)  # x0.1 at 5/12
    assert lrs[second_decay - 1] == pytest.approx(2.5e-6)
    assert lrs[second_decay] == pytest.approx(2.5e-7)  # x0.01 at 8/12
    assert lrs[-1] == pytest.approx(2.5e-7)


def test_schedule_official_epoch_values():
    # One step per epoch: slowfast's lr at epochs 0, 1, 2, 5, 8 for the ViT-B recipe.
    factors = [lr_factor(k, 12) for k in range(12)]
    assert factors[0] == pytest.approx(0.1)
    assert factors[1] == pytest.approx(0.55)
    assert factors[2:5] == pytest.approx([1.0] * 3)
    assert factors[5:8] == pytest.approx([0.1] * 3)
    assert factors[8:] == pytest.approx([0.01] * 4)
    # Fractions written as decimals in YAML hit the same step.
    assert lr_factor(50, 120, lr_steps=[0.4166666666666667]) == pytest.approx(0.1)
    assert lr_factor(49, 120, lr_steps=[0.4166666666666667]) == pytest.approx(1.0)


def test_schedule_boundaries_of_a_long_run_fall_on_the_exact_step():
    # AVA v2.2 on one GPU at batch 2: 105317 steps per epoch, 1.26M in all. The warm-up ends and
    # the decays start at exactly epochs 2, 5 and 8, not a step early (official: step k is at
    # fractional epoch k / steps per epoch).
    per_epoch = 105317
    total = 12 * per_epoch
    decimals = {"warmup_fraction": 0.16666666666666666, "lr_steps": [0.4166666666666667, 0.6666666666666666]}
    for kwargs in ({}, decimals):
        factors = {
            k: lr_factor(k, total, **kwargs) for e in (2, 5, 8) for k in (e * per_epoch - 1, e * per_epoch)
        }
        assert factors[2 * per_epoch - 1] == pytest.approx(0.1 + 0.9 * (2 * per_epoch - 1) / (2 * per_epoch))
        assert factors[2 * per_epoch - 1] < 1.0 and factors[2 * per_epoch] == 1.0
        assert factors[5 * per_epoch - 1] == 1.0 and factors[5 * per_epoch] == pytest.approx(0.1)
        assert factors[8 * per_epoch - 1] == pytest.approx(0.1) and factors[8 * per_epoch] == pytest.approx(
            0.01
        )


def test_head_group_follows_the_same_schedule(model):
    optimizer = build_optimizer(model, base_lr=1e-5, head_lr_mult=8)
    build_scheduler(optimizer, 100)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["head_decay"] == pytest.approx(8 * lrs["base_decay"]) and lrs["base_decay"] == pytest.approx(
        1e-6
    )


def test_steps_per_epoch_counts_a_partial_group():
    assert steps_per_epoch(10, 1) == 10
    assert steps_per_epoch(10, 4) == 3
    assert steps_per_epoch(8, 4) == 2
