"""Run a detector over a video file: AVA CSV, JSON and an annotated MP4 (SPEC section 1).

Two streaming passes over the video, so memory does not grow with its length:

1. decode, cut a 16 x 4 clip around every keyframe (`evad.inference.clips`; clip frames are
   taken at the model's training frame rate `clip_fps`, keyframes and outputs stay in the input's
   own frames and times), run the model in batches, post-process the boxes to original pixels
   and link them into tracks;
2. decode again and draw each keyframe's detections on every frame from that keyframe to the
   next, encoding H.264 at the input's frame count and timestamps, and at its resolution times
   the smallest whole factor that gives a short side of at least ``video_min_side`` pixels (labels
   on a 128-pixel frame would cover a third of it) (`evad.inference.annotate`).

Outputs (in ``out_dir``), written under temporary names and renamed together at the end:
``detections.csv`` (AVA layout) and ``detections.json`` (their contents: `evad.inference.results`),
and ``annotated.mp4``, the video with boxes, track ids and action labels drawn.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from evad.data.collate import batched
from evad.errors import UserError
from evad.fileio import make_dirs
from evad.inference.annotate import MAX_VIDEO_MIN_SIDE, annotation_scale, write_annotated
from evad.inference.clips import ClipSampler
from evad.inference.preprocess import clips_to_batch, frame_resizer
from evad.inference.results import (
    OUTPUT_FILES,
    DetectResult,
    KeyframeResult,
    check_output_dir,
    keyframe_json,
    write_keyframes_csv,
)
from evad.inference.tracks import IouTracker
from evad.inference.video import VideoInfo, VideoReader, probe_video
from evad.layers.token_pruning import check_keep_rate
from evad.models.postprocess import PostProcess


def _expected_keyframes(info: VideoInfo, rate: float | None, stride: int | None) -> int | None:
    if stride is not None:
        return -(-info.declared_frames // stride) if info.declared_frames else None
    return max(1, round(info.duration * rate)) if info.duration else None


@torch.inference_mode()
def _run_model(
    model: nn.Module,
    path: Path,
    sampler: ClipSampler,
    postprocess: PostProcess,
    *,
    num_classes: int,
    keep_rate: float | None,
    batch_size: int,
    short_side: int,
    max_long_side: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    progress: bool,
) -> tuple[list[KeyframeResult], int, bool]:
    """First pass: keyframe detections, frames decoded, whether the video was truncated."""
    from tqdm import tqdm

    with VideoReader(path) as reader:
        info = reader.info
        (h, w), resize = frame_resizer(info.height, info.width, short_side, max_long_side)
        results: list[KeyframeResult] = []
        total = _expected_keyframes(info, sampler.rate, sampler.stride)
        bar = tqdm(total=total, desc=f"detect {path.name}", unit="keyframe", disable=not progress)
        # A model cast to float16 / bfloat16 (model.half()) takes clips of its own dtype.
        dtype = model.backbone.patch_embed.proj.weight.dtype
        with bar:
            for batch in batched(sampler.clips(reader.frames(resize)), batch_size):
                clips = clips_to_batch(batch, mean, std, device=device).to(dtype)
                sizes = torch.tensor([[h, w]] * len(batch), device=device)
                outputs = model(clips, image_sizes=sizes, keep_rate=keep_rate)
                if outputs["action_logits"].shape[-1] != num_classes:
                    raise ValueError(
                        f"the model predicts {outputs['action_logits'].shape[-1]} action classes "
                        f"but {num_classes} class ids were given"
                    )
                detections = postprocess(outputs, [[info.height, info.width]] * len(batch))
                for clip, det in zip(batch, detections, strict=True):
                    results.append(
                        KeyframeResult(
                            clip.keyframe,
                            clip.time,
                            det.boxes.float().cpu().numpy(),
                            det.person_scores.float().cpu().numpy(),
                            det.action_scores.float().cpu().numpy(),
                            (info.height, info.width),
                        )
                    )
                bar.update(len(batch))
        return results, reader.num_decoded, reader.truncated


def detect_video(
    model: nn.Module,
    path: str | Path,
    out_dir: str | Path,
    class_names: Sequence[str],
    class_ids: Sequence[int],
    *,
    keep_rate: float | None = None,
    person_threshold: float = 0.7,
    action_threshold: float = 0.5,
    keep_all_if_none: bool = False,
    rate: float | None = 1.0,
    stride: int | None = None,
    batch_size: int = 4,
    short_side: int = 256,
    max_long_side: int = 1333,
    sampling_rate: int = 4,
    clip_fps: float = 30.0,
    mean: Sequence[float] = (0.45, 0.45, 0.45),
    std: Sequence[float] = (0.225, 0.225, 0.225),
    video_min_side: int = 360,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> DetectResult:
    """Detect actors and their actions on the keyframes of a video file and write the results.

    The model is put in eval mode and moved to `device`; clips are made in its dtype (float32, or
    float16 / bfloat16 after ``model.half()`` / ``model.bfloat16()``). Clips are 16 (the backbone's
    `num_frames`) frames at stride `sampling_rate` around each keyframe, counted at `clip_fps`
    whatever the video's frame rate (clip frame i is the frame shown (i - 8) * sampling_rate /
    clip_fps seconds from the keyframe), resized so the short side is `short_side` (long side at
    most `max_long_side`) and zero-padded to a multiple of 32.

    Args:
        model: An EVAD detector (the prediction dict of `evad.models.EVAD.forward`).
        path: Video file.
        out_dir: Folder for ``detections.csv``, ``detections.json`` and ``annotated.mp4``.
        class_names: Name of each of the model's action outputs.
        class_ids: AVA class id of each of the model's action outputs.
        keep_rate: Token keep rate rho; the model's default if None.
        person_threshold: Minimum person probability of a box.
        action_threshold: Minimum action probability listed in the JSON and drawn in the video
            (the CSV has every class's score).
        keep_all_if_none: Keep every proposal of a keyframe where none passes `person_threshold`, as
            the official evaluation does; off by default, as a video full of such boxes says nothing.
        rate: Keyframes per second (keyframe k at time k / rate, on the nearest frame).
        stride: One keyframe every `stride` frames instead of `rate`.
        batch_size: Clips per forward pass.
        short_side: Short side of the model's input in pixels.
        max_long_side: Cap on the long side of the model's input.
        sampling_rate: Frame step inside a clip, in frames at `clip_fps`.
        clip_fps: Frame rate of the model's training clips (its config's ``data.fps``; 30 for AVA).
        mean: Per-channel mean of RGB in [0, 1], subtracted.
        std: Per-channel standard deviation of RGB in [0, 1], divided by.
        video_min_side: The annotated video is the input enlarged by the smallest whole factor
            that gives it a short side of at least this many pixels, so that labels stay readable
            on small inputs; 0 keeps the input's size. Boxes in the CSV and JSON are always in
            the input's pixels.
        device: Where the model runs.
        overwrite: Replace results already in `out_dir`.
        progress: Show tqdm progress bars.

    Raises:
        UserError: If the video cannot be read, has no decodable frame, or `out_dir` already holds
            results and not `overwrite` (checked before the model runs), or `device` is a GPU
            this machine does not have.
        ValueError: For inconsistent arguments (class lists, rates, keep rate, model outputs).
    """
    start = time.perf_counter()
    path, out_dir = Path(path), check_output_dir(out_dir, overwrite)
    if len(class_names) != len(class_ids):
        raise ValueError(f"{len(class_names)} class names for {len(class_ids)} class ids")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= video_min_side <= MAX_VIDEO_MIN_SIDE:
        raise ValueError(f"video_min_side must be in [0, {MAX_VIDEO_MIN_SIDE}], got {video_min_side}")
    if keep_rate is not None:
        check_keep_rate(keep_rate)
    if not 0.0 <= action_threshold <= 1.0:
        raise ValueError(f"action_threshold must be in [0, 1], got {action_threshold}")
    if short_side < 1 or max_long_side < 1:
        raise ValueError(
            f"short_side and max_long_side must be >= 1 pixel, got {short_side}, {max_long_side}"
        )
    if len(mean) != 3 or len(std) != 3 or not all(0 <= m <= 1 for m in mean) or not all(s > 0 for s in std):
        raise ValueError(
            "mean and std must be 3 values of RGB in [0, 1] (std > 0), "
            f"got mean {tuple(mean)}, std {tuple(std)}"
        )
    if not isinstance(model, nn.Module) or not hasattr(model, "backbone"):
        raise TypeError(f"model must be an EVAD detector, got {type(model).__name__}")
    from evad.engine.distributed import resolve_device

    try:
        device = resolve_device(str(device), "device")
    except RuntimeError:  # torch's list of every device type it knows
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}") from None
    sampler = ClipSampler(
        rate=rate,
        stride=stride,
        num_frames=model.backbone.num_frames,
        sampling_rate=sampling_rate,
        clip_fps=clip_fps,
    )
    postprocess = PostProcess(person_threshold, keep_all_if_none=keep_all_if_none)
    info = probe_video(path)  # a bad file fails here, before the model runs or anything is created
    model.eval().to(device)

    keyframes, num_frames, truncated = _run_model(
        model,
        path,
        sampler,
        postprocess,
        num_classes=len(class_ids),
        keep_rate=keep_rate,
        batch_size=batch_size,
        short_side=short_side,
        max_long_side=max_long_side,
        mean=mean,
        std=std,
        device=device,
        progress=progress,
    )
    tracker = IouTracker()
    for kf in keyframes:
        kf.track_ids = tracker.update(kf.boxes)

    make_dirs(out_dir)
    final = {name: out_dir / name for name in OUTPUT_FILES}
    temp = {name: out_dir / f".{name}.{uuid.uuid4().hex[:8]}.tmp" for name in OUTPUT_FILES}
    try:
        write_keyframes_csv(temp["detections.csv"], path.stem, keyframes, class_ids)
        scale = annotation_scale(info.height, info.width, video_min_side)
        codec, written = write_annotated(
            path, temp["annotated.mp4"], keyframes, class_names, action_threshold, scale, progress
        )
        document = {
            "video": path.stem,
            "path": str(path),
            "height": info.height,
            "width": info.width,
            "fps": info.fps,
            "num_frames": written,
            "video_scale": scale,
            "truncated": truncated,
            "keyframe_rate": sampler.rate,
            "keyframe_stride": sampler.stride,
            "clip_fps": sampler.clip_fps,
            "keep_rate": keep_rate if keep_rate is not None else model.backbone.keep_rate,
            "person_threshold": person_threshold,
            "action_threshold": action_threshold,
            "classes": [{"id": int(i), "name": n} for i, n in zip(class_ids, class_names, strict=True)],
            "keyframes": [keyframe_json(kf, class_ids, class_names, action_threshold) for kf in keyframes],
        }
        with open(temp["detections.json"], "w", encoding="utf-8") as file:
            json.dump(document, file, indent=2)
            file.write("\n")
        for name in OUTPUT_FILES:  # all written: now they may look complete
            os.replace(temp[name], final[name])
    except OSError as err:
        raise UserError(f"{out_dir}: cannot write results: {err.strerror or err}") from err
    finally:
        for tmp in temp.values():
            tmp.unlink(missing_ok=True)
    return DetectResult(
        video=path,
        out_dir=out_dir,
        csv_path=final["detections.csv"],
        json_path=final["detections.json"],
        video_path=final["annotated.mp4"],
        info=info,
        num_frames=num_frames,
        keyframes=keyframes,
        codec=codec,
        video_scale=scale,
        truncated=truncated,
        seconds=time.perf_counter() - start,
    )
