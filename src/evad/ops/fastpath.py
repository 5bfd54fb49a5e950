"""The torchvision fast path of RoIAlign and NMS: whether its compiled kernels run here, and when.

`evad.ops.roi_align` and `evad.ops.nms` re-implement torchvision's kernels in plain PyTorch and
dispatch to ``torchvision.ops`` only where it imports and its compiled kernels run (CPU-only torch
builds often cannot load them). The check runs once per process (`torchvision_available`);
`resolve_torchvision` turns a ``use_torchvision`` argument into the module to call or None.
`capturing_graph` tells the ops when a call is being recorded into a graph (export, torch.compile),
where they take roads that need no compiled extension and no data-dependent Python control flow.
"""

from __future__ import annotations

from types import ModuleType

import torch

_UNPROBED = object()
_tv_ops: ModuleType | object | None = _UNPROBED  # the probe's answer, once it has run


def _probe_torchvision() -> ModuleType | None:
    try:
        import torchvision.ops as tv_ops

        tv_ops.roi_align(torch.zeros(1, 1, 2, 2), torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]]), 1)
        tv_ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except Exception:  # any failure (missing package, ABI mismatch, missing kernel) means "not usable"
        return None
    return tv_ops


def _torchvision_ops() -> ModuleType | None:
    """``torchvision.ops`` if it imports and its compiled kernels run, else None (checked once).

    The answer is a plain module global rather than a ``functools.cache``: torch.compile reads a
    global as a constant, but traces through a cache wrapper into the probe itself.
    """
    global _tv_ops
    if _tv_ops is _UNPROBED:
        probe = _probe_torchvision
        if torch.compiler.is_compiling():
            # Run outside the graph. Disabled here rather than by a decorator: torch.compiler.disable
            # imports Dynamo, half the time `import evad` took, which eager use never needs.
            probe = torch.compiler.disable(probe)
        _tv_ops = probe()
    return _tv_ops  # type: ignore[return-value]


def capturing_graph() -> bool:
    """Whether this call is being recorded into a graph (``torch.jit.trace`` or torch.compile)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def torchvision_available() -> bool:
    """Whether torchvision's compiled RoIAlign and NMS kernels can be used in this environment."""
    return _torchvision_ops() is not None


def resolve_torchvision(use_torchvision: bool | None) -> ModuleType | None:
    """The ``torchvision.ops`` module to dispatch to, or None for the pure-PyTorch path.

    Args:
        use_torchvision: True requires torchvision (``RuntimeError`` if it cannot be used), False
            forces the pure-PyTorch path, None uses torchvision when available.
    """
    if use_torchvision is False:
        return None
    tv_ops = _torchvision_ops()
    if use_torchvision and tv_ops is None:
        raise RuntimeError("use_torchvision=True but torchvision's compiled ops cannot be loaded")
    return tv_ops
