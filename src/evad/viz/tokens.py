"""Which tokens keyframe-centric pruning keeps: the picture of EVAD Fig. 4.

The figure is a grid with one row per stage (the input, then after each pruning layer) and one
column per temporal slice of the token grid (one frame per tubelet of 2 frames, 8 columns for a
16-frame clip). Tokens a stage has dropped are dimmed to grey; kept ones stay in colour. The
keyframe's slice (never pruned) is framed.

Token indices follow the backbone's convention: global flat indices t * h * w + y * w + x of the
(t, h, w) grid (`BackboneOutput.indices`, the detector's ``kept_indices``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from evad.fileio import write_atomically

_LEFT = 170  # pixels for the row labels
_TOP = 28  # pixels for the column labels
_GAP = 4
_MIN_CELL = 112  # small clips are enlarged so labels and tokens stay legible
_KEYFRAME_COLOR = (255, 190, 0)  # RGB frame around the keyframe slice
_FONT = cv2.FONT_HERSHEY_SIMPLEX
JPEG_SUFFIXES = (".jpg", ".jpeg")
IMAGE_SUFFIXES = (".png", *JPEG_SUFFIXES)  # what `TokenGrid.save` can write


@torch.no_grad()
def trace_kept_tokens(model: nn.Module, clip: Tensor, keep_rate: float | None = None) -> dict:
    """Run the backbone on one clip and record the surviving tokens after every pruning stage.

    The backbone only returns the final survivors; since pruning up to stage k does not depend on
    later layers, stage k's survivors are the final ones of a run that prunes at the first k
    pruning layers only. So this runs the backbone once per stage (eval mode, temporarily
    shortening ``prune_layers``) and restores it afterwards.

    Args:
        model: An EVAD detector or its backbone (a `VideoViT`).
        clip: (3, T, H, W) normalised clip, H and W multiples of the patch size.
        keep_rate: Keep rate rho; the backbone's default if None.

    Returns:
        ``{"stage_indices": [(N,), (M1,), ...] global indices of the input and each stage,
        "grid": (t, h, w), "num_tokens": [N, M1, ...]}``, the input for `render_kept_tokens`.
    """
    backbone = getattr(model, "backbone", model)
    clips = clip.unsqueeze(0).to(next(backbone.parameters()).device)  # (3, T, H, W) -> (1, 3, T, H, W)
    was_training, layers = backbone.training, backbone.prune_layers
    backbone.eval()
    try:
        full = backbone(clips, keep_rate=keep_rate)
        t, h, w = full.grid
        stages = [torch.arange(t * h * w)]
        pruned_stages = len(full.num_tokens) - 1
        if backbone.pruning == "random":  # one random draw before the encoder, nothing to replay
            stages.append(full.indices[0].cpu())
        else:
            for k in range(1, pruned_stages + 1):
                backbone.prune_layers = layers[:k]
                stages.append(backbone(clips, keep_rate=keep_rate).indices[0].cpu())
    finally:
        backbone.prune_layers = layers
        backbone.train(was_training)
    return {"stage_indices": stages, "grid": full.grid, "num_tokens": list(full.num_tokens)}


@dataclass
class TokenGrid:
    """A figure of frame cells: one row per stage (or actor), one column per temporal slice.

    Attributes:
        image: (height, width, 3) uint8 RGB figure.
        row_labels: One label per row.
        num_columns: Temporal slices shown.
        cell: (height, width) of one frame cell in pixels.
    """

    image: np.ndarray
    row_labels: list[str]
    num_columns: int
    cell: tuple[int, int]

    @classmethod
    def blank(
        cls,
        row_labels: Sequence[str],
        num_columns: int,
        frame_size: tuple[int, int],
        row_notes: Sequence[str] | None = None,
    ) -> TokenGrid:
        """A white figure with column labels (the keyframe slice is column ``num_columns // 2``)
        and row labels (notes below them, lines split at newlines), for frames of `frame_size`
        (enlarged by an integer factor if small)."""
        H, W = frame_size
        scale = max(1, -(-_MIN_CELL // min(H, W)))  # ceil: enlarge small clips by an integer factor
        cell = (H * scale, W * scale)
        height = _TOP + len(row_labels) * (cell[0] + _GAP)
        width = _LEFT + num_columns * (cell[1] + _GAP)
        grid = cls(np.full((height, width, 3), 255, np.uint8), list(row_labels), num_columns, cell)
        for col in range(num_columns):
            text = f"t={col}" + (" (key)" if col == num_columns // 2 else "")
            x = _LEFT + col * (cell[1] + _GAP) + 2
            cv2.putText(grid.image, text, (x, _TOP - 9), _FONT, 0.45, (0, 0, 0), 1)
        for row, label in enumerate(row_labels):
            y = grid.origin(row, 0)[0]
            cv2.putText(grid.image, label, (6, y + 20), _FONT, 0.5, (0, 0, 0), 1)
            notes = row_notes[row].split("\n") if row_notes is not None else []
            for i, note in enumerate(notes):
                cv2.putText(grid.image, note, (6, y + 42 + 20 * i), _FONT, 0.45, (80,) * 3, 1)
        return grid

    def origin(self, row: int, column: int) -> tuple[int, int]:
        """(y, x) pixel of the top-left corner of a cell."""
        return _TOP + row * (self.cell[0] + _GAP), _LEFT + column * (self.cell[1] + _GAP)

    def paste(self, row: int, column: int, frame: np.ndarray) -> None:
        """Put an (H, W, 3) RGB frame into a cell (enlarged without smoothing); frame the keyframe."""
        y, x = self.origin(row, column)
        ch, cw = self.cell
        self.image[y : y + ch, x : x + cw] = cv2.resize(frame, (cw, ch), interpolation=cv2.INTER_NEAREST)
        if column == self.num_columns // 2:
            cv2.rectangle(self.image, (x, y), (x + cw - 1, y + ch - 1), _KEYFRAME_COLOR, 2)

    def save(self, path: str | Path) -> None:
        """Write the figure atomically, as JPEG (quality 90) for .jpg / .jpeg and PNG otherwise."""
        jpeg = Path(path).suffix.lower() in JPEG_SUFFIXES
        ext, params = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]) if jpeg else (".png", [])
        ok, data = cv2.imencode(ext, cv2.cvtColor(self.image, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise RuntimeError(f"OpenCV could not encode the figure as {ext}")
        write_atomically(path, lambda tmp: Path(tmp).write_bytes(data.tobytes()))


def _stage_indices(outputs: dict, batch_index: int) -> list[Tensor]:
    if "stage_indices" in outputs:
        # (*shape) -> (M,) kept indices of each stage
        return [torch.as_tensor(i).reshape(-1) for i in outputs["stage_indices"]]
    t, h, w = outputs["grid"]
    kept = torch.as_tensor(outputs["kept_indices"])
    kept = kept[batch_index] if kept.ndim == 2 else kept
    return [torch.arange(t * h * w), kept]


def clip_frames(
    clip: Tensor | np.ndarray,
    mean: Sequence[float] = (0.45, 0.45, 0.45),
    std: Sequence[float] = (0.225, 0.225, 0.225),
) -> np.ndarray:
    """Undo the normalisation of a (3, T, H, W) clip: (T, H, W, 3) uint8 RGB frames."""
    x = torch.as_tensor(clip).detach().float().cpu()
    # (3,) -> (3, 1, 1, 1), twice: per-channel std and mean broadcast over the (3, T, H, W) clip
    x = x * torch.tensor(std).view(3, 1, 1, 1) + torch.tensor(mean).view(3, 1, 1, 1)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).numpy()  # (3, T, H, W) -> (T, H, W, 3)


def _dim(image: np.ndarray) -> np.ndarray:
    """Grey, darkened version of an RGB image: dropped tokens."""
    grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat((40 + 0.35 * grey)[..., None], 3, axis=-1).astype(np.uint8)


def render_kept_tokens(
    clip: Tensor | np.ndarray,
    outputs: dict,
    path: str | Path | None,
    mean: Sequence[float] = (0.45, 0.45, 0.45),
    std: Sequence[float] = (0.225, 0.225, 0.225),
    *,
    batch_index: int = 0,
    image_size: tuple[int, int] | None = None,
) -> TokenGrid:
    """Draw which tokens survive each pruning stage (EVAD Fig. 4) and save it as PNG or JPEG.

    Args:
        clip: (3, T, H, W) normalised clip as given to the model (padding included).
        outputs: `trace_kept_tokens`'s dict (every stage), or the detector's output dict, of which
            only ``kept_indices`` (row `batch_index`) and ``grid`` are used: then the rows are just
            the input and the final survivors.
        path: .png, .jpg or .jpeg file to write (atomically); nothing is written if None.
        mean: Per-channel mean of the normalisation to undo.
        std: Per-channel standard deviation of the normalisation to undo.
        batch_index: Which clip of a batched ``kept_indices`` the picture is about.
        image_size: The clip's unpadded (height, width): the zero padding beyond it is drawn white,
            so that it does not pass for dropped tokens (its tokens still count in the totals).

    Returns:
        The figure and its layout.
    """
    t, h, w = (int(v) for v in outputs["grid"])
    stages = _stage_indices(outputs, batch_index)
    frames = clip_frames(clip, mean, std)  # (T, H, W, 3)
    T, H, W = frames.shape[:3]
    tubelet = T // t
    labels = ["input"] + [f"after pruning {k}" for k in range(1, len(stages))]
    figure = TokenGrid.blank(labels, t, (H, W), [f"{len(s)} tokens" for s in stages])
    for row, indices in enumerate(stages):
        kept = np.zeros(t * h * w, bool)
        kept[indices.long().numpy()] = True
        kept = kept.reshape(t, h, w)  # (t*h*w,) -> (t, h, w)
        for col in range(t):
            frame = frames[col * tubelet]
            mask = np.kron(kept[col], np.ones((H // h, W // w), bool))  # (h, w) -> (H, W) by patch
            tile = np.where(mask[..., None], frame, _dim(frame))
            if image_size is not None:
                tile[int(image_size[0]) :] = 255
                tile[:, int(image_size[1]) :] = 255
            figure.paste(row, col, tile)
    if path is not None:
        figure.save(path)
    return figure
