"""`evad demo`: the main job on built-in data.

The synthetic-benchmark training demo belongs to the data/training work (issue 3). Until it lands,
this command says so and runs the tiny detector end to end instead: a forward pass on a random clip,
a few optimisation steps of detector + criterion on one synthetic batch, and post-processing.
"""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the tiny detector end to end on built-in data")
    parser.add_argument("--steps", type=int, default=30, help="optimisation steps on the synthetic batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    import evad
    from evad.models import build_criterion, build_postprocess

    print("evad demo: training on the synthetic benchmark is not available yet;")
    print("running the tiny EVAD detector end to end on one synthetic batch instead.\n")
    torch.manual_seed(args.seed)
    cfg = evad.get_config("tiny", num_classes=5)
    model = evad.create_model("tiny", num_classes=5)
    criterion = build_criterion(cfg)
    clips = torch.randn(2, 3, 16, 64, 64)
    targets = [
        {"boxes": torch.tensor([[10.0, 8.0, 40.0, 60.0]]), "labels": torch.tensor([[1.0, 0, 1, 0, 0]])},
        {
            "boxes": torch.tensor([[5.0, 5.0, 30.0, 30.0], [30.0, 20.0, 60.0, 62.0]]),
            "labels": torch.tensor([[0.0, 1, 0, 0, 0], [0, 0, 0, 1, 1]]),
        },
    ]
    params = sum(p.numel() for p in model.parameters())
    print(f"model: tiny preset, {params / 1e3:.0f}k parameters, keep rate {model.backbone.keep_rate}")

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for step in range(args.steps):
        out = model(clips)
        loss = criterion.weighted_total(criterion(out, targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 0:
            first = loss.item()
            print(f"tokens per pruning stage: {' -> '.join(map(str, out['num_tokens']))}")
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:3d}  loss {loss.item():.3f}")
    elapsed = time.perf_counter() - start
    print(f"loss {first:.3f} -> {loss.item():.3f} in {args.steps} steps ({elapsed:.1f} s)")

    model.eval()
    with torch.no_grad():
        detections = build_postprocess(cfg)(model(clips))
    for b, det in enumerate(detections):
        print(f"clip {b}: {len(det)} person box(es) kept at threshold {cfg.person_threshold}")
        for box, score, actions in zip(det.boxes, det.person_scores, det.action_scores, strict=True):
            top = actions.argmax().item()
            coords = ", ".join(f"{v:.0f}" for v in box.tolist())
            print(f"  [{coords}] person {score:.2f}  top action {top} ({actions[top]:.2f})")
    return 0
