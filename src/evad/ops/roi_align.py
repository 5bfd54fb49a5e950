"""RoIAlign in plain PyTorch, with torchvision's compiled kernel as the fast path.

The localization branch pools 7x7 features per proposal from the FPN level chosen by the box size
(SPEC section 3), with torchvision's ``roi_align(aligned=True)``, sampling ratio 2 (section 8b);
the level choice and the per-image wrapper the heads call are in `evad.ops.poolers`.
torchvision's compiled ops are not always loadable (CPU-only torch builds), so `roi_align`
re-implements the reference kernel exactly and uses torchvision only where it runs
(`evad.ops.fastpath`).

Conventions: feature maps are ``(N, C, H, W)``; RoIs are ``(K, 5)`` rows
``(batch_index, x1, y1, x2, y2)`` in input-image pixels, mapped to the feature map by
``spatial_scale``. With ``aligned=True`` a pixel's centre sits at ``+0.5`` (half-pixel offset);
with ``aligned=False`` (legacy) a RoI is at least 1x1 feature cells.

The pure-PyTorch path has two methods with the same values (to float rounding):

* matmul (the default on the CPU, except under export and torch.compile): a bin's average of
  bilinear samples is a weighted sum of cells whose weights factorise into a row weight times a
  column weight, so per RoI the pooled grid is ``Wy @ input[b, c] @ Wx^T`` with ``Wy`` (out_h, H)
  and ``Wx`` (out_w, W) the summed sample weights of each row and column (the out-of-range rule
  factorises too). Two dense products per image.
* gather: per output cell, each of its ``(2 gh) x (2 gw)`` sample corners is read with one
  ``index_select`` over the channels-last map and accumulated with its weight. Export (tracing)
  and torch.compile use it, since it has no data-dependent loop over images; FLOP counting uses it,
  since its arithmetic is elementwise and therefore uncounted, as in fvcore (the paper's counter).

`_prefer_matmul` picks between them by a cost model; the matmul wins on every map the models pool
(forward plus backward, one thread: 1.3x to 13x faster than the old single-gather code on the demo's
and ViT-B 224's shapes, 4.5 s -> 0.76 s for the 3-D actor pooling at ViT-B batch 2).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from evad.ops.fastpath import capturing_graph, resolve_torchvision
from evad.switches import MethodSwitch

# Most feature values gathered at once, per sample (64 MiB in float32); more RoIs are split.
_MAX_GATHERED = 2**24
# Cost of one scattered row read relative to one dense multiply-add (see `_prefer_matmul`).
_GATHER_TO_FLOP = 100.0
_METHOD = MethodSwitch("roi_align_method", ("gather", "matmul"))


def pure_pytorch_method(method: str) -> contextlib.AbstractContextManager[None]:
    """Make the pure-PyTorch `roi_align` pool by "gather" or "matmul" inside the block (both give
    the same values). FLOP counting uses "gather", whose arithmetic is elementwise and so not counted,
    as in fvcore's convention; tests use both."""
    return _METHOD.force(method)


def roi_align(
    input: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    use_torchvision: bool | None = None,
) -> Tensor:
    """Pools a fixed-size feature grid per RoI by averaging bilinear samples (Mask R-CNN RoIAlign).

    Same results as ``torchvision.ops.roi_align``: RoI corners are scaled by ``spatial_scale`` (and
    shifted by -0.5 when ``aligned``), the RoI is split into ``output_size`` bins, and each bin
    averages a ``gh x gw`` grid of evenly spaced samples, where ``gh = gw = sampling_ratio`` if
    positive, else ``ceil(roi_height / out_h)`` and ``ceil(roi_width / out_w)`` per RoI. A sample
    more than one cell outside the map (``y < -1`` or ``y > H``, same for ``x``) contributes 0;
    otherwise negative coordinates are clamped to 0 and coordinates past the last row or column
    read that row or column.

    Differentiable with respect to ``input`` only; like torchvision, no gradient reaches ``rois``.

    Args:
        input: ``(N, C, H, W)`` feature maps, any floating dtype and device.
        rois: ``(K, 5)`` rows ``(batch_index, x1, y1, x2, y2)`` in the coordinates that
            ``spatial_scale`` maps onto ``input`` (e.g. image pixels with scale 1 / stride).
        output_size: ``out_h`` and ``out_w``, or one int for both.
        spatial_scale: Factor from RoI coordinates to feature-map cells.
        sampling_ratio: Samples per bin along each axis; ``<= 0`` picks it per RoI adaptively.
        aligned: Shift RoIs by half a pixel so that pixel centres line up (detectron2 ROIAlignV2);
            when False, RoIs are enlarged to at least 1x1 cell.
        use_torchvision: True forces torchvision's kernel, False the pure-PyTorch path, None uses
            torchvision when its compiled ops are available.

    Returns:
        ``(K, C, out_h, out_w)`` pooled features in ``input``'s dtype.
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    if input.dim() != 4 or rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(
            f"roi_align expects input (N, C, H, W) and rois (K, 5), got {tuple(input.shape)} "
            f"and {tuple(rois.shape)}"
        )
    # A traced graph (model export) takes the pure-PyTorch path unless told otherwise, so that it
    # needs no compiled extension where it runs.
    tracing = torch.jit.is_tracing() and use_torchvision is None
    tv_ops = None if tracing else resolve_torchvision(use_torchvision)
    if tv_ops is not None:
        # The compiled kernel reads rois in the input's dtype; run half precision in float32 (as
        # torchvision's autocast rule does) so that box corners are not rounded to bf16/fp16.
        compute_dtype = torch.promote_types(input.dtype, torch.float32)
        return tv_ops.roi_align(
            input.to(compute_dtype),
            rois.to(compute_dtype),
            (out_h, out_w),
            spatial_scale,
            sampling_ratio,
            aligned,
        ).to(input.dtype)

    num_rois, channels = rois.shape[0], input.shape[1]
    # Geometry in at least float32: bf16/fp16 coordinates would misplace samples by whole cells.
    geometry_dtype = torch.promote_types(input.dtype, torch.float32)
    rois = rois.detach().to(geometry_dtype)
    offset = 0.5 if aligned else 0.0
    start = rois[:, 1:] * spatial_scale - offset  # (K, 4): x1, y1, x2, y2 in feature cells
    roi_w = start[:, 2] - start[:, 0]
    roi_h = start[:, 3] - start[:, 1]
    if not aligned:
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)

    if sampling_ratio > 0 or num_rois == 0:
        # One pass over all RoIs; with none it still returns an empty output attached to the graph.
        grid = max(sampling_ratio, 1)
        groups = [(grid, grid, torch.arange(num_rois, device=rois.device))]
    else:
        # A negative RoI size (aligned, x2 < x1) gives an empty grid and a zero output, as in the
        # reference kernel.
        grid_h, grid_w = torch.ceil(roi_h / out_h), torch.ceil(roi_w / out_w)
        # A non-finite RoI (a diverged box head) gets the empty grid too, not an overflowed one.
        grid_sizes = torch.stack((grid_h, grid_w), dim=1).nan_to_num(0.0, 0.0, 0.0)  # (K, 2)
        grid_sizes = grid_sizes.clamp(min=0).long()
        groups = [
            (gh, gw, (grid_sizes == grid_sizes.new_tensor([gh, gw])).all(dim=1).nonzero().squeeze(1))
            for gh, gw in grid_sizes.unique(dim=0).tolist()
        ]

    height, width = input.shape[-2:]
    axes = []  # (members, row index, row weight, column index, column weight) per chunk of RoIs
    for gh, gw, members in groups:
        # Bound the transient tensors of the gather: one sample's values for every output cell.
        chunk_size = max(1, _MAX_GATHERED // max(out_h * out_w * channels, 1))
        # One chunk is not split: the ONNX exporter turns an oversized split into an invalid node.
        for chunk in members.split(chunk_size) if len(members) > chunk_size else (members,):
            rows = _axis_samples(start[chunk, 1], roi_h[chunk], out_h, gh, height)
            cols = _axis_samples(start[chunk, 0], roi_w[chunk], out_w, gw, width)
            axes.append((chunk, *rows, *cols))
    batch_index = rois[:, 0].long()
    grids = [(gh, gw) for gh, gw, _ in groups]
    matmul = _prefer_matmul(input.device, channels, height, width, out_h, out_w, grids)
    # The matmul's loop over the images present depends on the data: a traced or compiled graph
    # takes the gather, which is one graph for any boxes.
    if num_rois and matmul and not capturing_graph():
        return _pool_by_matmul(input, batch_index, axes, num_rois, out_h, out_w)
    return _pool_by_gather(input, batch_index, axes, out_h, out_w, reorder=len(groups) > 1)


def _pool_by_gather(
    input: Tensor, batch_index: Tensor, axes: list[tuple[Tensor, ...]], out_h: int, out_w: int, reorder: bool
) -> Tensor:
    """RoIAlign by gathering every sample's feature values (module docstring)."""
    channels, height, width = input.shape[1:]
    # Channels last so that one index_select row is one sample's C values.
    table = input.permute(0, 2, 3, 1).reshape(-1, channels)  # (N, C, H, W) -> (N*H*W, C)
    batch_offset = batch_index * (height * width)  # (K,)
    pooled = []
    for chunk, row_index, row_weight, col_index, col_weight in axes:
        cells = len(chunk) * out_h * out_w
        samples = row_index.shape[-1] * col_index.shape[-1]
        # (G, out_h, 1, 2gh, 1) + (G, 1, out_w, 1, 2gw) -> (G, out_h, out_w, 2gh, 2gw)
        # -> (G*out_h*out_w, 4*gh*gw): the table rows and weights of every output cell's samples.
        flat_index = (
            batch_offset[chunk, None, None, None, None]
            + row_index[:, :, None, :, None] * width
            + col_index[:, None, :, None, :]
        ).reshape(cells, samples)
        weight = (row_weight[:, :, None, :, None] * col_weight[:, None, :, None, :]).reshape(cells, samples)
        weight = weight.to(input.dtype)
        # Accumulate sample by sample: only (cells, C) tensors are ever live, where gathering all
        # samples at once held (cells, 4*gh*gw, C) twice. Elementwise on purpose: FLOP counters then
        # treat RoIAlign as data movement, as fvcore (the paper's counter) does.
        if samples == 0:  # adaptive grid of a negative-size RoI: zeros, still attached to the graph
            pooled_cells = table[:1].expand(cells, channels) * 0.0  # (G*out_h*out_w, C)
        else:
            pooled_cells = table.index_select(0, flat_index[:, 0]) * weight[:, :1]  # (G*out_h*out_w, C)
        for k in range(1, samples):
            pooled_cells = pooled_cells + table.index_select(0, flat_index[:, k]) * weight[:, k : k + 1]
        pooled.append(pooled_cells.view(-1, out_h, out_w, channels))  # -> (G, out_h, out_w, C)
    out = pooled[0] if len(pooled) == 1 else torch.cat(pooled)  # (K, out_h, out_w, C)
    if reorder:
        # Chunks come out grouped by grid size; put the RoIs back in input order.
        out = out[torch.cat([chunk for chunk, *_ in axes]).argsort()]
    return out.permute(0, 3, 1, 2).contiguous()  # (K, out_h, out_w, C) -> (K, C, out_h, out_w)


def _interpolation_matrix(index: Tensor, weight: Tensor, size: int) -> Tensor:
    """(G, bins, size) weights of every cell of one axis in every bin, from `_axis_samples` output."""
    matrix = weight.new_zeros(index.shape[0], index.shape[1], size)
    return matrix.scatter_add_(2, index, weight)  # a sample's two cells may coincide at the border


def _prefer_matmul(
    device: torch.device, channels: int, height: int, width: int, out_h: int, out_w: int, grids: list
) -> bool:
    """Whether `_pool_by_matmul` beats `_pool_by_gather` (a cost model fitted on this CPU code).

    Off the CPU the gather is kept: the matmul's loop over images waits for the host (on a GPU,
    torchvision's kernel is the usual path anyway).

    Per RoI the gather reads ``out_h * out_w * 4 * gh * gw`` scattered rows of C values, the matmul
    does ``2 * C * (out_h * H * W + out_h * out_w * W)`` dense multiply-adds. On a 56 x 56 map (63
    flops per read) the matmul was still 2x faster, so a read counts as `_GATHER_TO_FLOP` flops:
    every map the models pool takes the matmul, a very large map with few samples the gather.
    """
    forced = _METHOD.get()
    if forced is not None:
        return forced == "matmul"
    if device.type != "cpu":
        return False
    samples = min(4 * gh * gw for gh, gw in grids)
    gather_cost = _GATHER_TO_FLOP * out_h * out_w * samples * channels
    matmul_cost = 2 * channels * (out_h * height * width + out_h * out_w * width)
    return matmul_cost < gather_cost


def _pool_by_matmul(
    input: Tensor, batch_index: Tensor, axes: list[tuple[Tensor, ...]], num_rois: int, out_h: int, out_w: int
) -> Tensor:
    """RoIAlign as two matrix products per image: the average of bilinear samples is linear and
    separable, ``pooled[c] = Wy @ input[b, c] @ Wx^T`` with ``Wy`` (out_h, H) and ``Wx`` (out_w, W)
    holding each cell's summed sample weights (`_interpolation_matrix`)."""
    channels, height, width = input.shape[1:]
    dtype = input.dtype
    row_matrix = input.new_zeros(num_rois, out_h, height)  # (K, out_h, H)
    col_matrix = input.new_zeros(num_rois, out_w, width)  # (K, out_w, W)
    for chunk, row_index, row_weight, col_index, col_weight in axes:
        row_matrix[chunk] = _interpolation_matrix(row_index, row_weight, height).to(dtype)
        col_matrix[chunk] = _interpolation_matrix(col_index, col_weight, width).to(dtype)
    pooled, order = [], []
    for b in batch_index.unique().tolist():
        members = (batch_index == b).nonzero().squeeze(1)
        rows, cols = row_matrix[members], col_matrix[members]  # (G, out_h, H), (G, out_w, W)
        feature = input[b].transpose(0, 1).reshape(height, channels * width)  # (C, H, W) -> (H, C*W)
        # (G*out_h, H) @ (H, C*W) -> (G*out_h, C*W) -> (G, out_h, C, W) -> (G, C*out_h, W)
        mixed = (rows.reshape(-1, height) @ feature).view(len(members), out_h, channels, width)
        mixed = mixed.transpose(1, 2).reshape(len(members), channels * out_h, width)
        # (G, C*out_h, W) @ (G, W, out_w) -> (G, C*out_h, out_w) -> (G, C, out_h, out_w)
        pooled.append(torch.bmm(mixed, cols.transpose(1, 2)).view(len(members), channels, out_h, out_w))
        order.append(members)
    out = pooled[0] if len(pooled) == 1 else torch.cat(pooled)  # (K, C, out_h, out_w), image by image
    order = torch.cat(order)
    if not torch.equal(order, torch.arange(num_rois, device=order.device)):
        out = out[order.argsort()]  # back to input order
    return out


def _axis_samples(start: Tensor, length: Tensor, bins: int, grid: int, size: int) -> tuple[Tensor, Tensor]:
    """Cell indices and weights of the bilinear samples of one axis (rows or columns).

    Args:
        start: ``(G,)`` RoI start along the axis, in feature cells.
        length: ``(G,)`` RoI length along the axis, in feature cells.
        bins: Output bins along the axis.
        grid: Samples per bin along the axis.
        size: Feature-map length along the axis.

    Returns:
        ``(index, weight)``, both ``(G, bins, 2 * grid)``: for each bin, the low and high cell of
        each sample and their interpolation weights, already divided by ``grid`` so that the
        product of the row and column weights summed over a bin is the average over its samples.
    """
    bin_size = length / bins  # (G,)
    # Same expression order as the reference kernel, so that float32 sample positions match it.
    bin_index = torch.arange(bins, device=start.device, dtype=start.dtype)
    sample_index = torch.arange(grid, device=start.device, dtype=start.dtype) + 0.5
    # (G, 1, 1) + (1, bins, 1) * (G, 1, 1) + (1, 1, grid) * (G, 1, 1) -> (G, bins, grid)
    coord = (
        start[:, None, None]
        + bin_index[None, :, None] * bin_size[:, None, None]
        + sample_index[None, None, :] * bin_size[:, None, None] / grid
    )
    # A non-finite coordinate (a NaN or infinite box from a diverged box head) is a sample outside
    # the map, worth 0, rather than an integer index out of any bounds; the NaN box itself still
    # makes the loss NaN, which stops training with its own message.
    coord = coord.nan_to_num(-2.0, -2.0, -2.0)
    inside = ((coord >= -1.0) & (coord <= size)).to(coord.dtype)
    coord = coord.clamp(min=0.0)
    low = coord.floor().clamp(max=size - 1)
    # Past the last cell both corners are that cell, so it gets all the weight.
    high = (low + 1).clamp(max=size - 1)
    frac = coord - low
    index = torch.stack((low, high), dim=-1).long()  # (G, bins, grid, 2)
    weight = torch.stack((1.0 - frac, frac), dim=-1) * (inside / grid)[..., None]
    # (G, bins, grid, 2) -> (G, bins, 2 * grid)
    return index.flatten(2), weight.flatten(2)
