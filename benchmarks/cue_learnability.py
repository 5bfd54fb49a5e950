"""How learnable are a dataset's action cues at the demo's budget? (issue 3 diagnosis)

A ceiling for the demo's action classification that involves no detector: a small network is
trained directly on per-cell action labels of the keyframe. Every 16 x 16 cell of the keyframe
whose centre lies inside a ground-truth box gets that person's labels (the union where boxes
overlap; cells outside every box get none), and the network predicts them for every cell from the
whole 16-frame clip (binary cross-entropy, AdamW, horizontal flips). This is a far denser signal
than a detector's action loss, which sees one pooled feature per matched person. A person's score
is the maximum over the cells inside its ground-truth box, and the script prints actor-level AP
(every person is one sample, as in `benchmarks/actor_probe.py`; not frame-mAP) on training and
held-out keyframes, plus the AP of chance.

Two networks, both at the demo's token grid (stride 16 in space, 2 in time):

* ``vit``: evad's tiny-preset backbone (`VideoViT`, 4 blocks of width 64, keep rate 1.0) with a
  linear layer on its keyframe tokens;
* ``cnn``: a small 3-D CNN (five 3x3x3 convolutions with batch norm, 16-32-64-64-64 channels,
  spatial stride 16, temporal stride 8, averaged over its two remaining time steps).

Usage::

    python benchmarks/cue_learnability.py DATA_ROOT --model cnn [--steps 1000] [--batch 8]

DATA_ROOT is an AVA-format benchmark (`evad data synth --out DATA_ROOT ...`, e.g. the demo's
`demo-output/data`); clips are read with the recipe of `configs/synthetic_tiny.yaml` (without
flips; the script flips) and held in memory as uint8.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from evad.config import load_config
from evad.data.build import build_dataset
from evad.data.collate import collate
from evad.demo import packaged_config
from evad.evaluation.baselines import per_class_ap
from evad.models.factory import build_backbone, get_config

CELL = 16  # token stride in pixels
GROUPS = {"pose": (0, 3), "motion": (3, 9), "object": (9, 10), "interaction": (10, 13)}


def load_split(root: Path, split: str) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Clips (N, 3, T, H, W) uint8 in [0, 255] after the recipe's resize, boxes and labels per clip."""
    config = load_config(packaged_config("synthetic_tiny.yaml"), [f"data.root={root}", "data.flip_prob=0"])
    dataset = build_dataset(config.data, split)
    mean = torch.tensor(config.data.mean).view(3, 1, 1, 1)
    std = torch.tensor(config.data.std).view(3, 1, 1, 1)
    clips, boxes, labels = [], [], []
    for i in tqdm(range(len(dataset)), desc=f"reading {split}", leave=False):
        batch = collate([dataset[i]])  # padded to a multiple of 32, as in training
        clips.append((batch.clips[0] * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8))
        boxes.append(batch.targets[0]["boxes"])
        labels.append(batch.targets[0]["labels"].float())
    return torch.stack(clips), boxes, labels


def cells_inside(boxes: Tensor, h: int, w: int) -> Tensor:
    """(h*w, A) whether each cell centre of an h x w grid lies inside each box (A, 4) in pixels."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cx = (xs.flatten().float() + 0.5) * CELL
    cy = (ys.flatten().float() + 0.5) * CELL
    return (
        (cx[:, None] >= boxes[:, 0])
        & (cx[:, None] <= boxes[:, 2])
        & (cy[:, None] >= boxes[:, 1])
        & (cy[:, None] <= boxes[:, 3])
    )


def cell_targets(boxes: list[Tensor], labels: list[Tensor], h: int, w: int) -> Tensor:
    """(N, h*w, K) multi-hot cell labels: the union of the labels of the boxes covering each cell."""
    pairs = zip(boxes, labels, strict=True)
    per_clip = [(cells_inside(b, h, w).float() @ lab).clamp(max=1) for b, lab in pairs]
    return torch.stack(per_clip)


class ViTCells(nn.Module):
    """The tiny preset's backbone without pruning, and a linear layer on its keyframe tokens."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = build_backbone(get_config("tiny", num_classes, keep_rate=1.0))
        self.head = nn.Linear(self.backbone.embed_dim, num_classes)

    def forward(self, clips: Tensor) -> Tensor:
        enc = self.backbone(clips)
        _, h, w = enc.grid
        return self.head(enc.tokens[:, : h * w])  # keyframe slice first -> (B, h*w, K)


class CNNCells(nn.Module):
    """Five 3x3x3 conv-BN-ReLU layers down to stride (8, 16, 16), then a 1x1x1 classifier."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64, 64, 64)) -> None:
        super().__init__()
        strides = [(1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1)]
        layers: list[nn.Module] = []
        channels = 3
        for width, stride in zip(widths, strides, strict=True):
            layers += [nn.Conv3d(channels, width, 3, stride, 1), nn.BatchNorm3d(width), nn.ReLU(inplace=True)]
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv3d(channels, num_classes, 1)

    def forward(self, clips: Tensor) -> Tensor:
        logits = self.head(self.body(clips)).mean(dim=2)  # (B, K, 2, h, w) -> (B, K, h, w)
        return logits.flatten(2).transpose(1, 2)  # (B, K, h, w) -> (B, h*w, K)


def actor_ap(
    model: nn.Module,
    clips: Tensor,
    boxes: list[Tensor],
    labels: list[Tensor],
    norm: Callable[[Tensor], Tensor],
) -> np.ndarray:
    """Per-class actor-level AP: each person scored by the maximum over the cells inside its box."""
    model.eval()
    scores = []
    h, w = clips.shape[-2] // CELL, clips.shape[-1] // CELL
    with torch.no_grad():
        for start in range(0, len(clips), 16):
            logits = model(norm(clips[start : start + 16]))  # (b, h*w, K)
            for i, cell_logits in enumerate(logits):
                mask = cells_inside(boxes[start + i], h, w)  # (h*w, A)
                per_actor = cell_logits[:, None, :].masked_fill(~mask[..., None], float("-inf"))
                scores.append(per_actor.amax(dim=0))  # (h*w, A, K) -> (A, K)
    model.train()
    return per_class_ap(torch.cat(scores).numpy(), torch.cat(labels).numpy())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="AVA-format benchmark folder (evad data synth --out)")
    parser.add_argument("--model", choices=("vit", "cnn"), required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW peak rate (5%% warm-up, x0.1 at 80%%)")
    parser.add_argument("--evals", type=int, default=5, help="evaluations during training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if not (args.root / "annotations" / "train.csv").is_file():
        print(f"error: {args.root}: no annotations/train.csv (not an AVA-format benchmark)", file=sys.stderr)
        return 2

    torch.manual_seed(args.seed)
    train_clips, train_boxes, train_labels = load_split(args.root, "train")
    val_clips, val_boxes, val_labels = load_split(args.root, "val")
    num_classes = train_labels[0].shape[1]
    h, w = train_clips.shape[-2] // CELL, train_clips.shape[-1] // CELL
    targets = cell_targets(train_boxes, train_labels, h, w)  # (N, h*w, K)
    config = load_config(packaged_config("synthetic_tiny.yaml"), [f"data.root={args.root}"])
    mean = torch.tensor(config.data.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(config.data.std).view(1, 3, 1, 1, 1)

    def norm(clips: Tensor) -> Tensor:
        return (clips.float() / 255 - mean) / std

    model = ViTCells(num_classes) if args.model == "vit" else CNNCells(num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    n_train = len(train_clips)
    n_seen = min(n_train, len(val_clips))  # training AP on as many clips as are held out
    history = []
    start = time.time()
    held = np.full(num_classes, np.nan)
    bar = tqdm(range(args.steps), desc=f"{args.model} cells", unit="step")
    for step in bar:
        factor = min(1.0, (step + 1) / max(1, 0.05 * args.steps)) * (0.1 if step >= 0.8 * args.steps else 1.0)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * factor
        pick = torch.randint(n_train, (args.batch,), generator=generator)
        clips, cells = norm(train_clips[pick]), targets[pick]
        if torch.rand(1, generator=generator).item() < 0.5:  # flip the clips and their cell grid
            clips = clips.flip(-1)
            cells = cells.view(args.batch, h, w, -1).flip(2).reshape(args.batch, h * w, -1)
        loss = F.binary_cross_entropy_with_logits(model(clips), cells)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % max(1, args.steps // args.evals) == 0 or step + 1 == args.steps:
            seen = actor_ap(model, train_clips[:n_seen], train_boxes[:n_seen], train_labels[:n_seen], norm)
            held = actor_ap(model, val_clips, val_boxes, val_labels, norm)
            history.append(
                {
                    "step": step + 1,
                    "minutes": round((time.time() - start) / 60, 2),
                    "train_mAP": round(float(np.nanmean(seen)), 4),
                    "val_mAP": round(float(np.nanmean(held)), 4),
                }
            )
            tqdm.write(json.dumps(history[-1]))
    chance = torch.cat(val_labels).mean(0).numpy()
    groups = {name: round(float(np.nanmean(held[a:b])), 4) for name, (a, b) in GROUPS.items()}
    n_actors = len(torch.cat(train_labels)), len(torch.cat(val_labels))
    print(f"{n_actors[0]} training actors in {n_train} clips, {n_actors[1]} held out")
    print(f"held-out actor AP per class (ids 1..{num_classes}): " + " ".join(f"{a:.2f}" for a in held))
    print("chance (share of positives):            " + " ".join(f"{a:.2f}" for a in chance))
    print(f"held-out mAP {np.nanmean(held):.3f} (chance {chance[chance > 0].mean():.3f}), by group {groups}")
    if args.json is not None:
        result = {
            "model": args.model,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "history": history,
            "val_per_class": [round(float(a), 4) for a in held],
            "val_groups": groups,
            "chance": round(float(chance[chance > 0].mean()), 4),
        }
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
