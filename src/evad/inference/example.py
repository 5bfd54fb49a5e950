"""A short example video to try `evad detect --example` on, rendered by the synthetic benchmark.

The clip is one video of the demo's synthetic world (`evad.data.synthetic` with the world settings
of `evad.demo.DemoSettings`, which the packaged model was trained on): articulated figures that
walk, wave, sit, carry boxes and talk to each other on a textured background. It is rendered from a
fixed seed and an index outside the training videos of the packaged model's recipe, so it is the
same on every machine and new to that model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evad.errors import UserError
from evad.fileio import make_dirs

EXAMPLE_VIDEO = "example.mp4"
EXAMPLE_SEED = 0
EXAMPLE_INDEX = 1000  # the demo and the packaged model train on videos 0, 1, ... of seed 0
EXAMPLE_SIZE = (128, 176)  # about the benchmark's 128 x 171, in multiples of 16


def write_example_video(path: str | Path, seconds: int = 4, *, overwrite: bool = False) -> Path:
    """Render the example clip and encode it as lossless H.264 MP4 (30 fps, 176 x 128 pixels, about
    1.5 MB for 4 s), so its decoded frames are the same on every run and machine.

    Args:
        path: The MP4 file to write (atomically: a temporary file renamed at the end).
        seconds: Length of the clip (at least 3: the synthetic world schedules its actions around
            keyframes whose whole clip lies inside the video).
        overwrite: Replace an existing file.

    Returns:
        `path`.

    Raises:
        UserError: If `path` exists and not `overwrite`, or cannot be written.
        ValueError: If `seconds` is below 3.
    """
    import av

    from evad.data.synthetic import SynthConfig, render_frames, simulate_video
    from evad.demo import DemoSettings

    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it")
    config = SynthConfig(
        size=EXAMPLE_SIZE,
        seconds=seconds,
        actor_height=DemoSettings.actor_height,
        max_actors=DemoSettings.max_actors,
        background_shapes=DemoSettings.background_shapes,
    )
    if not config.keyframe_seconds():
        raise ValueError(f"the example needs at least 3 seconds, got {seconds}")
    video = simulate_video(config, EXAMPLE_SEED, EXAMPLE_INDEX)
    height, width = video.size
    make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=video.fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            # Lossless: x264's bitstream can vary between runs, the decoded frames cannot.
            stream.options = {"qp": "0", "preset": "veryfast"}
            for bgr in render_frames(video):
                rgb = np.ascontiguousarray(bgr[..., ::-1])  # (H, W, 3) BGR -> RGB
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        tmp.replace(path)
    except OSError as err:
        raise UserError(f"{path}: cannot write: {err.strerror or err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return path
