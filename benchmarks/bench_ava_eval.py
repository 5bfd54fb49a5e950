"""Benchmark: read and score an AVA detections file of 5,000 keyframes x 300 rows (SPEC section 10).

This is about what EVAD writes for a tenth of AVA val (1.5 million rows); the official
ActivityNet scorer needs about 40 seconds for it. The files are synthetic and deterministic
(seed 0), written in the usual SlowFast/EVAD layout (boxes to 3 decimals, scores to 4, so equal
scores are common and the exact tie rules are exercised).

Run:
    python benchmarks/bench_ava_eval.py [--keyframes 5000] [--rows 300] [--repeat 3]

It prints the time of the fastest of ``--repeat`` runs of reading the three files and scoring;
the target is under 5 seconds on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from evad.evaluation.ava import AvaInputWarning, evaluate_ava_files

# The 60 evaluated AVA v2.2 classes.
AVA_EVALUATED_IDS = (
    1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36, 37,
    38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68,
    69, 70, 72, 73, 74, 76, 77, 78, 79, 80,
)  # fmt: skip


def write_files(directory: Path, keyframes: int, rows: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """Write labelmap.pbtxt, groundtruth.csv and detections.csv; return their paths."""
    rng = np.random.default_rng(seed)
    labelmap = directory / "labelmap.pbtxt"
    labelmap.write_text(
        "".join(f'label {{\n  name: "action {i}"\n  label_id: {i}\n}}\n' for i in AVA_EVALUATED_IDS)
    )
    per_video = 897  # seconds 902-1798
    videos = [f"video{v:06d}" for v in range(-(-keyframes // per_video))]
    frame_video = [videos[k // per_video] for k in range(keyframes)]
    frame_second = [902 + k % per_video for k in range(keyframes)]

    # Ground truth: 1-4 people per keyframe, 1-3 actions each.
    gt_lines, people = [], []
    for k in range(keyframes):
        boxes = []
        for person in range(rng.integers(1, 5)):
            x1, y1 = rng.uniform(0.0, 0.6, size=2)
            box = (x1, y1, x1 + rng.uniform(0.1, 0.4), y1 + rng.uniform(0.2, 0.4))
            actions = rng.choice(len(AVA_EVALUATED_IDS), size=rng.integers(1, 4), replace=False)
            boxes.append((box, actions))
            for action in np.asarray(AVA_EVALUATED_IDS)[actions]:
                gt_lines.append(
                    f"{frame_video[k]},{frame_second[k]:04d},{box[0]:.3f},{box[1]:.3f},"
                    f"{box[2]:.3f},{box[3]:.3f},{action},{person}\n"
                )
        people.append(boxes)
    (directory / "groundtruth.csv").write_text("".join(gt_lines))

    # Detections: `rows // 60` jittered person boxes per keyframe, one row per class; a person's
    # true actions score higher (the mAP lands near EVAD's).
    per_box = len(AVA_EVALUATED_IDS)
    num_boxes = rows // per_box
    det_lines = []
    scores = rng.beta(0.4, 4.0, size=(keyframes, num_boxes, per_box))
    for k in range(keyframes):
        for b in range(num_boxes):
            box, actions = people[k][b % len(people[k])]
            scores[k, b, actions] = np.maximum(scores[k, b, actions], rng.uniform(0.0, 0.6, len(actions)))
            x1, y1, x2, y2 = np.clip(np.array(box) + rng.normal(0, 0.03, 4), 0, 1)
            prefix = f"{frame_video[k]},{frame_second[k]:04d},{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f},"
            det_lines.extend(
                f"{prefix}{action},{score:.4f}\n"
                for action, score in zip(AVA_EVALUATED_IDS, scores[k, b], strict=True)
            )
    (directory / "detections.csv").write_text("".join(det_lines))
    return directory / "groundtruth.csv", directory / "detections.csv", labelmap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keyframes", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=300, help="detection rows per keyframe")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        groundtruth, detections, labelmap = write_files(Path(tmp), args.keyframes, args.rows)
        num_rows = sum(1 for _ in detections.open())
        print(f"wrote {num_rows:,} detection rows in {time.perf_counter() - start:.1f} s")
        times, cpu = [], []
        for _ in range(args.repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AvaInputWarning)
                result = evaluate_ava_files(groundtruth, detections, labelmap)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        print(f"mAP {100 * result.mean_ap:.2f}  ({result.counts['scored_detections']:,} detections scored)")
        best = int(np.argmin(times))
        print(f"read + score: {times[best]:.2f} s wall, {cpu[best]:.2f} s CPU (best of {len(times)})")
        print(f"all runs (wall): {', '.join(f'{t:.2f}' for t in times)}")


if __name__ == "__main__":
    main()
