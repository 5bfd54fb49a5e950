"""A tiny in-memory action dataset with the item and batch layout of `evad.data` (for engine tests).

Items are 16-frame 32x32 clips of a bright rectangle (the "person") on noise; the noise is fixed
per item, while a horizontal flip is drawn from torch's global generator, as a training transform
would, so the tests see whether the engine reseeds each epoch. The dataset can describe itself as
AVA-format (ground-truth CSV, label map) or as a tube dataset (a `TubeGroundTruth`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from evad.data.collate import collate
from evad.evaluation.tubes import TubeGroundTruth

NUM_CLASSES = 3
SIZE = 32
ORIG = (48, 64)  # original (height, width): boxes scale by these / SIZE
FRAMES = 16


class TinyDataset(Dataset):
    """`length` keyframes of `videos` videos; timestamps start at 1 (frame numbers for tubes)."""

    def __init__(self, length: int = 8, videos: int = 2, flip: bool = True, root: Path | None = None) -> None:
        self.length = length
        self.videos = videos
        self.flip = flip
        self.class_ids = list(range(1, NUM_CLASSES + 1))
        self.class_names = [f"class{c}" for c in self.class_ids]
        self.num_classes = NUM_CLASSES
        self.keyframes = [self._key(i) for i in range(length)]
        if root is not None:
            self._write_ava(Path(root))
            self.groundtruth = self._tubes()

    def _key(self, index: int) -> tuple[str, int]:
        per_video = -(-self.length // self.videos)
        return f"vid{index // per_video}", index % per_video + 1

    def _box(self, index: int) -> tuple[list[float], list[float]]:
        g = np.random.default_rng(index)
        x1, y1 = g.integers(0, 12, size=2)
        w, h = g.integers(10, 18, size=2)
        labels = [1.0, float(index % 2), float(index % 3 == 0)]
        return [float(x1), float(y1), float(min(x1 + w, SIZE)), float(min(y1 + h, SIZE))], labels

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(index)
        clip = torch.randn(3, FRAMES, SIZE, SIZE, generator=g) * 0.2
        box, labels = self._box(index)
        x1, y1, x2, y2 = (int(v) for v in box)
        clip[:, :, y1:y2, x1:x2] += 1.0
        boxes = torch.tensor([box])
        if self.flip and torch.rand(()) < 0.5:  # a training transform drawing from the global RNG
            clip = clip.flip(-1)
            boxes = torch.stack([SIZE - boxes[:, 2], boxes[:, 1], SIZE - boxes[:, 0], boxes[:, 3]], dim=1)
        video, timestamp = self._key(index)
        return {
            "clip": clip,
            "boxes": boxes,
            "labels": torch.tensor([labels]),
            "video": video,
            "timestamp": timestamp,
            "orig_size": ORIG,
            "size": (SIZE, SIZE),
        }

    # Ground truth in original-frame coordinates (AVA CSV normalised, tubes in pixels).
    def _write_ava(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(self.length):
            video, ts = self._key(i)
            box, labels = self._box(i)
            norm = [v / SIZE for v in box]
            for c, on in zip(self.class_ids, labels, strict=True):
                if on:
                    rows.append(f"{video},{ts},{norm[0]:.4f},{norm[1]:.4f},{norm[2]:.4f},{norm[3]:.4f},{c},0")
        self.groundtruth_csv = root / "gt.csv"
        self.groundtruth_csv.write_text("\n".join(rows) + "\n")
        self.labelmap_path = root / "labelmap.pbtxt"
        self.labelmap_path.write_text(
            "".join(
                f'item {{\n  name: "{n}"\n  id: {c}\n}}\n'
                for c, n in zip(self.class_ids, self.class_names, strict=True)
            )
        )
        self.exclusions_csv = None

    def _tubes(self) -> TubeGroundTruth:
        videos = sorted({self._key(i)[0] for i in range(self.length)})
        nframes = np.array([sum(self._key(i)[0] == v for i in range(self.length)) for v in videos])
        scale = np.array([ORIG[1], ORIG[0], ORIG[1], ORIG[0]]) / SIZE
        tubes = []
        for v in videos:
            frames = [i for i in range(self.length) if self._key(i)[0] == v]
            rows = [[self._key(i)[1], *(np.array(self._box(i)[0]) * scale)] for i in frames]
            tubes.append({0: [np.array(rows, dtype=np.float64)]})
        return TubeGroundTruth(tuple(self.class_names), tuple(videos), nframes, tuple(tubes))


class CrowdedFirstClip(TinyDataset):
    """Clip 0 holds four people, the others one each."""

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        if index == 0:
            boxes = item["boxes"]  # (1, 4)
            item["boxes"] = torch.cat([boxes, boxes + 1, boxes + 2, boxes - 1]).clamp(0, SIZE)  # (4, 4)
            item["labels"] = item["labels"].repeat(4, 1)  # (1, 3) -> (4, 3)
        return item


def loader(dataset: Dataset, batch_size: int, shuffle: bool = True, sampler=None) -> DataLoader:
    """Shuffling draws from torch's global generator (reseeded by the engine each epoch)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        collate_fn=collate,
        num_workers=0,
    )
