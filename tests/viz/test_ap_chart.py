"""The per-class AP chart of `evad evaluate ava --plot` and the demo."""

import cv2
import pytest

from evad.evaluation.ava import AvaResult
from evad.viz.ap_chart import plot_per_class_ap

pytest.importorskip("matplotlib")

RESULT = {"mAP": 0.3, "per_class": {"1": 0.5, "2": 0.1}, "class_names": {"1": "stand", "2": "sit"}}


def test_writes_a_png_for_a_result_alone_and_beside_a_baseline(tmp_path):
    plot_per_class_ap(tmp_path / "one.png", RESULT)
    plot_per_class_ap(tmp_path / "two.png", RESULT, {"mAP": 0.2, "per_class": {"1": 0.1, "2": 0.1}})
    one, two = cv2.imread(str(tmp_path / "one.png")), cv2.imread(str(tmp_path / "two.png"))
    assert one is not None and two is not None
    assert one.shape[1] >= 8 * 150  # 8 inches at 150 dpi, at least
    assert not (one.shape == two.shape and (one == two).all())  # the baseline's bars are drawn


def test_takes_an_ava_result_as_well_as_its_dict(tmp_path):
    result = AvaResult(
        mean_ap=0.3,
        per_class={1: 0.5, 2: 0.1},
        groups={},
        class_names={1: "stand", 2: "sit"},
        num_groundtruth={1: 4, 2: 2},
        num_detections={1: 9, 2: 9},
    )
    plot_per_class_ap(tmp_path / "r.png", result)
    plot_per_class_ap(tmp_path / "d.png", result.to_dict())
    assert (cv2.imread(str(tmp_path / "r.png")) == cv2.imread(str(tmp_path / "d.png"))).all()


def test_the_ap_axis_starts_at_zero_even_when_every_ap_is_zero(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    limits = []
    save = Figure.savefig

    def record(figure, *args, **kwargs):
        limits.append(figure.axes[0].get_ylim())
        return save(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    zero = {"mAP": 0.0, "per_class": {"1": 0.0, "2": 0.0}, "class_names": {"1": "stand", "2": "sit"}}
    plot_per_class_ap(tmp_path / "zero.png", zero, zero)  # an untrained model: no negative AP ticks
    plot_per_class_ap(tmp_path / "some.png", RESULT)
    (zero_bottom, zero_top), (bottom, top) = limits
    assert zero_bottom == 0 and zero_top > 0
    assert bottom == 0 and top >= 50  # the highest bar, 50%, fits
