"""Where the context refinement decoder looks: the picture of the EVAD supplementary's Fig. 4.

The decoder (EVAD Sec. 3.3, SPEC section 4) attends over ``[M kept video tokens, Q actor
features]``. For each detected actor, the row of its actor token in one decoder block's attention,
restricted to the video tokens and averaged over heads, says which parts of the clip refine that
actor's features. Put back on the (t, h, w) token grid (tokens pruned by the encoder get 0), it is
shown as a heat map over the 8 temporal slices: one figure row per actor, its box drawn on the
keyframe column, under a first row with the plain frames.

The maps are the attention probabilities themselves: an actor's map sums to the share of its
attention that goes to video tokens (the rest goes to the actor tokens), at most 1. Each row of
the picture is scaled by its own maximum, so the colours compare places, not actors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from evad.viz.draw import track_color
from evad.viz.tokens import TokenGrid, clip_frames


@dataclass
class ActorAttention:
    """Decoder attention of the detected actors of one clip over its video tokens.

    Attributes:
        maps: (A, t, h, w) head-averaged attention from each actor token to every video token;
            0 at positions the encoder pruned.
        boxes: (A, 4) actor boxes, xyxy in input pixels, clipped to the unpadded clip.
        person_scores: (A,) person probabilities, descending.
        action_scores: (A, K) action probabilities of the model's output (the last block).
        query_indices: (A,) which proposals the actors are.
        kept_indices: (M,) global (t, h, w) flat indices of the video tokens, as the decoder
            placed them.
        grid: Token grid (t, h, w).
        block: The decoder block the attention comes from (0-based).
        image_size: Unpadded (height, width) of the clip.
        top_person_score: The highest person probability of any proposal (chosen or not).
    """

    maps: Tensor
    boxes: Tensor
    person_scores: Tensor
    action_scores: Tensor
    query_indices: Tensor
    kept_indices: Tensor
    grid: tuple[int, int, int]
    block: int
    image_size: tuple[int, int]
    top_person_score: float

    @property
    def video_share(self) -> Tensor:
        """(A,) share of each actor's attention that goes to video tokens (the sum of its map)."""
        return self.maps.flatten(1).sum(1)  # (A, t, h, w) -> (A, t*h*w)


@torch.no_grad()
def trace_decoder_attention(
    model: nn.Module,
    clip: Tensor,
    image_size: tuple[int, int] | None = None,
    keep_rate: float | None = None,
    *,
    block: int = -1,
    person_threshold: float = 0.7,
    max_actors: int = 4,
) -> ActorAttention:
    """Run the detector on one clip and take the decoder attention of its most confident actors.

    The detector's forward runs unchanged (fused attention, same outputs); a forward hook keeps
    the classification head's inputs, and `ContextRefinementHead.decoder_attention` then re-runs
    the decoder with the explicit attention path to read the chosen block's attention.

    Args:
        model: An EVAD detector whose action head is the context refinement decoder.
        clip: (3, T, H, W) normalised clip, zero-padded to a multiple of 32.
        image_size: Unpadded (height, width); (H, W) if None.
        keep_rate: Token keep rate rho; the model's default if None.
        block: Decoder block (negative counts from the last).
        person_threshold: Actors need at least this person probability.
        max_actors: At most this many actors, the most confident first.

    Returns:
        The actors' attention maps, possibly for no actor at all.

    Raises:
        ValueError: If the model has no context decoder or `block` does not exist.
    """
    head = model.classification
    if not hasattr(head, "decoder_attention"):
        raise ValueError(f"the model's action head ({type(head).__name__}) has no context decoder")
    device = next(model.parameters()).device
    H, W = clip.shape[-2:]
    h, w = image_size if image_size is not None else (H, W)
    sizes = torch.tensor([[h, w]], device=device)
    captured: dict = {}

    def keep_inputs(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        captured.update(args=args, kwargs=kwargs)

    handle = head.register_forward_hook(keep_inputs, with_kwargs=True)
    was_training = model.training
    model.eval()
    try:
        # (3, T, H, W) -> (1, 3, T, H, W)
        outputs = model(clip.unsqueeze(0).to(device), image_sizes=sizes, keep_rate=keep_rate)
        attention, indices, _ = head.decoder_attention(*captured["args"], **captured["kwargs"], block=block)
    finally:
        handle.remove()
        model.train(was_training)

    person = outputs["pred_logits"][0].softmax(-1)[:, 0]  # (Q,)
    order = person.argsort(descending=True)
    chosen = order[person[order] >= person_threshold][:max_actors]  # (A,)
    boxes = outputs["pred_boxes"][0, chosen].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)

    t, gh, gw = outputs["grid"]
    M = indices.shape[1]
    rows = attention[0, :, M + chosen, :M].mean(0)  # (heads, A, M) -> (A, M)
    maps = rows.new_zeros(len(chosen), t * gh * gw)
    maps.scatter_(1, indices[0].expand(len(chosen), M), rows)  # (M,) -> (A, M); pruned positions stay 0
    depth = len(head.blocks)
    return ActorAttention(
        maps=maps.reshape(-1, t, gh, gw).cpu(),  # (A, t*h*w) -> (A, t, h, w)
        boxes=boxes.cpu(),
        person_scores=person[chosen].cpu(),
        action_scores=outputs["action_logits"][0, chosen].sigmoid().cpu(),
        query_indices=chosen.cpu(),
        kept_indices=indices[0].cpu(),
        grid=(t, gh, gw),
        block=block % depth,
        image_size=(int(h), int(w)),
        top_person_score=float(person.max()),
    )


def _heat(frame: np.ndarray, heat: np.ndarray, alpha: float) -> np.ndarray:
    """Blend a [0, 1] map (H, W) as a JET colour map over an RGB frame."""
    colours = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return np.round((1 - alpha) * frame + alpha * colours).astype(np.uint8)


def render_decoder_attention(
    clip: Tensor | np.ndarray,
    traced: ActorAttention,
    path: str | Path | None,
    mean: Sequence[float] = (0.45, 0.45, 0.45),
    std: Sequence[float] = (0.225, 0.225, 0.225),
    *,
    class_names: Sequence[str] | None = None,
    alpha: float = 0.55,
) -> TokenGrid:
    """Draw each actor's decoder attention over the temporal slices and save it as PNG or JPEG.

    Row 0 shows the frames (the first of each tubelet); row k + 1 shows actor k's map, scaled to
    its maximum and upsampled bilinearly from the token grid, with the actor's box on the
    keyframe column.

    Args:
        clip: (3, T, H, W) normalised clip as given to the model (padding included).
        traced: `trace_decoder_attention`'s result for this clip.
        path: .png, .jpg or .jpeg file to write (atomically); nothing is written if None.
        mean: Per-channel mean of the normalisation to undo.
        std: Per-channel standard deviation of the normalisation to undo.
        class_names: Names of the action outputs; the row labels then name each actor's top action.
        alpha: Opacity of the heat map.

    Returns:
        The figure and its layout.
    """
    t = traced.grid[0]
    frames = clip_frames(clip, mean, std)  # (T, H, W, 3)
    T, H, W = frames.shape[:3]
    slices = frames[:: T // t][:t]  # first frame of every tubelet
    labels, notes = ["input"], [f"block {traced.block}"]
    for k in range(len(traced.maps)):
        labels.append(f"actor {k + 1}")
        note = f"person {float(traced.person_scores[k]):.2f}"
        if class_names is not None and traced.action_scores.shape[1]:
            top = int(traced.action_scores[k].argmax())
            note += f"\n{class_names[top][:18]} {float(traced.action_scores[k, top]):.2f}"
        notes.append(note)
    figure = TokenGrid.blank(labels, t, (H, W), notes)
    for col in range(t):
        figure.paste(0, col, slices[col])
    scale = figure.cell[0] / H
    for k, volume in enumerate(traced.maps.float().numpy()):
        peak = volume.max()
        volume = volume / peak if peak > 0 else volume
        for col in range(t):
            heat = cv2.resize(volume[col], (W, H), interpolation=cv2.INTER_LINEAR).clip(0, 1)
            figure.paste(k + 1, col, _heat(slices[col], heat, alpha))
        y, x = figure.origin(k + 1, t // 2)
        x1, y1, x2, y2 = (float(v) * scale for v in traced.boxes[k])
        corner1, corner2 = (x + round(x1), y + round(y1)), (x + round(x2), y + round(y2))
        cv2.rectangle(figure.image, corner1, corner2, (255, 255, 255), 4)
        cv2.rectangle(figure.image, corner1, corner2, track_color(k + 1), 2)
    if path is not None:
        figure.save(path)
    return figure
