"""What a trained model's action features know beyond the shape of the box (issue 3 diagnosis).

Every ground-truth person of the training and held-out keyframes is classified three ways, with the
ground-truth box, so localization plays no part:

* the model's own action head (decoder and classifiers) on that box;
* a linear probe (logistic regression, trained on the training actors) on the actor features the
  decoder starts from (3-D RoIAlign of the dense token map);
* the same probe on the box geometry alone: width, height, log aspect ratio, left edge and bottom
  edge, as fractions of the frame.

It prints the actor-level AP of each class (every actor is one sample; not frame-mAP), train and
held-out, and the AP of chance (each class's share of the held-out actors). When the learned
features score no better than the five geometry numbers, the model has not yet learned what the
box's contents show (objects, speech marks, motion).

Usage::

    python benchmarks/actor_probe.py CHECKPOINT [KEY=VALUE ...]

CHECKPOINT is an `evad train` checkpoint (best.pt / last.pt) on AVA-format data with
`annotations/train.csv` and `annotations/val.csv` (e.g. `demo-output/train/best.pt`); overrides
change its stored config (e.g. `data.root=...`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evad.config import config_from_dict
from evad.engine import checkpoint as ckpt
from evad.engine.evaluate import build_val_data
from evad.evaluation.baselines import per_class_ap
from evad.models.factory import build_model


def actor_features(checkpoint: Path, split: str, overrides: list[str]) -> dict[str, torch.Tensor]:
    """Per ground-truth actor of `split`: head scores, decoder-input features, geometry, labels."""
    state = ckpt.load_checkpoint(checkpoint)
    split_files = [
        f"data.val_annotations=annotations/{split}.csv",
        f"data.val_exclusions=annotations/{split}_excluded_timestamps.csv",
    ]
    config = config_from_dict(state["config"], str(checkpoint), [*overrides, *split_files])
    dataset, loader = build_val_data(config)
    model = build_model(config.model.model_config(int(dataset.num_classes)))
    ckpt.load_model_state(model, state["model"], str(checkpoint))
    model.eval()
    head = model.classification
    out: dict[str, list[torch.Tensor]] = {"head": [], "features": [], "geometry": [], "labels": []}
    with torch.no_grad():
        for batch in loader:
            enc = model.backbone(batch.clips)
            sizes = batch.image_sizes.float()
            M = enc.tokens.shape[1]
            for b, target in enumerate(batch.targets):
                boxes = target["boxes"]  # (A, 4) pixels of the resized clip
                if len(boxes) == 0:
                    continue
                one = slice(b, b + 1)
                args = (enc.tokens[one], enc.indices[one], enc.grid, boxes[None], sizes[one])
                sequence, _ = head.decoder_input(*args)  # (1, M + A, Cd)
                out["features"].append(sequence[0, M:])
                out["head"].append(head(*args)[-1][0].sigmoid())  # (A, K)
                h, w = sizes[b].tolist()
                bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
                geometry = [bw / w, bh / h, (bw / bh).log(), boxes[:, 0] / w, boxes[:, 3] / h]
                out["geometry"].append(torch.stack(geometry, dim=1))  # (A, 5)
                out["labels"].append(target["labels"].float())
    return {key: torch.cat(value) for key, value in out.items()}


def linear_probe(
    train: torch.Tensor, labels: torch.Tensor, steps: int = 1500
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Logistic regression on standardised inputs (Adam, weight decay 1e-2)."""
    torch.manual_seed(0)
    mean, std = train.mean(0), train.std(0) + 1e-6
    linear = torch.nn.Linear(train.shape[1], labels.shape[1])
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2, weight_decay=1e-2)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(linear((train - mean) / std), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return lambda x: linear((x - mean) / std).sigmoid()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train = actor_features(args.checkpoint, "train", args.overrides)
    val = actor_features(args.checkpoint, "val", args.overrides)
    print(f"{len(train['labels'])} training actors, {len(val['labels'])} held-out actors")
    rows = {"model's action head": (train["head"], val["head"])}
    for key in ("features", "geometry"):
        probe = linear_probe(train[key], train["labels"])
        with torch.no_grad():
            rows[f"linear probe on {key}"] = (probe(train[key]), probe(val[key]))
    print(f"{'classifier':32s} {'train mAP':>9s} {'val mAP':>8s}   val AP per class (ids 1..K)")
    for name, (on_train, on_val) in rows.items():
        train_ap = per_class_ap(on_train.numpy(), train["labels"].numpy())
        val_ap = per_class_ap(on_val.numpy(), val["labels"].numpy())
        per_class = " ".join("  - " if np.isnan(a) else f"{a:.2f}" for a in val_ap)
        print(f"{name:32s} {np.nanmean(train_ap):9.3f} {np.nanmean(val_ap):8.3f}   {per_class}")
    # A classifier that knows nothing scores each class's share of positive actors.
    chance = val["labels"].mean(0).numpy()
    per_class = " ".join(f"{a:.2f}" for a in chance)
    print(f"{'chance (share of positives)':32s} {'':9s} {chance[chance > 0].mean():8.3f}   {per_class}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
