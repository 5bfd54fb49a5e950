"""Pictures of what the detector does: annotated frames, kept tokens (EVAD Fig. 4), decoder
attention (supplementary Fig. 4), per-class AP charts (supplementary Fig. 1; `evad.viz.ap_chart`,
which needs matplotlib), HTML reports."""

from evad.viz.attention import ActorAttention, render_decoder_attention, trace_decoder_attention
from evad.viz.draw import draw_detections, draw_label, track_color
from evad.viz.report import write_report_html
from evad.viz.tokens import TokenGrid, clip_frames, render_kept_tokens, trace_kept_tokens

__all__ = [
    "ActorAttention",
    "TokenGrid",
    "clip_frames",
    "draw_detections",
    "draw_label",
    "render_decoder_attention",
    "render_kept_tokens",
    "trace_decoder_attention",
    "trace_kept_tokens",
    "track_color",
    "write_report_html",
]
