"""The assembled detector: output contract, learning on one batch, gradients, post-processing."""

import math

import pytest
import torch

import evad
from evad.models import build_criterion, build_postprocess, get_config
from evad.models.heads.classification import extend_boxes, roi_pool_3d
from evad.ops import roi_align

NUM_CLASSES = 5


def _batch():
    torch.manual_seed(0)
    clips = torch.randn(2, 3, 16, 64, 64)
    targets = [
        {"boxes": torch.tensor([[10.0, 8.0, 40.0, 60.0]]), "labels": torch.tensor([[1.0, 0, 1, 0, 0]])},
        {
            "boxes": torch.tensor([[5.0, 5.0, 30.0, 30.0], [30.0, 20.0, 60.0, 62.0]]),
            "labels": torch.tensor([[0.0, 1, 0, 0, 0], [0, 0, 0, 1, 1]]),
        },
    ]
    return clips, targets


@pytest.mark.parametrize("training", [True, False])
def test_forward_returns_the_same_prediction_dict_in_both_modes(training):
    model = evad.create_model("tiny", num_classes=NUM_CLASSES).train(training)
    clips, _ = _batch()
    with torch.set_grad_enabled(training):
        out = model(clips, image_sizes=torch.tensor([[64, 64], [48, 64]]), keep_rate=0.7)
    Q = 10
    assert out["pred_logits"].shape == (2, Q, 2)
    assert out["pred_boxes"].shape == (2, Q, 4)
    assert out["action_logits"].shape == (2, Q, NUM_CLASSES)
    assert len(out["aux_outputs"]) == 1 and out["aux_outputs"][0]["pred_boxes"].shape == (2, Q, 4)
    assert len(out["aux_action_logits"]) == 1
    assert out["kept_indices"].shape == (2, out["num_tokens"][-1])
    assert out["num_tokens"] == [128, 90, 63, 45]
    assert out["image_sizes"].tolist() == [[64.0, 64.0], [48.0, 64.0]]


def test_boxes_stay_float32_under_bf16_autocast():
    """bf16 holds pixels past 256 only to 2 or 4: the boxes of every stage are decoded in float32."""
    model = evad.create_model("tiny", num_classes=NUM_CLASSES).eval()
    clips, _ = _batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(clips)
    assert out["pred_logits"].dtype == torch.bfloat16  # autocast did act
    assert out["pred_boxes"].dtype == torch.float32
    assert out["aux_outputs"][0]["pred_boxes"].dtype == torch.float32
    stage = model.localization.stages[0]
    boxes = torch.tensor([[301.0, 257.0, 503.0, 611.0]])
    zero = torch.zeros(1, 4, dtype=torch.bfloat16)
    assert torch.equal(stage.apply_deltas(zero, boxes), boxes)


def test_action_classifier_without_hidden_layers():
    model = evad.create_model("tiny", num_classes=NUM_CLASSES, act_layers=0).eval()
    clips, _ = _batch()
    with torch.no_grad():
        assert model(clips)["action_logits"].shape == (2, 10, NUM_CLASSES)


@pytest.mark.parametrize("official", [False, True])
def test_decoder_position_table_follows_the_backbone_quirk(official):
    """The official code uses both tables as laid out for any grid with the table's cell count
    (2 x 8 for the tiny preset's 4 x 4): reproduced only for its released checkpoints."""
    model = evad.create_model("tiny", num_classes=NUM_CLASSES, official_pos_resize=official)
    backbone, head = model.backbone, model.classification
    for table, laid_out in (
        (backbone.position_table(2, 8), backbone.pos_table),
        (head.position_table(2, 8), head.pos_table),
    ):
        assert table.shape == laid_out.shape
        assert torch.equal(table, laid_out) == official
    assert not torch.equal(head.position_table(3, 8)[:16], head.pos_table[:16])  # other counts resize


def test_tiny_detector_overfits_one_batch():
    clips, targets = _batch()
    model = evad.create_model("tiny", num_classes=NUM_CLASSES)
    criterion = build_criterion(get_config("tiny", num_classes=NUM_CLASSES))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for _ in range(25):
        loss = criterion.weighted_total(criterion(model(clips), targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.4 * history[0], history


def test_every_parameter_receives_a_gradient():
    clips, targets = _batch()
    model = evad.create_model("tiny", num_classes=NUM_CLASSES)
    criterion = build_criterion(get_config("tiny", num_classes=NUM_CLASSES))
    criterion.weighted_total(criterion(model(clips), targets)).backward()
    missing = {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    # Boxes in a 64 px clip are far below the canonical 224 px, so every RoI is pooled from p2
    # (SPEC section 3); the p3-p5 output convolutions only learn on larger inputs.
    assert missing == {f"fpn.fpn_output{lvl}.{p}" for lvl in (3, 4, 5) for p in ("weight", "bias")}


def test_linear_baseline_head():
    model = evad.create_model("tiny", num_classes=NUM_CLASSES, action_head="linear").eval()
    with torch.no_grad():
        out = model(_batch()[0])
    assert out["action_logits"].shape == (2, 10, NUM_CLASSES)
    assert out["aux_action_logits"] == []


def test_official_token_order_changes_only_the_action_logits():
    torch.manual_seed(0)
    ours = evad.create_model("tiny", num_classes=NUM_CLASSES).eval()
    compat = evad.create_model("tiny", num_classes=NUM_CLASSES, official_token_order=True).eval()
    compat.load_state_dict(ours.state_dict())
    clips = _batch()[0]
    with torch.no_grad():
        a, b = ours(clips), compat(clips)
        c, d = ours(clips, keep_rate=1.0), compat(clips, keep_rate=1.0)
    torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"])
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"])
    assert not torch.allclose(a["action_logits"], b["action_logits"])
    torch.testing.assert_close(c["action_logits"], d["action_logits"])  # nothing pruned, nothing moved


def test_roi_extension_grows_boxes_and_clips_to_the_image():
    boxes = torch.tensor([[[10.0, 10.0, 19.0, 29.0], [0.0, 0.0, 63.0, 63.0]]])
    out = extend_boxes(boxes, (0.4, 0.2), torch.tensor([[64.0, 64.0]]))
    # width 10 (+1 rule) -> 2 px each side; height 20 -> 2 px each side.
    assert out[0, 0].tolist() == pytest.approx([8.0, 8.0, 21.0, 31.0])
    assert out[0, 1].tolist() == [0.0, 0.0, 63.0, 63.0]


def test_postprocess_thresholds_and_rescales():
    logits = torch.tensor([[[3.0, 0.0], [0.0, 3.0], [1.0, 0.0]]])  # person probs .95, .05, .73
    boxes = torch.tensor([[[10.0, 10.0, 30.0, 40.0], [0.0, 0.0, 5.0, 5.0], [-5.0, 20.0, 70.0, 70.0]]])
    outputs = {
        "pred_logits": logits,
        "pred_boxes": boxes,
        "action_logits": torch.zeros(1, 3, 4),
        "image_sizes": torch.tensor([[64.0, 64.0]]),
    }
    det = build_postprocess(get_config("tiny"))(outputs, target_sizes=[[128, 256]])[0]
    assert det.query_indices.tolist() == [0, 2]
    assert det.boxes[0].tolist() == pytest.approx([40.0, 20.0, 120.0, 80.0])
    assert det.boxes[1].tolist() == pytest.approx([0.0, 40.0, 252.0, 126.0])  # clipped at W-1, H-1
    assert det.action_scores.shape == (2, 4) and torch.allclose(det.action_scores, torch.tensor(0.5))
    # No proposal passes: all are kept.
    outputs["pred_logits"] = torch.tensor([[[0.0, 3.0]] * 3])
    assert len(build_postprocess(get_config("tiny"))(outputs)[0]) == 3


def test_3d_roi_pooling_equals_roi_align_on_each_slice():
    # Slices are pooled together as channels; the result must be per-slice RoIAlign, max over
    # space, mean over time.
    generator = torch.Generator().manual_seed(0)
    dense = torch.randn(2, 5, 4, 6, 8, generator=generator, dtype=torch.float64)  # (B, C, t, h, w)
    boxes = torch.tensor(
        [
            [[3.0, 5.0, 60.0, 90.0], [-10.0, 0.0, 20.0, 30.0]],
            [[0.0, 0.0, 128.0, 96.0], [70.0, 40.0, 71.0, 41.0]],
        ],
        dtype=torch.float64,
    )
    out = roi_pool_3d(dense, boxes, output_size=7, spatial_scale=1 / 16, sampling_ratio=2)
    assert out.shape == (2, 2, 5)
    for b in range(2):
        for q in range(2):
            rois = torch.cat((torch.zeros(1, 1, dtype=torch.float64), boxes[b, q][None]), dim=1)
            per_slice = [
                roi_align(dense[b : b + 1, :, s], rois, 7, 1 / 16, 2, aligned=True).amax(dim=(-2, -1))
                for s in range(4)
            ]
            torch.testing.assert_close(out[b, q], torch.cat(per_slice).mean(dim=0), rtol=0, atol=1e-12)


def _saved_bytes(fn):
    """Bytes of the distinct tensors autograd saves for the backward while `fn` runs."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = fn()
    return result, sum(storages.values())


def test_checkpointed_interaction_same_gradients_less_saved_memory():
    clips, targets = _batch()
    runs = {}
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = evad.create_model("tiny", num_classes=NUM_CLASSES, checkpoint_interaction=checkpointed)
        criterion = build_criterion(get_config("tiny", num_classes=NUM_CLASSES))
        loss, saved = _saved_bytes(lambda m=model, c=criterion: c.weighted_total(c(m(clips), targets)))
        loss.backward()
        runs[checkpointed] = (loss.detach(), {n: p.grad for n, p in model.named_parameters()}, saved)
    (loss_plain, grads_plain, saved_plain), (loss_ckpt, grads_ckpt, saved_ckpt) = runs[False], runs[True]
    torch.testing.assert_close(loss_ckpt, loss_plain)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_ckpt[name], grad, msg=name)
    assert saved_ckpt < 0.9 * saved_plain, (saved_ckpt, saved_plain)


@pytest.mark.parametrize(
    ("clips", "kwargs", "message"),
    [
        (torch.zeros(3, 16, 64, 64), {}, r"shape \(B, 3, T, H, W\), got \(3, 16, 64, 64\)"),
        (torch.zeros(0, 3, 16, 64, 64), {}, r"empty batch \(B = 0\)"),
        (torch.zeros(1, 3, 16, 64, 64, dtype=torch.uint8), {}, "normalised floats .* got torch.uint8"),
        (torch.zeros(1, 3, 16, 64, 64, dtype=torch.float64), {}, "dtype torch.float32, got torch.float64"),
        (
            torch.zeros(2, 3, 16, 64, 64),
            {"image_sizes": [(64, 64)]},
            r"image_sizes must be \(B, 2\) = \(2, 2\)",
        ),
    ],
)
def test_wrong_inputs_are_named_before_anything_runs(clips, kwargs, message):
    model = evad.create_model("tiny", num_classes=NUM_CLASSES).eval()
    with pytest.raises(ValueError, match=message):
        model(clips, **kwargs)


@pytest.mark.parametrize("clips", ["clips", [[0.0]], torch.zeros(1, 3, 16, 64, 64).numpy()])
def test_clips_that_are_not_a_tensor_are_named(clips):
    model = evad.create_model("tiny", num_classes=NUM_CLASSES).eval()
    with pytest.raises(TypeError, match=r"clips must be a torch\.Tensor of shape"):
        model(clips)


@pytest.mark.parametrize("sizes", [[(float("nan"), 64)], [(0, 64)], [(-8, 64)], [(128, 64)], [(64, 96)]])
def test_image_sizes_outside_the_clip_are_refused(sizes):
    """A NaN size ended in an index error inside RoIAlign; one past the clip gave boxes outside it."""
    model = evad.create_model("tiny", num_classes=NUM_CLASSES).eval()
    with pytest.raises(ValueError, match=r"image_sizes\[0\] = .* no larger than the clips' 64x64"):
        model(torch.zeros(1, 3, 16, 64, 64), image_sizes=sizes)
    with pytest.raises(TypeError, match="image_sizes must be a"):
        model(torch.zeros(1, 3, 16, 64, 64), image_sizes="64x64")


def test_image_sizes_may_be_plain_lists():
    model = evad.create_model("tiny", num_classes=NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 16, 64, 64), image_sizes=[(64, 48), (32, 64)])
    assert out["image_sizes"].tolist() == [[64.0, 48.0], [32.0, 64.0]]


@pytest.mark.parametrize("patch_size", [8, 16, 32])
def test_pyramid_levels_keep_strides_4_to_32_for_any_patch_size(patch_size):
    """The localization head pools level l as stride 2**l: the pyramid must have those strides."""
    model = evad.create_model("tiny", num_classes=NUM_CLASSES, patch_size=patch_size).eval()
    grid = (64 // patch_size, 96 // patch_size)
    maps = [torch.randn(1, 64, *grid) for _ in range(4)]
    levels = model.fpn(maps)
    assert [tuple(p.shape[-2:]) for p in levels] == [(64 // s, 96 // s) for s in (4, 8, 16, 32)]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 16, 64, 96))
    assert out["pred_boxes"].shape == (1, 10, 4)


def test_a_patch_size_the_pyramid_cannot_use_is_refused():
    with pytest.raises(ValueError, match="patch size that divides 32, got 12"):
        evad.create_model("tiny", num_classes=NUM_CLASSES, patch_size=12)
    model = evad.create_model("tiny", num_classes=NUM_CLASSES, patch_size=8).eval()
    with pytest.raises(ValueError, match="multiples of the patch size 8 and at least 32, got 16x64"):
        model(torch.zeros(1, 3, 16, 16, 64))


def test_box_deltas_decode_with_weights_2_2_1_1_and_the_size_clamp():
    """SPEC section 3: Faster R-CNN decoding with weights (2, 2, 1, 1), dw/dh clamped at log(100000/16)."""
    stage = evad.create_model("tiny", num_classes=NUM_CLASSES).localization.stages[0]
    boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size 10 x 20
    # dx = 2 / 2 = 1 width, dy = 2 / 2 = 1 height, width x 2, height x 1
    deltas = torch.tensor([[2.0, 2.0, math.log(2.0), 0.0]])
    assert stage.apply_deltas(deltas, boxes)[0].tolist() == pytest.approx([5.0, 20.0, 25.0, 40.0])
    # A huge dw / dh is clamped: the 16-pixel box grows to exp(log(100000 / 16)) x 16 = 100000 pixels.
    square = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    decoded = stage.apply_deltas(torch.tensor([[0.0, 0.0, 50.0, 50.0]]), square)
    assert (decoded[0, 2:] - decoded[0, :2]).tolist() == pytest.approx([100000.0, 100000.0], rel=1e-5)


def test_postprocess_keeps_a_person_probability_equal_to_the_threshold():
    """SPEC section 3: boxes with score >= threshold are kept."""
    outputs = {
        "pred_logits": torch.tensor([[[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]]]),  # person .5, .95, .05
        "pred_boxes": torch.tensor([[[0.0, 0.0, 8.0, 8.0]] * 3]),
        "action_logits": torch.zeros(1, 3, 2),
        "image_sizes": torch.tensor([[64.0, 64.0]]),
    }
    assert evad.PostProcess(0.5)(outputs)[0].query_indices.tolist() == [0, 1]
