"""The UCF101-24 / JHMDB ground-truth pickle (SPEC section 9), read with a restricted unpickler.

The standard pickles were written by Python 2 (read with latin-1) and hold numpy arrays in plain
dicts and lists; the unpickler resolves nothing else, so a pickle cannot run code.
"""

from __future__ import annotations

import codecs
import io
import math
import numbers
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evad.errors import UserError, outside_stacklevel

try:
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric


_PICKLE_BUILTINS = {
    "set",
    "frozenset",
    "list",
    "dict",
    "tuple",
    "str",
    "int",
    "float",
    "bool",
    "complex",
    "bytes",
}
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles written by Python 3
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _PICKLE_GLOBALS[(_module, "_reconstruct")] = _multiarray._reconstruct
    _PICKLE_GLOBALS[(_module, "scalar")] = _multiarray.scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _PICKLE_GLOBALS[(_module, "_frombuffer")] = _numeric._frombuffer


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only numpy array reconstruction and plain builtin containers; nothing can run code."""

    def find_class(self, module: str, name: str) -> object:
        if module in ("builtins", "__builtin__") and name in _PICKLE_BUILTINS:
            return super().find_class(module, name)
        if (module, name) in _PICKLE_GLOBALS:
            return _PICKLE_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load '{module}.{name}'")


@dataclass(frozen=True)
class TubeGroundTruth:
    """Ground truth of one split's test videos.

    Attributes:
        labels: class names; a detection's label is an index into them.
        videos: the split's test videos, in the pickle's order.
        nframes: ``(V,)`` number of frames of each test video (frames are numbered from 1).
        tubes: per test video, ``{label: [tube, ...]}`` with tubes ``(L, 5)`` of rows
            ``frame, x1, y1, x2, y2`` (pixels) on consecutive frames.
        split: the split, numbered from 1 (entry ``split - 1`` of the pickle's ``test_videos``).
    """

    labels: tuple[str, ...]
    videos: tuple[str, ...]
    nframes: np.ndarray
    tubes: tuple[dict[int, list[np.ndarray]], ...]
    split: int = 1


def check_tube(tube: object, where: str) -> np.ndarray:
    """A ground-truth tube as a float array, after checking that it is one.

    Args:
        tube: a pickle's tube: ``(L, 5)`` rows ``frame, x1, y1, x2, y2`` on consecutive frames.
        where: the file, video, label and tube, for the error.

    Returns:
        The tube, integer arrays converted to float64.

    Raises:
        UserError: not a non-empty numeric ``(L, 5)`` array, non-finite values, or frames that are
            not consecutive increasing integers.
    """
    if not isinstance(tube, np.ndarray) or tube.ndim != 2 or tube.shape[0] == 0 or tube.shape[1] != 5:
        raise UserError(f"{where}: a tube must be a non-empty (N, 5) array of frame, x1, y1, x2, y2")
    if not np.issubdtype(tube.dtype, np.floating):
        if not np.issubdtype(tube.dtype, np.integer):
            raise UserError(f"{where}: tube of dtype {tube.dtype} is not numeric")
        tube = tube.astype(np.float64)
    if not np.isfinite(tube).all():
        raise UserError(f"{where}: tube has non-finite values")
    if np.any(tube[:, 0] != np.floor(tube[:, 0])) or np.any(np.diff(tube[:, 0]) != 1):
        # The reference's tube IoU assumes it (and fails an assertion otherwise).
        raise UserError(f"{where}: tube frames must be consecutive increasing integers")
    return tube


def split_videos(splits: Any, split: int, path: Path, key: str) -> list[str]:
    """The video names of split `split` (from 1) of a pickle's `key` (``train_videos`` or
    ``test_videos``), checked to be one list of names per split: a flat list of names would be
    read as split 1 = the letters of the first name."""
    entry = splits[split - 1]
    if isinstance(entry, str | bytes) or not isinstance(entry, list | tuple | np.ndarray):
        raise UserError(
            f"{path}: {key} must hold one list of video names per split ([[video, ...]] for one "
            f"split), got {type(entry).__name__} {entry!r:.60} as split {split}"
        )
    return [str(v) for v in entry]


def frame_count(data: dict, video: str, path: Path, role: str) -> int:
    """A video's ``nframes`` entry, checked: the video has ``nframes`` and ``gttubes`` entries (the
    latter a dict of label: tubes) and a positive whole number of frames. `role` ("test",
    "training") words the error."""
    if video not in data["nframes"] or video not in data["gttubes"]:
        raise UserError(f"{path}: {role} video {video!r} has no nframes or gttubes entry")
    if not isinstance(data["gttubes"][video], dict):
        kind = type(data["gttubes"][video]).__name__
        raise UserError(
            f"{path}: malformed ground truth: gttubes of {role} video {video!r} is a {kind}, not a dict "
            "of label: tubes"
        )
    count = data["nframes"][video]
    where = f"{path}: {role} video {video!r} has nframes {count!r}"
    if isinstance(count, bool) or not isinstance(count, int | float | np.integer | np.floating):
        raise UserError(f"{where}, not a number")
    # math.isfinite: np.isfinite fails on an int beyond int64 (10**30)
    if not (math.isfinite(count) and 1 <= count < 2**31 and count == int(count)):
        raise UserError(f"{where}; it must be a whole number from 1 to 2**31 - 1")
    return int(count)


def read_pickle(path: Path) -> Any:
    """Unpickle a ground-truth file with the restricted unpickler (Python 2 pickles read as latin-1).

    Raises:
        UserError: unreadable file, or a pickle that is malformed or refers to anything but numpy
            arrays and builtin containers.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except OSError as err:
        raise UserError(f"{path}: cannot read ground truth: {err.strerror or err}") from err
    except Exception as err:  # any malformed pickle: truncated, bad opcode, refused global
        if zipfile.is_zipfile(path):
            raise UserError(f"{path}: a torch.save (zip) file, not a ground-truth pickle") from None
        raise UserError(f"{path}: not a usable ground-truth pickle: {' '.join(str(err).split())}") from None


def load_groundtruth(path: str | Path, split: int = 1) -> TubeGroundTruth:
    """Read a UCF101-24 / JHMDB ground-truth pickle (Python 2 or 3) with a restricted unpickler.

    Args:
        path: the pickle (keys ``labels``, ``gttubes``, ``nframes``, ``test_videos``, ...).
        split: test split numbered from 1, like ``data.split`` and ``evad evaluate tubes --split``
            (1 for UCF101-24; 1, 2 or 3 for JHMDB).

    Returns:
        The test videos of that split with their tubes.

    Raises:
        UserError: unreadable file, a pickle that refers to anything but numpy arrays and builtin
            containers, or content that does not follow SPEC section 9.
    """
    if isinstance(split, bool) or not isinstance(split, numbers.Integral):  # else blamed on the file
        raise ValueError(f"split must be a whole number from 1, got {split!r}")
    path = Path(path)
    data = read_pickle(path)
    required = ("labels", "gttubes", "nframes", "test_videos")
    missing = [k for k in required if not isinstance(data, dict) or k not in data]
    if missing:
        raise UserError(f"{path}: ground-truth pickle lacks {', '.join(missing)}")
    try:
        return _parse_groundtruth(data, path, split)
    except (TypeError, ValueError, AttributeError) as err:  # a field of the wrong kind
        raise UserError(f"{path}: malformed ground truth: {err}") from err


def _parse_groundtruth(data: dict, path: Path, split: int) -> TubeGroundTruth:
    labels = tuple(str(label) for label in data["labels"])
    splits = data["test_videos"]
    if not 1 <= split <= len(splits):
        raise UserError(f"{path}: split {split} does not exist (the pickle has {len(splits)} test splits)")
    videos = tuple(split_videos(splits, split, path, "test_videos"))
    nframes = np.zeros(len(videos), dtype=np.int64)
    tubes = []
    outside = 0  # boxes on frames the video does not have
    for iv, video in enumerate(videos):
        nframes[iv] = frame_count(data, video, path, "test")
        video_tubes: dict[int, list[np.ndarray]] = {}
        for label, label_tubes in data["gttubes"][video].items():
            where = f"{path}: video {video!r}, label {label!r}"
            if not isinstance(label, (int, np.integer)) or not 0 <= label < len(labels):
                raise UserError(f"{where}: label is not an index into the {len(labels)} labels")
            video_tubes[int(label)] = [check_tube(t, f"{where}, tube {i}") for i, t in enumerate(label_tubes)]
            for tube in video_tubes[int(label)]:
                outside += int(np.count_nonzero((tube[:, 0] < 1) | (tube[:, 0] > nframes[iv])))
        tubes.append(video_tubes)
    if outside:
        warnings.warn(
            f"{path}: {outside} ground-truth boxes of split {split}'s test tubes lie on frames outside "
            "their video's 1..nframes; no detection can reach them, so they count as missed, as in the "
            "reference scorer",
            UserWarning,
            stacklevel=outside_stacklevel(),
        )
    return TubeGroundTruth(labels, videos, nframes, tuple(tubes), split)
