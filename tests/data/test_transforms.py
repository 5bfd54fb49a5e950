"""Clip transforms: frames and boxes move together under resize and flip; seeded randomness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evad.data.transforms import ClipTransform, flip_boxes, resized_size

T, HEIGHT, WIDTH = 2, 32, 40
SQUARE = (6, 4, 16, 12)  # x1, y1, x2, y2 in continuous pixel coordinates


def square_clip() -> tuple[np.ndarray, np.ndarray]:
    """A black clip with a white square exactly covering SQUARE, and that box."""
    frames = np.zeros((T, HEIGHT, WIDTH, 3), dtype=np.uint8)
    x1, y1, x2, y2 = SQUARE
    frames[:, y1:y2, x1:x2] = 255
    return frames, np.array([SQUARE], dtype=np.float32)


def bright_box(clip: torch.Tensor) -> list[float]:
    """x1, y1, x2, y2 (continuous coordinates) of the pixels brighter than mid-gray in frame 0."""
    ys, xs = np.nonzero(clip[0, 0].numpy() > 0.5)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # clip = pixels / 255


def test_resize_scales_frames_and_boxes() -> None:
    frames, boxes = square_clip()
    clip, out, size = ClipTransform((64,), **RAW)(frames, boxes)
    assert size == (64, 80) and clip.shape == (3, T, 64, 80) and clip.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), [[12, 8, 32, 24]])
    assert bright_box(clip) == [12, 8, 32, 24]


def test_long_side_cap() -> None:
    frames, boxes = square_clip()
    _, out, size = ClipTransform((256,), max_long_side=100, **RAW)(frames, boxes)
    assert size == resized_size(HEIGHT, WIDTH, 256, 100) == (80, 100)
    np.testing.assert_allclose(out.numpy(), [np.array(SQUARE) * 2.5])


def test_resized_sizes_round_halves_up_like_the_official_loader() -> None:
    assert resized_size(512, 681, 256) == (256, 341)  # 340.5: Python's round() would give 340
    assert resized_size(681, 512, 256) == (341, 256)
    assert resized_size(360, 640, 256) == (256, 455)  # 455.1
    assert resized_size(100, 2000, 256) == (67, 1333)  # the long side capped: 66.65


@pytest.mark.parametrize("short_side", [32, 48])
def test_flip_maps_boxes_and_pixels_consistently(short_side: int) -> None:
    frames, boxes = square_clip()
    clip, out, (_, w) = ClipTransform((short_side,), flip_prob=1.0, **RAW)(frames, boxes)
    scale = short_side / HEIGHT
    x1, y1, x2, y2 = np.array(SQUARE) * scale
    np.testing.assert_allclose(out.numpy(), [[w - x2, y1, w - x1, y2]], atol=1e-5)
    np.testing.assert_allclose(bright_box(clip), out[0].numpy(), atol=1)  # up to interpolation
    np.testing.assert_array_equal(flip_boxes(flip_boxes(boxes, WIDTH), WIDTH), boxes)


def test_no_flip_at_probability_zero_and_normalisation() -> None:
    frames, boxes = square_clip()
    transform = ClipTransform((HEIGHT,), flip_prob=0.0, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    clip, out, _ = transform(frames, boxes)
    np.testing.assert_array_equal(out.numpy(), boxes)
    x1, y1 = SQUARE[:2]
    np.testing.assert_allclose(clip[:, 0, y1, x1].numpy(), [1.0, 3.0, 0.5], atol=1e-6)  # (1 - m) / s
    np.testing.assert_allclose(clip[:, 0, 0, 0].numpy(), [-1.0, -1.0, 0.0], atol=1e-6)  # (0 - m) / s


def test_scale_jitter_draws_every_size_reproducibly() -> None:
    frames, boxes = square_clip()
    transform = ClipTransform((32, 48, 64), flip_prob=0.5, **RAW)

    def run(seed: int) -> list[tuple[tuple[int, int], float]]:
        generator = torch.Generator().manual_seed(seed)
        outputs = [transform(frames, boxes, generator) for _ in range(30)]
        return [(size, float(out[0, 0])) for _, out, size in outputs]

    first = run(0)
    assert {size[0] for size, _ in first} == {32, 48, 64}
    assert len({x1 for _, x1 in first}) > 3  # flipped and unflipped boxes at several scales
    assert run(0) == first
    assert run(1) != first


def test_empty_boxes() -> None:
    frames, _ = square_clip()
    clip, out, _ = ClipTransform((48,), flip_prob=1.0)(frames, np.zeros((0, 4), np.float32))
    assert out.shape == (0, 4) and clip.shape == (3, T, 48, 60)


def test_color_jitter_changes_the_whole_clip_alike_and_leaves_boxes() -> None:
    from evad.data.transforms import jitter_colors

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 32, 48, 3), dtype=np.uint8)
    planar = frames.transpose(3, 0, 1, 2)  # (T, H, W, 3) -> (3, T, H, W)
    assert np.array_equal(jitter_colors(planar, (1.0, 1.0, 1.0)), planar)
    grey = jitter_colors(planar, (1.0, 1.0, 0.0))  # no saturation: the three channels agree
    assert np.abs(grey.astype(int) - grey[:1]).max() <= 1
    darker = jitter_colors(planar, (0.5, 1.0, 1.0))
    assert np.abs(darker.astype(int) - np.rint(planar * 0.5)).max() <= 1

    boxes = np.array([[2.0, 3.0, 20.0, 30.0]])
    jittered = ClipTransform((32,), color_jitter=0.4)
    plain = ClipTransform((32,))
    a, a_boxes, _ = jittered(frames, boxes, torch.Generator().manual_seed(3))
    b, _, _ = jittered(frames, boxes, torch.Generator().manual_seed(3))
    c, c_boxes, _ = plain(frames, boxes)
    assert torch.equal(a, b)  # reproducible for a seeded generator
    assert torch.equal(a_boxes, c_boxes)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="color_jitter"):
        ClipTransform((32,), color_jitter=1.5)


def test_boxes_scale_by_each_axis_own_ratio() -> None:
    # 30 x 50 -> short side 20: 20 x 33 (33.3 rounded), so x scales by 33/50 and y by 20/30; a box
    # covering the whole frame covers the whole resized frame.
    frames = np.zeros((T, 30, 50, 3), dtype=np.uint8)
    _, out, size = ClipTransform((20,), **RAW)(frames, np.array([[0.0, 0.0, 50.0, 30.0]], np.float32))
    assert size == (20, 33)
    np.testing.assert_allclose(out.numpy(), [[0.0, 0.0, 33.0, 20.0]], rtol=1e-6)
