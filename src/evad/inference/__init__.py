"""Detection on video files: streaming decoding, keyframe clips, tracks and result files."""

from evad.inference.clips import ClipSampler, KeyframeClip
from evad.inference.detect import detect_video
from evad.inference.preprocess import ClipAtTime, InputSettings, clips_to_batch, read_keyframe_clip
from evad.inference.pretrained import LoadedModel, load_detector, packaged_checkpoint
from evad.inference.results import DetectResult, KeyframeResult, check_output_dir
from evad.inference.tracks import IouTracker, link_tracks
from evad.inference.video import Frame, VideoDecodeWarning, VideoInfo, VideoReader, probe_video

__all__ = [
    "ClipAtTime",
    "ClipSampler",
    "DetectResult",
    "Frame",
    "InputSettings",
    "IouTracker",
    "KeyframeClip",
    "KeyframeResult",
    "LoadedModel",
    "VideoDecodeWarning",
    "VideoInfo",
    "VideoReader",
    "check_output_dir",
    "clips_to_batch",
    "detect_video",
    "link_tracks",
    "load_detector",
    "packaged_checkpoint",
    "probe_video",
    "read_keyframe_clip",
]
