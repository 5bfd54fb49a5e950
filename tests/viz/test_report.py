"""The self-contained HTML report."""

from __future__ import annotations

import base64
import re

import cv2
import numpy as np
import pytest

from evad.errors import UserError
from evad.viz.report import nice_ticks, write_report_html


def _png(path, value):
    cv2.imwrite(str(path), np.full((20, 30, 3), value, np.uint8))
    return path


def test_report_is_one_file_with_everything_embedded(tmp_path):
    per_class, tokens = _png(tmp_path / "ap.png", 10), _png(tmp_path / "tokens.png", 200)
    video = tmp_path / "annotated.mp4"
    video.write_bytes(bytes(range(256)) * 4)
    metrics = {
        "mAP": 0.23456,
        "per_class": {"1": 0.5, "12": 0.125},
        "class_names": {"1": "stand", "12": "hand shake"},
        "groups": {"person_movement": 0.5},
        "num_groundtruth": {"1": 10, "12": 3},
        "num_detections": {"1": 40, "12": 9},
    }
    path = tmp_path / "report.html"
    write_report_html(
        path,
        title="tiny <run>",
        metrics=metrics,
        per_class_png=per_class,
        loss_curve=[(0, 3.5), (10, 2.0), (20, float("nan")), (30, 1.25)],
        tokens_png=tokens,
        video_mp4=video,
        extra_rows={"keep rate": 0.7},
    )
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".html"] == ["report.html"]
    page = path.read_text()
    for file, mime in [(per_class, "image/png"), (tokens, "image/png"), (video, "video/mp4")]:
        assert f"data:{mime};base64,{base64.b64encode(file.read_bytes()).decode()}" in page
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))  # nothing external
    assert "tiny &lt;run&gt;" in page and "<svg" in page and "<polyline" in page
    assert "0.23456" in page and "groups.person_movement" in page and "keep rate" in page
    assert "hand shake" in page and ">12.5<" in page  # per-class AP in percent


def test_report_without_optional_parts_and_with_a_missing_picture(tmp_path):
    write_report_html(tmp_path / "r.html", title="t", metrics={"loss": 1.5})
    assert "1.5" in (tmp_path / "r.html").read_text()
    with pytest.raises(UserError, match=r"missing\.png"):
        write_report_html(tmp_path / "r2.html", title="t", metrics={}, tokens_png=tmp_path / "missing.png")
    assert not (tmp_path / "r2.html").exists()


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(1.211, 2.388) == [1.0, 1.5, 2.0, 2.5]
    assert nice_ticks(0, 684) == [0, 200, 400, 600, 800]
    assert nice_ticks(5, 5) == [5]
