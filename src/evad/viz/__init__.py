"""Pictures of what the detector does: annotated frames, kept tokens (EVAD Fig. 4), HTML reports."""

from evad.viz.draw import draw_detections, draw_label, track_color
from evad.viz.report import write_report_html
from evad.viz.tokens import render_kept_tokens, trace_kept_tokens

__all__ = [
    "draw_detections",
    "draw_label",
    "render_kept_tokens",
    "trace_kept_tokens",
    "track_color",
    "write_report_html",
]
