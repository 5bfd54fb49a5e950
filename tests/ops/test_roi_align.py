"""RoIAlign against a direct loop-by-loop reference, gradients, dtypes, and the multi-scale pooler."""

import importlib
import math

import numpy as np
import pytest
import torch

from evad.ops import assign_fpn_levels, multi_scale_roi_align, roi_align, torchvision_available
from evad.ops.poolers import roi_align_per_image
from evad.ops.roi_align import pure_pytorch_method

needs_torchvision = pytest.mark.skipif(
    not torchvision_available(), reason="torchvision's compiled ops cannot be used here"
)


@pytest.fixture(autouse=True, params=["gather", "matmul"])
def pure_pytorch_pooling(request):
    """Every test runs with both pure-PyTorch pooling methods (the automatic choice is one of them)."""
    with pure_pytorch_method(request.param):
        yield request.param


def bilinear(fmap: np.ndarray, y: float, x: float) -> np.ndarray:
    """Value of ``fmap`` (C, H, W) at (y, x): 0 beyond one cell outside, else clamped into the map."""
    _, height, width = fmap.shape
    if y < -1 or y > height or x < -1 or x > width:
        return np.zeros(fmap.shape[0])
    y = min(max(y, 0.0), height - 1)
    x = min(max(x, 0.0), width - 1)
    y0, x0 = int(y), int(x)
    y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * fmap[:, y0, x0]
        + (1 - ly) * lx * fmap[:, y0, x1]
        + ly * (1 - lx) * fmap[:, y1, x0]
        + ly * lx * fmap[:, y1, x1]
    )


def reference_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """RoIAlign written out one RoI, bin and sample at a time, in float64."""
    out_h, out_w = output_size
    feats = input.double().numpy()
    output = np.zeros((len(rois), feats.shape[1], out_h, out_w))
    offset = 0.5 if aligned else 0.0
    for k, (batch, *corners) in enumerate(rois.double().tolist()):
        x1, y1, x2, y2 = (v * spatial_scale - offset for v in corners)
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        for ph in range(out_h):
            for pw in range(out_w):
                total = np.zeros(feats.shape[1])
                for iy in range(grid_h):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        total += bilinear(feats[int(batch)], y, x)
                output[k, :, ph, pw] = total / max(grid_h * grid_w, 1)
    return torch.from_numpy(output)


# Input-pixel RoIs for a (2, 3, 7, 9) map at spatial_scale 0.5 (an 18 x 14 pixel image).
EDGE_CASE_ROIS = torch.tensor(
    [
        [0, 1.3, 2.1, 10.7, 9.4],  # inside
        [1, -6.0, -4.0, 5.0, 6.0],  # partly outside, top left
        [1, 12.0, 8.0, 30.0, 20.0],  # partly outside, bottom right
        [0, 4.0, 4.0, 4.3, 4.2],  # tiny
        [1, 40.0, 40.0, 50.0, 50.0],  # entirely outside
        [0, 0.0, 0.0, 18.0, 14.0],  # whole image
        [1, 5.0, 3.0, 3.0, 5.0],  # x2 < x1
        [0, -1.5, 13.0, 3.0, 15.5],  # across the bottom edge within one cell
    ],
    dtype=torch.float64,
)


def random_rois(generator, num, batch, size):
    corners = torch.rand(num, 2, 2, generator=generator, dtype=torch.float64) * size * 1.4 - 0.2 * size
    corners = corners.sort(dim=1).values.flatten(1)  # (num, x1, y1, x2, y2) with x1 <= x2, y1 <= y2
    batch_index = torch.randint(batch, (num, 1), generator=generator).double()
    return torch.cat((batch_index, corners), dim=1)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 0, -1])
def test_matches_reference_on_edge_cases(aligned, sampling_ratio):
    input = torch.randn(2, 3, 7, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    args = ((3, 2), 0.5, sampling_ratio, aligned)
    out = roi_align(input, EDGE_CASE_ROIS, *args, use_torchvision=False)
    torch.testing.assert_close(out, reference_roi_align(input, EDGE_CASE_ROIS, *args), rtol=1e-10, atol=1e-10)


def test_splitting_large_gathers_changes_nothing(monkeypatch):
    # The module, not the function that evad.ops re-exports under the same name.
    monkeypatch.setattr(importlib.import_module("evad.ops.roi_align"), "_MAX_GATHERED", 1)
    input = torch.randn(2, 3, 7, 9, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for sampling_ratio in (2, -1):
        args = ((3, 2), 0.5, sampling_ratio, True)
        out = roi_align(input, EDGE_CASE_ROIS, *args, use_torchvision=False)
        torch.testing.assert_close(out, reference_roi_align(input, EDGE_CASE_ROIS, *args))


@pytest.mark.parametrize(("aligned", "sampling_ratio"), [(True, 2), (False, -1), (True, -1), (False, 3)])
def test_float32_matches_reference_on_random_rois(aligned, sampling_ratio):
    generator = torch.Generator().manual_seed(1)
    input = torch.randn(3, 4, 10, 12, generator=generator)
    rois = random_rois(generator, 30, batch=3, size=48)
    args = ((2, 3), 0.25, sampling_ratio, aligned)
    out = roi_align(input, rois.float(), *args, use_torchvision=False)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference_roi_align(input, rois, *args), rtol=1e-5, atol=1e-5)


def test_aligned_samples_a_linear_ramp_at_bin_centres():
    # Bilinear interpolation is exact on a linear function, so each bin's average of x is its centre.
    xs = torch.arange(12.0).expand(12, 12)
    input = torch.stack((xs, xs.T))[None]  # (1, 2, 12, 12): channel 0 is x, channel 1 is y
    out = roi_align(input, torch.tensor([[0, 2.0, 3.0, 10.0, 7.0]]), 4, 1.0, 2, True, use_torchvision=False)
    centres_x = 2.0 - 0.5 + (torch.arange(4) + 0.5) * 2.0
    centres_y = 3.0 - 0.5 + (torch.arange(4) + 0.5) * 1.0
    torch.testing.assert_close(out[0, 0], centres_x.expand(4, 4))
    torch.testing.assert_close(out[0, 1], centres_y[:, None].expand(4, 4))


def test_gradcheck_input():
    generator = torch.Generator().manual_seed(2)
    input = torch.randn(2, 2, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.5, -1.0, 6.0, 3.5], [1, 2.0, 1.0, 3.0, 9.0]], dtype=torch.float64)
    for sampling_ratio, aligned in ((2, True), (-1, False)):
        assert torch.autograd.gradcheck(
            lambda x, s=sampling_ratio, a=aligned: roi_align(x, rois, 2, 1.0, s, a, use_torchvision=False),
            (input,),
        )


def test_no_gradient_reaches_rois():
    input = torch.randn(1, 2, 5, 5, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 0.5, 3.0, 3.0]], requires_grad=True)
    roi_align(input, rois, 2, 1.0, 2, True, use_torchvision=False).sum().backward()
    assert input.grad is not None and input.grad.abs().sum() > 0
    assert rois.grad is None


def test_empty_rois():
    input = torch.randn(2, 3, 5, 5, requires_grad=True)
    for sampling_ratio in (2, -1):
        out = roi_align(input, torch.zeros(0, 5), (3, 4), 1.0, sampling_ratio, True, use_torchvision=False)
        assert out.shape == (0, 3, 3, 4)
        out.sum().backward()  # an empty batch of proposals must not break a training step


@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_non_finite_rois_pool_zeros_and_leave_the_others_alone(sampling_ratio):
    """A diverged box head's NaN or infinite boxes pool zeros (a sample outside the map), so that
    training reaches its non-finite-loss stop instead of an out-of-bounds index error."""
    input = torch.randn(2, 3, 8, 10)
    good = torch.tensor([[0, 1.0, 2.0, 7.0, 6.0], [1, 0.5, 0.5, 9.0, 7.5]])
    bad = torch.tensor(
        [[0, math.nan, 2.0, 7.0, 6.0], [1, 0.0, 0.0, math.inf, 5.0], [0, -math.inf, math.nan, 3.0, math.inf]]
    )
    for aligned in (True, False):
        out = roi_align(input, torch.cat([good, bad]), 3, 1.0, sampling_ratio, aligned, use_torchvision=False)
        expected = roi_align(input, good, 3, 1.0, sampling_ratio, aligned, use_torchvision=False)
        torch.testing.assert_close(out[:2], expected)
        assert torch.equal(out[2:], torch.zeros(3, 3, 3, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_float32(dtype):
    generator = torch.Generator().manual_seed(3)
    input = torch.randn(2, 4, 8, 8, generator=generator)
    rois = random_rois(generator, 10, batch=2, size=64).float()
    expected = roi_align(input, rois, 3, 0.125, 2, True, use_torchvision=False)
    out = roi_align(input.to(dtype), rois, 3, 0.125, 2, True, use_torchvision=False)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=3e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    generator = torch.Generator().manual_seed(4)
    input = torch.randn(2, 4, 9, 11, generator=generator)
    rois = random_rois(generator, 20, batch=2, size=40).float()
    expected = roi_align(input, rois, 3, 0.25, -1, True, use_torchvision=False)
    out = roi_align(input.cuda(), rois.cuda(), 3, 0.25, -1, True, use_torchvision=False)
    torch.testing.assert_close(out.cpu(), expected)


@needs_torchvision
@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize(("aligned", "sampling_ratio"), [(True, 2), (False, 2), (True, -1), (False, 0)])
def test_matches_torchvision(device, aligned, sampling_ratio):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    generator = torch.Generator().manual_seed(5)
    input = torch.randn(2, 8, 12, 10, generator=generator).to(device)
    rois = torch.cat((random_rois(generator, 40, batch=2, size=40), EDGE_CASE_ROIS)).float().to(device)
    args = ((7, 5), 0.25, sampling_ratio, aligned)
    torch.testing.assert_close(
        roi_align(input, rois, *args, use_torchvision=False),
        roi_align(input, rois, *args, use_torchvision=True),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.skipif(torchvision_available(), reason="torchvision is usable here")
def test_forcing_torchvision_without_it_is_an_error():
    with pytest.raises(RuntimeError, match="use_torchvision=True"):
        roi_align(torch.zeros(1, 1, 2, 2), torch.zeros(1, 5), 1, use_torchvision=True)


def test_assign_fpn_levels_by_box_size():
    sides = torch.tensor([224.0, 112.0, 111.0, 448.0, 447.0, 1000.0, 10.0])
    boxes = torch.stack((torch.zeros(7), torch.zeros(7), sides, sides), dim=1)
    # floor(4 + log2(side / 224)): exactly 4 and 3, just under 3, exactly 5, just under 5,
    # 6.16 clamped to 5, -0.5 clamped to 2
    assert assign_fpn_levels(boxes).tolist() == [4, 3, 2, 5, 4, 5, 2]
    assert assign_fpn_levels(boxes, min_level=3, max_level=4).tolist() == [4, 3, 3, 4, 4, 4, 3]
    # Rectangles use sqrt(area); boxes are not clipped to any image first.
    rect = torch.tensor([[0.0, 0.0, 112.0, 448.0], [-300.0, -300.0, 148.0, 148.0]])
    assert assign_fpn_levels(rect).tolist() == [4, 5]


def test_multi_scale_roi_align_equals_per_level_roi_align():
    generator = torch.Generator().manual_seed(6)
    # Three 96 x 128 images, levels 2..5 (strides 4, 8, 16, 32); the middle image has no boxes.
    features = [torch.randn(3, 4, 96 // 2**lvl, 128 // 2**lvl, generator=generator) for lvl in range(2, 6)]
    boxes = [
        torch.tensor([[10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 128.0, 96.0], [-150.0, -100.0, 400.0, 300.0]]),
        torch.zeros(0, 4),
        torch.tensor([[20.0, 5.0, 140.0, 125.0], [60.0, 40.0, 62.0, 45.0]]),
    ]
    out = multi_scale_roi_align(features, boxes, 7, sampling_ratio=2, aligned=True, use_torchvision=False)
    assert out.shape == (5, 4, 7, 7)

    levels = assign_fpn_levels(torch.cat(boxes))
    # sides 20, sqrt(128 * 96) = 110.9, sqrt(550 * 400) = 469, 120, tiny
    assert levels.tolist() == [2, 2, 5, 3, 2]
    rows = [(0, b) for b in boxes[0]] + [(2, b) for b in boxes[2]]
    for row, ((image, box), level) in enumerate(zip(rows, levels.tolist(), strict=True)):
        roi = torch.cat((torch.tensor([float(image)]), box))[None]
        expected = roi_align(features[level - 2], roi, 7, 1 / 2**level, 2, True, use_torchvision=False)
        torch.testing.assert_close(out[row], expected[0])


def test_multi_scale_roi_align_sync_free_road_gives_the_same_values():
    generator = torch.Generator().manual_seed(8)
    features = [torch.randn(2, 3, 64 // 2**lvl, 96 // 2**lvl, generator=generator) for lvl in range(2, 6)]
    boxes = [random_rois(generator, 7, batch=1, size=300)[:, 1:].float() for _ in range(2)]
    assert len(set(assign_fpn_levels(torch.cat(boxes)).tolist())) > 1
    per_level = multi_scale_roi_align(features, boxes, 7, use_torchvision=False, sync_free=False)
    every_level = multi_scale_roi_align(features, boxes, 7, use_torchvision=False, sync_free=True)
    assert torch.equal(per_level, every_level)


def test_multi_scale_roi_align_no_boxes():
    features = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 4, 4, 4, requires_grad=True)]
    out = multi_scale_roi_align(features, [torch.zeros(0, 4), torch.zeros(0, 4)], (7, 7))
    assert out.shape == (0, 4, 7, 7)
    out.sum().backward()


def test_multi_scale_roi_align_gradient_reaches_only_used_levels():
    features = [torch.randn(1, 2, 16, 16, requires_grad=True), torch.randn(1, 2, 8, 8, requires_grad=True)]
    multi_scale_roi_align(features, [torch.tensor([[4.0, 4.0, 20.0, 20.0]])], 2).sum().backward()
    assert features[0].grad.abs().sum() > 0
    assert features[1].grad.abs().sum() == 0


def test_roi_align_per_image_matches_reference():
    # EDGE_CASE_ROIS regrouped as 4 boxes on each of the 2 images: (B, Q, 4).
    input = torch.randn(2, 3, 7, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    rois = EDGE_CASE_ROIS[EDGE_CASE_ROIS[:, 0].argsort(stable=True)]
    out = roi_align_per_image(input, rois[:, 1:].view(2, 4, 4), (3, 2), 0.5, 2, True, use_torchvision=False)
    assert out.shape == (2, 4, 3, 3, 2)
    expected = reference_roi_align(input, rois, (3, 2), 0.5, 2, True)
    torch.testing.assert_close(out.flatten(0, 1), torch.as_tensor(expected), rtol=1e-10, atol=1e-10)


def test_multi_scale_roi_align_defaults_to_half_pixel_alignment_and_two_samples():
    """The localization stages call it with its defaults: aligned=True and sampling ratio 2 (SPEC 8b).
    On a level-2 map whose value is the squared column index, the box (0, 0, 32, 32) covers cells
    [-0.5, 7.5] after the half-pixel shift: one bin samples columns 1.5 and 5.5, i.e.
    (1 + 4) / 2 and (25 + 36) / 2, mean 16.5 (legacy alignment: columns 2 and 6, mean 20; one
    sample: column 3.5, 12.5)."""
    features = [
        (torch.arange(64 // 2**lvl).float() ** 2).expand(1, 1, 64 // 2**lvl, -1).clone()
        for lvl in range(2, 6)
    ]
    out = multi_scale_roi_align(features, [torch.tensor([[0.0, 0.0, 32.0, 32.0]])], 1, use_torchvision=False)
    assert out.flatten().tolist() == pytest.approx([16.5])
