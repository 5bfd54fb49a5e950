"""Boxes and labels drawn on frames."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from evad.viz.draw import draw_detections, track_color


def test_boxes_take_their_track_colour_and_labels_stay_inside_the_frame():
    image = np.zeros((120, 160, 3), np.uint8)
    boxes = np.array([[20.0, 40, 80, 110], [150, 0, 200, 30]])  # the second sticks out of the frame
    draw_detections(image, boxes, [["#7 person 0.91", "walk 0.80"], ["#3"]], track_ids=[7, 3])
    assert tuple(image[75, 20]) == track_color(7)  # left edge of the first box
    label = image[:40, :100]
    assert (label == track_color(7)).all(axis=-1).sum() > 200  # filled background above the box
    assert label.max() > 0 and image[60:100, 30:70].max() == 0  # box interior untouched


def test_neighbouring_track_ids_get_distinct_colours():
    colours = [track_color(i) for i in range(1, 11)]
    assert len(set(colours)) == 10
    assert min(np.abs(np.subtract(a, b)).sum() for a, b in pairwise(colours)) > 60
