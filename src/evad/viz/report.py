"""One self-contained HTML page that shows a run: metrics, per-class AP, loss, tokens, a video.

Everything is inside the file: pictures and the MP4 as base64 ``data:`` URIs, the loss curve as
inline SVG. It can be mailed or attached to an issue and opened in any browser with nothing else.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evad.errors import UserError
from evad.fileio import write_atomically

# Keys of an `AvaResult.to_dict()` that go to the per-class table rather than the metrics table.
_PER_CLASS_KEYS = ("per_class", "class_names", "num_groundtruth", "num_detections")

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { padding: 3px 12px; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img, video { max-width: 100%; border: 1px solid #ddd; }
video { width: 720px; }
"""


def _format(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(value)
    return f"{float(value):.6g}"


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _data_uri(path: str | Path, mime: str) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read for the report: {err.strerror or err}") from None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _flat_metrics(metrics: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for key, value in metrics.items():
        if not prefix and key in _PER_CLASS_KEYS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(_flat_metrics(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            rows.append((name, ", ".join(_format(v) for v in value)))
        else:
            rows.append((name, value))
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{html.escape(_format(v))}</td>'
            if _is_number(v) or str(v).endswith(" %")
            else f"<td>{html.escape(str(v))}</td>"
            for v in row
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _per_class_table(metrics: Mapping[str, Any]) -> str | None:
    per_class = metrics.get("per_class")
    if not isinstance(per_class, Mapping) or not per_class:
        return None
    names = metrics.get("class_names", {})
    gt = metrics.get("num_groundtruth", {})
    dets = metrics.get("num_detections", {})
    rows = []
    for key in sorted(
        per_class, key=lambda k: (not str(k).isdigit(), int(k) if str(k).isdigit() else str(k))
    ):
        ap = per_class[key]
        k = str(key)
        row = [k, names.get(k, names.get(key, "")), round(100 * ap, 2) if _is_number(ap) else ap]
        if gt or dets:
            row += [gt.get(k, gt.get(key, "")), dets.get(k, dets.get(key, ""))]
        rows.append(row)
    header = ["id", "class", "AP (%)"] + (["ground truth", "detections"] if gt or dets else [])
    return _table(header, rows)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values (steps of 1, 2 or 5 times a power of ten) covering
    [low, high], as chart axes label them."""
    if not high > low:
        return [low]
    raw = (high - low) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = [round(first, 12)]
    while ticks[-1] < high - step * 1e-9:  # up to the first tick at or above `high`
        ticks.append(round(first + len(ticks) * step, 12))
    return ticks


def loss_curve_svg(
    points: Sequence[tuple[float, float]], width: int = 720, height: int = 260, label: str = "loss"
) -> str:
    """An inline SVG line chart of (step, loss) points with labelled axes (`label` on the y axis)."""
    points = [(float(s), float(v)) for s, v in points if math.isfinite(float(v))]
    if not points:
        return "<p>No finite loss values.</p>"
    left, right, top, bottom = 64, 16, 12, 36
    steps = [s for s, _ in points]
    values = [v for _, v in points]
    x0, x1 = min(steps), max(steps)
    y0, y1 = min(values), max(values)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    y_ticks, x_ticks = nice_ticks(y0, y1), nice_ticks(x0, x1)
    y0, y1 = min(y0, y_ticks[0]), max(y1, y_ticks[-1])  # the axes end on round values
    x0, x1 = min(x0, x_ticks[0]), max(x1, x_ticks[-1])

    def px(s: float, v: float) -> tuple[float, float]:
        return (
            left + (s - x0) / (x1 - x0) * (width - left - right),
            top + (y1 - v) / (y1 - y0) * (height - top - bottom),
        )

    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (px(s, v) for s, v in points))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="training loss">',
        f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
        'fill="none" stroke="#999"/>',
    ]
    for v in y_ticks:  # horizontal grid lines with loss labels
        _, y = px(x0, v)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{v:.4g}</text>')
    for s in x_ticks:  # step labels
        x, _ = px(s, y0)
        parts.append(
            f'<text x="{x:.1f}" y="{height - bottom + 16}" font-size="11" text-anchor="middle">{s:g}</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 4}" font-size="12" '
        'text-anchor="middle">step</text>'
    )
    middle = (top + height - bottom) / 2
    parts.append(
        f'<text x="14" y="{middle:.1f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {middle:.1f})">{html.escape(label)}</text>'
    )
    parts.append(f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    parts.append("</svg>")
    return "".join(parts)


def write_report_html(
    path: str | Path,
    *,
    title: str,
    metrics: Mapping[str, Any],
    per_class_png: str | Path | None = None,
    loss_curve: Sequence[tuple[float, float]] | None = None,
    tokens_png: str | Path | None = None,
    video_mp4: str | Path | None = None,
    extra_rows: Mapping[str, Any] | None = None,
    loss_label: str = "loss",
    captions: Mapping[str, str] | None = None,
) -> None:
    """Write one self-contained HTML report, atomically.

    Args:
        path: The .html file.
        title: Page title and heading.
        metrics: Scalars (nested dicts are flattened as ``a.b``); an `AvaResult.to_dict()` also
            gives the per-class AP table (``per_class``, ``class_names``, ``num_groundtruth``,
            ``num_detections``).
        per_class_png: Per-class AP chart (`evad.viz.ap_chart.plot_per_class_ap`).
        loss_curve: (step, loss) pairs, drawn as an inline SVG chart.
        tokens_png: Kept-token figure (`evad.viz.tokens.render_kept_tokens`).
        video_mp4: Annotated video (`evad.inference.detect_video`); embedded whole, so keep it short.
        extra_rows: More label -> value rows for the metrics table (run settings, paths).
        loss_label: The loss chart's y-axis label (what the logged loss is).
        captions: A sentence under the ``tokens`` or ``video`` section's heading.

    Raises:
        UserError: If an input file cannot be read or the report cannot be written.
    """
    e = html.escape
    captions = captions or {}

    def caption(key: str) -> str:
        return f"<p>{e(captions[key])}</p>" if key in captions else ""

    sections = [f"<h1>{e(title)}</h1>"]
    rows = _flat_metrics(metrics) + list((extra_rows or {}).items())
    if rows:
        sections.append("<h2>Metrics</h2>" + _table(["metric", "value"], rows))
    per_class = _per_class_table(metrics)
    if per_class or per_class_png:
        sections.append("<h2>Per-class AP</h2>")
        if per_class_png:
            sections.append(f'<p><img alt="per-class AP" src="{_data_uri(per_class_png, "image/png")}"></p>')
        if per_class:
            sections.append(per_class)
    if loss_curve:
        sections.append("<h2>Training loss</h2>" + loss_curve_svg(loss_curve, label=loss_label))
    if tokens_png:
        sections.append(
            "<h2>Kept tokens</h2><p>One row per pruning stage, one column per temporal slice; "
            "dropped tokens are grey, the keyframe slice is framed.</p>"
            + caption("tokens")
            + f'<p><img alt="kept tokens" src="{_data_uri(tokens_png, "image/png")}"></p>'
        )
    if video_mp4:
        sections.append(
            "<h2>Detections</h2>"
            + caption("video")
            + f'<video controls loop muted playsinline src="{_data_uri(video_mp4, "video/mp4")}"></video>'
        )
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    write_atomically(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
