"""Fixed sinusoid position tables (VideoMAE) and their spatial resize."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sinusoid_table(num_positions: int, dim: int) -> Tensor:
    """1-D sine-cosine table of shape (num_positions, dim) over a flattened token index.

    Channel 2i holds sin(pos / 10000^(2i/dim)) and channel 2i+1 the matching cosine, as in
    "Attention is all you need" and VideoMAE. Computed in float64 and returned as float32.
    """
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(dim) // 2).to(torch.float64) / dim
    angles = pos / torch.pow(10000.0, exponent)[None, :]  # (num_positions, dim)
    angles[:, 0::2] = angles[:, 0::2].sin()
    angles[:, 1::2] = angles[:, 1::2].cos()
    return angles.float()


def resize_spatial(table: Tensor, grid: tuple[int, int, int], size: tuple[int, int]) -> Tensor:
    """Resize a (t*h*w, C) table laid out on `grid` = (t, h, w) to (t, *size) in space only.

    Bicubic, align_corners=False, per temporal slice, as the official code does for inputs other
    than the pre-training resolution. Returns (t * size[0] * size[1], C).
    """
    t, h, w = grid
    if (h, w) == tuple(size):
        return table
    C = table.shape[-1]
    x = table.reshape(t, h, w, C).permute(0, 3, 1, 2)  # (t*h*w, C) -> (t, C, h, w)
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(-1, C)  # (t, C, h', w') -> (t*h'*w', C)


class ResizedTables:
    """`resize_spatial` of one fixed table, computed once per output size, device and dtype.

    The resize is a constant of the input size, and PyTorch's bicubic kernel is slow on a GPU: it
    runs one thread per output position and loops over every channel and time slice (20 ms of a
    61 ms ViT-B forward pass at 288 px, batch 8, on an H100). A resized table is keyed by the table's
    version counter as well, so an in-place change of the table is never served stale. Entries are
    made outside inference mode and without gradient, so a table cached during evaluation can be
    used by a later training step. At most `max_entries` sizes are kept (the least recently used
    goes first), so a detector fed videos of many shapes does not keep a table for each.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._tables: dict[tuple, Tensor] = {}

    def get(self, table: Tensor, grid: tuple[int, int, int], size: tuple[int, int]) -> Tensor:
        """`resize_spatial(table, grid, size)`, from the cache when it was computed before.

        Inside torch.compile the resize is traced instead: the compiler makes its own kernel for
        it, and cannot read the version counter the cache key needs.
        """
        if torch.compiler.is_compiling():
            return resize_spatial(table, grid, size)
        key = (tuple(size), table.device, table.dtype, table._version, tuple(grid))
        resized = self._tables.pop(key, None)
        if resized is None:
            with torch.inference_mode(False), torch.no_grad():
                resized = resize_spatial(table, grid, size).contiguous()
            if len(self._tables) >= self.max_entries:
                del self._tables[next(iter(self._tables))]  # the least recently used
        self._tables[key] = resized  # (re)inserted last: the most recently used
        return resized
