"""Detection on video files: streaming decoding, keyframe clips, tracks and result files."""

from evad.inference.detect import DetectResult, KeyframeResult, check_output_dir, detect_video
from evad.inference.tracks import IouTracker, link_tracks
from evad.inference.video import (
    ClipSampler,
    Frame,
    KeyframeClip,
    VideoDecodeWarning,
    VideoInfo,
    VideoReader,
    probe_video,
)

__all__ = [
    "ClipSampler",
    "DetectResult",
    "Frame",
    "IouTracker",
    "KeyframeClip",
    "KeyframeResult",
    "VideoDecodeWarning",
    "VideoInfo",
    "VideoReader",
    "check_output_dir",
    "detect_video",
    "link_tracks",
    "probe_video",
]
