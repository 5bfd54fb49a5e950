"""Benchmark: memory of `detect_video` on a long 1080p video (issue 5: memory must stay flat).

Detection decodes the video twice (clips, then the annotated copy), one frame at a time with a
sliding window of 2 s of frames for the clips (61 at 30 fps), so its resident memory should not
grow with the video's length: a 10-minute 1080p video must not need more than a few GB.

The input is synthetic and cheap to make: a slowly changing background colour with a few moving
rectangles, H.264 (ultrafast) at the chosen height, 16:9, 30 fps. The detector is the tiny preset
with random weights at one keyframe per second (only memory and time are measured). While
detection runs, a thread samples the process's resident memory every second.

Run:
    python benchmarks/detect_memory.py --minutes 0.5            # ~1 minute on 2 CPU cores
    python benchmarks/detect_memory.py                          # 10 minutes of 1080p

It prints and writes (``--json``, default detect_memory.json) the peak resident memory of the
detection run (VmHWM, reset after the video is generated where the kernel allows it), the
resident memory before detection, the largest sample in each tenth of the run (flat when
decoding streams; pass 1 runs the model, about the first third, pass 2 writes the annotated
video), all samples, and the wall time of each part.

Measured 2026-11-22 on the 2-core machine, 10 minutes of 1080p (18,000 frames, 600 keyframes),
one torch thread: the detection pass finished in about 8 minutes with the process's peak resident
memory at 0.90 GiB (VmHWM); 7 minutes into writing the annotated copy (pass 2, unfinished) the
resident memory was 0.70 GiB and the peak unchanged. Encoding the test video took 26 minutes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def write_video(path: Path, minutes: float, height: int, fps: int = 30, seed: int = 0) -> int:
    """Encode the synthetic test video; returns its frame count."""
    import av

    width = round(height * 16 / 9) // 2 * 2
    num_frames = round(minutes * 60 * fps)
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    sizes = rng.integers(height // 10, height // 3, (6, 2))
    speeds = rng.uniform(-6, 6, (6, 2)) * height / 1080
    starts = rng.uniform(0, 1, (6, 2)) * (width, height)
    image = np.empty((height, width, 3), np.uint8)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        for i in range(num_frames):
            phase = 2 * np.pi * i / (20 * fps)
            image[:] = (np.array([0.5, 0.4, 0.3]) * (1 + np.sin(phase + np.arange(3))) * 120).astype(np.uint8)
            for k in range(len(colours)):
                x, y = (starts[k] + speeds[k] * i) % (width, height)
                w, h = sizes[k]
                image[int(y) : int(y) + h, int(x) : int(x) + w] = colours[k]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return num_frames


class _Sampler(threading.Thread):
    """Samples VmRSS every `period` seconds until stopped."""

    def __init__(self, period: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.period = period
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        start = time.perf_counter()
        while not self.done.wait(self.period):
            self.samples.append((round(time.perf_counter() - start, 1), round(_status_mb("VmRSS"), 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="video length (default 10)")
    parser.add_argument("--height", type=int, default=1080, help="video height, 16:9 (default 1080)")
    parser.add_argument("--fps", type=int, default=30, help="frame rate (default 30)")
    parser.add_argument("--workdir", type=Path, help="where the video and results go (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=Path("detect_memory.json"), help="result file")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()

    import torch

    import evad
    from evad.inference import detect_video

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        video = work / f"synthetic_{args.height}p_{args.minutes:g}min.mp4"
        start = time.perf_counter()
        if video.exists():  # from an earlier run in the same --workdir (encoding 10 minutes is slow)
            num_frames = round(args.minutes * 60 * args.fps)
            print(f"reusing {video}")
        else:
            partial = video.with_name("partial-" + video.name)  # renamed once complete
            num_frames = write_video(partial, args.minutes, args.height, args.fps)
            partial.rename(video)
            took = time.perf_counter() - start
            mib = video.stat().st_size / 2**20
            print(f"wrote {video} ({num_frames} frames, {mib:.0f} MiB) in {took:.0f} s")
        encode_s = time.perf_counter() - start

        torch.manual_seed(0)
        model = evad.create_model("tiny", num_classes=80)
        ids = list(range(1, 81))
        reset = _reset_peak()
        rss_before = _status_mb("VmRSS")
        sampler = _Sampler()
        sampler.start()
        start = time.perf_counter()
        result = detect_video(
            model,
            video,
            work / "detect",
            [f"class {i}" for i in ids],
            ids,
            rate=1.0,
            overwrite=True,
            progress=False,
        )
        detect_s = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
        peak = _status_mb("VmHWM")

    samples = sampler.samples
    tenths = [[r for t, r in samples if k / 10 <= t / detect_s < (k + 1) / 10] for k in range(10)]
    report = {
        "minutes": args.minutes,
        "height": args.height,
        "width": round(args.height * 16 / 9) // 2 * 2,
        "fps": args.fps,
        "frames": result.num_frames,
        "keyframes": len(result.keyframes),
        "model": "tiny (random weights), short side 256, 1 keyframe/s",
        "torch_threads": torch.get_num_threads(),
        "encode_seconds": round(encode_s, 1),
        "detect_seconds": round(detect_s, 1),
        "rss_before_detect_mb": round(rss_before, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_is_detection_only": reset,
        "rss_max_per_tenth_mb": [max(rs) if rs else None for rs in tenths],
        "rss_samples": samples,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"detect_video: {result.num_frames} frames, {len(result.keyframes)} keyframes in {detect_s:.0f} s; "
        f"RSS {rss_before:.0f} MiB before, peak {peak:.0f} MiB"
        f"{'' if reset else ' (peak includes generating the video)'}; "
        f"RSS max per tenth of the run {report['rss_max_per_tenth_mb']} MiB -> {args.json}"
    )


if __name__ == "__main__":
    main()
